// Interop: `wsline connect` against a `ws` server (Node).
//
//   node --test tests/interop/node_server_for_connect.test.mjs
//
// WSLINE_BIN: the wsline binary (default target/release/wsline).
// The server routes by path:
//   /echo/ID                echo; records messages, headers, subprotocol, close code
//   /close/CODE/REASON/ID   sends one text message, then closes with CODE REASON
//   /http/STATUS            answers the upgrade with a plain HTTP STATUS response
// `ws` echoes synchronously in arrival order, so (unlike the Python server) every
// echo is sent before the reply to the client's Close: all of them must be printed.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import {
  WSLINE_BIN, WS_VERSION, WebSocketServer, checkBin, startConnect, withTimeout, deferred, killAll,
  assertSameList,
} from './node_common.mjs';

const sessions = new Map();
let nextId = 1;
function newSession() {
  const id = `s${nextId++}`;
  const s = { id, messages: [], headers: null, protocol: null, opened: deferred(), closed: deferred() };
  sessions.set(id, s);
  return s;
}

function startServer({ protocols = null } = {}) {
  const wss = new WebSocketServer({
    noServer: true,
    maxPayload: 64 * 1024 * 1024,
    handleProtocols: protocols
      ? (offered) => protocols.find((p) => offered.has(p)) ?? false
      : () => false,
  });
  const srv = http.createServer((_req, res) => { res.writeHead(426); res.end(); });
  srv.on('upgrade', (req, socket, head) => {
    const m = /^\/http\/(\d{3})$/.exec(req.url);
    if (m) {
      const body = 'this is not a WebSocket endpoint\n';
      socket.end(`HTTP/1.1 ${m[1]} ${http.STATUS_CODES[m[1]] || 'Status'}\r\nContent-Type: text/plain\r\n` +
        `Content-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`);
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => onConnection(ws, req));
  });
  const ready = new Promise((resolve) => srv.listen(0, '127.0.0.1', resolve));
  return ready.then(() => ({
    url: `ws://127.0.0.1:${srv.address().port}`,
    close: () => new Promise((resolve) => {
      for (const c of wss.clients) c.terminate();
      srv.closeAllConnections?.();
      srv.close(() => resolve());
    }),
  }));
}

function onConnection(ws, req) {
  const m = /^\/close\/(\d+)\/([^/]*)\/(\w+)$/.exec(req.url);
  const id = m ? m[3] : req.url.split('/').pop();
  const s = sessions.get(id);
  if (!s) { ws.close(1011, 'unknown session'); return; }
  s.headers = req.headers;
  s.protocol = ws.protocol;
  s.opened.resolve();
  ws.on('close', (code, reason) => s.closed.resolve({ code, reason: reason.toString() }));
  if (m) {
    ws.send('server says bye');
    ws.close(Number(m[1]), decodeURIComponent(m[2]));
    return;
  }
  ws.on('message', (data, isBinary) => {
    s.messages.push(isBinary ? data : data.toString('utf8'));
    ws.send(data, { binary: isBinary });
  });
}

let server;
let protoServer;

before(async () => {
  checkBin();
  console.log(`# wsline: ${WSLINE_BIN}; ws ${WS_VERSION}`);
  server = await startServer();
  protoServer = await startServer({ protocols: ['chat'] });
});

after(async () => {
  killAll();
  await Promise.all([server?.close(), protoServer?.close()]);
});

const closedOf = (s, p) => withTimeout(s.closed.promise, 10000, `server to see the close\n${p.stderrBlock()}`);

test('lines in -> same lines out (empty, UTF-8, 70000 B, last w/o newline); EOF -> close 1000, exit 0',
  { timeout: 60000 }, async () => {
    const s = newSession();
    const p = startConnect(`${server.url}/echo/${s.id}`);
    try {
      const lines = ['hello', '', 'h\u00e9llo w\u00f6rld \u2014 \u20ac \u{1F600} \u65e5\u672c\u8a9e',
        '  spaces  ', 'x'.repeat(70000)];
      const last = 'last line without newline \u00fc';
      for (const [i, line] of lines.entries()) {
        p.write(`${line}\n`);
        const got = await p.nextLine();
        assertSameList([got], [line], `echo of line ${i}`);
      }
      p.end(last);
      const r = await p.exit();
      const c = await closedOf(s, p);
      assertSameList(s.messages, [...lines, last], 'messages received by the server');
      assertSameList(r.rest, [last], 'stdout after the last echoed line (the echo of the last line)');
      assert.equal(c.code, 1000, `close code at the server ${c.code} (${c.reason}), expected 1000`);
      assert.equal(r.code, 0, `exit status ${r.code} (${r.signal})\n${p.stderrBlock()}`);
    } finally {
      p.kill();
    }
  });

test('2000 lines at once, then EOF: all sent and all echoes printed in order', { timeout: 60000 }, async () => {
  const s = newSession();
  const p = startConnect(`${server.url}/echo/${s.id}`);
  try {
    const lines = Array.from({ length: 2000 }, (_, i) => `burst ${i} \u00e9\u20ac`);
    p.end(lines.map((l) => `${l}\n`).join(''));
    const r = await p.exit(30000);
    const c = await closedOf(s, p);
    assertSameList(s.messages, lines, 'messages received by the server');
    assertSameList(r.rest, lines, 'echoes printed');
    assert.equal(c.code, 1000);
    assert.equal(r.code, 0, `exit status ${r.code}\n${p.stderrBlock()}`);
  } finally {
    p.kill();
  }
});

test('empty stdin: close 1000, exit 0', { timeout: 30000 }, async () => {
  const s = newSession();
  const p = startConnect(`${server.url}/echo/${s.id}`);
  try {
    p.end();
    const r = await p.exit();
    const c = await closedOf(s, p);
    assertSameList(s.messages, [], 'messages received by the server');
    assert.equal(c.code, 1000);
    assert.equal(r.code, 0, `exit status ${r.code}\n${p.stderrBlock()}`);
  } finally {
    p.kill();
  }
});

for (const [code, reason, ok] of [[1000, '', true], [1000, 'done', true], [1001, 'going away', true],
  [4000, 'bye', false], [1011, 'oops', false]]) {
  test(`server closes ${code} '${reason}': 'closed: ${code}${reason ? ` ${reason}` : ''}' on stderr, ` +
    `exit ${ok ? '0' : 'non-zero'}`, { timeout: 30000 }, async () => {
    const s = newSession();
    const p = startConnect(`${server.url}/close/${code}/${encodeURIComponent(reason)}/${s.id}`);
    try {
      // stdin stays open: wsline must notice the close by itself
      const r = await p.exit();
      const c = await closedOf(s, p);
      assertSameList(r.rest, ['server says bye'], 'stdout');
      const want = `closed: ${code} ${reason}`.trimEnd();
      assert.ok(p.stderr.split('\n').some((l) => l.includes(want)), `stderr lacks '${want}'\n${p.stderrBlock()}`);
      assert.equal(c.code, code, `wsline answered the server's close ${code} with ${c.code}`);
      if (ok) assert.equal(r.code, 0, `exit status ${r.code} (${r.signal})\n${p.stderrBlock()}`);
      else assert.ok(r.code !== 0 && r.code !== null, `exit status ${r.code} (${r.signal}), expected non-zero`);
    } finally {
      p.kill();
    }
  });
}

for (const status of [200, 403]) {
  test(`HTTP ${status} instead of 101: non-zero exit, status in stderr`, { timeout: 30000 }, async () => {
    const p = startConnect(`${server.url}/http/${status}`);
    try {
      p.end();
      const r = await p.exit();
      assert.ok(r.code !== 0 && r.code !== null, `exit status ${r.code} (${r.signal}), expected non-zero`);
      assert.match(p.stderr, new RegExp(`\\b${status}\\b`), `stderr does not mention ${status}\n${p.stderrBlock()}`);
      assertSameList(r.rest, [], 'stdout');
    } finally {
      p.kill();
    }
  });
}

test('connection refused: non-zero exit, error on stderr', { timeout: 30000 }, async () => {
  const port = await new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => { const { port: p } = s.address(); s.close(() => resolve(p)); });
  });
  const p = startConnect(`ws://127.0.0.1:${port}/`);
  try {
    const r = await p.exit();
    assert.ok(r.code !== 0 && r.code !== null, `exit status ${r.code} (${r.signal}), expected non-zero`);
    assert.ok(p.stderr.trim() !== '', 'no error message on stderr');
  } finally {
    p.kill();
  }
});

test("--header 'X-Test: 1' reaches the server", { timeout: 30000 }, async () => {
  const s = newSession();
  const p = startConnect(`${server.url}/echo/${s.id}`, '--header', 'X-Test: 1');
  try {
    await withTimeout(s.opened.promise, 10000, `connection\n${p.stderrBlock()}`);
    assert.equal(s.headers['x-test'], '1');
    p.end();
    const r = await p.exit();
    assert.equal(r.code, 0, `exit status ${r.code}\n${p.stderrBlock()}`);
  } finally {
    p.kill();
  }
});

test("--protocol superchat --protocol chat: 'chat' negotiated", { timeout: 30000 }, async () => {
  const s = newSession();
  const p = startConnect(`${protoServer.url}/echo/${s.id}`, '--protocol', 'superchat', '--protocol', 'chat');
  try {
    await withTimeout(s.opened.promise, 10000, `connection\n${p.stderrBlock()}`);
    const offered = (s.headers['sec-websocket-protocol'] || '').split(',').map((x) => x.trim());
    assert.deepEqual(offered, ['superchat', 'chat'], 'offered subprotocols');
    assert.equal(s.protocol, 'chat');
    p.write('with protocol\n');
    assert.equal(await p.nextLine(), 'with protocol');
    p.end();
    const r = await p.exit();
    assert.equal(r.code, 0, `exit status ${r.code}\n${p.stderrBlock()}`);
  } finally {
    p.kill();
  }
});
