// `wsline serve` with TLS against independent peers: Node's `ws` over
// wss:// (HTTP/1.1 upgrade), and curl publishing several times on one
// keep-alive connection over HTTP/2 and over HTTP/1.1 (curl -v says
// "Re-using existing connection"). A self-signed certificate made here.
//
//   NODE_PATH=.cache/node/node_modules node --test tests/interop/node_hub_tls.test.mjs

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import { WebSocket, checkBin, withTimeout } from './node_common.mjs';
import { makeCert, startTlsHub, metric } from './hub_tls_common.mjs';

let cert;
let hub;

before(async () => {
  checkBin();
  cert = makeCert();
  hub = await startTlsHub(cert);
});

after(async () => {
  if (hub) await hub.stop();
  if (cert) cert.remove();
});

test('node ws: wss:// to the hub, welcome, subscribe, publish', async () => {
  const ws = new WebSocket(`wss://localhost:${hub.port}/ws`, { ca: fs.readFileSync(cert.cert) });
  const messages = [];
  const waiters = [];
  ws.on('message', (data) => {
    messages.push(JSON.parse(String(data)));
    while (waiters.length) waiters.shift()();
  });
  const next = async (what) => {
    while (!messages.length) await withTimeout(new Promise((r) => waiters.push(r)), 10000, what);
    return messages.shift();
  };
  await withTimeout(new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); }), 10000, 'wss open');
  assert.equal((await next('welcome')).op, 'welcome');
  ws.send(JSON.stringify({ op: 'subscribe', channel: 'n', id: 1 }));
  assert.equal((await next('subscribed')).op, 'subscribed');
  ws.send(JSON.stringify({ op: 'publish', channel: 'n', data: 'hi', id: 2 }));
  const got = [await next('published'), await next('the message')];
  assert.ok(got.some((m) => m.data === 'hi'), JSON.stringify(got));
  ws.close(1000);
  await withTimeout(new Promise((r) => ws.once('close', r)), 10000, 'close');
  assert.ok(await metric(hub.port, cert, 'wsline_connections_opened_total{transport="http1"}') >= 1);
});

function curl(args) {
  return withTimeout(new Promise((resolve, reject) => {
    execFile('curl', args, { timeout: 10000 }, (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve({ stdout, stderr })));
  }), 15000, `curl ${args.join(' ')}`);
}

for (const version of ['--http2', '--http1.1']) {
  test(`curl ${version}: three publishes on one keep-alive connection`, async () => {
    const url = `https://localhost:${hub.port}/api/publish`;
    const before = await metric(hub.port, cert, 'wsline_publishes_total');
    const { stdout, stderr } = await curl(['-sv', version, '--cacert', cert.cert,
      '-H', 'Content-Type: application/json', '-d', '{"channel":"c","data":1}', url, url, url]);
    const offsets = stdout.match(/\{"offset":\d+\}/g) || [];
    assert.equal(offsets.length, 3, stdout);
    const reused = (stderr.match(/Re-using existing connection/g) || []).length;
    assert.equal(reused, 2, stderr);
    assert.match(stderr, version === '--http2' ? /ALPN: server accepted h2/ : /ALPN: server accepted http\/1\.1/);
    assert.equal(await metric(hub.port, cert, 'wsline_publishes_total'), before + 3);
  });
}
