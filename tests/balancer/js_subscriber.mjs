// One subscriber of the balancer tests (crates/cli/tests/balancer.rs) that
// is the project's JavaScript client (crates/hub/static/wsline.js) in Node,
// with npm's `ws` as its WebSocket: it subscribes to a channel and, when its
// node goes away, reconnects through the balancer and resubscribes with
// `since`/`epoch` by itself, as a browser page would.
//
//   NODE_PATH=.cache/node/node_modules node tests/balancer/js_subscriber.mjs ws://LB/ws CHANNEL
//
// It reports on stdout, one JSON object a line, what the application sees:
//   {"ev":"ready"}                        first subscribed
//   {"ev":"message","offset":N,"data":…}  each message delivered
//   {"ev":"subscribed","recovered":B,"resumed":B,"since":N,"offset":N}
//   {"ev":"lost","code":N,"reason":S}     the connection ended; it will reconnect
//   {"ev":"open"}                         each connection opened
//   {"ev":"closed","code":N,"reason":S}   it stopped for good (a failure)
//   {"ev":"done"}                         it has every offset up to the target
// The target comes on stdin, one line with the last offset to wait for.

import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import readline from 'node:readline';

const require = createRequire(import.meta.url);
const here = path.dirname(fileURLToPath(import.meta.url));
const W = require(path.join(here, '../../crates/hub/static/wsline.js'));
const WebSocket = require('ws');

const [url, channel] = process.argv.slice(2);
if (!url || !channel) {
  console.error('usage: js_subscriber.mjs WS_URL CHANNEL');
  process.exit(2);
}

const say = (o) => process.stdout.write(JSON.stringify(o) + '\n');

let target = null;
let last = null;
let ready = false;
const finishIfDone = () => {
  if (target != null && last != null && last >= target) {
    say({ ev: 'done' });
    client.close(1000, 'done');
    process.exit(0);
  }
};

const client = new W.Client({ url, WebSocket });
client.on('state', (s) => {
  if (s.state === 'open') say({ ev: 'open' });
  else if (s.state === 'reconnecting') say({ ev: 'lost', code: s.code, reason: s.reason || '' });
  else if (s.state === 'closed' && !s.byClient) {
    say({ ev: 'closed', code: s.code, reason: s.reason || '' });
    process.exit(1);
  }
});
const sub = client.subscribe(channel, (m) => {
  say({ ev: 'message', offset: m.offset, data: m.data });
  last = last == null ? m.offset : Math.max(last, m.offset);
  finishIfDone();
});
sub.on('subscribed', (info) => {
  say({ ev: 'subscribed', recovered: info.recovered, resumed: info.resumed, since: info.since, offset: info.offset });
  if (last == null) last = info.offset;
  if (!ready) {
    ready = true;
    say({ ev: 'ready' });
  }
  finishIfDone();
});
sub.on('error', (e) => say({ ev: 'error', message: String(e && e.message ? e.message : e) }));

readline.createInterface({ input: process.stdin }).on('line', (line) => {
  const n = Number(line.trim());
  if (Number.isFinite(n)) {
    target = n;
    finishIfDone();
  }
});
