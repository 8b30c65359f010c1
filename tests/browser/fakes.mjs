// Test doubles for the unit tests of crates/hub/static/wsline.js:
// a fake clock (the client takes setTimeout/clearTimeout/now/random as
// options), a fake WebSocket class, and a small in-process hub that follows
// the same rules as the real one (crates/hub/src/engine.rs): per-channel
// offsets, an epoch, bounded history, replay after `since` when the epoch
// matches, the `subscribed` reply before the replay, the publisher's
// `published` reply before its own copy, join/leave events, ping/pong.

import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const CLIENT_PATH = path.join(REPO_ROOT, 'crates', 'hub', 'static', 'wsline.js');

/** The browser client, loaded as Node loads any CommonJS file (its UMD wrapper). */
export function loadClient() {
  return createRequire(import.meta.url)(CLIENT_PATH);
}

/** Lets pending promise callbacks run. */
export const flush = () => new Promise((resolve) => setImmediate(resolve));

/** A manual clock: timers fire only inside advance(). */
export class Clock {
  constructor() {
    this.t = 1_000_000;
    this.timers = new Map();
    this.nextId = 1;
    this.now = () => this.t;
    this.setTimeout = (fn, ms) => {
      const id = this.nextId++;
      this.timers.set(id, { at: this.t + Math.max(0, ms || 0), fn, id });
      return id;
    };
    this.clearTimeout = (id) => { this.timers.delete(id); };
  }

  /** Moves time forward by ms, firing due timers in order (and letting promises settle between them). */
  async advance(ms) {
    const end = this.t + ms;
    for (;;) {
      await flush();
      let next = null;
      for (const timer of this.timers.values()) {
        if (timer.at <= end && (next === null || timer.at < next.at || (timer.at === next.at && timer.id < next.id))) next = timer;
      }
      if (!next) break;
      this.timers.delete(next.id);
      this.t = next.at;
      next.fn();
    }
    this.t = end;
    await flush();
  }
}

/**
 * An in-process hub. `socketClass()` returns a WebSocket class bound to it:
 * each new socket connects after `latency` ms of the fake clock when the hub
 * is up and not silent, else fails (up: false) or hangs (silent: true).
 */
export class FakeHub {
  constructor(clock, { historySize = 100 } = {}) {
    this.clock = clock;
    this.historySize = historySize;
    this.up = true;
    this.silent = false; // a stopped process: nothing is answered, nothing closes
    this.latency = 1;
    this.boot = 1;
    this.channels = new Map();
    this.sockets = []; // every socket ever made
    this.clientsMade = 0;
    this.received = []; // [{ws, msg}]
  }

  socketClass() {
    const hub = this;
    return class FakeWebSocket {
      constructor(url) {
        this.url = url;
        this.readyState = 0;
        this.closedByClient = null;
        this.onopen = this.onmessage = this.onclose = this.onerror = null;
        hub.sockets.push(this);
        hub.clock.setTimeout(() => hub._arrive(this), hub.latency);
      }
      send(text) {
        if (this.readyState !== 1) throw new Error('send on a socket that is not open');
        hub._request(this, JSON.parse(text));
      }
      close(code, reason) {
        if (this.readyState >= 2) return;
        this.readyState = 3;
        this.closedByClient = { code, reason };
        hub._gone(this);
      }
    };
  }

  get last() {
    return this.sockets[this.sockets.length - 1];
  }

  openSockets() {
    return this.sockets.filter((s) => s.readyState === 1);
  }

  channel(name) {
    if (!this.channels.has(name)) {
      this.channels.set(name, { offset: 0, epoch: `boot${this.boot}-${this.channels.size}`, history: [], subs: new Map() });
    }
    return this.channels.get(name);
  }

  _arrive(ws) {
    if (ws.readyState !== 0 || this.silent) return; // hangs: the client's connect timeout must act
    if (!this.up) {
      ws.readyState = 3;
      ws.onerror?.({});
      ws.onclose?.({ code: 1006, reason: '', wasClean: false });
      return;
    }
    ws.readyState = 1;
    ws.clientId = `c${++this.clientsMade}`;
    ws.onopen?.({});
    this._to(ws, { op: 'welcome', client: ws.clientId, user: null });
  }

  _to(ws, obj) {
    if (ws.readyState === 1 && !this.silent) ws.onmessage?.({ data: JSON.stringify(obj) });
  }

  _request(ws, m) {
    this.received.push({ ws, msg: m });
    if (this.silent) return;
    const withId = (o) => (m.id !== undefined ? { ...o, id: m.id } : o);
    switch (m.op) {
      case 'ping':
        this._to(ws, withId({ op: 'pong' }));
        break;
      case 'subscribe': {
        const ch = this.channel(m.channel);
        let recovered = false;
        let replay = [];
        if (m.since == null) recovered = false;
        else if (m.epoch != null && m.epoch !== ch.epoch) recovered = false;
        else if (m.since >= ch.offset) recovered = m.since === ch.offset;
        else {
          recovered = ch.history.length > 0 && ch.history[0].offset <= m.since + 1;
          replay = ch.history.filter((h) => h.offset > m.since);
        }
        this._to(ws, withId({ op: 'subscribed', channel: m.channel, offset: ch.offset, epoch: ch.epoch, recovered }));
        for (const h of replay) this._to(ws, h);
        if (!ch.subs.has(ws)) {
          for (const other of ch.subs.keys()) this._to(other, { op: 'join', channel: m.channel, member: { client: ws.clientId, user: null } });
          ch.subs.set(ws, true);
        }
        break;
      }
      case 'unsubscribe': {
        const ch = this.channel(m.channel);
        if (ch.subs.delete(ws)) {
          this._to(ws, withId({ op: 'unsubscribed', channel: m.channel }));
          for (const other of ch.subs.keys()) this._to(other, { op: 'leave', channel: m.channel, member: { client: ws.clientId, user: null } });
        }
        break;
      }
      case 'publish': {
        const offset = this.publish(m.channel, m.data, ws.clientId, () => this._to(ws, withId({ op: 'published', channel: m.channel, offset: this.channel(m.channel).offset })));
        void offset;
        break;
      }
      case 'presence': {
        const ch = this.channel(m.channel);
        this._to(ws, withId({ op: 'presence', channel: m.channel, members: [...ch.subs.keys()].map((s) => ({ client: s.clientId, user: null })) }));
        break;
      }
      default:
        this._to(ws, withId({ op: 'error', code: 'bad_request', message: `unknown op ${m.op}` }));
    }
  }

  /** Publishes as the HTTP API does (from: null) or as a client. Returns the offset. */
  publish(channel, data, from = null, beforeDelivery = null) {
    const ch = this.channel(channel);
    ch.offset += 1;
    const msg = { op: 'message', channel, offset: ch.offset, data, from };
    ch.history.push(msg);
    while (ch.history.length > this.historySize) ch.history.shift();
    beforeDelivery?.();
    for (const s of ch.subs.keys()) this._to(s, msg);
    return ch.offset;
  }

  _gone(ws) {
    for (const [name, ch] of this.channels) {
      if (ch.subs.delete(ws)) {
        for (const other of ch.subs.keys()) this._to(other, { op: 'leave', channel: name, member: { client: ws.clientId, user: null } });
      }
    }
  }

  /** The hub closes one socket with a close code (as a close frame would). */
  closeSocket(ws, code, reason = '') {
    if (ws.readyState >= 2) return;
    ws.readyState = 3;
    this._gone(ws);
    ws.onclose?.({ code, reason, wasClean: code !== 1006 });
  }

  /** Every client gets `code` (1001 for a restart). */
  closeAll(code, reason = '') {
    for (const ws of this.openSockets()) this.closeSocket(ws, code, reason);
  }

  /** A restart of the in-memory engine: 1001 to everyone, history gone, new epochs. */
  restart() {
    this.closeAll(1001, 'server shutting down');
    this.channels.clear();
    this.boot += 1;
  }
}

/** A client wired to a fake hub and clock; returns { clock, hub, client, W, events }. */
export function setup(options = {}, hubOptions = {}) {
  const W = loadClient();
  const clock = new Clock();
  const hub = new FakeHub(clock, hubOptions);
  const events = [];
  const client = new W.Client({
    url: 'ws://hub.test/ws',
    WebSocket: hub.socketClass(),
    now: clock.now,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    random: () => 0.5,
    ...options,
  });
  client.on('state', (s) => events.push(s));
  return { W, clock, hub, client, events, states: () => events.map((e) => e.state) };
}
