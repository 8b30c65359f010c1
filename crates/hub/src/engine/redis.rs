//! The Redis engine (`wsline serve --engine redis`): several hub nodes
//! behind a load balancer, joined through one Redis server.
//!
//! Owns the Redis side of the hub: the key layout ([`keys`]) and the Lua
//! scripts that keep offsets, epochs, history and presence consistent; the
//! pub/sub connection (one per node, subscribed only to channels with local
//! subscribers) and its reconnection with backoff; the health check behind
//! `/healthz` and `wsline_engine_up`; and the local fan-out of what arrives
//! from Redis, framed once per node and shared by every local subscriber.
//! It does not own the client protocol, outboxes or sessions: those are the
//! same whatever the engine. docs/scaling.md describes the design.
//!
//! The recovery race: a subscribe first makes sure this node receives the
//! channel's live messages (SUBSCRIBE acknowledged), then reads the epoch,
//! latest offset and the first history entry after `since` in one script.
//! Live items that arrive meanwhile are buffered for that subscriber, then
//! handled after the reply. With a replay to do (the rule and pacing of
//! [`super::recovery`]), the session pulls history a page at a time (one
//! script call, `XRANGE … COUNT`); live messages for a replaying
//! subscriber are not queued but raise the offset its replay must reach
//! (they are in history). It goes live once its replay has queued
//! everything up to that offset; from then on, as always, each subscriber
//! only takes offsets above the last one it got: nothing is lost between
//! history and live, nothing doubled.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSubSink, PubSubStream};
use redis::{Script, Value};
use serde_json::value::RawValue;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::recovery::{self, resync_frame, Replay};
use super::{text_frame, Engine, EngineError, Subscribed, Subscriber};
use crate::config::{ChannelPolicy, HubConfig};
use crate::metrics::Metrics;
use crate::protocol::{self, Member};
use crate::webhooks::{Kind, Webhooks};

/// How often the health check pings Redis while it is up.
const CHECK_EVERY: Duration = Duration::from_millis(500);
/// A ping, a connect, or one engine request that takes longer fails.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
const PING_TIMEOUT: Duration = Duration::from_secs(1);
/// Reconnection backoff: doubles from the first to the last, with jitter.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// A channel's epoch and offset outlive its history by at least this, so
/// a quiet channel keeps its numbering.
const META_TTL_MIN: Duration = Duration::from_secs(24 * 3600);
/// Webhooks: unsubscribes made while Redis was unreachable, kept to be
/// uncounted once it is back; more are only logged.
const MAX_UNCOUNTED: usize = 65_536;
/// Channels per SUBSCRIBE when re-subscribing after a reconnect.
const SUBSCRIBE_CHUNK: usize = 256;

/// Why the Redis engine cannot start.
#[derive(Debug, thiserror::Error)]
pub enum RedisSetupError {
    /// The URL does not parse.
    #[error("invalid redis_url {url:?}: {source}; expected redis://[:PASSWORD@]HOST[:PORT][/DB]")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What the Redis client said.
        source: redis::RedisError,
    },
}

/// Checks a `--redis-url` without connecting.
pub fn check_url(url: &str) -> Result<(), RedisSetupError> {
    open_client(url).map(|_| ())
}

fn open_client(url: &str) -> Result<redis::Client, RedisSetupError> {
    redis::Client::open(url).map_err(|source| RedisSetupError::BadUrl {
        url: url.to_owned(),
        source,
    })
}

/// The Redis names the engine uses: per hub channel (the channel name in a
/// `{…}` hash tag, so one channel's keys stay together if ever sharded),
/// and per node (subscriber counts for `/api/channels`).
pub mod keys {
    /// Hash `epoch`, `offset`: the channel's history epoch and latest
    /// offset.
    pub fn meta(channel: &str) -> String {
        format!("wsline:{{{channel}}}:meta")
    }

    /// Stream of publications, entry ID `OFFSET-1`, fields `t` (Redis time
    /// in ms), `f` (publisher as JSON), `d` (data as JSON).
    pub fn history(channel: &str) -> String {
        format!("wsline:{{{channel}}}:history")
    }

    /// Sorted set of present members (their JSON), scored by the Redis
    /// time in ms when the member expires unless its node refreshes it.
    pub fn presence(channel: &str) -> String {
        format!("wsline:{{{channel}}}:presence")
    }

    /// The pub/sub channel carrying the channel's publications and (with
    /// `join_leave`) join/leave events.
    pub fn live(channel: &str) -> String {
        format!("wsline:{{{channel}}}:live")
    }

    /// Sorted set of node IDs, scored by the Redis time in ms when the
    /// node counts as gone unless it refreshes itself.
    pub const NODES: &str = "wsline:nodes";

    /// Hash channel → subscribers on one node (for `/api/channels`).
    pub fn node_channels(node: &str) -> String {
        format!("wsline:node:{node}:channels")
    }

    /// Webhooks: the channel's subscriptions on every node together (a
    /// counter, missing at 0). The scripts that change it say which node
    /// took it from 0 or to 0, and only that node emits
    /// `channel_occupied`/`channel_vacated`.
    pub fn subscribers(channel: &str) -> String {
        format!("wsline:{{{channel}}}:subscribers")
    }

    /// Webhooks: sorted set of the nodes counted in [`subscribers`],
    /// scored by the Redis time in ms when the node counts as dead unless
    /// it refreshes itself. A dead node is claimed (removed) by exactly one
    /// other node, which undoes its counts and emits what they imply.
    pub const WEBHOOK_NODES: &str = "wsline:webhooks:nodes";

    /// Webhooks: hash channel → subscriptions on one node (what its death
    /// takes from [`subscribers`]).
    pub fn webhook_node_channels(node: &str) -> String {
        format!("wsline:webhooks:node:{node}:channels")
    }

    /// Webhooks: set of `CHANNEL\nMEMBER` (the member's JSON) present
    /// through one node (the `member_removed` its death implies).
    pub fn webhook_node_members(node: &str) -> String {
        format!("wsline:webhooks:node:{node}:members")
    }

    /// The hub channel of a pub/sub channel name from [`live`].
    pub fn channel_of_live(name: &str) -> Option<&str> {
        name.strip_prefix("wsline:{")?.strip_suffix("}:live")
    }
}

/// Redis time in ms, inside a script.
const NOW_LUA: &str = "local t = redis.call('TIME')\n\
    local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n";

/// Creates the channel's epoch (dropping any stale history) when missing.
const EPOCH_LUA: &str = "local epoch = redis.call('HGET', KEYS[1], 'epoch')\n\
    local offset = 0\n\
    if not epoch then\n\
      epoch = ARGV[1]\n\
      redis.call('DEL', KEYS[2])\n\
      redis.call('HSET', KEYS[1], 'epoch', epoch, 'offset', 0)\n\
    else\n\
      offset = tonumber(redis.call('HGET', KEYS[1], 'offset'))\n\
    end\n";

/// KEYS meta, history. ARGV new epoch, history size, history ttl ms, meta
/// ttl ms, from JSON, data JSON, live channel. Returns {offset, epoch}.
const PUBLISH_BODY: &str = "local offset = redis.call('HINCRBY', KEYS[1], 'offset', 1)\n\
    redis.call('PEXPIRE', KEYS[1], ARGV[4])\n\
    local size = tonumber(ARGV[2])\n\
    local ttl = tonumber(ARGV[3])\n\
    if size > 0 and ttl > 0 then\n\
      redis.call('XADD', KEYS[2], 'MAXLEN', size, offset .. '-1', 't', now, 'f', ARGV[5], 'd', ARGV[6])\n\
      redis.call('PEXPIRE', KEYS[2], ttl)\n\
    end\n\
    redis.call('PUBLISH', ARGV[7], 'm\\n' .. epoch .. '\\n' .. offset .. '\\n' .. ARGV[5] .. '\\n' .. ARGV[6])\n\
    return {offset, epoch}\n";

/// KEYS meta, history, presence. ARGV new epoch, since (-1: none), history
/// ttl ms, meta ttl ms, member JSON ('' for none), presence ttl ms, join
/// (1 publishes a join event), live channel, count. Returns {epoch, offset,
/// end (1 when no entry after those returned is left), occupied (below),
/// then OFFSET, FROM, DATA for up to `count` entries after `since` still
/// in history}. Read `count` at a time (expired entries, always the
/// oldest, are skipped), so a replay is paged rather than read whole.
///
/// With webhooks, a new subscription is counted: KEYS also subscribers,
/// node channels, node members, webhook nodes; ARGV also '1', channel,
/// node ID. The node is listed, the subscription counted for the channel
/// and the node (the member too), and occupied is 1 when this took the
/// channel's count from 0: Redis runs one script at a time, so exactly
/// one subscribe in the cluster sees it.
const SUBSCRIBE_BODY: &str = "redis.call('PEXPIRE', KEYS[1], ARGV[4])\n\
    local out = {epoch, offset, 1, 0}\n\
    local since = tonumber(ARGV[2])\n\
    if since >= 0 and since < offset then\n\
      local oldest = now - tonumber(ARGV[3])\n\
      local count = tonumber(ARGV[9])\n\
      local start = since + 1\n\
      while true do\n\
        local batch = redis.call('XRANGE', KEYS[2], start .. '-0', '+', 'COUNT', count)\n\
        for _, e in ipairs(batch) do\n\
          local f = {}\n\
          for i = 1, #e[2], 2 do f[e[2][i]] = e[2][i + 1] end\n\
          local o = string.sub(e[1], 1, string.find(e[1], '-') - 1)\n\
          start = tonumber(o) + 1\n\
          if tonumber(f['t']) >= oldest then\n\
            out[#out + 1] = o\n\
            out[#out + 1] = f['f']\n\
            out[#out + 1] = f['d']\n\
          end\n\
        end\n\
        if #batch < count then break end\n\
        if #out > 4 then out[3] = 0 break end\n\
      end\n\
    end\n\
    if ARGV[5] ~= '' then\n\
      redis.call('ZADD', KEYS[3], now + tonumber(ARGV[6]), ARGV[5])\n\
      redis.call('PEXPIRE', KEYS[3], ARGV[6])\n\
      if ARGV[7] == '1' then redis.call('PUBLISH', ARGV[8], 'j\\n' .. ARGV[5]) end\n\
    end\n\
    if ARGV[10] == '1' then\n\
      redis.call('ZADD', KEYS[7], now + tonumber(ARGV[6]), ARGV[12])\n\
      redis.call('HINCRBY', KEYS[5], ARGV[11], 1)\n\
      if redis.call('INCR', KEYS[4]) == 1 then out[4] = 1 end\n\
      if ARGV[5] ~= '' then redis.call('SADD', KEYS[6], ARGV[11] .. '\\n' .. ARGV[5]) end\n\
    end\n\
    return out\n";

/// KEYS presence. ARGV member JSON, live channel ('' for no event: the
/// channel has no `join_leave`). A leave event only if the member was
/// still listed (so it is announced once).
const LEAVE_LUA: &str = "if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 and ARGV[2] ~= '' then\n\
      redis.call('PUBLISH', ARGV[2], 'l\\n' .. ARGV[1])\n\
    end\n\
    return 1\n";

/// With webhooks, [`LEAVE_LUA`] and the subscription uncounted. KEYS
/// presence, subscribers, node channels, node members. ARGV member JSON
/// ('' without presence), live channel ('' for no event), channel.
/// Returns 1 when this took the channel's count to 0 (vacated). A node
/// whose counts were claimed as dead (it was cut off past the presence
/// timeout) has nothing left to uncount: nothing changes then.
const LEAVE_COUNTED_LUA: &str = "if ARGV[1] ~= '' then\n\
      if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 and ARGV[2] ~= '' then\n\
        redis.call('PUBLISH', ARGV[2], 'l\\n' .. ARGV[1])\n\
      end\n\
      redis.call('SREM', KEYS[4], ARGV[3] .. '\\n' .. ARGV[1])\n\
    end\n\
    local mine = tonumber(redis.call('HGET', KEYS[3], ARGV[3]) or '0')\n\
    if mine <= 0 then return 0 end\n\
    if mine == 1 then redis.call('HDEL', KEYS[3], ARGV[3]) else redis.call('HINCRBY', KEYS[3], ARGV[3], -1) end\n\
    local n = redis.call('DECR', KEYS[2])\n\
    if n > 0 then return 0 end\n\
    redis.call('DEL', KEYS[2])\n\
    if n == 0 then return 1 end\n\
    return 0\n";

/// Webhooks. KEYS webhook nodes. ARGV this node's ID, presence ttl ms.
/// Keeps this node listed, then claims every node gone quiet (removing
/// it from the list is the claim: one script at a time, so one node
/// claims each) and undoes its counts. Returns 'm', CHANNEL\nMEMBER for
/// each member it had, then 'v', CHANNEL for each channel its death
/// vacated. (Reads keys it is not given: fine on one Redis server.)
const REAP_BODY: &str = "redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])\n\
    local out = {}\n\
    for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do\n\
      redis.call('ZREM', KEYS[1], id)\n\
      local ck = 'wsline:webhooks:node:' .. id .. ':channels'\n\
      local mk = 'wsline:webhooks:node:' .. id .. ':members'\n\
      for _, m in ipairs(redis.call('SMEMBERS', mk)) do out[#out + 1] = 'm' out[#out + 1] = m end\n\
      local counts = redis.call('HGETALL', ck)\n\
      for i = 1, #counts, 2 do\n\
        local key = 'wsline:{' .. counts[i] .. '}:subscribers'\n\
        local n = redis.call('DECRBY', key, counts[i + 1])\n\
        if n <= 0 then\n\
          redis.call('DEL', key)\n\
          if n == 0 then out[#out + 1] = 'v' out[#out + 1] = counts[i] end\n\
        end\n\
      end\n\
      redis.call('DEL', ck, mk)\n\
    end\n\
    return out\n";

/// KEYS meta, presence. ARGV meta ttl ms, presence ttl ms, live channel
/// ('' for no events: no `join_leave`), then this node's members.
/// Refreshes them, removes the expired ones (a dead node's) and announces
/// their leave. Returns how many expired.
const REFRESH_BODY: &str =
    "if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end\n\
    local until_ms = now + tonumber(ARGV[2])\n\
    for i = 4, #ARGV do redis.call('ZADD', KEYS[2], until_ms, ARGV[i]) end\n\
    local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)\n\
    if #gone > 0 then\n\
      redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)\n\
      if ARGV[3] ~= '' then\n\
        for _, m in ipairs(gone) do redis.call('PUBLISH', ARGV[3], 'l\\n' .. m) end\n\
      end\n\
    end\n\
    if #ARGV >= 4 then redis.call('PEXPIRE', KEYS[2], ARGV[2]) end\n\
    return #gone\n";

/// KEYS node channels, nodes. ARGV node ID, ttl ms, then channel, count
/// pairs: replaces this node's subscriber counts and keeps it listed.
const COUNTS_BODY: &str = "redis.call('DEL', KEYS[1])\n\
    for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end\n\
    if #ARGV >= 3 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end\n\
    redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])\n\
    return 1\n";

/// KEYS nodes. ARGV this node's ID. Forgets nodes gone quiet; returns the
/// channel, count pairs of every other node. (Reads keys it is not given:
/// fine on one Redis server, not on Redis Cluster.)
const CHANNELS_BODY: &str = "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)\n\
    local out = {}\n\
    for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do\n\
      if id ~= ARGV[1] then\n\
        for _, v in ipairs(redis.call('HGETALL', 'wsline:node:' .. id .. ':channels')) do out[#out + 1] = v end\n\
      end\n\
    end\n\
    return out\n";

/// KEYS presence. The members not expired.
const PRESENCE_BODY: &str = "return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')\n";

struct Scripts {
    publish: Script,
    subscribe: Script,
    leave: Script,
    refresh: Script,
    presence: Script,
    counts: Script,
    channels: Script,
    leave_counted: Script,
    reap: Script,
}

impl Scripts {
    fn new() -> Self {
        Self {
            publish: Script::new(&format!("{NOW_LUA}{EPOCH_LUA}{PUBLISH_BODY}")),
            subscribe: Script::new(&format!("{NOW_LUA}{EPOCH_LUA}{SUBSCRIBE_BODY}")),
            leave: Script::new(LEAVE_LUA),
            refresh: Script::new(&format!("{NOW_LUA}{REFRESH_BODY}")),
            presence: Script::new(&format!("{NOW_LUA}{PRESENCE_BODY}")),
            counts: Script::new(&format!("{NOW_LUA}{COUNTS_BODY}")),
            channels: Script::new(&format!("{NOW_LUA}{CHANNELS_BODY}")),
            leave_counted: Script::new(LEAVE_COUNTED_LUA),
            reap: Script::new(&format!("{NOW_LUA}{REAP_BODY}")),
        }
    }
}

/// One message on a channel's pub/sub channel.
#[derive(Debug, PartialEq, Eq)]
pub enum Payload<'a> {
    /// A publication: `m\nEPOCH\nOFFSET\nFROM\nDATA` (FROM, DATA as JSON).
    Message {
        /// The channel's epoch.
        epoch: &'a str,
        /// Its offset.
        offset: u64,
        /// The publisher, JSON (`null` or a string).
        from: &'a str,
        /// The data, JSON.
        data: &'a str,
    },
    /// A member joined: `j\nMEMBER`.
    Join(&'a str),
    /// A member left (or expired): `l\nMEMBER`.
    Leave(&'a str),
}

/// Reads a pub/sub payload; `None` for anything else.
pub fn parse_payload(bytes: &[u8]) -> Option<Payload<'_>> {
    let text = std::str::from_utf8(bytes).ok()?;
    let (kind, rest) = text.split_once('\n')?;
    match kind {
        "m" => {
            let mut parts = rest.splitn(4, '\n');
            let epoch = parts.next()?;
            let offset = parts.next()?.parse().ok()?;
            let from = parts.next()?;
            let data = parts.next()?;
            Some(Payload::Message {
                epoch,
                offset,
                from,
                data,
            })
        }
        "j" => Some(Payload::Join(rest)),
        "l" => Some(Payload::Leave(rest)),
        _ => None,
    }
}

/// What a subscriber that got everything up to (`sub_epoch`, `after`)
/// needs once the channel is at (`epoch`, `latest`) with `offsets` in
/// history (ascending, a contiguous run ending at `latest`).
#[derive(Debug, PartialEq, Eq)]
pub enum CatchUp {
    /// Nothing was missed.
    UpToDate,
    /// The entries from this index on were missed and are in history.
    Replay(usize),
    /// Messages were lost (history no longer reaches back, or the epoch
    /// changed): the subscriber is told `recovered:false`.
    Lost,
}

/// See [`CatchUp`].
pub fn catch_up(sub_epoch: &str, after: u64, epoch: &str, latest: u64, offsets: &[u64]) -> CatchUp {
    if sub_epoch != epoch {
        return CatchUp::Lost;
    }
    if after >= latest {
        return CatchUp::UpToDate;
    }
    match offsets.iter().position(|o| *o > after) {
        Some(i) if offsets[i] == after + 1 => CatchUp::Replay(i),
        _ => CatchUp::Lost,
    }
}

/// A live item for local subscribers, framed once.
#[derive(Clone)]
enum Live {
    Message {
        epoch: Arc<str>,
        offset: u64,
        frame: Bytes,
    },
    Event {
        /// The member it is about.
        client: String,
        /// A `join` (else a `leave`).
        join: bool,
        frame: Bytes,
    },
}

struct LocalSub {
    sub: Subscriber,
    /// The epoch and last offset this subscriber got.
    epoch: Arc<str>,
    after: u64,
    /// While its subscribe reads history: live items kept for after.
    pending: Option<Vec<Live>>,
    /// Its replay of history, while in progress: live messages are then
    /// not queued to it (see [`super::recovery`]).
    replay: Option<Replay>,
    /// About how large its replayed frames are, to size the next page.
    frame_hint: usize,
    /// Its subscribe announced it with a `join` that has not come back
    /// yet. Pub/sub keeps Redis's order, so presence events before that
    /// join happened before this subscriber arrived: they are dropped, as
    /// the in-memory engine would never have sent them.
    awaiting_own_join: bool,
}

/// A channel with subscribers on this node.
struct Local {
    subs: Vec<LocalSub>,
    policy: ChannelPolicy,
    /// Publishes from this node waiting for their offset, by ticket. A
    /// live item arriving while some are in flight may be one of theirs, so
    /// it waits until those (not later ones) are answered: a publisher's
    /// reply precedes its own copy, and a busy channel is never starved.
    inflight: BTreeSet<u64>,
    next_ticket: u64,
    /// Live items waiting, each with the last ticket it waits for.
    held: VecDeque<(u64, Live)>,
}

impl Local {
    fn new(policy: ChannelPolicy) -> Self {
        Self {
            subs: Vec::new(),
            policy,
            inflight: BTreeSet::new(),
            next_ticket: 0,
            held: VecDeque::new(),
        }
    }

    /// A live item: delivered now, or held behind publishes in flight.
    fn arrive(&mut self, live: Live, channel: &str, metrics: &Metrics) {
        if self.inflight.is_empty() && self.held.is_empty() {
            deliver_all(self, &live, channel, metrics);
        } else {
            self.held.push_back((self.next_ticket, live));
        }
    }

    /// Takes a ticket for a publish about to be sent.
    fn hold(&mut self) -> u64 {
        self.next_ticket += 1;
        self.inflight.insert(self.next_ticket);
        self.next_ticket
    }

    /// The publish with `ticket` has its answer: delivers what no longer
    /// waits for any publish in flight.
    fn release(&mut self, ticket: u64, channel: &str, metrics: &Metrics) {
        self.inflight.remove(&ticket);
        let oldest = self.inflight.first().copied().unwrap_or(u64::MAX);
        while self.held.front().is_some_and(|(waits, _)| *waits < oldest) {
            if let Some((_, live)) = self.held.pop_front() {
                deliver_all(self, &live, channel, metrics);
            }
        }
    }
}

/// Where the scripts publish `channel`'s join/leave events: its live
/// channel, or '' (none) without `join_leave`.
fn events_to(channel: &str, policy: &ChannelPolicy) -> String {
    if policy.join_leave {
        keys::live(channel)
    } else {
        String::new()
    }
}

/// Entries per replay page: what the room holds at the last page's frame
/// size, within these bounds.
const PAGE_MIN: usize = 4;
const PAGE_MAX: usize = 256;
/// The frame size assumed for a replay's first page.
const FRAME_HINT: usize = 4096;

/// Hands `live` to one subscriber; true when a publication was queued.
fn deliver_to(s: &mut LocalSub, live: &Live, channel: &str, now: Instant) -> bool {
    if let Live::Event { client, join, .. } = live {
        if s.awaiting_own_join {
            if *join && s.sub.member().client == *client {
                s.awaiting_own_join = false;
                if let Some(pending) = &mut s.pending {
                    pending.retain(|l| matches!(l, Live::Message { .. }));
                }
            }
            return false;
        }
    }
    if let Some(pending) = &mut s.pending {
        pending.push(live.clone());
        return false;
    }
    match live {
        Live::Message {
            epoch,
            offset,
            frame,
        } => {
            if s.epoch != *epoch {
                // The channel's history was reset under us (Redis lost its
                // data): tell the client, then go on in the new epoch.
                // A replay in progress is over: its history is gone.
                s.sub
                    .outbox
                    .push(resync_frame(channel, epoch, offset.saturating_sub(1)), None);
                s.epoch = epoch.clone();
                s.after = 0;
                s.replay = None;
            }
            if let Some(replay) = &mut s.replay {
                // In history: the replay reaches it, then goes live.
                if *offset > s.after {
                    replay.defer(*offset);
                }
                return false;
            }
            if *offset > s.after {
                s.after = *offset;
                return s.sub.outbox.push(frame.clone(), Some(now));
            }
            false
        }
        Live::Event { client, frame, .. } => {
            if s.sub.member().client != *client {
                s.sub.outbox.push(frame.clone(), None);
            }
            false
        }
    }
}

fn deliver_all(st: &mut Local, live: &Live, channel: &str, metrics: &Metrics) {
    let now = Instant::now();
    let mut delivered = 0;
    for s in &mut st.subs {
        if deliver_to(s, live, channel, now) {
            delivered += 1;
        }
    }
    metrics.deliveries.fetch_add(delivered, Relaxed);
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn member_json(m: &Member) -> String {
    m.to_json().to_string()
}

fn parse_member(json: &str) -> Option<Member> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    Some(Member {
        client: v.get("client")?.as_str()?.to_owned(),
        user: v.get("user").and_then(|u| u.as_str()).map(str::to_owned),
    })
}

fn millis(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}

fn new_epoch() -> String {
    format!("{:016x}", rand::random::<u64>())
}

fn unavailable() -> EngineError {
    EngineError("Redis is unreachable; the hub keeps reconnecting, retry shortly".to_owned())
}

fn failed(what: &str, e: impl std::fmt::Display) -> EngineError {
    EngineError(format!("Redis {what} failed ({e}); retry shortly"))
}

/// Runs `fut` under [`REQUEST_TIMEOUT`].
async fn bounded<T>(
    what: &str,
    fut: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, EngineError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(failed(what, e)),
        Err(_) => Err(failed(what, "timed out")),
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

fn number(v: &Value) -> Option<u64> {
    match v {
        Value::Int(i) => u64::try_from(*i).ok(),
        other => text(other)?.parse().ok(),
    }
}

/// The subscribe script's answer.
struct Snapshot {
    epoch: String,
    latest: u64,
    /// No history entry is left after those returned.
    end: bool,
    /// This subscribe took the channel's count from 0 (webhooks).
    occupied: bool,
    /// (offset, frame) of the history entries returned.
    entries: Vec<(u64, Bytes)>,
}

impl Snapshot {
    fn decode(channel: &str, values: Vec<Value>) -> Option<Self> {
        let epoch = text(values.first()?)?;
        let latest = number(values.get(1)?)?;
        let end = number(values.get(2)?)? != 0;
        let occupied = number(values.get(3)?)? == 1;
        let mut entries = Vec::new();
        for e in values[4..].chunks(3) {
            let [o, f, d] = e else { return None };
            let offset = number(o)?;
            let from: Option<String> = serde_json::from_str(&text(f)?).ok()?;
            let data = text(d)?;
            let data: &RawValue = serde_json::from_str(&data).ok()?;
            let frame = text_frame(&protocol::message(channel, offset, data, from.as_deref()));
            entries.push((offset, frame));
        }
        Some(Self {
            epoch,
            latest,
            end,
            occupied,
            entries,
        })
    }

    fn offsets(&self) -> Vec<u64> {
        self.entries.iter().map(|(o, _)| *o).collect()
    }
}

struct PubSubState {
    sink: Option<PubSubSink>,
    /// Channels (hub names) this node's pub/sub connection is subscribed to.
    subscribed: HashSet<String>,
}

struct Inner {
    config: Arc<HubConfig>,
    metrics: Arc<Metrics>,
    client: redis::Client,
    conn: ConnectionManager,
    pubsub: tokio::sync::Mutex<PubSubState>,
    channels: Mutex<HashMap<String, Arc<Mutex<Local>>>>,
    commands_up: AtomicBool,
    pubsub_up: AtomicBool,
    up: AtomicBool,
    reconnect: Notify,
    scripts: Scripts,
    /// This node's ID in [`keys::NODES`].
    node: String,
    /// Local subscriber counts changed: write them to Redis.
    counts_changed: Notify,
    /// Where channel and member events go, when webhooks are on.
    webhooks: OnceLock<Arc<Webhooks>>,
    /// Webhooks: unsubscribes not sent to Redis (it was unreachable), by
    /// channel and member, uncounted at the next refresh once it is back.
    uncounted: Mutex<Vec<(String, Member)>>,
}

/// The Redis engine. See the module documentation.
pub struct RedisEngine {
    inner: Arc<Inner>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for RedisEngine {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl RedisEngine {
    /// Starts the engine's tasks (health check, pub/sub connection,
    /// presence refresh) on the current tokio runtime. Returns at once: the
    /// engine is down until Redis answers.
    pub fn start(config: Arc<HubConfig>, metrics: Arc<Metrics>) -> Result<Self, RedisSetupError> {
        let client = open_client(&config.redis_url)?;
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(PING_TIMEOUT))
            .set_response_timeout(Some(REQUEST_TIMEOUT))
            .set_min_delay(BACKOFF_MIN)
            .set_max_delay(BACKOFF_MAX)
            .set_number_of_retries(2);
        let conn =
            ConnectionManager::new_lazy_with_config(client.clone(), manager).map_err(|source| {
                RedisSetupError::BadUrl {
                    url: config.redis_url.clone(),
                    source,
                }
            })?;
        metrics.engine_up.store(0, Relaxed);
        let inner = Arc::new(Inner {
            config,
            metrics,
            client,
            conn,
            pubsub: tokio::sync::Mutex::new(PubSubState {
                sink: None,
                subscribed: HashSet::new(),
            }),
            channels: Mutex::new(HashMap::new()),
            commands_up: AtomicBool::new(false),
            pubsub_up: AtomicBool::new(false),
            up: AtomicBool::new(false),
            reconnect: Notify::new(),
            node: format!("{:016x}", rand::random::<u64>()),
            counts_changed: Notify::new(),
            scripts: Scripts::new(),
            webhooks: OnceLock::new(),
            uncounted: Mutex::new(Vec::new()),
        });
        let tasks = vec![
            tokio::spawn(inner.clone().health_loop()),
            tokio::spawn(inner.clone().pubsub_loop()),
            tokio::spawn(inner.clone().refresh_loop()),
            tokio::spawn(inner.clone().counts_loop()),
        ];
        Ok(Self { inner, tasks })
    }

    /// Counts subscriptions in Redis and emits channel and member events
    /// into `webhooks` from now on (set before the hub serves).
    pub(crate) fn set_webhooks(&self, webhooks: Arc<Webhooks>) {
        let _ = self.inner.webhooks.set(webhooks);
    }
}

fn jitter(d: Duration) -> Duration {
    d.mul_f64(0.5 + rand::random::<f64>() / 2.0)
}

impl Inner {
    fn meta_ttl_ms(&self, policy: &ChannelPolicy) -> u64 {
        millis(policy.history_ttl.max(META_TTL_MIN))
    }

    fn presence_ttl_ms(&self) -> u64 {
        millis(self.config.presence_timeout).max(1)
    }

    fn update_health(&self) {
        let up = self.commands_up.load(Relaxed) && self.pubsub_up.load(Relaxed);
        let was = self.up.swap(up, Relaxed);
        self.metrics.engine_up.store(i64::from(up), Relaxed);
        if up != was {
            if up {
                tracing::info!(url = %self.config.redis_url, "Redis engine up");
            } else {
                tracing::warn!(url = %self.config.redis_url, "Redis engine down: publishes are refused until Redis answers again; reconnecting");
            }
        }
    }

    /// Pings both connections; marks the engine up or down.
    async fn health_loop(self: Arc<Self>) {
        let mut backoff = BACKOFF_MIN;
        loop {
            let mut conn = self.conn.clone();
            let cmd = redis::cmd("PING");
            let ping = cmd.query_async::<String>(&mut conn);
            let ok = matches!(tokio::time::timeout(PING_TIMEOUT, ping).await, Ok(Ok(_)));
            self.commands_up.store(ok, Relaxed);
            if self.pubsub_up.load(Relaxed) {
                let sink = self.pubsub.lock().await.sink.clone();
                let alive = match sink {
                    Some(mut sink) => matches!(
                        tokio::time::timeout(PING_TIMEOUT, sink.ping::<Value>()).await,
                        Ok(Ok(_))
                    ),
                    None => false,
                };
                if !alive {
                    self.pubsub_up.store(false, Relaxed);
                    self.reconnect.notify_waiters();
                }
            }
            self.update_health();
            let pause = if ok {
                backoff = BACKOFF_MIN;
                CHECK_EVERY
            } else {
                backoff = (backoff * 2).min(BACKOFF_MAX);
                jitter(backoff)
            };
            tokio::time::sleep(pause).await;
        }
    }

    /// Keeps the pub/sub connection: connect, re-subscribe, catch up,
    /// read; on loss, back off and again.
    async fn pubsub_loop(self: Arc<Self>) {
        let mut backoff = BACKOFF_MIN;
        let mut logged = false;
        loop {
            match self.connect_pubsub().await {
                Ok(stream) => {
                    backoff = BACKOFF_MIN;
                    logged = false;
                    self.pubsub_up.store(true, Relaxed);
                    self.update_health();
                    self.read(stream).await;
                    self.pubsub_up.store(false, Relaxed);
                    {
                        let mut st = self.pubsub.lock().await;
                        st.sink = None;
                        st.subscribed.clear();
                    }
                    self.update_health();
                    tracing::warn!("lost the Redis pub/sub connection; reconnecting");
                }
                Err(e) => {
                    {
                        let mut st = self.pubsub.lock().await;
                        st.sink = None;
                        st.subscribed.clear();
                    }
                    if !logged {
                        tracing::warn!("cannot set up the Redis pub/sub connection: {e}; retrying with backoff");
                        logged = true;
                    }
                }
            }
            tokio::time::sleep(jitter(backoff)).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    async fn connect_pubsub(&self) -> Result<PubSubStream, EngineError> {
        let pubsub = bounded("connect", self.client.get_async_pubsub()).await?;
        let (mut sink, stream) = pubsub.split();
        {
            let mut st = self.pubsub.lock().await;
            let names: Vec<String> = lock(&self.channels).keys().cloned().collect();
            for chunk in names.chunks(SUBSCRIBE_CHUNK) {
                let topics: Vec<String> = chunk.iter().map(|c| keys::live(c)).collect();
                bounded("SUBSCRIBE", sink.subscribe(&topics)).await?;
            }
            st.subscribed = names.into_iter().collect();
            st.sink = Some(sink);
        }
        self.restore().await?;
        Ok(stream)
    }

    async fn read(&self, mut stream: PubSubStream) {
        loop {
            tokio::select! {
                msg = stream.next() => match msg {
                    Some(msg) => self.on_live(msg.get_channel_name(), msg.get_payload_bytes()),
                    None => return,
                },
                _ = self.reconnect.notified() => return,
            }
        }
    }

    /// After (re)connecting: each local channel's subscribers get what
    /// they missed from history (or `recovered:false` when it is gone),
    /// and this node's members are listed again.
    async fn restore(&self) -> Result<(), EngineError> {
        let channels: Vec<(String, Arc<Mutex<Local>>)> = lock(&self.channels)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (name, ch) in channels {
            let (since, replaying, policy) = {
                let mut st = lock(&ch);
                // A join published while the link was down never comes
                // back: stop waiting for it (at worst an event is doubled).
                for s in &mut st.subs {
                    s.awaiting_own_join = false;
                }
                let live = st
                    .subs
                    .iter()
                    .filter(|s| s.pending.is_none() && s.replay.is_none());
                let since = live.map(|s| s.after).min();
                let replaying = st.subs.iter().any(|s| s.replay.is_some());
                (since, replaying, st.policy.clone())
            };
            if since.is_none() && !replaying {
                continue;
            }
            let count = policy.history_size.saturating_add(1);
            let snap = self
                .snapshot(&name, &policy, since, None, count, false)
                .await?;
            let offsets = snap.offsets();
            self.catch_up_channel(&name, &ch, &snap, &offsets);
            self.refresh_channel(&name, &ch).await?;
        }
        Ok(())
    }

    fn catch_up_channel(&self, name: &str, ch: &Mutex<Local>, snap: &Snapshot, offsets: &[u64]) {
        {
            let mut st = lock(ch);
            for s in st.subs.iter_mut().filter(|s| s.pending.is_none()) {
                if let Some(replay) = &mut s.replay {
                    if *s.epoch == *snap.epoch {
                        // Its replay reads on to what was published meanwhile.
                        replay.defer(snap.latest);
                        continue;
                    }
                    s.replay = None;
                }
                match catch_up(&s.epoch, s.after, &snap.epoch, snap.latest, offsets) {
                    CatchUp::UpToDate => {}
                    CatchUp::Replay(i) => {
                        for (offset, frame) in &snap.entries[i..] {
                            s.sub.outbox.push(frame.clone(), None);
                            s.after = *offset;
                        }
                    }
                    CatchUp::Lost => {
                        s.sub
                            .outbox
                            .push(resync_frame(name, &snap.epoch, snap.latest), None);
                        s.epoch = Arc::from(snap.epoch.as_str());
                        s.after = snap.latest;
                    }
                }
            }
        }
    }

    /// Keeps this node's subscriber counts in Redis for `/api/channels`:
    /// written shortly after a change (batched), and at each presence
    /// refresh so the node stays listed.
    async fn counts_loop(self: Arc<Self>) {
        let every = (self.config.presence_timeout / 3).max(Duration::from_millis(50));
        loop {
            let _ = tokio::time::timeout(every, self.counts_changed.notified()).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
            if !self.up.load(Relaxed) {
                continue;
            }
            let mut counts: Vec<String> = Vec::new();
            for (name, n) in self.local_channels() {
                counts.push(name);
                counts.push(n.to_string());
            }
            let mut conn = self.conn.clone();
            let mut call = self.scripts.counts.key(keys::node_channels(&self.node));
            call.key(keys::NODES)
                .arg(&self.node)
                .arg(self.presence_ttl_ms())
                .arg(counts);
            if let Err(e) = bounded("counts", call.invoke_async::<Value>(&mut conn)).await {
                tracing::debug!("writing subscriber counts failed: {e}");
                self.counts_changed.notify_one();
            }
        }
    }

    /// Refreshes this node's members so they do not expire, and expires
    /// other nodes' stale ones.
    async fn refresh_loop(self: Arc<Self>) {
        let every = (self.config.presence_timeout / 3).max(Duration::from_millis(50));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if !self.up.load(Relaxed) {
                continue;
            }
            let channels: Vec<(String, Arc<Mutex<Local>>)> = lock(&self.channels)
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            for (name, ch) in channels {
                if let Err(e) = self.refresh_channel(&name, &ch).await {
                    tracing::debug!("presence refresh of {name} failed: {e}");
                }
            }
            if let Some(webhooks) = self.webhooks.get() {
                self.uncount_later_ones(webhooks).await;
                if let Err(e) = self.reap(webhooks).await {
                    tracing::debug!("webhooks: claiming dead nodes failed: {e}");
                }
            }
        }
    }

    /// Webhooks: keeps this node listed, claims the nodes gone quiet, and
    /// emits the `member_removed` and `channel_vacated` their deaths imply.
    async fn reap(&self, webhooks: &Webhooks) -> Result<(), EngineError> {
        let mut conn = self.conn.clone();
        let mut call = self.scripts.reap.key(keys::WEBHOOK_NODES);
        call.arg(&self.node).arg(self.presence_ttl_ms());
        let out = bounded("webhook nodes", call.invoke_async::<Vec<String>>(&mut conn)).await?;
        for pair in out.chunks(2) {
            match pair {
                [kind, member] if kind == "m" => {
                    let Some((channel, json)) = member.split_once('\n') else {
                        continue;
                    };
                    if let Some(m) = parse_member(json) {
                        webhooks.emit(Kind::MemberRemoved, Some(channel), Some(&m));
                    }
                }
                [kind, channel] if kind == "v" => {
                    webhooks.emit(Kind::ChannelVacated, Some(channel), None);
                }
                _ => {}
            }
        }
        if !out.is_empty() {
            tracing::info!(
                events = out.len() / 2,
                "webhooks: claimed a dead node's subscriptions"
            );
        }
        Ok(())
    }

    async fn refresh_channel(&self, name: &str, ch: &Mutex<Local>) -> Result<(), EngineError> {
        let (members, policy) = {
            let st = lock(ch);
            let members: Vec<String> = if st.policy.presence {
                st.subs
                    .iter()
                    .map(|s| member_json(s.sub.member()))
                    .collect()
            } else {
                Vec::new()
            };
            (members, st.policy.clone())
        };
        let mut conn = self.conn.clone();
        let mut call = self.scripts.refresh.key(keys::meta(name));
        call.key(keys::presence(name))
            .arg(self.meta_ttl_ms(&policy))
            .arg(self.presence_ttl_ms())
            .arg(events_to(name, &policy))
            .arg(members);
        bounded("presence refresh", call.invoke_async::<Value>(&mut conn)).await?;
        Ok(())
    }

    /// The subscribe script: epoch, latest offset, history after `since`;
    /// with `member`, lists it as present (and announces it with `join`).
    async fn snapshot(
        &self,
        channel: &str,
        policy: &ChannelPolicy,
        since: Option<u64>,
        member: Option<(&Member, bool)>,
        count: usize,
        counted: bool,
    ) -> Result<Snapshot, EngineError> {
        let mut conn = self.conn.clone();
        let mut call = self.scripts.subscribe.key(keys::meta(channel));
        call.key(keys::history(channel))
            .key(keys::presence(channel))
            .arg(new_epoch())
            .arg(since.map_or(-1, i128::from).to_string())
            .arg(millis(policy.history_ttl))
            .arg(self.meta_ttl_ms(policy))
            .arg(member.map_or_else(String::new, |(m, _)| member_json(m)))
            .arg(self.presence_ttl_ms())
            .arg(if member.is_some_and(|(_, join)| join) {
                "1"
            } else {
                "0"
            })
            .arg(keys::live(channel))
            .arg(count.max(1));
        if counted {
            call.key(keys::subscribers(channel))
                .key(keys::webhook_node_channels(&self.node))
                .key(keys::webhook_node_members(&self.node))
                .key(keys::WEBHOOK_NODES)
                .arg("1")
                .arg(channel)
                .arg(&self.node);
        }
        let values = bounded("subscribe", call.invoke_async::<Vec<Value>>(&mut conn)).await?;
        Snapshot::decode(channel, values)
            .ok_or_else(|| failed("subscribe", "unexpected answer from the script"))
    }

    /// A message from the pub/sub connection.
    fn on_live(&self, name: &str, payload: &[u8]) {
        let Some(channel) = keys::channel_of_live(name) else {
            return;
        };
        let Some(ch) = lock(&self.channels).get(channel).cloned() else {
            return;
        };
        let live = match parse_payload(payload) {
            Some(Payload::Message {
                epoch,
                offset,
                from,
                data,
            }) => {
                let Ok(from) = serde_json::from_str::<Option<String>>(from) else {
                    return;
                };
                let Ok(data) = serde_json::from_str::<&RawValue>(data) else {
                    return;
                };
                Live::Message {
                    epoch: Arc::from(epoch),
                    offset,
                    frame: text_frame(&protocol::message(channel, offset, data, from.as_deref())),
                }
            }
            Some(Payload::Join(m)) | Some(Payload::Leave(m)) => {
                let op = if payload.starts_with(b"j") {
                    "join"
                } else {
                    "leave"
                };
                // Another node may send them (a different config): this
                // node's policy decides what its clients get.
                if !lock(&ch).policy.join_leave {
                    return;
                }
                let Some(member) = parse_member(m) else {
                    return;
                };
                Live::Event {
                    join: op == "join",
                    frame: text_frame(&protocol::presence_event(op, channel, &member)),
                    client: member.client,
                }
            }
            None => {
                tracing::debug!("ignored a malformed message on {name}");
                return;
            }
        };
        lock(&ch).arrive(live, channel, &self.metrics);
    }

    /// Makes sure this node's pub/sub connection receives `channel`.
    async fn listen(&self, channel: &str) -> Result<(), EngineError> {
        let mut st = self.pubsub.lock().await;
        if st.subscribed.contains(channel) {
            return Ok(());
        }
        let Some(sink) = st.sink.as_mut() else {
            return Err(unavailable());
        };
        if let Err(e) = bounded("SUBSCRIBE", sink.subscribe(keys::live(channel))).await {
            self.reconnect.notify_waiters();
            return Err(e);
        }
        st.subscribed.insert(channel.to_owned());
        Ok(())
    }

    /// Stops receiving `channel` if it has no local subscriber left.
    async fn forget_if_idle(&self, channel: &str) {
        let mut st = self.pubsub.lock().await;
        {
            let mut channels = lock(&self.channels);
            match channels.get(channel) {
                Some(ch) if !lock(ch).subs.is_empty() => return,
                Some(_) => {
                    channels.remove(channel);
                }
                None => {}
            }
        }
        if st.subscribed.remove(channel) {
            if let Some(sink) = st.sink.as_mut() {
                if bounded("UNSUBSCRIBE", sink.unsubscribe(keys::live(channel)))
                    .await
                    .is_err()
                {
                    self.reconnect.notify_waiters();
                }
            }
        }
    }

    async fn publish(
        &self,
        channel: &str,
        data: &RawValue,
        from: Option<&str>,
        before_delivery: impl FnOnce(u64) + Send,
    ) -> Result<u64, EngineError> {
        if !self.up.load(Relaxed) {
            return Err(unavailable());
        }
        let policy = self.config.policy(channel);
        let hold = lock(&self.channels)
            .get(channel)
            .map(|ch| (ch.clone(), lock(ch).hold()));
        let from = serde_json::to_string(&from).unwrap_or_else(|_| "null".into());
        let mut conn = self.conn.clone();
        let mut call = self.scripts.publish.key(keys::meta(channel));
        call.key(keys::history(channel))
            .arg(new_epoch())
            .arg(policy.history_size)
            .arg(millis(policy.history_ttl))
            .arg(self.meta_ttl_ms(&policy))
            .arg(from)
            .arg(data.get())
            .arg(keys::live(channel));
        let result = bounded("publish", call.invoke_async::<(u64, String)>(&mut conn)).await;
        let result = result.map(|(offset, _epoch)| {
            before_delivery(offset);
            self.metrics.publishes.fetch_add(1, Relaxed);
            offset
        });
        if let Some((ch, ticket)) = hold {
            lock(&ch).release(ticket, channel, &self.metrics);
        }
        result
    }

    async fn subscribe(
        &self,
        channel: &str,
        subscriber: Subscriber,
        since: Option<u64>,
        epoch: Option<&str>,
        reply: impl FnOnce(&Subscribed) -> Bytes + Send,
    ) -> Result<Subscribed, EngineError> {
        if !self.up.load(Relaxed) {
            return Err(unavailable());
        }
        let client = subscriber.member().client.clone();
        let member = subscriber.member().clone();
        // Register first (pending), so live messages from now on are kept.
        let (ch, policy, already) = {
            let mut channels = lock(&self.channels);
            let ch = channels
                .entry(channel.to_owned())
                .or_insert_with(|| Arc::new(Mutex::new(Local::new(self.config.policy(channel)))))
                .clone();
            let mut st = lock(&ch);
            let policy = st.policy.clone();
            let already = match st.subs.iter_mut().find(|s| s.sub.member().client == client) {
                Some(s) => {
                    s.pending.get_or_insert_with(Vec::new);
                    true
                }
                None => {
                    st.subs.push(LocalSub {
                        sub: subscriber,
                        epoch: Arc::from(""),
                        after: 0,
                        pending: Some(Vec::new()),
                        replay: None,
                        frame_hint: FRAME_HINT,
                        awaiting_own_join: policy.join_leave,
                    });
                    false
                }
            };
            drop(st);
            (ch, policy, already)
        };
        let snapshot = match self.listen(channel).await {
            Ok(()) => {
                let join = !already && policy.join_leave;
                let member = policy.presence.then_some((&member, join));
                // Only the first entry after `since`: the replay is paged.
                // With webhooks, a new subscription is counted in Redis.
                let counted = !already && self.webhooks.get().is_some();
                self.snapshot(channel, &policy, since, member, 1, counted)
                    .await
            }
            Err(e) => Err(e),
        };
        let snap = match snapshot {
            Ok(s) => s,
            Err(e) => {
                self.abandon(channel, &ch, &client, already).await;
                return Err(e);
            }
        };
        if let Some(w) = self.webhooks.get().filter(|_| !already) {
            if snap.occupied {
                w.emit(Kind::ChannelOccupied, Some(channel), None);
            }
            if policy.presence {
                w.emit(Kind::MemberAdded, Some(channel), Some(&member));
            }
        }
        let first = snap.entries.first().map(|(o, _)| *o);
        let (recovered, replay) = recovery::rule(since, epoch, &snap.epoch, snap.latest, first);
        let mut result = Subscribed {
            offset: snap.latest,
            epoch: snap.epoch.clone(),
            recovered,
            replaying: false,
        };
        let mut st = lock(&ch);
        if let Some(s) = st.subs.iter_mut().find(|s| s.sub.member().client == client) {
            let same_epoch = *s.epoch == *snap.epoch;
            s.epoch = Arc::from(snap.epoch.as_str());
            match (replay, &mut s.replay) {
                (Some(after), _) => {
                    s.after = after;
                    s.replay = Some(Replay::new(after, snap.latest));
                    s.frame_hint = FRAME_HINT;
                }
                // Subscribing again while replaying: the replay goes on.
                (None, Some(r)) if same_epoch => r.defer(snap.latest),
                (None, _) => {
                    s.replay = None;
                    s.after = snap.latest;
                }
            }
            result.replaying = s.replay.is_some();
            s.sub.outbox.push(reply(&result), None);
            let now = Instant::now();
            for live in s.pending.take().unwrap_or_default() {
                deliver_to(s, &live, channel, now);
            }
        }
        self.counts_changed.notify_one();
        Ok(result)
    }

    /// The next page of `client`'s replay on `channel` (see
    /// [`Engine::replay`]): one script call reading about what `room`
    /// holds. If Redis fails, the replay ends with `recovered: false`.
    async fn replay(&self, channel: &str, client: &str, room: usize) -> bool {
        let Some(ch) = lock(&self.channels).get(channel).cloned() else {
            return false;
        };
        let (after, count, policy) = {
            let st = lock(&ch);
            let Some(s) = st.subs.iter().find(|s| s.sub.member().client == client) else {
                return false;
            };
            if s.replay.is_none() {
                return false;
            }
            let count = (room / s.frame_hint.max(1)).clamp(PAGE_MIN, PAGE_MAX);
            (s.after, count, st.policy.clone())
        };
        let snap = self
            .snapshot(channel, &policy, Some(after), None, count, false)
            .await;
        let mut st = lock(&ch);
        let Some(s) = st.subs.iter_mut().find(|s| s.sub.member().client == client) else {
            return false;
        };
        let Some(replay) = s.replay.as_mut() else {
            return false;
        };
        if s.after != after {
            // Subscribed again meanwhile: read from the new cursor.
            return true;
        }
        let lost = match snap {
            Ok(snap) if *s.epoch == *snap.epoch => {
                let entries = snap.entries.iter().map(|(o, f)| (*o, f));
                let epoch = &s.epoch;
                // A publication deferred to the replay while this page was
                // read is past the page's history, not lost from it.
                let end = replay.ends_with(snap.end, snap.latest);
                let paged = recovery::page(replay, entries, end, &s.sub.outbox, room, |o| {
                    resync_frame(channel, epoch, o)
                });
                let bytes: usize = snap
                    .entries
                    .iter()
                    .take(paged.queued)
                    .map(|(_, f)| f.len())
                    .sum();
                if let Some(hint) = bytes.checked_div(paged.queued) {
                    s.frame_hint = hint;
                }
                s.after = replay.after;
                paged.lost
            }
            other => {
                // The history it was replaying is gone (Redis lost its
                // data) or unreachable: the client is told, and goes live.
                let (epoch, latest) = match other {
                    Ok(snap) => (Arc::from(snap.epoch.as_str()), snap.latest),
                    Err(e) => {
                        tracing::warn!(channel, client, "replay page failed: {e}");
                        (s.epoch.clone(), replay.target)
                    }
                };
                let lost = latest.saturating_sub(s.after).max(1);
                s.sub
                    .outbox
                    .push(resync_frame(channel, &epoch, latest), None);
                s.epoch = epoch;
                s.after = latest;
                s.replay = None;
                lost
            }
        };
        if lost > 0 {
            self.metrics.replay_gaps.fetch_add(1, Relaxed);
            tracing::info!(
                channel,
                client,
                lost,
                "history was lost under a replay: the client was sent recovered:false"
            );
        }
        match &s.replay {
            Some(r) if r.done() => {
                s.replay = None;
                false
            }
            Some(_) => true,
            None => false,
        }
    }

    /// Undoes the registration of a subscribe that failed.
    async fn abandon(&self, channel: &str, ch: &Mutex<Local>, client: &str, already: bool) {
        {
            let mut st = lock(ch);
            if let Some(i) = st.subs.iter().position(|s| s.sub.member().client == client) {
                if already {
                    let s = &mut st.subs[i];
                    let now = Instant::now();
                    for live in s.pending.take().unwrap_or_default() {
                        deliver_to(s, &live, channel, now);
                    }
                } else {
                    st.subs.swap_remove(i);
                }
            }
        }
        self.forget_if_idle(channel).await;
    }

    async fn unsubscribe(&self, channel: &str, client: &str) -> bool {
        let Some(ch) = lock(&self.channels).get(channel).cloned() else {
            return false;
        };
        let (gone, policy) = {
            let mut st = lock(&ch);
            let Some(i) = st.subs.iter().position(|s| s.sub.member().client == client) else {
                return false;
            };
            (st.subs.swap_remove(i), st.policy.clone())
        };
        if let Some(w) = self.webhooks.get() {
            self.leave_counted(w, channel, &policy, gone.sub.member())
                .await;
        } else if policy.presence && self.up.load(Relaxed) {
            let mut conn = self.conn.clone();
            let mut call = self.scripts.leave.key(keys::presence(channel));
            call.arg(member_json(gone.sub.member()))
                .arg(events_to(channel, &policy));
            if let Err(e) = bounded("leave", call.invoke_async::<Value>(&mut conn)).await {
                // The member expires within the presence timeout instead.
                tracing::debug!("leave on {channel} failed: {e}");
            }
        }
        self.forget_if_idle(channel).await;
        self.counts_changed.notify_one();
        true
    }

    /// Webhooks: an unsubscribe (the leave and the uncounting in one
    /// script); emits `member_removed`, and `channel_vacated` when this
    /// took the cluster's count to 0.
    async fn leave_counted(
        &self,
        webhooks: &Webhooks,
        channel: &str,
        policy: &ChannelPolicy,
        member: &Member,
    ) {
        if policy.presence {
            webhooks.emit(Kind::MemberRemoved, Some(channel), Some(member));
        }
        if !self.up.load(Relaxed) {
            // Not sent: uncounted once Redis is back.
            let mut later = lock(&self.uncounted);
            if later.len() < MAX_UNCOUNTED {
                later.push((channel.to_owned(), member.clone()));
                tracing::debug!(
                    channel,
                    "webhooks: Redis is unreachable, an unsubscribe is uncounted when it is back"
                );
            } else {
                tracing::warn!(
                    channel,
                    "webhooks: Redis is unreachable and {MAX_UNCOUNTED} unsubscribes wait already: this one is not counted (the channel may never be reported vacated)"
                );
            }
            return;
        }
        let presence = policy.presence.then_some(member);
        match self.uncount(channel, policy, presence).await {
            Ok(true) => webhooks.emit(Kind::ChannelVacated, Some(channel), None),
            Ok(false) => {}
            // Maybe run, maybe not: not tried again (it could uncount
            // another subscription).
            Err(e) => tracing::warn!(
                channel,
                "webhooks: an unsubscribe could not be counted ({e}); the channel may never be reported vacated"
            ),
        }
    }

    /// The leave script with the uncounting: `member` leaves presence
    /// (when given) and one subscription of this node to `channel` is
    /// uncounted. True when that took the cluster's count to 0.
    async fn uncount(
        &self,
        channel: &str,
        policy: &ChannelPolicy,
        member: Option<&Member>,
    ) -> Result<bool, EngineError> {
        let mut conn = self.conn.clone();
        let mut call = self.scripts.leave_counted.key(keys::presence(channel));
        call.key(keys::subscribers(channel))
            .key(keys::webhook_node_channels(&self.node))
            .key(keys::webhook_node_members(&self.node))
            .arg(member.map(member_json).unwrap_or_default())
            .arg(events_to(channel, policy))
            .arg(channel);
        Ok(bounded("leave", call.invoke_async::<i64>(&mut conn)).await? == 1)
    }

    /// Webhooks: the unsubscribes made while Redis was unreachable, now
    /// that it answers (the `channel_vacated` they imply).
    async fn uncount_later_ones(&self, webhooks: &Webhooks) {
        let waiting = std::mem::take(&mut *lock(&self.uncounted));
        let mut left = waiting.into_iter();
        while let Some((channel, member)) = left.next() {
            if !self.up.load(Relaxed) {
                let mut later = lock(&self.uncounted);
                later.push((channel, member));
                later.extend(left);
                return;
            }
            let policy = self.config.policy(&channel);
            // Subscribed again meanwhile: that subscription is counted
            // and listed; only the old one is uncounted.
            let again = lock(&self.channels).get(&channel).is_some_and(|ch| {
                lock(ch)
                    .subs
                    .iter()
                    .any(|s| s.sub.member().client == member.client)
            });
            let presence = (policy.presence && !again).then_some(&member);
            match self.uncount(&channel, &policy, presence).await {
                Ok(true) => webhooks.emit(Kind::ChannelVacated, Some(&channel), None),
                Ok(false) => {}
                Err(e) => tracing::warn!(
                    channel,
                    "webhooks: an unsubscribe could not be counted ({e}); the channel may never be reported vacated"
                ),
            }
        }
    }

    async fn presence(&self, channel: &str) -> Result<Vec<Member>, EngineError> {
        if !self.up.load(Relaxed) {
            return Err(unavailable());
        }
        let mut conn = self.conn.clone();
        let call = self.scripts.presence.key(keys::presence(channel));
        let list = bounded("presence", call.invoke_async::<Vec<String>>(&mut conn)).await?;
        let mut members: Vec<Member> = list.iter().filter_map(|m| parse_member(m)).collect();
        members.sort_by(|a, b| a.client.cmp(&b.client));
        Ok(members)
    }

    /// This node's channels with subscribers, and how many.
    fn local_channels(&self) -> Vec<(String, usize)> {
        lock(&self.channels)
            .iter()
            .map(|(name, ch)| (name.clone(), lock(ch).subs.len()))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// Every node's channels: this node's counts now, the others' as last
    /// written (within a moment of a change). Only this node's while Redis
    /// is unreachable.
    async fn channels(&self) -> Vec<(String, usize)> {
        let mut total: HashMap<String, usize> = self.local_channels().into_iter().collect();
        if self.up.load(Relaxed) {
            let mut conn = self.conn.clone();
            let mut call = self.scripts.channels.key(keys::NODES);
            call.arg(&self.node);
            match bounded("channels", call.invoke_async::<Vec<String>>(&mut conn)).await {
                Ok(pairs) => {
                    for pair in pairs.chunks(2) {
                        if let [name, n] = pair {
                            if let Ok(n) = n.parse::<usize>() {
                                *total.entry(name.clone()).or_default() += n;
                            }
                        }
                    }
                }
                Err(e) => tracing::debug!("{e}"),
            }
        }
        let mut list: Vec<(String, usize)> = total.into_iter().filter(|(_, n)| *n > 0).collect();
        list.sort();
        list
    }
}

impl Engine for RedisEngine {
    fn publish(
        &self,
        channel: &str,
        data: &RawValue,
        from: Option<&str>,
        before_delivery: impl FnOnce(u64) + Send,
    ) -> impl Future<Output = Result<u64, EngineError>> + Send {
        self.inner.publish(channel, data, from, before_delivery)
    }

    fn subscribe(
        &self,
        channel: &str,
        subscriber: Subscriber,
        since: Option<u64>,
        epoch: Option<&str>,
        reply: impl FnOnce(&Subscribed) -> Bytes + Send,
    ) -> impl Future<Output = Result<Subscribed, EngineError>> + Send {
        self.inner
            .subscribe(channel, subscriber, since, epoch, reply)
    }

    fn replay(
        &self,
        channel: &str,
        client: &str,
        room: usize,
    ) -> impl Future<Output = bool> + Send {
        self.inner.replay(channel, client, room)
    }

    fn unsubscribe(&self, channel: &str, client: &str) -> impl Future<Output = bool> + Send {
        self.inner.unsubscribe(channel, client)
    }

    fn presence(
        &self,
        channel: &str,
    ) -> impl Future<Output = Result<Vec<Member>, EngineError>> + Send {
        self.inner.presence(channel)
    }

    /// Every node's channels and subscribers.
    fn channels(&self) -> impl Future<Output = Vec<(String, usize)>> + Send {
        self.inner.channels()
    }

    fn is_up(&self) -> bool {
        self.inner.up.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_a_hash_tag_and_round_trip() {
        assert_eq!(keys::meta("chat:a"), "wsline:{chat:a}:meta");
        assert_eq!(keys::history("chat:a"), "wsline:{chat:a}:history");
        assert_eq!(keys::presence("chat:a"), "wsline:{chat:a}:presence");
        assert_eq!(keys::live("chat:a"), "wsline:{chat:a}:live");
        assert_eq!(keys::channel_of_live(&keys::live("x.y@z")), Some("x.y@z"));
        assert_eq!(keys::channel_of_live("other:{x}:live"), None);
    }

    #[test]
    fn payloads_parse() {
        assert_eq!(
            parse_payload(b"m\nab12\n7\n\"u\"\n{\"a\":\"x\\ny\"}"),
            Some(Payload::Message {
                epoch: "ab12",
                offset: 7,
                from: "\"u\"",
                data: "{\"a\":\"x\\ny\"}",
            })
        );
        // Raw newlines inside the data (pretty-printed JSON) stay in it.
        assert_eq!(
            parse_payload(b"m\ne\n1\nnull\n[1,\n2]"),
            Some(Payload::Message {
                epoch: "e",
                offset: 1,
                from: "null",
                data: "[1,\n2]",
            })
        );
        assert_eq!(
            parse_payload(b"j\n{\"client\":\"c\"}"),
            Some(Payload::Join("{\"client\":\"c\"}"))
        );
        assert_eq!(parse_payload(b"l\nm"), Some(Payload::Leave("m")));
        assert_eq!(parse_payload(b"m\ne\nx\nnull\n1"), None);
        assert_eq!(parse_payload(b"z\n1"), None);
    }

    #[test]
    fn members_round_trip_as_json() {
        let m = Member {
            client: "c1".into(),
            user: Some("ann\n\"x\"".into()),
        };
        assert_eq!(parse_member(&member_json(&m)), Some(m));
        let anon = Member {
            client: "c2".into(),
            user: None,
        };
        assert_eq!(parse_member(&member_json(&anon)), Some(anon));
    }

    #[test]
    fn catch_up_after_an_outage() {
        assert_eq!(catch_up("e", 5, "e", 5, &[]), CatchUp::UpToDate);
        assert_eq!(catch_up("e", 3, "e", 5, &[2, 3, 4, 5]), CatchUp::Replay(2));
        assert_eq!(catch_up("e", 3, "e", 5, &[5]), CatchUp::Lost);
        assert_eq!(catch_up("e", 3, "e", 5, &[]), CatchUp::Lost);
        assert_eq!(catch_up("old", 3, "new", 0, &[]), CatchUp::Lost);
    }

    fn sub(client: &str) -> LocalSub {
        LocalSub {
            sub: Subscriber {
                outbox: Arc::new(crate::outbox::Outbox::for_member(
                    Member {
                        client: client.into(),
                        user: None,
                    },
                    1 << 20,
                )),
            },
            epoch: Arc::from("e"),
            after: 0,
            pending: None,
            replay: None,
            frame_hint: FRAME_HINT,
            awaiting_own_join: false,
        }
    }

    fn message(epoch: &str, offset: u64) -> Live {
        Live::Message {
            epoch: Arc::from(epoch),
            offset,
            frame: Bytes::from(offset.to_string()),
        }
    }

    fn drained(s: &LocalSub) -> Vec<String> {
        let mut out = Vec::new();
        s.sub.outbox.drain(
            |_| true,
            |(f, _)| out.push(String::from_utf8_lossy(&f).into_owned()),
        );
        out
    }

    #[test]
    fn live_messages_already_replayed_are_not_doubled() {
        let now = Instant::now();
        let mut s = sub("a");
        s.pending = Some(Vec::new());
        // Arrive while the subscribe reads history: kept.
        for o in [3, 4, 5] {
            assert!(!deliver_to(&mut s, &message("e", o), "c", now));
        }
        assert!(drained(&s).is_empty());
        // History said latest = 4 (and replayed up to it).
        s.after = 4;
        for live in s.pending.take().unwrap() {
            deliver_to(&mut s, &live, "c", now);
        }
        assert!(deliver_to(&mut s, &message("e", 6), "c", now));
        assert!(!deliver_to(&mut s, &message("e", 6), "c", now));
        assert_eq!(drained(&s), ["5", "6"]);
    }

    #[test]
    fn a_new_epoch_resyncs_and_restarts_offsets() {
        let now = Instant::now();
        let mut s = sub("a");
        s.after = 9;
        assert!(deliver_to(&mut s, &message("f", 1), "c", now));
        let got = drained(&s);
        assert_eq!(got.len(), 2);
        assert!(got[0].contains(r#""op":"subscribed""#) && got[0].contains(r#""recovered":false"#));
        assert_eq!(got[1], "1");
    }

    #[test]
    fn live_items_wait_only_for_publishes_already_in_flight() {
        let metrics = Metrics::default();
        let policy = HubConfig::default().policy("c");
        let mut ch = Local::new(policy);
        ch.subs.push(sub("a"));
        let first = ch.hold();
        ch.arrive(message("e", 1), "c", &metrics);
        let second = ch.hold();
        ch.arrive(message("e", 2), "c", &metrics);
        assert!(drained(&ch.subs[0]).is_empty(), "held behind publishes");
        // 1 waited for the first publish only: out once it is answered,
        // though the second is still in flight.
        ch.release(first, "c", &metrics);
        assert_eq!(drained(&ch.subs[0]), ["1"]);
        ch.release(second, "c", &metrics);
        assert_eq!(drained(&ch.subs[0]), ["2"]);
        ch.arrive(message("e", 3), "c", &metrics);
        assert_eq!(drained(&ch.subs[0]), ["3"], "nothing in flight: at once");
    }

    fn event(client: &str, join: bool) -> Live {
        let op = if join { "join" } else { "leave" };
        Live::Event {
            client: client.into(),
            join,
            frame: Bytes::from(format!("{op} {client}")),
        }
    }

    #[test]
    fn events_skip_the_member_they_are_about() {
        let now = Instant::now();
        let mut a = sub("a");
        let mut b = sub("b");
        let join = event("a", true);
        deliver_to(&mut a, &join, "c", now);
        deliver_to(&mut b, &join, "c", now);
        assert!(drained(&a).is_empty());
        assert_eq!(drained(&b), ["join a"]);
    }

    #[test]
    fn presence_events_older_than_the_subscribe_are_dropped() {
        let now = Instant::now();
        // The subscribe's own join comes back while it reads history.
        let mut a = sub("a");
        a.pending = Some(Vec::new());
        a.awaiting_own_join = true;
        deliver_to(&mut a, &event("x", true), "c", now);
        deliver_to(&mut a, &message("e", 1), "c", now);
        deliver_to(&mut a, &event("a", true), "c", now);
        deliver_to(&mut a, &event("y", true), "c", now);
        a.after = 0;
        for live in a.pending.take().unwrap() {
            deliver_to(&mut a, &live, "c", now);
        }
        deliver_to(&mut a, &event("x", false), "c", now);
        assert_eq!(drained(&a), ["1", "join y", "leave x"]);

        // Its own join comes back after the reply: everything before it is
        // older than the subscriber.
        let mut b = sub("b");
        b.pending = Some(Vec::new());
        b.awaiting_own_join = true;
        deliver_to(&mut b, &event("x", true), "c", now);
        for live in b.pending.take().unwrap() {
            deliver_to(&mut b, &live, "c", now);
        }
        deliver_to(&mut b, &event("y", true), "c", now);
        assert!(drained(&b).is_empty());
        deliver_to(&mut b, &event("b", true), "c", now);
        deliver_to(&mut b, &event("z", true), "c", now);
        assert_eq!(drained(&b), ["join z"]);
    }
}
