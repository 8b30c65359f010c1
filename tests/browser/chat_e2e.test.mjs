// End to end: the demo chat (GET /) and the JavaScript client (GET /wsline.js)
// in headless Chromium (Debian's, driven by playwright-core) against a real
// `wsline serve` that this test starts, stops, pauses and restarts.
//
//   NODE_PATH=.cache/node/node_modules node --test tests/browser/chat_e2e.test.mjs
//
// WSLINE_BIN: the wsline binary (default target/release/wsline).
// WSLINE_CHROMIUM: the browser (default /usr/bin/chromium).
// WSLINE_E2E_OUT: where screenshots go (default .cache/browser-e2e).
//
// The hub listens on a fixed port picked at the start, so that it can be
// restarted on the same address. The pages are the chat itself; URL
// parameters set the client's timings (ping, pingTimeout, backoffBase, ...).
// Every wait is bounded; nothing sleeps to synchronise.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { WSLINE_BIN, REPO_ROOT, checkBin, withTimeout } from '../interop/node_common.mjs';
import { CHROMIUM_PATH, checkChromium, loadPlaywright, launchChromium } from '../interop/browser_common.mjs';

const OUT = process.env.WSLINE_E2E_OUT || path.join(REPO_ROOT, '.cache', 'browser-e2e');
const WAIT_MS = 15000; // in-browser waits for a message, a state, a member
const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };
// Heartbeat for the silent-link test: ping every 0.5 s, dead after 1 s without an answer.
const PING_MS = 500;
const PONG_TIMEOUT_MS = 1000;
// Fast reconnects for the tests (the defaults are 500 ms base, 30 s cap, 2 s restart spread).
const FAST = { backoffBase: 200, backoffCap: 1000, restartJitter: 500, connectTimeout: 1500 };

let pw;
let browser;
let port;
let hub; // the running `wsline serve`
const contexts = new Set();
const consoleLines = [];

// ---- the hub process --------------------------------------------------------------

const children = new Set();
process.on('exit', () => {
  for (const c of children) {
    try { c.kill('SIGCONT'); c.kill('SIGKILL'); } catch { /* gone */ }
  }
});

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const p = s.address().port;
      s.close(() => resolve(p));
    });
  });
}

/** `wsline serve --listen 127.0.0.1:PORT`; resolves once it prints its listening line. */
async function startHub(p) {
  let lastError;
  for (let attempt = 0; attempt < 5; attempt++) {
    const child = spawn(WSLINE_BIN, ['serve', '--listen', `127.0.0.1:${p}`], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.add(child);
    let stderr = '';
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (d) => { stderr += d; });
    const exited = new Promise((resolve) => child.on('close', (code, signal) => { children.delete(child); resolve({ code, signal }); }));
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
    try {
      const first = await withTimeout(line, 30000, `'listening on' from ${WSLINE_BIN} serve`);
      assert.equal(first, `listening on http://127.0.0.1:${p}`);
      return { child, pid: child.pid, exited, stderr: () => stderr };
    } catch (e) {
      lastError = e;
      child.kill('SIGKILL');
      await exited;
      if (!/in use|cannot listen/i.test(String(e.message))) break;
      await new Promise((r) => setTimeout(r, 300)); // the port is still held by the previous process
    }
  }
  throw lastError;
}

async function stopHub(h, ms = 15000) {
  if (!h || h.child.exitCode !== null || h.child.signalCode !== null) return h ? h.exited : null;
  h.child.kill('SIGCONT');
  h.child.kill('SIGTERM');
  return withTimeout(h.exited, ms, 'wsline serve to exit after SIGTERM');
}

const base = () => `http://127.0.0.1:${port}`;

async function apiPublish(channel, data) {
  const res = await withTimeout(fetch(`${base()}/api/publish`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ channel, data }),
  }), 10000, 'POST /api/publish');
  const body = await res.text();
  assert.equal(res.status, 200, `POST /api/publish: HTTP ${res.status} ${body}`);
  return JSON.parse(body).offset;
}

async function apiPresence(channel) {
  const res = await withTimeout(fetch(`${base()}/api/presence/${channel}`), 10000, 'GET /api/presence');
  assert.equal(res.status, 200);
  return (await res.json()).members;
}

// ---- pages --------------------------------------------------------------------------

function recentConsole() {
  const lines = consoleLines.slice(-15);
  return lines.length ? `browser console (last ${lines.length}):\n${lines.map((l) => `  ${l}`).join('\n')}` : 'browser console: (empty)';
}

/** Opens the chat as `nick` in `room` through the login form; resolves the page once present in the room. */
async function openChat(nick, room, { viewport = DESKTOP, query = {}, mobile = false } = {}) {
  const context = await withTimeout(browser.newContext({
    viewport, isMobile: mobile, hasTouch: mobile, deviceScaleFactor: mobile ? 2 : 1,
  }), 30000, 'a browser context');
  contexts.add(context);
  const page = await context.newPage();
  page.on('console', (m) => consoleLines.push(`[${nick}] ${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => consoleLines.push(`[${nick}] pageerror: ${e.message}`));
  const qs = new URLSearchParams(Object.entries(query).map(([k, v]) => [k, String(v)])).toString();
  const res = await page.goto(`${base()}/${qs ? `?${qs}` : ''}`, { timeout: 30000 });
  assert.equal(res.status(), 200, 'GET /');
  await page.fill('#nick', nick);
  await page.fill('#room', room);
  await page.click('#join');
  await waitState(page, 'open');
  await waitMembers(page, [nick]);
  return page;
}

/** Fails on any uncaught exception in a page so far (and forgets them). */
function assertNoPageErrors() {
  const errors = consoleLines.filter((l) => l.includes('pageerror:'));
  consoleLines.length = 0;
  assert.deepEqual(errors, [], 'uncaught exceptions in the pages');
}

async function closeAll() {
  for (const c of contexts) await c.close().catch(() => {});
  contexts.clear();
}

async function waitFor(page, what, fn, arg, ms = WAIT_MS) {
  try {
    await page.waitForFunction(fn, arg, { timeout: ms, polling: 50 });
  } catch (e) {
    const state = await page.evaluate(() => window.chat && window.chat.client && window.chat.client.state).catch(() => '?');
    throw new Error(`timed out after ${ms} ms waiting for ${what} (client state: ${state})\n${recentConsole()}`);
  }
}

function waitState(page, state, ms) {
  return waitFor(page, `state ${state}`, (s) => document.getElementById('status').dataset.state === s, state, ms);
}

/** Waits until every name in `nicks` is listed in the room's members. */
function waitMembers(page, nicks, exact = false) {
  return waitFor(page, `members ${nicks.join(', ')}`, ([want, ex]) => {
    const have = [...document.querySelectorAll('#members li')].map((li) => li.dataset.nick);
    return want.every((n) => have.includes(n)) && (!ex || have.length === want.length);
  }, [nicks, exact]);
}

/** Waits until the room shows a delivered (not pending) message with this text. */
function waitText(page, room, text, ms) {
  return waitFor(page, `message ${JSON.stringify(text)} in #${room}`, ([r, t]) =>
    [...document.querySelectorAll(`.messages[data-room="${r}"] .msg:not(.pending) .text`)].some((el) => el.textContent === t), [room, text], ms);
}

/** The delivered messages of a room: [{offset, nick, text, replayed}] in display order. */
function messages(page, room) {
  return page.evaluate((r) => [...document.querySelectorAll(`.messages[data-room="${r}"] .msg:not(.pending)`)].map((li) => ({
    offset: Number(li.dataset.offset),
    nick: li.querySelector('.nick').textContent,
    text: li.querySelector('.text').textContent,
    replayed: li.dataset.replayed || null,
  })), room);
}

async function say(page, text) {
  await page.fill('#text', text);
  await page.press('#text', 'Enter');
}

async function assertFits(page) {
  const w = await page.evaluate(() => ({ scroll: document.documentElement.scrollWidth, inner: window.innerWidth }));
  assert.ok(w.scroll <= w.inner, `the page is ${w.scroll}px wide on a ${w.inner}px screen`);
}

async function shot(page, name) {
  fs.mkdirSync(OUT, { recursive: true });
  const file = path.join(OUT, name);
  await page.screenshot({ path: file });
  console.log(`# screenshot: ${path.relative(REPO_ROOT, file)}`);
}

// ---- setup ------------------------------------------------------------------------------

before(async () => {
  checkBin();
  checkChromium();
  pw = loadPlaywright();
  port = await freePort();
  hub = await startHub(port);
  browser = await launchChromium(pw.chromium);
  console.log(`# wsline: ${WSLINE_BIN} serve on ${base()}; browser: ${CHROMIUM_PATH} ${browser.version()}; ` +
    `playwright-core ${pw.version}; screenshots: ${path.relative(REPO_ROOT, OUT) || OUT}`);
});

after(async () => {
  await closeAll();
  if (browser) await withTimeout(browser.close(), 20000, 'Chromium to close').catch((e) => console.log(`# ${e.message}`));
  if (hub) {
    const r = await stopHub(hub).catch(() => null);
    if (!r) hub.child.kill('SIGKILL');
  }
});

// ---- 1. chatting ------------------------------------------------------------------------------

test('two pages chat in a room: each sees the other\'s messages and presence; rooms and history', { timeout: 90000 }, async () => {
  try {
    const js = await fetch(`${base()}/wsline.js`);
    assert.equal(js.status, 200);
    assert.match(js.headers.get('content-type'), /^application\/javascript/);
    const alice = await openChat('alice', 'lobby');
    const bob = await openChat('bob', 'lobby', { viewport: PHONE, mobile: true });
    await waitMembers(alice, ['alice', 'bob'], true);
    await waitMembers(bob, ['alice', 'bob'], true);
    const members = await apiPresence('chat.lobby');
    assert.equal(members.length, 2, `hub presence: ${JSON.stringify(members)}`);

    await say(alice, 'hello from alice');
    await say(bob, 'hi alice, bob here: ça va? ✓');
    await say(alice, 'the <b>markup</b> stays text');
    for (const pg of [alice, bob]) {
      await waitText(pg, 'lobby', 'hello from alice');
      await waitText(pg, 'lobby', 'hi alice, bob here: ça va? ✓');
      await waitText(pg, 'lobby', 'the <b>markup</b> stays text');
    }
    const a = await messages(alice, 'lobby');
    const b = await messages(bob, 'lobby');
    assert.deepEqual(a.map((m) => [m.offset, m.nick, m.text]), b.map((m) => [m.offset, m.nick, m.text]), 'both pages show the same messages in the same order');
    assert.deepEqual(a.map((m) => m.nick), ['alice', 'bob', 'alice']);
    assert.equal(await alice.locator('.msg b').count(), 0, 'message text is not parsed as HTML');

    // rooms: bob opens #random and talks there; alice, in #lobby only, does not get it;
    // when alice joins #random she sees it as earlier history
    await bob.fill('#new-room', 'random');
    await bob.press('#new-room', 'Enter');
    await waitMembers(bob, ['bob'], true);
    await say(bob, 'anyone in random?');
    await waitText(bob, 'random', 'anyone in random?');
    assert.deepEqual((await messages(alice, 'lobby')).length, 3);
    await alice.fill('#new-room', 'random');
    await alice.press('#new-room', 'Enter');
    await waitText(alice, 'random', 'anyone in random?');
    const hist = await messages(alice, 'random');
    assert.equal(hist.find((m) => m.text === 'anyone in random?').replayed, 'history');
    await waitMembers(alice, ['alice', 'bob'], true);
    await waitMembers(bob, ['alice', 'bob'], true);
    // back to the lobby on both, then the screenshots
    await alice.click('#rooms li[data-room="lobby"] .go');
    await bob.click('#rooms li[data-room="lobby"] .go');
    await say(bob, 'see you in #random');
    await waitText(alice, 'lobby', 'see you in #random');
    await waitText(bob, 'lobby', 'see you in #random');
    await shot(alice, 'chat-desktop.png');
    await shot(bob, 'chat-phone.png');
    // the phone layout: nothing wider than the screen; the members open from the "2 here" button
    await assertFits(bob);
    assert.equal(await bob.locator('#members-panel').isVisible(), false, 'members are folded away on a phone');
    await bob.click('#here');
    await bob.locator('#members li[data-nick="alice"]').waitFor({ state: 'visible', timeout: WAIT_MS });
    await shot(bob, 'chat-phone-members.png');
    assertNoPageErrors();
  } finally {
    await closeAll();
  }
});

// ---- 2. recovery after the page's own connection drops --------------------------------------------

test('recovery: messages published while a page was away appear once, in order; its queued message is sent', { timeout: 90000 }, async () => {
  try {
    const carol = await openChat('carol', 'news', { query: FAST });
    const dave = await openChat('dave', 'news', { query: FAST });
    await waitMembers(carol, ['carol', 'dave'], true);
    await say(dave, 'before 1');
    await say(carol, 'before 2');
    await waitText(carol, 'news', 'before 2');
    await waitText(carol, 'news', 'before 1');
    const oldClient = await carol.evaluate(() => window.chat.me);

    // carol's socket drops (the test hook closes it; the hub keeps running) and stays away
    await carol.evaluate(() => window.chat.client._debugDrop(true));
    await waitState(carol, 'reconnecting');
    const lastSeen = await carol.evaluate(() => window.chat.rooms.get('news').sub.offset);
    await waitFor(carol, 'the reconnecting banner', () => !document.getElementById('banner').hidden && /Reconnecting/.test(document.getElementById('status-text').textContent));
    // the hub has seen her go
    await waitMembers(dave, ['dave'], true);
    assert.ok(!(await apiPresence('chat.news')).some((m) => m.client === oldClient), 'the old connection left the channel');

    // while she is away: 5 messages from the HTTP API, 2 from dave, and one carol types (queued)
    const away = [];
    for (let i = 1; i <= 3; i++) away.push(await apiPublish('chat.news', { type: 'text', nick: 'newsbot', text: `away ${i}` }));
    await say(dave, 'dave while carol is away');
    await waitText(dave, 'news', 'dave while carol is away');
    for (let i = 4; i <= 5; i++) away.push(await apiPublish('chat.news', { type: 'text', nick: 'newsbot', text: `away ${i}` }));
    await say(dave, 'dave again');
    await waitText(dave, 'news', 'dave again');
    await say(carol, 'typed while offline');
    await waitFor(carol, 'the queued message', () => [...document.querySelectorAll('.msg.pending .tag')].some((t) => t.textContent === 'queued'));
    assert.equal(await carol.evaluate(() => window.chat.client.queued), 1);
    await shot(carol, 'reconnecting-queued.png');

    // back: resubscribes with since/epoch, gets the 7 missed messages, then sends the queued one
    await carol.evaluate(() => window.chat.client._debugResume());
    await waitState(carol, 'open');
    await waitText(carol, 'news', 'away 5');
    await waitText(carol, 'news', 'typed while offline');
    await waitText(dave, 'news', 'typed while offline');
    await waitFor(carol, 'the recovery notice', () => !!document.querySelector('.sys[data-kind="recovery"][data-recovered="true"]'));
    const recovery = await carol.evaluate(() => {
      const r = window.chat.rooms.get('news').lastRecovery;
      return { recovered: r.recovered, missed: r.missed, resumed: r.resumed, epochChanged: r.epochChanged, since: r.since, offset: r.offset };
    });
    // 7 chat messages, plus any nickname hello published around the drop
    assert.deepEqual({ ...recovery, missed: undefined, offset: undefined },
      { recovered: true, missed: undefined, resumed: true, epochChanged: false, since: lastSeen, offset: undefined });
    assert.equal(recovery.missed, recovery.offset - lastSeen);
    assert.ok(recovery.missed >= 7, `missed ${recovery.missed}`);
    const notice = await carol.locator('.sys[data-kind="recovery"]').textContent();
    assert.equal(notice, `Reconnected: recovered ${recovery.missed} messages sent while you were away`);

    const c = await messages(carol, 'news');
    const d = await messages(dave, 'news');
    // the same messages as dave (who never left), once each, in offset order
    assert.deepEqual(c.map((m) => [m.offset, m.text]), d.map((m) => [m.offset, m.text]));
    const shown = c.map((m) => m.offset);
    assert.deepEqual(shown, [...shown].sort((x, y) => x - y), 'in order');
    assert.equal(new Set(shown).size, shown.length, 'no duplicates');
    // every offset the client delivered (the nickname hellos included): 1..N, each once, no gap
    const all = await carol.evaluate(() => window.chat.rooms.get('news').offsets);
    assert.deepEqual(all, Array.from({ length: all.length }, (_, i) => i + 1), `carol's delivered offsets: ${all}`);
    assert.ok(all.length >= recovery.offset, 'everything up to the offset at the resubscribe was delivered');
    const daveAll = await dave.evaluate(() => window.chat.rooms.get('news').offsets);
    assert.deepEqual(all.slice(0, daveAll.length), daveAll);
    for (let i = 1; i <= 5; i++) assert.equal(c.filter((m) => m.text === `away ${i}`).length, 1, `away ${i} shown once`);
    const recovered = c.filter((m) => m.replayed === 'recovered').map((m) => m.text);
    assert.deepEqual(recovered, ['away 1', 'away 2', 'away 3', 'dave while carol is away', 'away 4', 'away 5', 'dave again']);
    assert.deepEqual(away, c.filter((m) => m.text.startsWith('away ')).map((m) => m.offset), 'the offsets the API returned');
    assert.equal(c.filter((m) => m.text === 'typed while offline').length, 1);
    assert.equal(await carol.locator('.msg.pending').count(), 0, 'nothing left pending');
    const stats = await carol.evaluate(() => window.chat.client.stats);
    assert.equal(stats.duplicates, 0, `stats ${JSON.stringify(stats)}`);
    await waitMembers(dave, ['carol', 'dave'], true);
    await shot(carol, 'recovered.png');
    assertNoPageErrors();
  } finally {
    await closeAll();
  }
});

// ---- 3. a silent link (the hub stopped with SIGSTOP) ----------------------------------------------------

test(`silent link: with ping ${PING_MS} ms / timeout ${PONG_TIMEOUT_MS} ms the client detects a SIGSTOPped hub and recovers after SIGCONT`, { timeout: 90000 }, async () => {
  let stopped = false;
  try {
    const query = { ...FAST, ping: PING_MS, pingTimeout: PONG_TIMEOUT_MS };
    const erin = await openChat('erin', 'quiet', { query });
    await say(erin, 'still here?');
    await waitText(erin, 'quiet', 'still here?');
    // a few heartbeats go through first
    await waitFor(erin, 'two heartbeat intervals', (t) => performance.now() > t, await erin.evaluate((ms) => performance.now() + ms, 2 * PING_MS));
    assert.equal(await erin.evaluate(() => window.chat.client.state), 'open');

    const t0 = Date.now();
    process.kill(hub.pid, 'SIGSTOP');
    stopped = true;
    await waitState(erin, 'reconnecting', PING_MS + PONG_TIMEOUT_MS + 5000);
    const entry = await erin.evaluate(() => window.chat.stateLog.filter((s) => s.state === 'reconnecting').pop());
    const detectMs = entry.at - t0;
    console.log(`# dead link detected ${detectMs} ms after SIGSTOP (limit: ping ${PING_MS} + timeout ${PONG_TIMEOUT_MS} ms): ${entry.reason}`);
    assert.equal(entry.deadLink, true, `went reconnecting for another reason: ${JSON.stringify(entry)}`);
    assert.match(entry.reason, /no pong within 1000 ms/);
    // at most one interval until a ping goes out, then the timeout (plus timer slack)
    assert.ok(detectMs <= PING_MS + PONG_TIMEOUT_MS + 400, `detected after ${detectMs} ms, more than ping interval + timeout`);
    assert.ok(detectMs >= PONG_TIMEOUT_MS - PING_MS - 50, `detected after ${detectMs} ms: too early to be the heartbeat`);
    await waitFor(erin, 'the reconnecting banner', () => !document.getElementById('banner').hidden);
    await shot(erin, 'silent-link-reconnecting.png');
    // attempts hang (the kernel accepts, the process does not answer): each is abandoned after connectTimeout
    await waitFor(erin, 'a second connection attempt', () => window.chat.client.stats.connects >= 3, null, 10000);
    assert.equal(await erin.evaluate(() => window.chat.client.state), 'reconnecting');

    const t1 = Date.now();
    process.kill(hub.pid, 'SIGCONT');
    stopped = false;
    await waitState(erin, 'open', 15000);
    console.log(`# back open ${Date.now() - t1} ms after SIGCONT`);
    await waitFor(erin, 'the recovery notice', () => !!document.querySelector('.sys[data-kind="recovery"][data-recovered="true"]'));
    await say(erin, 'back again');
    await waitText(erin, 'quiet', 'back again');
    const m = await messages(erin, 'quiet');
    assert.deepEqual(m.map((x) => x.text), ['still here?', 'back again']);
    assertNoPageErrors();
  } finally {
    if (stopped) process.kill(hub.pid, 'SIGCONT');
    await closeAll();
  }
});

// ---- 4. a hub restart (SIGTERM: 1001 to every client; restarted on the same port) -------------------------

test('hub restart: pages get 1001, reconnect to the new process, report incomplete recovery, and chat again', { timeout: 120000 }, async () => {
  try {
    const frank = await openChat('frank', 'ops', { query: FAST });
    const grace = await openChat('grace', 'ops', { query: FAST, viewport: PHONE, mobile: true });
    await waitMembers(frank, ['frank', 'grace'], true);
    await say(frank, 'deploying now');
    await waitText(grace, 'ops', 'deploying now');

    const exit = await stopHub(hub);
    assert.equal(exit.code, 0, `wsline serve exit status after SIGTERM: ${JSON.stringify(exit)}\n${hub.stderr()}`);
    for (const pg of [frank, grace]) {
      await waitState(pg, 'reconnecting');
      const e = await pg.evaluate(() => window.chat.stateLog.filter((s) => s.state === 'reconnecting').pop());
      assert.equal(e.code, 1001, `close code seen by the page: ${JSON.stringify(e)}`);
    }
    await shot(grace, 'restart-reconnecting-phone.png');
    hub = await startHub(port);
    for (const pg of [frank, grace]) await waitState(pg, 'open', 20000);
    for (const pg of [frank, grace]) {
      await waitFor(pg, 'the incomplete-recovery notice', () => !!document.querySelector('.sys[data-kind="recovery"][data-recovered="false"]'));
      const r = await pg.evaluate(() => window.chat.rooms.get('ops').lastRecovery);
      assert.equal(r.recovered, false);
      assert.equal(r.epochChanged, true, 'the in-memory engine has a new epoch after a restart');
    }
    await waitMembers(frank, ['frank', 'grace'], true);
    await waitMembers(grace, ['frank', 'grace'], true);
    await say(grace, 'all good after the restart');
    await waitText(frank, 'ops', 'all good after the restart');
    const m = await messages(frank, 'ops');
    assert.deepEqual(m.map((x) => x.text), ['deploying now', 'all good after the restart']);
    await assertFits(grace);
    await shot(grace, 'restart-recovered-phone.png');
    assertNoPageErrors();
  } finally {
    await closeAll();
  }
});
