// Helpers for the real-browser interop test (browser_vs_echo.test.mjs):
// Debian's Chromium driven by the npm package playwright-core, a tiny HTTP
// server on 127.0.0.1 for the test pages, and the in-page WebSocket driver.
//
// playwright-core is resolved normally first (so NODE_PATH works), then from
// the repo-local install made by scripts/test.sh: .cache/node/node_modules.
// Chromium: env WSLINE_CHROMIUM, default /usr/bin/chromium (Debian's package;
// never `npx playwright install`). Every wait is bounded; nothing sleeps to synchronise.

import { createRequire } from 'node:module';
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { REPO_ROOT, withTimeout } from './node_common.mjs';

export const CHROMIUM_PATH = process.env.WSLINE_CHROMIUM || '/usr/bin/chromium';
export const LAUNCH_TIMEOUT_MS = 60000;

// Playwright adds its own defaults (a fresh temporary --user-data-dir, --headless,
// --disable-features=...HttpsUpgrades..., etc.); these are on top of them.
export const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

function cacheRequire() {
  return createRequire(path.join(REPO_ROOT, '.cache', 'node', 'package.json'));
}

/** Loads playwright-core; throws a message that says how to install it. */
export function loadPlaywright() {
  let pw;
  let resolvedFrom;
  try {
    pw = createRequire(import.meta.url)('playwright-core');
    resolvedFrom = createRequire(import.meta.url).resolve('playwright-core/package.json');
  } catch {
    try {
      pw = cacheRequire()('playwright-core');
      resolvedFrom = cacheRequire().resolve('playwright-core/package.json');
    } catch {
      throw new Error('npm package playwright-core not found (NODE_PATH, then .cache/node/node_modules); ' +
        'run ./scripts/test.sh --only interop-browser, which installs the pinned version into .cache/node');
    }
  }
  let version = 'unknown';
  try { version = JSON.parse(fs.readFileSync(resolvedFrom, 'utf8')).version; } catch { /* only for the log */ }
  return { chromium: pw.chromium, version };
}

export function checkChromium() {
  try {
    fs.accessSync(CHROMIUM_PATH, fs.constants.X_OK);
  } catch {
    throw new Error(`Chromium not found or not executable: ${CHROMIUM_PATH} ` +
      '(Debian: apt-get install chromium; or set WSLINE_CHROMIUM)');
  }
}

/**
 * Launches Chromium. `hostRules` becomes --host-resolver-rules (e.g. to map a
 * test hostname to the local page server).
 */
export async function launchChromium(chromium, hostRules) {
  const args = [...CHROMIUM_ARGS];
  if (hostRules) args.push(`--host-resolver-rules=${hostRules}`);
  return withTimeout(
    chromium.launch({ executablePath: CHROMIUM_PATH, args, timeout: LAUNCH_TIMEOUT_MS }),
    LAUNCH_TIMEOUT_MS + 5000, `Chromium to start (${CHROMIUM_PATH})`);
}

// ---- the test page -------------------------------------------------------------

// Runs in the page. window.wsl drives the browser's own WebSocket; every wait
// in it has a time limit, and results are plain JSON for page.evaluate.
const PAGE_SCRIPT = String.raw`
'use strict';
window.wsl = (() => {
  const conns = new Map();
  const store = new Map();
  let nextId = 1;

  function conn(id) {
    const c = conns.get(id);
    if (!c) throw new Error('no connection #' + id);
    return c;
  }

  function b64ToBuffer(b64) {
    const s = atob(b64);
    const u = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) u[i] = s.charCodeAt(i);
    return u.buffer;
  }

  // Resolves { id, opened, extensions, protocol, events, close } once open, or
  // once closed without opening, or { timedOut: true } after ms.
  function connect(url, ms) {
    return new Promise((resolve) => {
      const id = nextId++;
      const events = [];
      const c = { ws: null, queue: [], waiters: [], closeWaiters: [], close: null, events };
      conns.set(id, c);
      const timer = setTimeout(() => resolve({ id, opened: false, timedOut: true, events: events.slice() }), ms);
      let ws;
      try {
        ws = new WebSocket(url);
      } catch (e) {
        clearTimeout(timer);
        resolve({ id, opened: false, events: ['constructor threw: ' + e], close: null });
        return;
      }
      c.ws = ws;
      ws.binaryType = 'arraybuffer';
      ws.onopen = () => {
        events.push('open');
        clearTimeout(timer);
        resolve({ id, opened: true, extensions: ws.extensions, protocol: ws.protocol, events: events.slice() });
      };
      ws.onerror = () => { events.push('error'); };
      ws.onmessage = (e) => {
        if (c.waiters.length) c.waiters.shift()(e.data); else c.queue.push(e.data);
      };
      ws.onclose = (e) => {
        events.push('close');
        c.close = { code: e.code, reason: e.reason, wasClean: e.wasClean };
        for (const w of c.closeWaiters.splice(0)) w(c.close);
        for (const w of c.waiters.splice(0)) w(null);
        clearTimeout(timer);
        resolve({ id, opened: false, events: events.slice(), close: c.close });
      };
    });
  }

  // The next message (string or ArrayBuffer); null if the connection closed,
  // undefined after ms.
  function next(c, ms) {
    if (c.queue.length) return Promise.resolve(c.queue.shift());
    if (c.close) return Promise.resolve(null);
    return new Promise((resolve) => {
      let done = false;
      const w = (m) => { if (!done) { done = true; clearTimeout(t); resolve(m); } };
      const t = setTimeout(() => {
        done = true;
        const i = c.waiters.indexOf(w);
        if (i >= 0) c.waiters.splice(i, 1);
        resolve(undefined);
      }, ms);
      c.waiters.push(w);
    });
  }

  function describe(m) {
    if (m === null) return 'connection closed';
    if (m === undefined) return 'no message in time';
    if (typeof m === 'string') return 'text (' + m.length + ' UTF-16 units)';
    if (m instanceof ArrayBuffer) return 'binary ArrayBuffer (' + m.byteLength + ' bytes)';
    return 'unexpected ' + Object.prototype.toString.call(m);
  }

  // null if got is exactly item, else what differs.
  function compare(item, got) {
    if (item.kind === 'text') {
      if (typeof got !== 'string') return 'sent text (' + item.data.length + ' UTF-16 units), got ' + describe(got);
      if (got === item.data) return null;
      if (got.length !== item.data.length) {
        return 'text length differs: sent ' + item.data.length + ' UTF-16 units, got ' + got.length;
      }
      let i = 0;
      while (got.charCodeAt(i) === item.data.charCodeAt(i)) i++;
      return 'text differs at UTF-16 unit ' + i;
    }
    if (!(got instanceof ArrayBuffer)) return 'sent binary (' + item.data.byteLength + ' bytes), got ' + describe(got);
    const a = new Uint8Array(item.data);
    const b = new Uint8Array(got);
    if (a.length !== b.length) return 'binary length differs: sent ' + a.length + ' bytes, got ' + b.length;
    for (let i = 0; i < a.length; i++) {
      if (a[i] !== b[i]) return 'binary differs at byte ' + i + ' (sent ' + a[i] + ', got ' + b[i] + ')';
    }
    return null;
  }

  return {
    // Keeps a payload in the page: {kind:'text', text} or {kind:'binary', b64}.
    put(key, p) {
      store.set(key, p.kind === 'text' ? { kind: 'text', data: p.text } : { kind: 'binary', data: b64ToBuffer(p.b64) });
      return true;
    },
    connect,
    // Sends the stored payloads in order (pipelined), then checks each echo in
    // order. Resolves [{ key, error }] with error null for an exact echo.
    async echo(id, keys, ms) {
      const c = conn(id);
      const items = keys.map((k) => {
        const it = store.get(k);
        if (!it) throw new Error('no stored payload ' + k);
        return it;
      });
      for (const it of items) c.ws.send(it.data);
      const out = [];
      for (let i = 0; i < items.length; i++) {
        const got = await next(c, ms);
        out.push({ key: keys[i], error: compare(items[i], got) });
        if (got === null || got === undefined) break;
      }
      return out;
    },
    // Calls ws.close(code, reason) (code null: no arguments), waits for onclose.
    async close(id, code, reason, ms) {
      const c = conn(id);
      if (code === null) c.ws.close(); else c.ws.close(code, reason);
      return this.waitClose(id, ms);
    },
    // Resolves the close event's { code, reason, wasClean }, or null after ms.
    waitClose(id, ms) {
      const c = conn(id);
      if (c.close) return Promise.resolve(c.close);
      return new Promise((resolve) => {
        const t = setTimeout(() => resolve(null), ms);
        c.closeWaiters.push((info) => { clearTimeout(t); resolve(info); });
      });
    },
    state(id) {
      const c = conn(id);
      return { readyState: c.ws ? c.ws.readyState : -1, events: c.events.slice(), close: c.close };
    },
    // Drops every connection without a closing handshake (test cleanup).
    dropAll() {
      for (const c of conns.values()) {
        try { if (c.ws && c.ws.readyState < 2) c.ws.close(); } catch (e) { /* cleanup */ }
      }
      conns.clear();
      return true;
    },
  };
})();
`;

const PAGE_HTML = `<!doctype html>
<html><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>wsline browser interop</title></head>
<body><p>wsline browser interop page</p>
<script>${PAGE_SCRIPT}</script>
</body></html>
`;

/**
 * Serves the test page at / on 127.0.0.1 (any Host header); 404 for anything
 * else. Resolves { port, close() }.
 */
export async function startPageServer() {
  const sockets = new Set();
  const server = http.createServer((req, res) => {
    if (req.method === 'GET' && (req.url === '/' || req.url.startsWith('/?'))) {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
      res.end(PAGE_HTML);
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('not found\n');
    }
  });
  server.on('connection', (s) => { sockets.add(s); s.on('close', () => sockets.delete(s)); });
  await withTimeout(new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  }), 10000, 'the page server to listen');
  return {
    port: server.address().port,
    close() {
      for (const s of sockets) s.destroy();
      return withTimeout(new Promise((resolve) => server.close(() => resolve())), 10000, 'the page server to close');
    },
  };
}
