/*! wsline.js: the JavaScript client of the wsline hub (`wsline serve`).
 *
 * No dependencies, no build step. In a page, <script src="/wsline.js">
 * defines `window.Wsline`; in Node, `require()` returns the same object.
 * The API is documented in docs/js-client.md; in short:
 *
 *   const client = Wsline.connect({ url: 'ws://127.0.0.1:8080/ws' });
 *   client.on('state', (s) => console.log(s.state));   // connecting, open, reconnecting, closed
 *   const sub = client.subscribe('news', (msg) => console.log(msg.offset, msg.data));
 *   sub.on('recovery', (r) => { if (!r.recovered) console.warn('some messages were missed'); });
 *   await client.publish('news', { text: 'hi' });      // resolves with the offset
 *   const members = await client.presence('news');    // [{ client, user }]
 *
 * What it does for the app:
 * - Heartbeat: a {"op":"ping"} every `pingInterval` ms; when nothing at all
 *   (no pong, no other message) arrives within `pingTimeout` ms of a ping,
 *   the link is dead: the socket is dropped and a reconnect scheduled.
 * - Reconnect: exponential backoff with full jitter (a random delay in
 *   [0, min(cap, base * 2^attempt))), the attempt count reset once a
 *   connection has stayed open `stableAfter` ms, and the hub's close codes:
 *   1001 (restart) and 4008 (slow consumer) reconnect with a spread of at
 *   least `restartJitter` ms; 1008 (abuse) does not reconnect; 4001 (token
 *   expired) asks `getToken()` for a fresh token, then reconnects.
 * - Recovery: each subscription remembers the last offset and epoch it saw
 *   and resubscribes with `since`/`epoch`, so messages published while away
 *   arrive once, in order (anything at or below the last offset is
 *   dropped as a duplicate); a `recovery` event says whether the hub could
 *   replay everything.
 * - A bounded queue of publishes made while not connected, sent once open.
 */
(function (root, factory) {
  'use strict';
  var api = factory(root);
  if (typeof module === 'object' && module && module.exports) {
    module.exports = api;
  } else if (root) {
    root.Wsline = api;
  }
})(typeof globalThis !== 'undefined' ? globalThis : this, function (root) {
  'use strict';

  const VERSION = '0.1.0';

  // Where this script was loaded from, so that a page on another origin
  // that embeds <script src="http://hub:8080/wsline.js"> connects to that
  // hub by default.
  const SCRIPT_SRC = (() => {
    try {
      const s = root.document && root.document.currentScript;
      return s && s.src ? s.src : null;
    } catch (e) {
      return null;
    }
  })();

  const DEFAULTS = Object.freeze({
    url: null, //             ws(s)://host/ws; default: the hub that served this script
    token: null, //           a JWT, sent as ?token=
    getToken: null, //        () => token | Promise<token>: at the start when `token` is unset, and after 4001
    pingInterval: 20000, //   ms between heartbeat pings; 0 turns the heartbeat off
    pingTimeout: 10000, //    ms without any message after a ping before the link counts as dead
    connectTimeout: 10000, // ms for a connection attempt to open
    backoffBase: 500, //      ms: the first retry waits up to this long
    backoffCap: 30000, //     ms: no retry waits longer than this
    stableAfter: 10000, //    ms: a connection open this long resets the backoff
    restartJitter: 2000, //   ms: after 1001/4008, reconnects spread over at least this
    maxQueue: 100, //         publishes kept while not connected
    maxMessageSize: 65536, // bytes: larger publishes are refused here (the hub would close with 1009)
    autoConnect: true, //     connect at once (else call client.connect())
    WebSocket: null, //       the WebSocket class (default: the global one)
    // Seams for tests; the defaults are the real ones.
    random: null,
    now: null,
    setTimeout: null,
    clearTimeout: null,
  });

  // ---- pure parts (unit tested in Node) ------------------------------------

  /**
   * The delay before retry number `attempt` (0-based): full jitter, a
   * uniform random value in [0, min(cap, base * 2^attempt)), never less
   * than a spread of `floor` (the ceiling is raised to `floor`).
   */
  function backoffDelay(attempt, base, cap, random, floor) {
    const exp = Math.min(Math.max(0, attempt | 0), 52);
    const ceiling = Math.max(floor || 0, Math.min(cap, base * Math.pow(2, exp)));
    return Math.floor((random || Math.random)() * ceiling);
  }

  /**
   * Reconnect backoff state: `next()` gives the next delay and counts the
   * attempt; `opened()`/`closed()` bracket a connection, and a connection
   * that stayed open `stableAfter` ms resets the count.
   */
  class Backoff {
    constructor(opts) {
      const o = opts || {};
      this.base = o.base != null ? o.base : DEFAULTS.backoffBase;
      this.cap = o.cap != null ? o.cap : DEFAULTS.backoffCap;
      this.stableAfter = o.stableAfter != null ? o.stableAfter : DEFAULTS.stableAfter;
      this.random = o.random || Math.random;
      this.now = o.now || Date.now;
      this.attempt = 0;
      this.openedAt = null;
    }
    /** The delay for the next retry (at least a spread of `floor` ms). */
    next(floor) {
      const d = backoffDelay(this.attempt, this.base, this.cap, this.random, floor);
      this.attempt += 1;
      return d;
    }
    /** A connection opened. */
    opened() {
      this.openedAt = this.now();
    }
    /** The connection ended: resets the count if it had been stable. */
    closed() {
      if (this.openedAt !== null && this.now() - this.openedAt >= this.stableAfter) this.attempt = 0;
      this.openedAt = null;
    }
    reset() {
      this.attempt = 0;
    }
  }

  /**
   * What to do after the connection ended with `code` (a WebSocket close
   * code; 1006 for a lost link, a failed attempt or a dead heartbeat).
   * Returns { reconnect, spread, refreshToken, reason }.
   */
  function closeAction(code) {
    switch (code) {
      case 1001:
        return { reconnect: true, spread: true, refreshToken: false, reason: 'server restarting' };
      case 1008:
        return { reconnect: false, spread: false, refreshToken: false, reason: 'closed for abuse (policy violation)' };
      case 1009:
        return { reconnect: true, spread: false, refreshToken: false, reason: 'a message was too big' };
      case 4001:
        return { reconnect: true, spread: false, refreshToken: true, reason: 'token expired' };
      case 4008:
        return { reconnect: true, spread: true, refreshToken: false, reason: 'too slow to read (slow consumer)' };
      default:
        return { reconnect: true, spread: false, refreshToken: false, reason: 'connection lost' };
    }
  }

  /**
   * One channel's position: the last offset delivered and its epoch.
   *
   * request() gives the fields for the next subscribe; subscribed(reply)
   * takes the hub's {"op":"subscribed"} and says what recovery achieved;
   * accept(offset) is true for a message to deliver, false for one already
   * delivered (a duplicate).
   */
  class Cursor {
    constructor(since, epoch) {
      this.offset = since != null ? since : null;
      this.epoch = epoch != null ? epoch : null;
      this.replayUntil = 0; // messages up to this offset are replays
      this.sent = null;
      this.confirmations = 0;
    }
    /** {since?, epoch?} for the subscribe request (remembered for subscribed()). */
    request() {
      const r = {};
      if (this.offset !== null) {
        r.since = this.offset;
        if (this.epoch !== null) r.epoch = this.epoch;
      }
      this.sent = r;
      return r;
    }
    /**
     * The hub answered {offset: LATEST, epoch, recovered}. Returns
     * { resumed, recovered, epochChanged, since, offset, epoch, missed, initial }:
     * resumed when `since` was sent; missed is how many messages the hub
     * will replay at most (LATEST - since, same epoch only).
     */
    subscribed(reply) {
      const sent = this.sent || {};
      const resumed = sent.since != null;
      const epochChanged = sent.epoch != null && reply.epoch !== sent.epoch;
      let missed = 0;
      if (resumed && !epochChanged && sent.since <= reply.offset) {
        // The hub replays what it still has in (since, LATEST]: keep the
        // cursor at `since` so those are delivered.
        this.offset = sent.since;
        missed = reply.offset - sent.since;
        this.replayUntil = reply.offset;
      } else {
        // Nothing is replayed: live messages start after LATEST.
        this.offset = reply.offset;
        this.replayUntil = 0;
      }
      this.epoch = reply.epoch;
      this.confirmations += 1;
      return {
        resumed,
        recovered: !!reply.recovered,
        epochChanged,
        since: resumed ? sent.since : null,
        offset: reply.offset,
        epoch: reply.epoch,
        missed,
        initial: this.confirmations === 1,
      };
    }
    /** True when a message at `offset` is new (and advances the cursor). */
    accept(offset) {
      if (typeof offset !== 'number') return true;
      if (this.offset !== null && offset <= this.offset) return false;
      this.offset = offset;
      return true;
    }
  }

  // ---- events ---------------------------------------------------------------

  class Emitter {
    constructor() {
      this._listeners = new Map();
    }
    /** Adds a listener; returns a function that removes it. */
    on(event, fn) {
      if (typeof fn !== 'function') throw new TypeError('listener must be a function');
      if (!this._listeners.has(event)) this._listeners.set(event, []);
      this._listeners.get(event).push(fn);
      return () => this.off(event, fn);
    }
    off(event, fn) {
      const list = this._listeners.get(event);
      if (!list) return;
      const i = list.indexOf(fn);
      if (i >= 0) list.splice(i, 1);
    }
    once(event, fn) {
      const off = this.on(event, (...args) => {
        off();
        fn(...args);
      });
      return off;
    }
    _emit(event, ...args) {
      const list = this._listeners.get(event);
      if (!list || !list.length) return;
      for (const fn of list.slice()) {
        try {
          fn(...args);
        } catch (e) {
          // A failing listener must not break the client.
          if (root.console) root.console.error('wsline: a "' + event + '" listener threw', e);
        }
      }
    }
  }

  function wslineError(code, message) {
    const e = new Error(message);
    e.code = code;
    return e;
  }

  function utf8Length(s) {
    let n = 0;
    for (let i = 0; i < s.length; i++) {
      const c = s.charCodeAt(i);
      if (c < 0x80) n += 1;
      else if (c < 0x800) n += 2;
      else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
        n += 4;
        i++;
      } else n += 3;
    }
    return n;
  }

  function defaultUrl() {
    const base = SCRIPT_SRC || (root.location && root.location.href);
    if (!base) throw new Error('wsline: no url given and no page location to derive one from');
    const u = new URL('/ws', base);
    u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
    return u.toString();
  }

  // ---- subscription -----------------------------------------------------------

  /**
   * A channel the client is subscribed to. Events: message(msg),
   * subscribed(info), recovery(info), join(member), leave(member), error(err).
   */
  class Subscription extends Emitter {
    constructor(client, channel, opts) {
      super();
      this.client = client;
      this.channel = channel;
      const since = opts.since != null ? opts.since : opts.history ? 0 : null;
      this.cursor = new Cursor(since, opts.epoch);
      this.active = true;
      this.confirmed = false; // subscribed on the current connection
      this._reqId = null;
    }
    /** The last offset delivered (null before the first), for persisting. */
    get offset() {
      return this.cursor.offset;
    }
    /** The channel's history epoch as last seen. */
    get epoch() {
      return this.cursor.epoch;
    }
    publish(data) {
      return this.client.publish(this.channel, data);
    }
    presence() {
      return this.client.presence(this.channel);
    }
    unsubscribe() {
      this.client._unsubscribe(this);
    }
  }

  // ---- the client --------------------------------------------------------------

  /**
   * A connection to the hub that stays up. Events: state(info) on each
   * change (info.state is connecting, open, reconnecting or closed; also
   * emitted under the state's own name), welcome({client, user}),
   * retry({attempt, delay, code, reason}), recovery(info) for any channel,
   * join/leave(channel, member), error(err).
   */
  class Client extends Emitter {
    constructor(options) {
      super();
      const o = Object.assign({}, DEFAULTS);
      for (const [k, v] of Object.entries(options || {})) if (v !== undefined) o[k] = v;
      this.options = o;
      this._random = o.random || Math.random;
      this._now = o.now || (() => Date.now());
      this._setTimeout = o.setTimeout || ((fn, ms) => setTimeout(fn, ms));
      this._clearTimeout = o.clearTimeout || ((t) => clearTimeout(t));
      this._WebSocket = o.WebSocket || root.WebSocket;
      this._url = o.url || null;
      this._token = o.token != null ? o.token : null;
      this._backoff = new Backoff({
        base: o.backoffBase,
        cap: o.backoffCap,
        stableAfter: o.stableAfter,
        random: this._random,
        now: this._now,
      });
      this.state = 'idle';
      this.clientId = null;
      this.user = null;
      this.subscriptions = new Map();
      this._ws = null;
      this._gen = 0;
      this._nextId = 1;
      this._pending = new Map(); // id -> {kind, resolve, reject, sub}
      this._queue = []; // publishes waiting for a connection
      this._timers = {};
      this._hold = false;
      this._everOpened = false;
      this._received = 0;
      this.stats = { connects: 0, opens: 0, duplicates: 0, deadLinks: 0, delivered: 0 };
      // A microtask later, so that listeners added right after construction
      // see the 'connecting' state too.
      if (o.autoConnect) Promise.resolve().then(() => this.state === 'idle' && this.connect());
    }

    // ---- public API ----

    /** Starts connecting (again, after close()). */
    connect() {
      if (this.state === 'connecting' || this.state === 'open' || this.state === 'reconnecting') return this;
      this._everOpened = false;
      this._backoff.reset();
      this._setState('connecting', {});
      this._connect();
      return this;
    }

    /** Closes for good: no reconnect; queued and pending requests fail. */
    close(code, reason) {
      if (this.state === 'closed') return;
      this._clearTimer('retry');
      this._teardown(code || 1000, reason || 'client closed');
      this._failQueue('closed', 'the client was closed');
      this._setState('closed', { code: code || 1000, reason: reason || 'client closed', byClient: true });
    }

    /**
     * Subscribes to `channel`; `onMessage(msg)` gets {channel, offset, data,
     * from, replayed}. Options: history (replay what the hub still has),
     * since and epoch (resume from a saved position). Subscribing again to
     * the same channel adds the listener to the same Subscription.
     */
    subscribe(channel, onMessage, opts) {
      if (typeof onMessage === 'object' && onMessage !== null && opts === undefined) {
        opts = onMessage;
        onMessage = null;
      }
      let sub = this.subscriptions.get(channel);
      if (!sub) {
        sub = new Subscription(this, channel, opts || {});
        this.subscriptions.set(channel, sub);
        if (this._isOpen()) this._sendSubscribe(sub);
      }
      if (onMessage) sub.on('message', onMessage);
      return sub;
    }

    /**
     * Publishes `data` (any JSON value). Resolves with the offset once the
     * hub confirms; while not connected it waits in a bounded queue. Rejects
     * with err.code: queue_full, too_big, closed, disconnected (sent but no
     * confirmation before the connection ended: it may or may not have been
     * published), or the hub's error code (rate_limited, forbidden, ...).
     */
    publish(channel, data) {
      return new Promise((resolve, reject) => {
        if (this.state === 'closed') {
          reject(wslineError('closed', 'the client is closed'));
          return;
        }
        let json;
        try {
          json = JSON.stringify({ op: 'publish', channel, data });
        } catch (e) {
          reject(wslineError('bad_data', 'data is not JSON-serializable: ' + e.message));
          return;
        }
        if (json === undefined || data === undefined) {
          reject(wslineError('bad_data', 'data is undefined'));
          return;
        }
        if (utf8Length(json) + 16 > this.options.maxMessageSize) {
          reject(wslineError('too_big', 'the message is larger than maxMessageSize (' + this.options.maxMessageSize + ' bytes)'));
          return;
        }
        const item = { channel, data, resolve, reject };
        if (this._isOpen()) {
          this._sendPublish(item);
        } else if (this._queue.length >= this.options.maxQueue) {
          reject(wslineError('queue_full', 'not connected and ' + this.options.maxQueue + ' publishes already wait'));
        } else {
          this._queue.push(item);
        }
      });
    }

    /** Resolves the channel's members [{client, user}]; needs a connection. */
    presence(channel) {
      return new Promise((resolve, reject) => {
        if (!this._isOpen()) {
          reject(wslineError('disconnected', 'not connected'));
          return;
        }
        const id = this._nextId++;
        this._pending.set(id, { kind: 'presence', resolve, reject });
        this._send({ op: 'presence', channel, id });
      });
    }

    /** How many publishes wait for a connection. */
    get queued() {
      return this._queue.length;
    }

    // ---- test hooks (not part of the API) ----

    /**
     * Drops the current connection as if the network had (the socket is
     * closed without waiting). With hold, stays in `reconnecting` without
     * retrying until _debugResume().
     */
    _debugDrop(hold) {
      this._hold = !!hold;
      if (this._ws) this._lost({ code: 1006, reason: 'dropped (test hook)' });
    }

    _debugResume() {
      this._hold = false;
      if (this.state === 'reconnecting' && !this._ws) {
        this._clearTimer('retry');
        this._connect();
      }
    }

    // ---- internals ----

    _isOpen() {
      return this._ws !== null && this._wsOpen === true;
    }

    _setState(state, detail) {
      if (this.state === state) return;
      const previous = this.state;
      this.state = state;
      const info = Object.assign({ state, previous }, detail);
      this._emit('state', info);
      this._emit(state, info);
    }

    _timer(name, ms, fn) {
      this._clearTimer(name);
      this._timers[name] = this._setTimeout(() => {
        delete this._timers[name];
        fn();
      }, ms);
    }

    _clearTimer(name) {
      if (this._timers[name] !== undefined) {
        this._clearTimeout(this._timers[name]);
        delete this._timers[name];
      }
    }

    _buildUrl() {
      let url = this._url || defaultUrl();
      if (this._token != null && this._token !== '') {
        url += (url.indexOf('?') >= 0 ? '&' : '?') + 'token=' + encodeURIComponent(this._token);
      }
      return url;
    }

    async _connect() {
      const gen = ++this._gen;
      if (this.state === 'closed') return;
      if (this._token == null && typeof this.options.getToken === 'function') {
        let token;
        try {
          token = await this.options.getToken();
        } catch (e) {
          if (gen !== this._gen || this.state === 'closed') return;
          this._emit('error', wslineError('token', 'getToken failed: ' + (e && e.message ? e.message : e)));
          this._lost({ code: 1006, reason: 'getToken failed' });
          return;
        }
        if (gen !== this._gen || this.state === 'closed') return;
        this._token = token;
      }
      let ws;
      this.stats.connects += 1;
      try {
        if (typeof this._WebSocket !== 'function') throw new Error('no WebSocket class (pass options.WebSocket)');
        ws = new this._WebSocket(this._buildUrl());
      } catch (e) {
        this._emit('error', wslineError('connect', 'cannot open a WebSocket: ' + (e && e.message ? e.message : e)));
        this._lost({ code: 1006, reason: 'cannot open a WebSocket' });
        return;
      }
      this._ws = ws;
      this._wsOpen = false;
      this._timer('connect', this.options.connectTimeout, () => {
        if (this._ws === ws && !this._wsOpen) this._lost({ code: 1006, reason: 'no connection within ' + this.options.connectTimeout + ' ms' });
      });
      ws.onopen = () => {
        if (this._ws === ws) this._opened();
      };
      ws.onmessage = (e) => {
        if (this._ws === ws) this._onMessage(e.data);
      };
      ws.onerror = () => {};
      ws.onclose = (e) => {
        if (this._ws === ws) this._lost({ code: e.code || 1006, reason: e.reason || '', wasClean: !!e.wasClean });
      };
    }

    _opened() {
      this._clearTimer('connect');
      this._wsOpen = true;
      this._received = 0;
      this.stats.opens += 1;
      this._backoff.opened();
      for (const sub of this.subscriptions.values()) this._sendSubscribe(sub);
      const queue = this._queue.splice(0);
      for (const item of queue) this._sendPublish(item);
      this._heartbeat();
    }

    _send(obj) {
      try {
        this._ws.send(JSON.stringify(obj));
        return true;
      } catch (e) {
        return false;
      }
    }

    _sendSubscribe(sub) {
      const id = this._nextId++;
      sub._reqId = id;
      sub.confirmed = false;
      this._pending.set(id, { kind: 'subscribe', sub });
      this._send(Object.assign({ op: 'subscribe', channel: sub.channel }, sub.cursor.request(), { id }));
    }

    _sendPublish(item) {
      const id = this._nextId++;
      this._pending.set(id, { kind: 'publish', resolve: item.resolve, reject: item.reject });
      this._send({ op: 'publish', channel: item.channel, data: item.data, id });
    }

    _unsubscribe(sub) {
      if (!sub.active) return;
      sub.active = false;
      sub.confirmed = false;
      if (this.subscriptions.get(sub.channel) === sub) this.subscriptions.delete(sub.channel);
      if (this._isOpen()) this._send({ op: 'unsubscribe', channel: sub.channel, id: this._nextId++ });
    }

    /** Pings every pingInterval; no message within pingTimeout of a ping: dead link. */
    _heartbeat() {
      const every = this.options.pingInterval;
      if (!(every > 0)) return;
      const ws = this._ws;
      this._timer('ping', every, () => {
        if (this._ws !== ws || !this._wsOpen) return;
        if (this._timers.pong === undefined) {
          // One ping at a time; the deadline starts when it is sent.
          const seen = this._received;
          this._timer('pong', this.options.pingTimeout, () => {
            if (this._ws !== ws) return;
            // Data still arriving means the link is alive (the pong is
            // queued behind it); the next ping asks again.
            if (this._received > seen) return;
            this.stats.deadLinks += 1;
            this._lost({ code: 1006, reason: 'no pong within ' + this.options.pingTimeout + ' ms', deadLink: true });
          });
          this._send({ op: 'ping' });
        }
        this._heartbeat();
      });
    }

    _onMessage(text) {
      this._received += 1;
      let m;
      try {
        m = JSON.parse(text);
      } catch (e) {
        return;
      }
      if (!m || typeof m !== 'object') return;
      switch (m.op) {
        case 'welcome':
          this.clientId = m.client;
          this.user = m.user != null ? m.user : null;
          this._everOpened = true;
          this._setState('open', { client: m.client, user: this.user });
          this._emit('welcome', { client: m.client, user: this.user });
          break;
        case 'pong':
          this._clearTimer('pong');
          break;
        case 'subscribed': {
          const p = this._pending.get(m.id);
          if (p) this._pending.delete(m.id);
          const sub = this.subscriptions.get(m.channel);
          if (!sub || sub._reqId !== m.id) return; // an unsubscribed or superseded request
          const info = sub.cursor.subscribed(m);
          info.channel = m.channel;
          sub.confirmed = true;
          sub._emit('subscribed', info);
          if (info.resumed) {
            sub._emit('recovery', info);
            this._emit('recovery', info);
          }
          break;
        }
        case 'message': {
          const sub = this.subscriptions.get(m.channel);
          if (!sub || !sub.confirmed) return;
          if (!sub.cursor.accept(m.offset)) {
            this.stats.duplicates += 1;
            return;
          }
          this.stats.delivered += 1;
          sub._emit('message', {
            channel: m.channel,
            offset: m.offset,
            data: m.data,
            from: m.from != null ? m.from : null,
            replayed: typeof m.offset === 'number' && m.offset <= sub.cursor.replayUntil,
          });
          break;
        }
        case 'published': {
          const p = this._pending.get(m.id);
          if (p && p.kind === 'publish') {
            this._pending.delete(m.id);
            p.resolve(m.offset);
          }
          break;
        }
        case 'presence': {
          const p = this._pending.get(m.id);
          if (p && p.kind === 'presence') {
            this._pending.delete(m.id);
            p.resolve(Array.isArray(m.members) ? m.members : []);
          }
          break;
        }
        case 'join':
        case 'leave': {
          const sub = this.subscriptions.get(m.channel);
          if (sub && sub.confirmed) sub._emit(m.op, m.member);
          this._emit(m.op, m.channel, m.member);
          break;
        }
        case 'unsubscribed':
          this._pending.delete(m.id);
          break;
        case 'error': {
          const err = wslineError(m.code || 'error', m.message || 'error from the hub');
          const p = m.id != null ? this._pending.get(m.id) : undefined;
          if (p) {
            this._pending.delete(m.id);
            if (p.kind === 'subscribe') {
              err.channel = p.sub.channel;
              p.sub._emit('error', err);
              this._emit('error', err);
            } else {
              p.reject(err);
            }
          } else {
            this._emit('error', err);
          }
          break;
        }
        default:
          break;
      }
    }

    /** Detaches the current socket (closing it) and fails requests in flight. */
    _teardown(code, reason) {
      const ws = this._ws;
      this._ws = null;
      this._wsOpen = false;
      this._clearTimer('connect');
      this._clearTimer('ping');
      this._clearTimer('pong');
      if (ws) {
        ws.onopen = ws.onmessage = ws.onclose = null;
        ws.onerror = () => {};
        try {
          if (ws.readyState === 0 || ws.readyState === 1) {
            if (code) ws.close(code, reason);
            else ws.close();
          }
        } catch (e) {
          /* already closing */
        }
      }
      for (const sub of this.subscriptions.values()) sub.confirmed = false;
      const pending = Array.from(this._pending.values());
      this._pending.clear();
      for (const p of pending) {
        if (p.reject) {
          p.reject(wslineError('disconnected', 'the connection ended before the hub answered' +
            (p.kind === 'publish' ? ' (the message may or may not have been published)' : '')));
        }
      }
    }

    _failQueue(code, message) {
      const queue = this._queue.splice(0);
      for (const item of queue) item.reject(wslineError(code, message));
    }

    /** The connection ended (or an attempt failed): reconnect or stop. */
    _lost(info) {
      this._teardown(info.deadLink || info.code === 1006 ? 4000 : null, info.reason);
      if (this.state === 'closed') return;
      this._backoff.closed();
      const action = closeAction(info.code);
      const detail = { code: info.code, reason: info.reason || action.reason, deadLink: !!info.deadLink };
      if (!action.reconnect) {
        this._failQueue('closed', 'the hub closed the connection: ' + action.reason);
        this._setState('closed', detail);
        return;
      }
      if (action.refreshToken) {
        if (typeof this.options.getToken !== 'function') {
          this._failQueue('closed', 'the token expired and there is no getToken to renew it');
          this._setState('closed', detail);
          return;
        }
        this._token = null;
      }
      const delay = this._backoff.next(action.spread ? this.options.restartJitter : 0);
      const attempt = this._backoff.attempt;
      this._setState('reconnecting', Object.assign({ delay, attempt }, detail));
      this._emit('retry', Object.assign({ delay, attempt }, detail));
      if (this._hold) return;
      this._timer('retry', delay, () => this._connect());
    }
  }

  function connect(options) {
    return new Client(options);
  }

  return {
    VERSION,
    DEFAULTS,
    Client,
    Subscription,
    connect,
    backoffDelay,
    Backoff,
    closeAction,
    Cursor,
    Emitter,
  };
});
