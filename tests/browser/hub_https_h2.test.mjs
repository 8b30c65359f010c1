// Headless Chromium against `wsline serve` with TLS: the page over https
// with HTTP/2, and its WebSocket as a stream of that same HTTP/2
// connection (RFC 8441: the hub announces SETTINGS_ENABLE_CONNECT_PROTOCOL),
// shown by wsline_connections_opened_total{transport="h2"}; then Chromium
// with HTTP/2 turned off (--disable-http2): the page over HTTP/1.1 with
// TLS and its WebSocket an HTTP/1.1 upgrade (transport="http1"). A
// self-signed certificate made here (Chromium: --ignore-certificate-errors).
//
//   NODE_PATH=.cache/node/node_modules node --test tests/browser/hub_https_h2.test.mjs

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { checkBin, withTimeout } from '../interop/node_common.mjs';
import { CHROMIUM_ARGS, CHROMIUM_PATH, LAUNCH_TIMEOUT_MS, checkChromium, loadPlaywright } from '../interop/browser_common.mjs';
import { makeCert, startTlsHub, metric } from '../interop/hub_tls_common.mjs';

let cert;
let hub;
let pw;

before(async () => {
  checkBin();
  checkChromium();
  pw = loadPlaywright();
  cert = makeCert();
  hub = await startTlsHub(cert);
});

after(async () => {
  if (hub) await hub.stop();
  if (cert) cert.remove();
});

const H2 = 'wsline_connections_opened_total{transport="h2"}';
const H1 = 'wsline_connections_opened_total{transport="http1"}';

/** Loads the hub's page in a Chromium started with `extra` arguments; the
 * page's HTTP version and the first message of a WebSocket it opens. */
async function loadPageAndOpenWebSocket(extra) {
  const browser = await withTimeout(pw.chromium.launch({
    executablePath: CHROMIUM_PATH,
    args: [...CHROMIUM_ARGS, '--ignore-certificate-errors', ...extra],
    timeout: LAUNCH_TIMEOUT_MS,
  }), LAUNCH_TIMEOUT_MS + 5000, 'Chromium to start');
  try {
    const context = await browser.newContext({ ignoreHTTPSErrors: true });
    const page = await context.newPage();
    const response = await page.goto(`https://localhost:${hub.port}/`, { timeout: 15000 });
    assert.equal(response.status(), 200);
    const protocol = await page.evaluate(() => performance.getEntriesByType('navigation')[0].nextHopProtocol);
    const op = await page.evaluate(() => new Promise((resolve, reject) => {
      const ws = new WebSocket(`wss://${location.host}/ws`);
      const timer = setTimeout(() => reject(new Error('no message within 10 s')), 10000);
      ws.onmessage = (e) => { clearTimeout(timer); resolve(JSON.parse(e.data).op); ws.close(1000); };
      ws.onerror = () => { clearTimeout(timer); reject(new Error('WebSocket error')); };
    }));
    await context.close();
    return { protocol, op };
  } finally {
    await browser.close();
  }
}

test('Chromium: the page over https with HTTP/2, its WebSocket over HTTP/2', async () => {
  const h2 = await metric(hub.port, cert, H2);
  const h1 = await metric(hub.port, cert, H1);
  const { protocol, op } = await loadPageAndOpenWebSocket([]);
  assert.equal(protocol, 'h2');
  assert.equal(op, 'welcome');
  assert.ok(await metric(hub.port, cert, H2) > h2, 'a WebSocket over HTTP/2 was opened');
  assert.equal(await metric(hub.port, cert, H1), h1, 'no HTTP/1.1 upgrade');
});

test('Chromium without HTTP/2: the page over HTTP/1.1 with TLS, its WebSocket an HTTP/1.1 upgrade', async () => {
  const h2 = await metric(hub.port, cert, H2);
  const h1 = await metric(hub.port, cert, H1);
  const { protocol, op } = await loadPageAndOpenWebSocket(['--disable-http2']);
  assert.equal(protocol, 'http/1.1');
  assert.equal(op, 'welcome');
  assert.ok(await metric(hub.port, cert, H1) > h1, 'an HTTP/1.1 upgrade was made');
  assert.equal(await metric(hub.port, cert, H2), h2, 'no WebSocket over HTTP/2');
});
