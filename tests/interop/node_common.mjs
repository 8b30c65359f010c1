// Shared helpers for the Node interop tests (node:test + the `ws` package).
//
// `ws` is resolved normally first (so NODE_PATH works), then from the
// repo-local install made by scripts/test.sh: .cache/node/node_modules.
// The tests drive the wsline binary: env WSLINE_BIN, default target/release/wsline.
// Every wait is bounded; nothing sleeps to synchronise.

import { createRequire } from 'node:module';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const WSLINE_BIN = process.env.WSLINE_BIN || path.join(REPO_ROOT, 'target', 'release', 'wsline');
export const READY_TIMEOUT_MS = Number(process.env.WSLINE_READY_TIMEOUT || 30) * 1000;
export const EXIT_TIMEOUT_MS = 15000;

function loadWs() {
  try {
    return createRequire(import.meta.url)('ws');
  } catch {
    return createRequire(path.join(REPO_ROOT, '.cache', 'node', 'package.json'))('ws');
  }
}
export const WebSocket = loadWs();
export const { WebSocketServer } = WebSocket;
export const WS_VERSION = (() => {
  try {
    const req = createRequire(path.join(REPO_ROOT, '.cache', 'node', 'package.json'));
    return JSON.parse(fs.readFileSync(req.resolve('ws/package.json'), 'utf8')).version;
  } catch {
    return 'unknown';
  }
})();

export function checkBin() {
  try {
    fs.accessSync(WSLINE_BIN, fs.constants.X_OK);
  } catch {
    throw new Error(`wsline binary not found or not executable: ${WSLINE_BIN} ` +
      '(build it with cargo build --release --bin wsline, or set WSLINE_BIN)');
  }
}

/** Rejects with a clear message if `promise` does not settle within `ms`. */
export function withTimeout(promise, ms, what) {
  let timer;
  const t = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms / 1000}s: ${what}`)), ms);
  });
  return Promise.race([promise, t]).finally(() => clearTimeout(timer));
}

export function deferred() {
  let resolve, reject;
  const promise = new Promise((res, rej) => { resolve = res; reject = rej; });
  return { promise, resolve, reject };
}

// ---- payloads ---------------------------------------------------------------

const TEXT_PATTERN = 'ws-line: a\u00e9\u00fc \u20ac\u2603 \u{1F600}\u{1F680} \u65e5\u672c ';

/** A string whose UTF-8 encoding is exactly `nbytes` long, multi-byte content included. */
export function makeText(nbytes) {
  const patLen = Buffer.byteLength(TEXT_PATTERN);
  const reps = Math.floor(nbytes / patLen);
  let s = TEXT_PATTERN.repeat(reps);
  let size = reps * patLen;
  for (const ch of TEXT_PATTERN) {
    const n = Buffer.byteLength(ch);
    if (size + n > nbytes) break;
    s += ch;
    size += n;
  }
  s += 'x'.repeat(nbytes - size);
  if (Buffer.byteLength(s) !== nbytes) throw new Error(`makeText(${nbytes}) is ${Buffer.byteLength(s)} bytes`);
  return s;
}

/** Deterministic pseudo-random bytes (xorshift32). */
export function makeBinary(nbytes, seed = 1) {
  const buf = Buffer.alloc(nbytes);
  let x = (nbytes * 2654435761 + seed * 97 + 1) >>> 0 || 1;
  for (let i = 0; i < nbytes; i++) {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    buf[i] = x & 0xff;
  }
  return buf;
}

export function describeMismatch(sentData, sentBinary, got) {
  if (got.isBinary !== sentBinary) {
    return `type mismatch: sent ${sentBinary ? 'binary' : 'text'}, got ${got.isBinary ? 'binary' : 'text'} ` +
      `(${got.data.length} bytes)`;
  }
  const exp = sentBinary ? sentData : Buffer.from(sentData, 'utf8');
  if (exp.length !== got.data.length) return `length mismatch: sent ${exp.length} bytes, got ${got.data.length}`;
  for (let i = 0; i < exp.length; i++) {
    if (exp[i] !== got.data[i]) return `content differs at byte ${i}`;
  }
  return null;
}

// ---- processes ---------------------------------------------------------------

const children = new Set();
export function killAll() {
  for (const c of children) {
    if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  }
  children.clear();
}
process.on('exit', killAll);

function track(child) {
  children.add(child);
  const closed = new Promise((resolve) => {
    child.on('close', (code, signal) => { children.delete(child); resolve({ code, signal }); });
    child.on('error', (err) => { children.delete(child); resolve({ code: null, signal: null, error: err }); });
  });
  return closed;
}

function tail(text, n = 20) {
  const lines = text.trim().split('\n').slice(-n);
  return lines.length && lines[0] !== '' ? lines.map((l) => `  ${l}`).join('\n') : '  (empty)';
}

/** `wsline echo --listen 127.0.0.1:0 ...extra`; resolves once the listening line is read. */
export async function startEcho(...extra) {
  const args = ['echo', '--listen', '127.0.0.1:0', ...extra];
  const child = spawn(WSLINE_BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const closed = track(child);
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (d) => { stderr += d; });
  const server = {
    child,
    closed,
    url: '',
    stderrTail: () => `server stderr:\n${tail(stderr)}`,
    async terminate(ms = EXIT_TIMEOUT_MS) {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      try {
        return await withTimeout(closed, ms, 'wsline echo to exit after SIGTERM');
      } catch (e) {
        child.kill('SIGKILL');
        throw e;
      }
    },
    kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    },
  };
  const firstLine = new Promise((resolve, reject) => {
    let buf = '';
    const onData = (d) => {
      buf += d;
      const i = buf.indexOf('\n');
      if (i >= 0) {
        child.stdout.off('data', onData);
        child.stdout.resume(); // keep draining
        resolve(buf.slice(0, i).replace(/\r$/, ''));
      }
    };
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', onData);
    closed.then((r) => reject(new Error(
      `wsline echo exited (status ${r.code}${r.error ? `, ${r.error.message}` : ''}) before printing ` +
      `the listening line\n${server.stderrTail()}`)));
  });
  let line;
  try {
    line = await withTimeout(firstLine, READY_TIMEOUT_MS, `'listening on' line from ${WSLINE_BIN} ${args.join(' ')}`);
  } catch (e) {
    server.kill();
    throw e;
  }
  const m = /^listening on (ws:\/\/(?:\d{1,3}(?:\.\d{1,3}){3}|\[[0-9A-Fa-f:.]+\]):(\d+))$/.exec(line);
  if (!m || Number(m[2]) === 0) {
    server.kill();
    throw new Error(`first stdout line is ${JSON.stringify(line)}, expected 'listening on ws://IP:PORT'`);
  }
  server.url = m[1];
  return server;
}

/** `wsline connect URL ...extra` with piped stdio. */
export function startConnect(url, ...extra) {
  const child = spawn(WSLINE_BIN, ['connect', url, ...extra], { stdio: ['pipe', 'pipe', 'pipe'] });
  const closed = track(child);
  let stderr = '';
  let outBuf = '';
  const lines = [];
  const waiters = [];
  let eof = false;
  child.stdin.on('error', () => {}); // EPIPE if wsline already exited: reported via exit status
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (d) => { stderr += d; });
  child.stdout.setEncoding('utf8');
  const flush = () => {
    while (waiters.length && (lines.length || eof)) waiters.shift()(lines.length ? lines.shift() : null);
  };
  child.stdout.on('data', (d) => {
    outBuf += d;
    let i;
    while ((i = outBuf.indexOf('\n')) >= 0) {
      lines.push(outBuf.slice(0, i));
      outBuf = outBuf.slice(i + 1);
    }
    flush();
  });
  child.stdout.on('end', () => {
    if (outBuf) lines.push(outBuf);
    outBuf = '';
    eof = true;
    flush();
  });
  return {
    child,
    get stderr() { return stderr; },
    stderrBlock: () => `wsline stderr:\n${tail(stderr)}`,
    write(s) { child.stdin.write(s); },
    end(s) { child.stdin.end(s); },
    /** next stdout line (without newline), null at EOF */
    nextLine(ms = 10000) {
      const p = new Promise((resolve) => { waiters.push(resolve); flush(); });
      return withTimeout(p, ms, `a stdout line from wsline connect\n${this.stderrBlock()}`);
    },
    /** wait for exit; resolves { code, signal, rest } with the stdout lines not read yet */
    async exit(ms = EXIT_TIMEOUT_MS) {
      let r;
      try {
        r = await withTimeout(closed, ms, `wsline connect to exit\n${this.stderrBlock()}`);
      } catch (e) {
        child.kill('SIGKILL');
        throw e;
      }
      const rest = lines.splice(0);
      return { ...r, rest };
    },
    kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    },
  };
}

// ---- a ws client with a message queue ------------------------------------------

/** Opens a ws client; resolves once open. `.next()` yields {data: Buffer, isBinary}. */
export function openClient(url, protocols = [], options = {}) {
  const ws = new WebSocket(url, protocols, { perMessageDeflate: true, maxPayload: 64 * 1024 * 1024, ...options });
  const queue = [];
  const waiters = [];
  const closed = deferred();
  let closeInfo = null;
  ws.on('message', (data, isBinary) => {
    const item = { data: Buffer.isBuffer(data) ? data : Buffer.concat(data), isBinary };
    if (waiters.length) waiters.shift().resolve(item); else queue.push(item);
  });
  ws.on('close', (code, reason) => {
    closeInfo = { code, reason: reason.toString() };
    closed.resolve(closeInfo);
    for (const w of waiters.splice(0)) w.reject(new Error(`connection closed (${code} ${closeInfo.reason})`));
  });
  ws.on('error', () => {}); // surfaced via close / open rejection
  const client = {
    ws,
    closed: closed.promise,
    next(ms = 30000) {
      if (queue.length) return Promise.resolve(queue.shift());
      if (closeInfo) return Promise.reject(new Error(`connection closed (${closeInfo.code} ${closeInfo.reason})`));
      const d = deferred();
      waiters.push(d);
      return withTimeout(d.promise, ms, 'an echoed message');
    },
  };
  const opened = new Promise((resolve, reject) => {
    ws.once('open', () => resolve(client));
    ws.once('unexpected-response', (_req, res) => reject(new Error(`handshake refused: HTTP ${res.statusCode}`)));
    ws.once('error', (e) => reject(e));
  });
  return withTimeout(opened, 10000, `WebSocket open to ${url}`);
}

export async function echoCheck(client, payload, isBinary, label = '') {
  client.ws.send(payload, { binary: isBinary });
  const got = await client.next();
  const err = describeMismatch(payload, isBinary, got);
  if (err) throw new Error(`${label}${err}`);
}

const short = (v) => {
  const s = typeof v === 'string' ? v : Buffer.isBuffer(v) ? `<${v.length} bytes>` : String(v);
  return s.length > 60 ? `${JSON.stringify(s.slice(0, 60))}... (${s.length} chars)` : JSON.stringify(s);
};

/** Compares two lists of strings; fails with a short message naming the first difference. */
export function assertSameList(actual, expected, what) {
  const n = Math.min(actual.length, expected.length);
  for (let i = 0; i < n; i++) {
    if (actual[i] !== expected[i]) {
      throw new Error(`${what}: item ${i} is ${short(actual[i])}, expected ${short(expected[i])}`);
    }
  }
  if (actual.length !== expected.length) {
    const extra = actual.length > expected.length
      ? `; first extra: ${short(actual[n])}` : `; first missing: ${short(expected[n])}`;
    throw new Error(`${what}: ${actual.length} items, expected ${expected.length}${extra}`);
  }
}
