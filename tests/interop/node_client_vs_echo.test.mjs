// Interop: the `ws` client (Node) against `wsline echo`.
//
//   node --test tests/interop/node_client_vs_echo.test.mjs
//
// WSLINE_BIN: the wsline binary (default target/release/wsline).
// WSLINE_EXPECT_COMPRESSION=1: require permessage-deflate to be negotiated
// (the client always offers it).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  WSLINE_BIN, WS_VERSION, checkBin, startEcho, openClient, echoCheck, makeText, makeBinary,
  describeMismatch, withTimeout, killAll,
} from './node_common.mjs';

const MIB = 1024 * 1024;
const SIZES = [0, 1, 125, 126, 65535, 65536, 1 * MIB, 4 * MIB];
const EXPECT_COMPRESSION = process.env.WSLINE_EXPECT_COMPRESSION === '1';
const sizeName = (n) => (n >= MIB && n % MIB === 0 ? `${n / MIB} MiB` : `${n} B`);

let server;

before(async () => {
  checkBin();
  console.log(`# wsline: ${WSLINE_BIN}; ws ${WS_VERSION}; compression check: ${EXPECT_COMPRESSION ? 'on' : 'off'}`);
  server = await startEcho();
});

after(() => {
  if (server) server.kill();
  killAll();
});

test(`handshake${EXPECT_COMPRESSION ? ' + permessage-deflate negotiated' : ''}`, { timeout: 30000 }, async () => {
  const c = await openClient(server.url);
  try {
    if (EXPECT_COMPRESSION) {
      assert.match(c.ws.extensions, /permessage-deflate/,
        `permessage-deflate not negotiated (Sec-WebSocket-Extensions: ${JSON.stringify(c.ws.extensions)})`);
    }
    assert.equal(c.ws.protocol, '', 'server chose a subprotocol though none was offered');
    await echoCheck(c, 'hello', false);
  } finally {
    c.ws.terminate();
  }
});

test('upgrade accepted on any path', { timeout: 30000 }, async () => {
  const c = await openClient(`${server.url}/any/path?x=1`);
  try {
    await echoCheck(c, 'path ok', false);
    await echoCheck(c, Buffer.from([0, 1, 2]), true);
  } finally {
    c.ws.terminate();
  }
});

for (const kind of ['text', 'binary']) {
  for (const n of SIZES) {
    test(`echo ${kind} ${sizeName(n)}`, { timeout: 60000 }, async () => {
      const payload = kind === 'text' ? makeText(n) : makeBinary(n);
      const c = await openClient(server.url);
      try {
        await echoCheck(c, payload, kind === 'binary');
        c.ws.close(1000);
        const info = await withTimeout(c.closed, 10000, 'closing handshake');
        assert.equal(info.code, 1000, `server answered close 1000 with ${info.code}`);
      } finally {
        c.ws.terminate();
      }
    });
  }
}

test('pipelined text+binary, all sizes, one connection, order kept', { timeout: 90000 }, async () => {
  const msgs = [];
  for (const n of SIZES) {
    msgs.push([makeText(n), false]);
    msgs.push([makeBinary(n, 2), true]);
  }
  const c = await openClient(server.url);
  try {
    for (const [m, bin] of msgs) c.ws.send(m, { binary: bin });
    for (let i = 0; i < msgs.length; i++) {
      const got = await c.next(60000);
      const err = describeMismatch(msgs[i][0], msgs[i][1], got);
      assert.equal(err, null, `message #${i}: ${err}`);
    }
  } finally {
    c.ws.terminate();
  }
});

test('fragmented message echoed whole', { timeout: 30000 }, async () => {
  const c = await openClient(server.url);
  try {
    const parts = [makeText(1000), makeText(70000), 'end\u20ac'];
    c.ws.send(parts[0], { fin: false });
    c.ws.send(parts[1], { fin: false });
    c.ws.send(parts[2], { fin: true });
    const got = await c.next();
    const err = describeMismatch(parts.join(''), false, got);
    assert.equal(err, null, `fragmented text: ${err}`);
  } finally {
    c.ws.terminate();
  }
});

test('10 concurrent connections x 20 messages', { timeout: 120000 }, async () => {
  const sizes = [0, 1, 125, 126, 1000, 65535, 65536, 200000];
  const one = async (i) => {
    const c = await openClient(server.url);
    try {
      for (let j = 0; j < 20; j++) {
        const n = sizes[(i * 7 + j * 3) % sizes.length];
        const bin = (i + j) % 2 === 0;
        await echoCheck(c, bin ? makeBinary(n, i * 100 + j) : makeText(n), bin, `conn ${i} msg ${j}: `);
      }
    } finally {
      c.ws.terminate();
    }
  };
  const results = await Promise.allSettled(Array.from({ length: 10 }, (_, i) => one(i)));
  const errs = results.filter((r) => r.status === 'rejected').map((r) => r.reason.message);
  assert.deepEqual(errs, [], `${errs.length}/10 connections failed`);
});

test('subprotocol: server preference order (chat over superchat)', { timeout: 30000 }, async () => {
  const s2 = await startEcho('--protocol', 'chat', '--protocol', 'superchat');
  try {
    const c = await openClient(s2.url, ['superchat', 'chat']);
    assert.equal(c.ws.protocol, 'chat', 'offered [superchat, chat] to a server preferring [chat, superchat]');
    await echoCheck(c, 'proto', false);
    c.ws.terminate();
    const r = await s2.terminate();
    assert.equal(r.code, 0, `server exited with ${r.code} (${r.signal}) on SIGTERM\n${s2.stderrTail()}`);
  } finally {
    s2.kill();
  }
});

test('--no-compression: no extension negotiated', { timeout: 30000 }, async () => {
  const s3 = await startEcho('--no-compression');
  try {
    const c = await openClient(s3.url); // offers permessage-deflate
    assert.equal(c.ws.extensions, '', `--no-compression server negotiated ${JSON.stringify(c.ws.extensions)}`);
    await echoCheck(c, makeText(70000), false);
    c.ws.terminate();
    const r = await s3.terminate();
    assert.equal(r.code, 0, `server exited with ${r.code} (${r.signal}) on SIGTERM\n${s3.stderrTail()}`);
  } finally {
    s3.kill();
  }
});

// Last: it stops the shared server.
test('SIGTERM: clients get close 1001, server exits 0', { timeout: 45000 }, async () => {
  const clients = [];
  for (let i = 0; i < 3; i++) clients.push(await openClient(server.url));
  try {
    for (const [i, c] of clients.entries()) await echoCheck(c, `conn ${i} alive`, false);
    const r = await server.terminate();
    for (const [i, c] of clients.entries()) {
      const info = await withTimeout(c.closed, 10000, `conn ${i} to see the close`);
      assert.equal(info.code, 1001, `conn ${i}: close code ${info.code} (${info.reason}), expected 1001`);
    }
    assert.equal(r.code, 0, `server exited with ${r.code} (${r.signal}) after SIGTERM\n${server.stderrTail()}`);
  } finally {
    for (const c of clients) c.ws.terminate();
  }
});
