// Interop: a real browser's WebSocket (Debian's Chromium, driven by
// playwright-core) against `wsline echo`.
//
//   NODE_PATH=.cache/node/node_modules node --test tests/interop/browser_vs_echo.test.mjs
//
// WSLINE_BIN: the wsline binary (default target/release/wsline).
// WSLINE_CHROMIUM: the browser (default /usr/bin/chromium).
// WSLINE_EXPECT_COMPRESSION: unless 0, permessage-deflate must be negotiated
// with the default server (Chromium always offers it).
//
// The pages come from a small HTTP server on 127.0.0.1. Chromium maps the
// hostnames good.example and evil.example to it (--host-resolver-rules), so a
// page at http://good.example/ has the Origin http://good.example, as it would
// on a real site, and the browser itself sends that Origin in the handshake.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  WSLINE_BIN, WS_VERSION, checkBin, startEcho, makeText, makeBinary, withTimeout, killAll,
} from './node_common.mjs';
import {
  CHROMIUM_PATH, checkChromium, loadPlaywright, launchChromium, startPageServer,
} from './browser_common.mjs';

const MIB = 1024 * 1024;
const EXPECT_COMPRESSION = process.env.WSLINE_EXPECT_COMPRESSION !== '0';
const GOOD_ORIGIN = 'http://good.example';
const BAD_ORIGIN = 'http://evil.example';
const CONNECT_MS = 10000;   // in-page limit for a WebSocket to open or fail
const ECHO_MS = 30000;      // in-page limit for each echoed message
const CLOSE_MS = 10000;     // in-page limit for onclose
const SLACK_MS = 10000;     // node-side limit on top of the in-page one

// [name, kind, payload]; each is stored in the page once and echoed by name.
const PAYLOADS = [
  ['text multi-byte UTF-8', 'text', 'h\u00e9llo w\u00f6rld \u20ac \u2603 \u{1F600}\u{1F680} \u65e5\u672c\u8a9e \u0645\u0631\u062d\u0628\u0627'],
  ['text empty', 'text', ''],
  ['text 125 B', 'text', makeText(125)],
  ['text 126 B', 'text', makeText(126)],
  ['text 64 KiB', 'text', makeText(65536)],
  ['text 1 MiB compressible', 'text', makeText(MIB)],
  ['binary 0 B', 'binary', makeBinary(0)],
  ['binary 125 B', 'binary', makeBinary(125)],
  ['binary 126 B', 'binary', makeBinary(126)],
  ['binary 64 KiB', 'binary', makeBinary(65536)],
  ['binary 1 MiB random', 'binary', makeBinary(MIB)],
];

let pw;
let pageServer;
let browser;
let context;
let page;            // http://127.0.0.1:PORT/, used for the echo tests
let pageOrigin;
const servers = {};  // compressed, uncompressed, origin
const consoleLines = [];

function recentConsole() {
  const lines = consoleLines.slice(-10);
  return lines.length ? `browser console (last ${lines.length}):\n${lines.map((l) => `  ${l}`).join('\n')}` : 'browser console: (empty)';
}

function watchConsole(pg, label) {
  pg.on('console', (m) => consoleLines.push(`[${label}] ${m.type()}: ${m.text()}`));
  pg.on('pageerror', (e) => consoleLines.push(`[${label}] pageerror: ${e.message}`));
  pg.on('crash', () => consoleLines.push(`[${label}] PAGE CRASHED`));
}

/** page.evaluate with a node-side time limit on top of the in-page ones. */
function inPage(pg, what, fn, arg, ms) {
  return withTimeout(pg.evaluate(fn, arg), ms + SLACK_MS, `${what} (page.evaluate)`);
}

async function openPage(url, label) {
  const pg = await withTimeout(context.newPage(), 30000, 'a new browser page');
  watchConsole(pg, label);
  const res = await pg.goto(url, { timeout: 30000, waitUntil: 'load' });
  assert.ok(res && res.ok(), `loading ${url}: HTTP ${res ? res.status() : 'no response'}`);
  const ready = await inPage(pg, `window.wsl on ${url}`, () => typeof window.wsl === 'object', null, 5000);
  assert.ok(ready, `the page script did not run on ${url}\n${recentConsole()}`);
  return pg;
}

/** Resolves the page's connect result: { id, opened, extensions, events, close, timedOut }. */
function connect(pg, url) {
  return inPage(pg, `WebSocket to ${url}`, ([u, ms]) => window.wsl.connect(u, ms), [url, CONNECT_MS], CONNECT_MS);
}

async function mustConnect(pg, server) {
  const r = await connect(pg, server.url);
  if (!r.opened) {
    assert.fail(`WebSocket to ${server.url} did not open: ${r.timedOut ? `nothing within ${CONNECT_MS / 1000}s, ` : ''}` +
      `events [${r.events.join(', ')}], close ${JSON.stringify(r.close)}\n${server.stderrTail()}\n${recentConsole()}`);
  }
  return r;
}

async function echo(pg, id, names, server) {
  const out = await inPage(pg, `echo of ${names.length} message(s)`,
    ([i, k, ms]) => window.wsl.echo(i, k, ms), [id, names, ECHO_MS], ECHO_MS * names.length);
  const bad = out.filter((r) => r.error !== null);
  if (bad.length || out.length !== names.length) {
    const lines = bad.map((r) => `  ${r.key}: ${r.error}`);
    if (out.length !== names.length) lines.push(`  only ${out.length} of ${names.length} echoes checked`);
    const state = await inPage(pg, 'connection state', (i) => window.wsl.state(i), id, 5000).catch(() => null);
    assert.fail(`echo mismatch:\n${lines.join('\n')}\nconnection: ${JSON.stringify(state)}\n` +
      `${server.stderrTail()}\n${recentConsole()}`);
  }
}

function closeFromPage(pg, id, code, reason) {
  return inPage(pg, 'ws.close() and onclose', ([i, c, r, ms]) => window.wsl.close(i, c, r, ms),
    [id, code, reason, CLOSE_MS], CLOSE_MS);
}

function waitClose(pg, id) {
  return inPage(pg, 'onclose', ([i, ms]) => window.wsl.waitClose(i, ms), [id, CLOSE_MS], CLOSE_MS);
}

function dropAll(pg) {
  return inPage(pg, 'dropping connections', () => window.wsl.dropAll(), null, 5000).catch(() => {});
}

before(async () => {
  checkBin();
  checkChromium();
  pw = loadPlaywright();
  pageServer = await startPageServer();
  pageOrigin = `http://127.0.0.1:${pageServer.port}`;
  servers.compressed = await startEcho();
  servers.uncompressed = await startEcho('--no-compression');
  servers.origin = await startEcho('--allow-origin', GOOD_ORIGIN);
  const rules = ['good.example', 'evil.example'].map((h) => `MAP ${h} 127.0.0.1:${pageServer.port}`).join(',');
  browser = await launchChromium(pw.chromium, rules);
  context = await withTimeout(browser.newContext(), 30000, 'a browser context');
  console.log(`# wsline: ${WSLINE_BIN}; browser: ${CHROMIUM_PATH} ${browser.version()}; ` +
    `playwright-core ${pw.version}; ws ${WS_VERSION}; pages: ${pageOrigin}; ` +
    `compression check: ${EXPECT_COMPRESSION ? 'on' : 'off'}`);
  page = await openPage(`${pageOrigin}/`, 'echo page');
  for (const [name, kind, data] of PAYLOADS) {
    const p = kind === 'text' ? { kind, text: data } : { kind, b64: data.toString('base64') };
    await inPage(page, `storing payload ${name}`, ([k, v]) => window.wsl.put(k, v), [name, p], 20000);
  }
});

after(async () => {
  if (browser) await withTimeout(browser.close(), 20000, 'Chromium to close').catch((e) => console.log(`# ${e.message}`));
  for (const s of Object.values(servers)) s.kill();
  if (pageServer) await pageServer.close().catch(() => {});
  killAll();
});

// ---- 1. compression negotiation ----------------------------------------------

test(`default server: ${EXPECT_COMPRESSION ? 'permessage-deflate negotiated' : 'connects'}`, { timeout: 60000 }, async () => {
  const r = await mustConnect(page, servers.compressed);
  try {
    if (EXPECT_COMPRESSION) {
      assert.match(r.extensions, /(^|[\s,])permessage-deflate(\s*;|\s*,|$)/,
        `ws.extensions is ${JSON.stringify(r.extensions)}, expected permessage-deflate\n${servers.compressed.stderrTail()}`);
    }
    assert.equal(r.protocol, '', 'server chose a subprotocol though the page offered none');
    await echo(page, r.id, ['text multi-byte UTF-8'], servers.compressed);
  } finally {
    await dropAll(page);
  }
});

test('--no-compression server: ws.extensions is empty', { timeout: 60000 }, async () => {
  const r = await mustConnect(page, servers.uncompressed);
  try {
    assert.equal(r.extensions, '', `--no-compression server negotiated ${JSON.stringify(r.extensions)}`);
    await echo(page, r.id, ['text multi-byte UTF-8'], servers.uncompressed);
  } finally {
    await dropAll(page);
  }
});

// ---- 2. exact echo, same type ---------------------------------------------------

for (const mode of ['compressed', 'uncompressed']) {
  const checkExt = (r) => {
    if (mode === 'uncompressed') {
      assert.equal(r.extensions, '', `--no-compression server negotiated ${JSON.stringify(r.extensions)}`);
    } else if (EXPECT_COMPRESSION) {
      assert.match(r.extensions, /permessage-deflate/, `permessage-deflate not negotiated (${JSON.stringify(r.extensions)})`);
    }
  };

  for (const [name] of PAYLOADS) {
    test(`${mode}: echo ${name}`, { timeout: 90000 }, async () => {
      const s = servers[mode];
      const r = await mustConnect(page, s);
      try {
        checkExt(r);
        await echo(page, r.id, [name], s);
        const c = await closeFromPage(page, r.id, 1000, '');
        assert.ok(c, `no onclose within ${CLOSE_MS / 1000}s after ws.close(1000)\n${s.stderrTail()}`);
        assert.equal(c.code, 1000, `close after echo: ${JSON.stringify(c)}`);
      } finally {
        await dropAll(page);
      }
    });
  }

  test(`${mode}: all ${PAYLOADS.length} payloads pipelined on one connection, order kept`, { timeout: 120000 }, async () => {
    const s = servers[mode];
    const r = await mustConnect(page, s);
    try {
      checkExt(r);
      const names = PAYLOADS.map(([n]) => n);
      await echo(page, r.id, [...names, ...names.slice().reverse()], s);
    } finally {
      await dropAll(page);
    }
  });
}

// ---- 3. closing -----------------------------------------------------------------

test("clean close from the page: ws.close(1000, 'bye') -> wasClean, code 1000", { timeout: 60000 }, async () => {
  for (const mode of ['compressed', 'uncompressed']) {
    const s = servers[mode];
    const r = await mustConnect(page, s);
    try {
      await echo(page, r.id, ['text 125 B'], s);
      const c = await closeFromPage(page, r.id, 1000, 'bye');
      assert.ok(c, `${mode}: no onclose within ${CLOSE_MS / 1000}s after ws.close(1000, 'bye')\n${s.stderrTail()}`);
      assert.equal(c.code, 1000, `${mode}: onclose ${JSON.stringify(c)}, expected code 1000`);
      assert.equal(c.wasClean, true, `${mode}: onclose ${JSON.stringify(c)}, expected wasClean true`);
    } finally {
      await dropAll(page);
    }
  }
});

test('SIGTERM to the server: the page gets close 1001, the server exits 0', { timeout: 60000 }, async () => {
  const s = await startEcho();
  try {
    const conns = [];
    for (let i = 0; i < 2; i++) conns.push(await mustConnect(page, s));
    for (const r of conns) await echo(page, r.id, ['text multi-byte UTF-8'], s);
    const exited = s.terminate(); // one SIGTERM, then a bounded wait for the exit
    exited.catch(() => {});
    for (const [i, r] of conns.entries()) {
      const c = await waitClose(page, r.id);
      assert.ok(c, `connection ${i}: no onclose within ${CLOSE_MS / 1000}s of SIGTERM\n${s.stderrTail()}\n${recentConsole()}`);
      assert.equal(c.code, 1001, `connection ${i}: onclose ${JSON.stringify(c)} after SIGTERM, expected code 1001`);
      assert.equal(c.wasClean, true, `connection ${i}: onclose ${JSON.stringify(c)} after SIGTERM, expected wasClean`);
    }
    const exit = await exited;
    assert.equal(exit.code, 0, `server exited with ${exit.code} (${exit.signal}) after SIGTERM\n${s.stderrTail()}`);
  } finally {
    s.kill();
    await dropAll(page);
  }
});

// ---- 4. Origin ------------------------------------------------------------------

test(`--allow-origin ${GOOD_ORIGIN}: a page from ${GOOD_ORIGIN} connects`, { timeout: 60000 }, async () => {
  const pg = await openPage(`${GOOD_ORIGIN}/`, 'good.example');
  try {
    const origin = await inPage(pg, 'location.origin', () => location.origin, null, 5000);
    assert.equal(origin, GOOD_ORIGIN, 'the page is not at the expected origin');
    const r = await mustConnect(pg, servers.origin);
    const sent = 'origin ok \u2713';
    const got = await inPage(pg, 'an echo', ([id, text, ms]) => {
      window.wsl.put('t', { kind: 'text', text });
      return window.wsl.echo(id, ['t'], ms);
    }, [r.id, sent, ECHO_MS], ECHO_MS);
    assert.deepEqual(got, [{ key: 't', error: null }], `echo from ${GOOD_ORIGIN}: ${JSON.stringify(got)}`);
    const c = await closeFromPage(pg, r.id, 1000, 'bye');
    assert.ok(c && c.code === 1000 && c.wasClean, `close from ${GOOD_ORIGIN}: ${JSON.stringify(c)}`);
  } finally {
    await pg.close().catch(() => {});
  }
});

for (const [label, url] of [[BAD_ORIGIN, `${BAD_ORIGIN}/`], ['the page server origin (127.0.0.1:PORT)', null]]) {
  test(`--allow-origin ${GOOD_ORIGIN}: a page from ${label} is refused (onerror, close 1006)`, { timeout: 60000 }, async () => {
    const pageUrl = url || `${pageOrigin}/`;
    const pg = await openPage(pageUrl, label);
    try {
      const origin = await inPage(pg, 'location.origin', () => location.origin, null, 5000);
      assert.notEqual(origin, GOOD_ORIGIN);
      // Chromium logs why the handshake failed; wait for that line (bounded) to
      // be sure the refusal was the server's 403 and not something else.
      const logged = pg.waitForEvent('console', {
        predicate: (m) => m.text().includes('WebSocket') && m.text().includes(servers.origin.url),
        timeout: CONNECT_MS + SLACK_MS,
      });
      logged.catch(() => {});
      const r = await connect(pg, servers.origin.url);
      assert.equal(r.opened, false, `a page from ${origin} connected to a server allowing only ${GOOD_ORIGIN}`);
      assert.ok(!r.timedOut, `no onclose within ${CONNECT_MS / 1000}s for a refused connection: events [${r.events}]`);
      assert.deepEqual(r.events, ['error', 'close'], `events for a refused handshake from ${origin}`);
      assert.equal(r.close.code, 1006, `onclose ${JSON.stringify(r.close)}, expected code 1006`);
      assert.equal(r.close.wasClean, false, `onclose ${JSON.stringify(r.close)}, expected wasClean false`);
      const msg = await logged.catch((e) => assert.fail(`no console message about the failed WebSocket: ${e.message}\n${recentConsole()}`));
      assert.match(msg.text(), /\b403\b/, `the browser's reason for the failure: ${msg.text()}`);
    } finally {
      await pg.close().catch(() => {});
    }
  });
}
