// Unit tests of the JavaScript client (crates/hub/static/wsline.js) in Node:
// the pure backoff / close-code / recovery-cursor logic, and the Client
// class against a fake hub on a fake clock (tests/browser/fakes.mjs), so
// every timing is exact and nothing sleeps.
//
//   node --test tests/browser/client_unit.test.mjs

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadClient, setup, flush } from './fakes.mjs';

const W = loadClient();

// ---- backoff ---------------------------------------------------------------------

test('backoffDelay: full jitter in [0, min(cap, base*2^attempt))', () => {
  const base = 500;
  const cap = 30000;
  for (let attempt = 0; attempt < 12; attempt++) {
    const ceiling = Math.min(cap, base * 2 ** attempt);
    assert.equal(W.backoffDelay(attempt, base, cap, () => 0), 0, `attempt ${attempt}, random 0`);
    const top = W.backoffDelay(attempt, base, cap, () => 0.999999);
    assert.ok(top < ceiling && top >= ceiling - 1, `attempt ${attempt}: top ${top}, ceiling ${ceiling}`);
    assert.equal(W.backoffDelay(attempt, base, cap, () => 0.5), Math.floor(ceiling / 2), `attempt ${attempt}, random 0.5`);
  }
  // huge attempt numbers stay at the cap (no Infinity/NaN)
  assert.equal(W.backoffDelay(10000, base, cap, () => 0.5), cap / 2);
  // a floor widens the spread (1001/4008) but never narrows it
  assert.equal(W.backoffDelay(0, base, cap, () => 0.5, 2000), 1000);
  assert.equal(W.backoffDelay(8, base, cap, () => 0.5, 2000), Math.floor(Math.min(cap, base * 256) / 2));
});

test('backoffDelay: real randomness spreads the delays (full jitter, not equal jitter)', () => {
  const samples = Array.from({ length: 2000 }, () => W.backoffDelay(3, 500, 30000));
  const ceiling = 4000;
  assert.ok(samples.every((d) => d >= 0 && d < ceiling && Number.isInteger(d)));
  const low = samples.filter((d) => d < ceiling / 4).length;
  const high = samples.filter((d) => d >= (3 * ceiling) / 4).length;
  // uniform: about 500 each; full jitter goes down to 0, unlike "equal jitter"
  assert.ok(low > 350 && high > 350, `low quarter ${low}, high quarter ${high}`);
});

test('Backoff: counts attempts, resets only after a stable connection', () => {
  let now = 0;
  const b = new W.Backoff({ base: 100, cap: 1000, stableAfter: 5000, random: () => 0.999, now: () => now });
  const ceilings = [];
  for (let i = 0; i < 6; i++) ceilings.push(b.next() + 1);
  assert.deepEqual(ceilings, [100, 200, 400, 800, 1000, 1000]);
  // a short-lived connection does not reset
  b.opened();
  now += 4999;
  b.closed();
  assert.equal(b.attempt, 6);
  // a stable one does
  b.opened();
  now += 5000;
  b.closed();
  assert.equal(b.attempt, 0);
  assert.equal(b.next() + 1, 100);
  // closed() without opened() (a failed attempt) changes nothing
  now += 100000;
  b.closed();
  assert.equal(b.attempt, 1);
});

test('closeAction: the hub close-code table', () => {
  const t = (code) => {
    const a = W.closeAction(code);
    return [a.reconnect, a.spread, a.refreshToken];
  };
  assert.deepEqual(t(1001), [true, true, false], '1001 server restart: reconnect with jitter');
  assert.deepEqual(t(1008), [false, false, false], '1008 abuse: do not reconnect');
  assert.deepEqual(t(1009), [true, false, false], '1009 too big: reconnect');
  assert.deepEqual(t(4001), [true, false, true], '4001 token expired: fresh token, then reconnect');
  assert.deepEqual(t(4008), [true, true, false], '4008 slow consumer: reconnect with jitter');
  assert.deepEqual(t(1006), [true, false, false], '1006 lost link: reconnect');
  assert.deepEqual(t(1011), [true, false, false]);
});

// ---- recovery cursor ----------------------------------------------------------------

test('Cursor: a fresh subscribe sends no since and starts after LATEST', () => {
  const c = new W.Cursor();
  assert.deepEqual(c.request(), {});
  const info = c.subscribed({ offset: 7, epoch: 'e1', recovered: false });
  assert.equal(info.resumed, false);
  assert.equal(info.initial, true);
  assert.equal(c.offset, 7);
  assert.equal(c.epoch, 'e1');
  assert.equal(c.accept(7), false, 'LATEST itself was published before the subscribe');
  assert.equal(c.accept(8), true);
  assert.equal(c.offset, 8);
});

test('Cursor: resubscribe with since+epoch; replay delivered once, in order; duplicates dropped', () => {
  const c = new W.Cursor();
  c.request();
  c.subscribed({ offset: 3, epoch: 'e1', recovered: false });
  for (const o of [4, 5]) assert.ok(c.accept(o));
  assert.deepEqual(c.request(), { since: 5, epoch: 'e1' });
  const info = c.subscribed({ offset: 9, epoch: 'e1', recovered: true });
  assert.deepEqual(
    { resumed: info.resumed, recovered: info.recovered, epochChanged: info.epochChanged, missed: info.missed, since: info.since, initial: info.initial },
    { resumed: true, recovered: true, epochChanged: false, missed: 4, since: 5, initial: false });
  // the replay (6..9), with a stray duplicate (5, 7) mixed in, then live 10
  const got = [5, 6, 7, 7, 8, 9, 10].filter((o) => c.accept(o));
  assert.deepEqual(got, [6, 7, 8, 9, 10]);
  assert.equal(c.replayUntil, 9);
});

test('Cursor: a changed epoch (hub restart) is incomplete recovery; live messages start after the new LATEST', () => {
  const c = new W.Cursor(12, 'old');
  assert.deepEqual(c.request(), { since: 12, epoch: 'old' });
  const info = c.subscribed({ offset: 2, epoch: 'new', recovered: false });
  assert.equal(info.recovered, false);
  assert.equal(info.epochChanged, true);
  assert.equal(info.missed, 0);
  assert.equal(c.offset, 2);
  assert.equal(c.epoch, 'new');
  assert.equal(c.accept(3), true, 'offsets restart low in the new epoch and are not taken for duplicates');
});

test('Cursor: history trimmed (same epoch): recovered false, what is left is still delivered', () => {
  const c = new W.Cursor(10, 'e');
  c.request();
  const info = c.subscribed({ offset: 300, epoch: 'e', recovered: false });
  assert.equal(info.recovered, false);
  assert.equal(info.epochChanged, false);
  assert.equal(info.missed, 290);
  assert.equal(c.accept(201), true, 'the oldest message still in history');
  assert.equal(c.accept(202), true);
});

test('Cursor: since without an epoch (history: true) replays from 0', () => {
  const c = new W.Cursor(0, null);
  assert.deepEqual(c.request(), { since: 0 });
  const info = c.subscribed({ offset: 4, epoch: 'e', recovered: true });
  assert.equal(info.resumed, true);
  assert.equal(info.initial, true);
  assert.deepEqual([1, 2, 3, 4].filter((o) => c.accept(o)), [1, 2, 3, 4]);
});

// ---- the client against the fake hub ------------------------------------------------

test('client: connects, subscribes, publishes, gets presence; state events', async () => {
  const { clock, hub, client, states } = setup({ pingInterval: 0 });
  const got = [];
  client.subscribe('room', (m) => got.push(m));
  await clock.advance(5);
  assert.equal(client.state, 'open');
  assert.deepEqual(states(), ['connecting', 'open']);
  assert.match(client.clientId, /^c\d+$/);
  const offset = await client.publish('room', { text: 'hi' });
  assert.equal(offset, 1);
  hub.publish('room', { text: 'from the API' });
  await flush();
  assert.deepEqual(got.map((m) => [m.offset, m.data.text, m.from, m.replayed]), [[1, 'hi', client.clientId, false], [2, 'from the API', null, false]]);
  const members = await client.presence('room');
  assert.deepEqual(members, [{ client: client.clientId, user: null }]);
  client.close();
  assert.deepEqual(states(), ['connecting', 'open', 'closed']);
  await assert.rejects(client.publish('room', 1), (e) => e.code === 'closed');
});

test('client: after a drop it resubscribes with since/epoch; messages published while away arrive once, in order', async () => {
  const { clock, hub, client, states } = setup({ pingInterval: 0, backoffBase: 1000 });
  const got = [];
  const recoveries = [];
  const sub = client.subscribe('room', (m) => got.push(m));
  sub.on('recovery', (r) => recoveries.push(r));
  await clock.advance(5);
  for (let i = 1; i <= 3; i++) hub.publish('room', `before ${i}`);
  await flush();
  const epoch = sub.epoch;
  hub.closeSocket(hub.last, 1006);
  assert.equal(client.state, 'reconnecting');
  for (let i = 1; i <= 5; i++) hub.publish('room', `away ${i}`);
  await clock.advance(2000);
  assert.equal(client.state, 'open');
  assert.deepEqual(states(), ['connecting', 'open', 'reconnecting', 'open']);
  const resub = hub.received.filter((r) => r.msg.op === 'subscribe').map((r) => r.msg);
  assert.equal(resub.length, 2);
  assert.equal(resub[0].since, undefined);
  assert.equal(resub[1].since, 3);
  assert.equal(resub[1].epoch, epoch);
  hub.publish('room', 'live');
  await flush();
  assert.deepEqual(got.map((m) => m.data), ['before 1', 'before 2', 'before 3', 'away 1', 'away 2', 'away 3', 'away 4', 'away 5', 'live']);
  assert.deepEqual(got.map((m) => m.offset), [1, 2, 3, 4, 5, 6, 7, 8, 9]);
  assert.deepEqual(got.map((m) => m.replayed), [false, false, false, true, true, true, true, true, false]);
  assert.equal(recoveries.length, 1);
  assert.equal(recoveries[0].recovered, true);
  assert.equal(recoveries[0].missed, 5);
});

test('client: duplicates from the hub (a replay overlapping what was seen) are dropped', async () => {
  const { clock, hub, client } = setup({ pingInterval: 0 });
  const got = [];
  client.subscribe('room', (m) => got.push(m.offset));
  await clock.advance(5);
  hub.publish('room', 'a');
  hub.publish('room', 'b');
  await flush();
  const ws = hub.last;
  // the same offsets again, out of a confused replay
  for (const o of [1, 2, 2]) ws.onmessage({ data: JSON.stringify({ op: 'message', channel: 'room', offset: o, data: 'dup', from: null }) });
  hub.publish('room', 'c');
  await flush();
  assert.deepEqual(got, [1, 2, 3]);
  assert.equal(client.stats.duplicates, 3);
});

test('client: a hub restart (1001, new epoch) is reported as incomplete recovery; reconnect spread by restartJitter', async () => {
  const { clock, hub, client } = setup({ pingInterval: 0, backoffBase: 100, restartJitter: 4000, random: () => 0.75 });
  const got = [];
  const recoveries = [];
  const retries = [];
  client.on('retry', (r) => retries.push(r));
  client.on('recovery', (r) => recoveries.push(r));
  client.subscribe('room', (m) => got.push(m.data));
  await clock.advance(5);
  hub.publish('room', 'old 1');
  hub.publish('room', 'old 2');
  await flush();
  hub.restart();
  assert.equal(client.state, 'reconnecting');
  assert.equal(retries[0].code, 1001);
  assert.equal(retries[0].delay, 3000, '0.75 of the 4000 ms restart spread, not of the 100 ms base');
  await clock.advance(2999);
  assert.equal(client.state, 'reconnecting');
  await clock.advance(10);
  assert.equal(client.state, 'open');
  assert.equal(recoveries.length, 1);
  assert.equal(recoveries[0].recovered, false);
  assert.equal(recoveries[0].epochChanged, true);
  hub.publish('room', 'new 1');
  await flush();
  assert.deepEqual(got, ['old 1', 'old 2', 'new 1'], 'offset 1 of the new epoch is not mistaken for a duplicate');
});

test('client: publishes made while reconnecting are queued (bounded) and sent in order once open', async () => {
  const { clock, hub, client } = setup({ pingInterval: 0, maxQueue: 3, backoffBase: 1000 });
  const got = [];
  client.subscribe('room', (m) => got.push(m.data));
  await clock.advance(5);
  hub.up = false;
  hub.closeSocket(hub.last, 1006);
  assert.equal(client.state, 'reconnecting');
  const p = [client.publish('room', 'q1'), client.publish('room', 'q2'), client.publish('room', 'q3')];
  await assert.rejects(client.publish('room', 'q4'), (e) => e.code === 'queue_full');
  assert.equal(client.queued, 3);
  await clock.advance(60000); // the hub is down: attempts fail, the queue waits
  assert.equal(client.queued, 3);
  assert.ok(hub.sockets.length > 3, 'it kept retrying');
  hub.up = true;
  await clock.advance(60000);
  assert.equal(client.state, 'open');
  assert.deepEqual(await Promise.all(p), [1, 2, 3]);
  assert.deepEqual(got, ['q1', 'q2', 'q3']);
  assert.equal(client.queued, 0);
});

test('client: a publish in flight when the link drops is rejected as disconnected', async () => {
  const { clock, hub, client } = setup({ pingInterval: 0 });
  await clock.advance(5);
  hub.silent = true; // the hub will not answer
  const p = client.publish('room', 'x');
  hub.silent = false;
  hub.closeSocket(hub.last, 1006);
  await assert.rejects(p, (e) => e.code === 'disconnected');
  client.close();
});

test('client: too-big publishes are refused locally (the hub would close with 1009)', async () => {
  const { clock, client } = setup({ pingInterval: 0, maxMessageSize: 1000 });
  await clock.advance(5);
  await assert.rejects(client.publish('room', 'x'.repeat(2000)), (e) => e.code === 'too_big');
  assert.equal(await client.publish('room', 'small'), 1);
});

test('client heartbeat: a silent link is declared dead within pingInterval + pingTimeout, then reconnects', async () => {
  const { clock, hub, client, events } = setup({ pingInterval: 500, pingTimeout: 1000, connectTimeout: 800, backoffBase: 100 });
  await clock.advance(5);
  // pongs keep it open
  await clock.advance(10000);
  assert.equal(client.state, 'open');
  const pings = hub.received.filter((r) => r.msg.op === 'ping').length;
  assert.ok(pings >= 19 && pings <= 21, `${pings} pings in 10 s at 500 ms`);
  // the hub stops (SIGSTOP): nothing answered, nothing closed
  hub.silent = true;
  const stoppedAt = clock.t;
  await clock.advance(1400);
  assert.equal(client.state, 'open', 'not before pingTimeout has passed since an unanswered ping');
  await clock.advance(200);
  assert.equal(client.state, 'reconnecting');
  const dead = events.find((e) => e.state === 'reconnecting');
  assert.equal(dead.deadLink, true);
  assert.ok(clock.t - stoppedAt <= 1500 + 100, 'detected within pingInterval + pingTimeout');
  assert.equal(client.stats.deadLinks, 1);
  // attempts hang while the hub is stopped: each is abandoned after connectTimeout
  await clock.advance(5000);
  assert.equal(client.state, 'reconnecting');
  assert.ok(hub.sockets.length >= 3, `${hub.sockets.length} sockets: new attempts were made`);
  assert.ok(hub.sockets.slice(0, -1).every((s) => s.readyState === 3), 'abandoned attempts were closed');
  hub.silent = false; // SIGCONT
  await clock.advance(5000);
  assert.equal(client.state, 'open');
});

test('client heartbeat: data still arriving (the pong behind it) keeps the link alive', async () => {
  const { clock, hub, client } = setup({ pingInterval: 500, pingTimeout: 1000 });
  client.subscribe('room', () => {});
  await clock.advance(5);
  const ws = hub.last;
  hub.silent = true; // no pongs...
  for (let i = 0; i < 20; i++) {
    // ...but messages keep coming
    ws.onmessage({ data: JSON.stringify({ op: 'message', channel: 'room', offset: 100 + i, data: i, from: null }) });
    await clock.advance(400);
  }
  assert.equal(client.state, 'open');
  await clock.advance(3000);
  assert.equal(client.state, 'reconnecting', 'then silence is a dead link');
});

test('client: 1008 (abuse) closes for good; no reconnect, queued publishes fail', async () => {
  const { clock, hub, client, states } = setup({ pingInterval: 0 });
  await clock.advance(5);
  hub.closeSocket(hub.last, 1008, 'publish rate limit abused');
  assert.equal(client.state, 'closed');
  await clock.advance(120000);
  assert.equal(hub.sockets.length, 1, 'no new connection');
  assert.deepEqual(states(), ['connecting', 'open', 'closed']);
  await assert.rejects(client.publish('room', 1), (e) => e.code === 'closed');
});

test('client: 4001 (token expired) asks getToken for a fresh token, then reconnects with it', async () => {
  let n = 0;
  const { clock, hub, client } = setup({ pingInterval: 0, getToken: async () => `tok${++n}` });
  await clock.advance(5);
  assert.equal(hub.last.url, 'ws://hub.test/ws?token=tok1');
  hub.closeSocket(hub.last, 4001, 'token expired');
  assert.equal(client.state, 'reconnecting');
  await clock.advance(2000);
  assert.equal(client.state, 'open');
  assert.equal(hub.last.url, 'ws://hub.test/ws?token=tok2');
  assert.equal(n, 2);
  // other closes keep the token
  hub.closeSocket(hub.last, 1001);
  await clock.advance(5000);
  assert.equal(hub.last.url, 'ws://hub.test/ws?token=tok2');
  assert.equal(n, 2);
});

test('client: 4001 without getToken cannot renew: closed', async () => {
  const { clock, hub, client } = setup({ pingInterval: 0, token: 'static' });
  await clock.advance(5);
  assert.equal(hub.last.url, 'ws://hub.test/ws?token=static');
  hub.closeSocket(hub.last, 4001);
  assert.equal(client.state, 'closed');
});

test('client: 4008 (slow consumer) reconnects with the restart spread', async () => {
  const { clock, hub, client } = setup({ pingInterval: 0, backoffBase: 100, restartJitter: 3000, random: () => 0.5 });
  const retries = [];
  client.on('retry', (r) => retries.push(r));
  await clock.advance(5);
  hub.closeSocket(hub.last, 4008, 'slow consumer');
  assert.equal(retries[0].delay, 1500);
  await clock.advance(1600);
  assert.equal(client.state, 'open');
});

test('client: backoff grows while the hub is down, and resets after a stable connection', async () => {
  const { clock, hub, client } = setup({ pingInterval: 0, backoffBase: 100, backoffCap: 1600, stableAfter: 10000, random: () => 0.9999 });
  const delays = [];
  client.on('retry', (r) => delays.push(r.delay));
  await clock.advance(5);
  hub.up = false;
  hub.closeSocket(hub.last, 1006);
  await clock.advance(10000);
  assert.deepEqual(delays.slice(0, 7).map((d) => d + 1), [100, 200, 400, 800, 1600, 1600, 1600]);
  hub.up = true;
  await clock.advance(2000);
  assert.equal(client.state, 'open');
  // a short connection: the next delay keeps growing from where it was
  delays.length = 0;
  hub.closeSocket(hub.last, 1006);
  await clock.advance(2000);
  assert.equal(delays[0] + 1, 1600);
  // a stable one (open >= stableAfter): back to the base
  await clock.advance(10000);
  delays.length = 0;
  hub.closeSocket(hub.last, 1006);
  assert.equal(delays[0] + 1, 100);
});

test('client: an attempt that never opens is abandoned after connectTimeout', async () => {
  const { clock, hub, client } = setup({ pingInterval: 0, connectTimeout: 3000, backoffBase: 100 });
  hub.silent = true;
  await clock.advance(2999);
  assert.equal(client.state, 'connecting');
  await clock.advance(2);
  assert.equal(client.state, 'reconnecting');
  assert.equal(hub.sockets[0].readyState, 3);
  hub.silent = false;
  await clock.advance(200);
  assert.equal(client.state, 'open');
});

test('client: unsubscribe stops delivery; presence joins and leaves reach the subscription', async () => {
  const { clock, hub, client } = setup({ pingInterval: 0 });
  // a second client on the same hub and clock
  const client2 = new W.Client({ url: 'ws://hub.test/ws', WebSocket: hub.socketClass(), now: clock.now, setTimeout: clock.setTimeout, clearTimeout: clock.clearTimeout, pingInterval: 0 });
  const got = [];
  const joins = [];
  const leaves = [];
  const sub = client.subscribe('room', (m) => got.push(m.data));
  sub.on('join', (m) => joins.push(m.client));
  sub.on('leave', (m) => leaves.push(m.client));
  await clock.advance(5);
  const sub2 = client2.subscribe('room', () => {});
  await clock.advance(5);
  assert.deepEqual(joins, [client2.clientId]);
  assert.equal((await client.presence('room')).length, 2);
  sub2.unsubscribe();
  await flush();
  assert.deepEqual(leaves, [client2.clientId]);
  hub.publish('room', 'one');
  sub.unsubscribe();
  hub.publish('room', 'two');
  await flush();
  assert.deepEqual(got, ['one']);
  client.close();
  client2.close();
});

test('client: a hub error for a request rejects it (rate_limited) or reaches the subscription (forbidden)', async () => {
  const { clock, hub, client } = setup({ pingInterval: 0 });
  await clock.advance(5);
  const ws = hub.last;
  const origSend = ws.send.bind(ws);
  const reply = (obj) => Promise.resolve().then(() => ws.onmessage({ data: JSON.stringify(obj) }));
  ws.send = (text) => {
    const m = JSON.parse(text);
    if (m.op === 'publish') return reply({ op: 'error', id: m.id, code: 'rate_limited', message: 'too many publishes: slow down' });
    if (m.op === 'subscribe' && m.channel === 'secret') return reply({ op: 'error', id: m.id, code: 'forbidden', message: 'the token does not allow this channel' });
    return origSend(text);
  };
  await assert.rejects(client.publish('room', 1), (e) => e.code === 'rate_limited');
  const errors = [];
  client.subscribe('secret', () => {}).on('error', (e) => errors.push(e.code));
  await flush();
  assert.deepEqual(errors, ['forbidden']);
  client.close();
});

test('client: the UMD file defines window.Wsline when there is no module system', async () => {
  const fs = await import('node:fs');
  const vm = await import('node:vm');
  const { CLIENT_PATH } = await import('./fakes.mjs');
  const sandbox = { console };
  sandbox.globalThis = sandbox;
  sandbox.window = sandbox;
  vm.createContext(sandbox);
  vm.runInContext(fs.readFileSync(CLIENT_PATH, 'utf8'), sandbox, { filename: 'wsline.js' });
  assert.equal(typeof sandbox.Wsline, 'object');
  assert.equal(typeof sandbox.Wsline.connect, 'function');
  assert.equal(sandbox.Wsline.backoffDelay(2, 100, 1000, () => 0.5), 200);
});
