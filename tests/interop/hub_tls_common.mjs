// Helpers for the tests of `wsline serve` with TLS (node_hub_tls.test.mjs,
// tests/browser/hub_https_h2.test.mjs): a self-signed certificate for
// localhost made with the openssl command, a hub started on it, its
// /metrics read over HTTPS. Every wait is bounded.

import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { WSLINE_BIN, withTimeout, READY_TIMEOUT_MS, EXIT_TIMEOUT_MS } from './node_common.mjs';

/** A fresh directory with cert.pem and key.pem (P-256, localhost and 127.0.0.1). */
export function makeCert() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wsline-hub-tls-'));
  const cert = path.join(dir, 'cert.pem');
  const key = path.join(dir, 'key.pem');
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=localhost',
    '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1',
  ], { stdio: 'ignore' });
  return { dir, cert, key, remove: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

/** `wsline serve --listen 127.0.0.1:0 --tls-cert --tls-key`; resolves with its port once listening. */
export async function startTlsHub(cert) {
  const child = spawn(WSLINE_BIN, ['serve', '--listen', '127.0.0.1:0', '--tls-cert', cert.cert, '--tls-key', cert.key],
    { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (d) => { stderr += d; });
  const exited = new Promise((resolve) => child.on('close', (code, signal) => resolve({ code, signal })));
  const line = new Promise((resolve, reject) => {
    let buf = '';
    child.stdout.setEncoding('utf8');
    const onData = (d) => {
      buf += d;
      const i = buf.indexOf('\n');
      if (i >= 0) {
        child.stdout.off('data', onData);
        child.stdout.resume();
        resolve(buf.slice(0, i).trim());
      }
    };
    child.stdout.on('data', onData);
    exited.then((r) => reject(new Error(`wsline serve exited (${r.code ?? r.signal}) before listening: ${stderr.trim()}`)));
  });
  let first;
  try {
    first = await withTimeout(line, READY_TIMEOUT_MS, `'listening on' from ${WSLINE_BIN} serve`);
  } catch (e) {
    child.kill('SIGKILL');
    throw e;
  }
  const m = /^listening on https:\/\/127\.0\.0\.1:(\d+)$/.exec(first);
  if (!m) {
    child.kill('SIGKILL');
    throw new Error(`first line ${JSON.stringify(first)}, expected 'listening on https://127.0.0.1:PORT'`);
  }
  return {
    port: Number(m[1]),
    stderr: () => stderr,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      return withTimeout(exited, EXIT_TIMEOUT_MS, 'wsline serve to exit after SIGTERM');
    },
  };
}

/** GET /metrics over HTTPS (certificate of `cert` trusted); the value of `series`. */
export async function metric(port, cert, series) {
  const text = await withTimeout(new Promise((resolve, reject) => {
    https.get({ host: '127.0.0.1', port, path: '/metrics', ca: fs.readFileSync(cert.cert), servername: 'localhost', agent: false },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d) => { body += d; });
        res.on('end', () => resolve(body));
      }).on('error', reject);
  }), 10000, 'GET /metrics');
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  if (!line) throw new Error(`no ${series} in /metrics`);
  return Number(line.slice(series.length + 1));
}
