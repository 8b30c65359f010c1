//! The in-memory engine: channels in a map, history in each channel's
//! ring, delivery straight into the subscribers' outboxes. With
//! `data_dir`, every entry of history is also written to the node's log
//! (`store`) before it is delivered, and read back at start.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use serde_json::value::RawValue;
use smallvec::SmallVec;

use super::recovery::{self, Replay};
use super::store::{Recovered, Store, StoreError};
use super::{text_frame, Engine, EngineError, Subscribed, Subscriber};
use crate::config::{ChannelPolicy, HubConfig};
use crate::metrics::Metrics;
use crate::protocol::{self, Member};
use crate::webhooks::{Kind, Webhooks};

/// A channel's history epoch: most are this process's (`BOOT-N`, kept as
/// N, no allocation); a channel read back from the log keeps its own.
enum Epoch {
    Boot(u64),
    Saved(Box<str>),
}

impl Epoch {
    fn name<'a>(&'a self, boot: &str) -> Cow<'a, str> {
        match self {
            Epoch::Boot(generation) => Cow::Owned(format!("{boot}-{generation}")),
            Epoch::Saved(name) => Cow::Borrowed(name),
        }
    }
}

/// Subscribers replaying history, by client: live publications are not
/// queued to them (the replay reaches them in history).
type Replays = HashMap<String, Replay>;

/// One channel. Kept small: with a channel of its own per connection, the
/// common case is no history, no replay and one subscriber, which costs
/// no allocation beyond the state itself.
struct ChannelState {
    offset: u64,
    epoch: Epoch,
    history: VecDeque<(u64, Instant, Bytes)>,
    /// Held inline while there is one.
    subscribers: SmallVec<[Subscriber; 1]>,
    /// Boxed, and only while a replay is in progress.
    #[allow(clippy::box_collection)] // 8 bytes in every channel, not 48
    replays: Option<Box<Replays>>,
    /// Shared by every channel with the same options.
    policy: Arc<ChannelPolicy>,
    /// Swept out of the map: whoever locked it after that must look the
    /// channel up again (a publication or subscriber would be lost in it).
    gone: bool,
}

impl ChannelState {
    fn new(epoch: Epoch, policy: Arc<ChannelPolicy>) -> Self {
        Self {
            offset: 0,
            epoch,
            history: VecDeque::new(),
            subscribers: SmallVec::new(),
            replays: None,
            policy,
            gone: false,
        }
    }

    fn is_replaying(&self, client: &str) -> bool {
        self.replays
            .as_ref()
            .is_some_and(|r| r.contains_key(client))
    }

    fn end_replay(&mut self, client: &str) {
        if let Some(replays) = &mut self.replays {
            replays.remove(client);
            if replays.is_empty() {
                self.replays = None;
            }
        }
    }

    fn trim(&mut self, now: Instant) {
        while self.history.len() > self.policy.history_size {
            self.history.pop_front();
        }
        while self
            .history
            .front()
            .is_some_and(|(_, at, _)| now.duration_since(*at) > self.policy.history_ttl)
        {
            self.history.pop_front();
        }
    }

    /// Sends `frame` to every subscriber but `except`.
    fn broadcast(&self, frame: &Bytes, except: &str) {
        for s in &self.subscribers {
            if s.member().client != except {
                s.outbox.push(frame.clone(), None);
            }
        }
    }
}

/// The in-memory engine: one process. Without `data_dir` history is lost
/// on restart (the epoch changes, so clients learn their recovery is
/// incomplete); with it, history, offsets and epochs survive a restart.
pub struct MemoryEngine {
    config: Arc<HubConfig>,
    metrics: Arc<Metrics>,
    channels: Mutex<HashMap<Box<str>, Arc<Mutex<ChannelState>>>>,
    /// The distinct channel policies in use (at most one per configured
    /// pattern, and the defaults), shared by the channels.
    policies: Mutex<Vec<Arc<ChannelPolicy>>>,
    boot: String,
    generation: AtomicU64,
    store: Option<Arc<Store>>,
    /// Where channel and member events go, when webhooks are on: emitted
    /// under the channel's lock, so they come in the order they happened.
    webhooks: OnceLock<Arc<Webhooks>>,
}

/// Now, in ms since the Unix epoch (how the log dates entries).
fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl MemoryEngine {
    /// An empty engine.
    pub fn new(config: Arc<HubConfig>, metrics: Arc<Metrics>) -> Self {
        metrics.engine_up.store(1, Relaxed);
        Self {
            config,
            metrics,
            channels: Mutex::new(HashMap::new()),
            policies: Mutex::new(Vec::new()),
            boot: format!("{:08x}", rand::random::<u32>()),
            generation: AtomicU64::new(0),
            store: None,
            webhooks: OnceLock::new(),
        }
    }

    /// Emits channel and member events into `webhooks` from now on.
    pub(crate) fn set_webhooks(&self, webhooks: Arc<Webhooks>) {
        let _ = self.webhooks.set(webhooks);
    }

    /// The engine `config` asks for: with `data_dir`, the history the log
    /// holds is read back (what `history_size` and `history_ttl` still
    /// allow) and the log rewritten with just that.
    pub fn open(config: Arc<HubConfig>, metrics: Arc<Metrics>) -> Result<Self, StoreError> {
        let mut engine = Self::new(config.clone(), metrics);
        let Some(dir) = &config.data_dir else {
            return Ok(engine);
        };
        let (store, recovered) = Store::open(Path::new(dir), config.fsync)?;
        let cut = recovered.cut;
        let restored = engine.restore(recovered);
        engine.store = Some(store.clone());
        engine.compact(&store)?;
        tracing::info!(
            data_dir = %store.dir().display(),
            channels = restored.0,
            entries = restored.1,
            cut_bytes = cut,
            "history read back from the data directory"
        );
        Ok(engine)
    }

    /// Rebuilds channels from the log; gives how many channels and
    /// entries it kept.
    fn restore(&self, recovered: Recovered) -> (usize, usize) {
        if recovered.rebooted_unsynced {
            tracing::warn!(
                "the machine restarted and fsync is an interval: entries written after the last \
                 sync may be lost, so every channel starts a new epoch (clients get recovered:false)"
            );
            return (0, 0);
        }
        let now = Instant::now();
        let now_ms = wall_ms();
        let mut channels = lock(&self.channels);
        let mut entries = 0;
        for (name, saved) in recovered.channels {
            let policy = self.policy(&name);
            if policy.history_size == 0 {
                continue;
            }
            let history = saved
                .entries
                .into_iter()
                .filter_map(|e| {
                    let age = Duration::from_millis(now_ms.saturating_sub(e.time_ms));
                    (age <= policy.history_ttl)
                        .then(|| (e.offset, now.checked_sub(age).unwrap_or(now), e.frame))
                })
                .collect();
            let mut st = ChannelState::new(Epoch::Saved(saved.epoch.into()), policy);
            st.offset = saved.offset;
            st.history = history;
            st.trim(now);
            entries += st.history.len();
            channels.insert(name.into(), Arc::new(Mutex::new(st)));
        }
        (channels.len(), entries)
    }

    /// Rewrites the log from the channels, holding all of them (no
    /// publication in between).
    fn compact(&self, store: &Store) -> Result<(), StoreError> {
        let channels = lock(&self.channels);
        let held: Vec<(&Box<str>, MutexGuard<'_, ChannelState>)> =
            channels.iter().map(|(name, ch)| (name, lock(ch))).collect();
        let now = Instant::now();
        let now_ms = wall_ms();
        store.compact(|snapshot| {
            for (name, st) in &held {
                if st.policy.history_size == 0 {
                    continue;
                }
                let epoch = st.epoch.name(&self.boot);
                if st.history.is_empty() {
                    if st.offset > 0 {
                        snapshot.record(name, &epoch, st.offset, now_ms, b"")?;
                    }
                    continue;
                }
                for (offset, at, frame) in &st.history {
                    let age = now.duration_since(*at).as_millis() as u64;
                    snapshot.record(name, &epoch, *offset, now_ms.saturating_sub(age), frame)?;
                }
            }
            Ok(())
        })
    }

    /// Runs `f` on channel `name`, locked (made if it does not exist);
    /// never on one the sweep removed between the lookup and the lock:
    /// a publication or subscriber put in that one would be lost.
    fn in_live_channel<R>(&self, name: &str, f: impl FnOnce(&mut ChannelState) -> R) -> R {
        let mut ch = self.channel(name);
        loop {
            let mut st = lock(&ch);
            if !st.gone {
                return f(&mut st);
            }
            drop(st);
            ch = self.channel(name);
        }
    }

    fn channel(&self, name: &str) -> Arc<Mutex<ChannelState>> {
        let mut channels = lock(&self.channels);
        if let Some(ch) = channels.get(name) {
            return ch.clone();
        }
        let generation = self.generation.fetch_add(1, Relaxed);
        let ch = Arc::new(Mutex::new(ChannelState::new(
            Epoch::Boot(generation),
            self.policy(name),
        )));
        channels.insert(name.into(), ch.clone());
        ch
    }

    /// `name`'s policy, shared with every channel that has the same.
    fn policy(&self, name: &str) -> Arc<ChannelPolicy> {
        let policy = self.config.policy(name);
        let mut policies = lock(&self.policies);
        if let Some(p) = policies.iter().find(|p| ***p == policy) {
            return p.clone();
        }
        let p = Arc::new(policy);
        policies.push(p.clone());
        p
    }

    /// Forgets channels with no subscribers and no history left; rewrites
    /// the log once it has grown to twice what it holds.
    pub fn sweep(&self) {
        let now = Instant::now();
        lock(&self.channels).retain(|_, ch| {
            let mut st = lock(ch);
            st.trim(now);
            let keep = !(st.subscribers.is_empty() && st.history.is_empty());
            st.gone = !keep;
            keep
        });
        if let Some(store) = self.store.as_ref().filter(|s| s.wants_compaction()) {
            if let Err(e) = self.compact(store) {
                tracing::error!("cannot compact the history log: {e}");
            }
        }
    }

    /// The `from` of the latest publication in `channel`'s history whose
    /// `from` starts with `prefix` (how a bridge finds the last message
    /// id it stored there, after a restart with `data_dir`).
    pub fn last_from(&self, channel: &str, prefix: &str) -> Option<String> {
        let ch = lock(&self.channels).get(channel)?.clone();
        let st = lock(&ch);
        st.history
            .iter()
            .rev()
            .filter_map(|(_, _, frame)| frame_from(frame))
            .find(|from| from.starts_with(prefix))
    }

    fn publish_now(
        &self,
        channel: &str,
        data: &RawValue,
        from: Option<&str>,
        before_delivery: impl FnOnce(u64),
    ) -> Result<u64, EngineError> {
        self.in_live_channel(channel, |st| {
            let now = Instant::now();
            let offset = st.offset + 1;
            let frame = text_frame(&protocol::message(channel, offset, data, from));
            if st.policy.history_size > 0 {
                if let Some(store) = &self.store {
                    // On disk (or at least with the kernel) before anyone
                    // sees it; on failure the publication did not happen.
                    let epoch = st.epoch.name(&self.boot);
                    if let Err(e) = store.append(channel, &epoch, offset, wall_ms(), &frame) {
                        if !store.is_up() {
                            self.metrics.engine_up.store(0, Relaxed);
                        }
                        tracing::error!(channel, "publication refused: {e}");
                        return Err(EngineError(format!("history could not be stored: {e}")));
                    }
                }
                st.history.push_back((offset, now, frame.clone()));
            }
            st.offset = offset;
            st.trim(now);
            before_delivery(offset);
            let mut delivered = 0;
            let st = &*st;
            for s in &st.subscribers {
                if st.replays.is_some() && st.is_replaying(&s.member().client) {
                    continue;
                }
                if s.outbox.push(frame.clone(), Some(now)) {
                    delivered += 1;
                }
            }
            self.metrics.publishes.fetch_add(1, Relaxed);
            self.metrics.deliveries.fetch_add(delivered, Relaxed);
            Ok(offset)
        })
    }

    fn subscribe_now(
        &self,
        channel: &str,
        subscriber: Subscriber,
        since: Option<u64>,
        epoch: Option<&str>,
        reply: impl FnOnce(&Subscribed) -> Bytes,
    ) -> Subscribed {
        self.in_live_channel(channel, |st| {
            st.trim(Instant::now());
            let first = since.and_then(|s| {
                let i = st.history.partition_point(|(o, _, _)| *o <= s);
                st.history.get(i).map(|(o, _, _)| *o)
            });
            let epoch_now = st.epoch.name(&self.boot);
            let (recovered, replay) = recovery::rule(since, epoch, &epoch_now, st.offset, first);
            let epoch_now = epoch_now.into_owned();
            let client = subscriber.member().client.clone();
            let latest = st.offset;
            // Without a replay now, one already in progress (subscribing again)
            // goes on.
            if let Some(after) = replay {
                st.replays
                    .get_or_insert_with(Box::default)
                    .insert(client.clone(), Replay::new(after, latest));
            }
            let result = Subscribed {
                offset: st.offset,
                epoch: epoch_now,
                recovered,
                replaying: st.is_replaying(&client),
            };
            subscriber.outbox.push(reply(&result), None);
            let already = st
                .subscribers
                .iter()
                .any(|s| s.member().client == subscriber.member().client);
            if !already {
                // Join/leave events are opt-in: with N members a join is N
                // frames. Membership itself is the subscriber list either way.
                if st.policy.join_leave {
                    let join = text_frame(&protocol::presence_event(
                        "join",
                        channel,
                        subscriber.member(),
                    ));
                    st.broadcast(&join, &subscriber.member().client);
                }
                if let Some(w) = self.webhooks.get() {
                    if st.subscribers.is_empty() {
                        w.emit(Kind::ChannelOccupied, Some(channel), None);
                    }
                    if st.policy.presence {
                        w.emit(Kind::MemberAdded, Some(channel), Some(subscriber.member()));
                    }
                }
                st.subscribers.push(subscriber);
            }
            result
        })
    }

    fn replay_now(&self, channel: &str, client: &str, room: usize) -> bool {
        let Some(ch) = lock(&self.channels).get(channel).cloned() else {
            return false;
        };
        let mut guard = lock(&ch);
        guard.trim(Instant::now());
        let st = &mut *guard;
        let Some(replay) = st.replays.as_mut().and_then(|r| r.get_mut(client)) else {
            return false;
        };
        let Some(sub) = st.subscribers.iter().find(|s| s.member().client == client) else {
            st.end_replay(client);
            return false;
        };
        // Under the channel's lock: no publication can come between the
        // last entry replayed and the switch to live.
        replay.target = st.offset;
        let start = st.history.partition_point(|(o, _, _)| *o <= replay.after);
        let entries = st.history.range(start..).map(|(o, _, f)| (*o, f));
        let epoch = st.epoch.name(&self.boot);
        let epoch = &*epoch;
        let paged = recovery::page(replay, entries, true, &sub.outbox, room, |o| {
            recovery::resync_frame(channel, epoch, o)
        });
        if paged.lost > 0 {
            self.metrics.replay_gaps.fetch_add(1, Relaxed);
            tracing::info!(
                channel,
                client,
                lost = paged.lost,
                "history was trimmed under a replay: the client was sent recovered:false"
            );
        }
        if replay.done() {
            st.end_replay(client);
            return false;
        }
        true
    }

    fn unsubscribe_now(&self, channel: &str, client: &str) -> bool {
        let Some(ch) = lock(&self.channels).get(channel).cloned() else {
            return false;
        };
        let mut st = lock(&ch);
        let Some(i) = st
            .subscribers
            .iter()
            .position(|s| s.member().client == client)
        else {
            return false;
        };
        let gone = st.subscribers.swap_remove(i);
        st.end_replay(client);
        if st.policy.join_leave {
            let leave = text_frame(&protocol::presence_event("leave", channel, gone.member()));
            st.broadcast(&leave, client);
        }
        if let Some(w) = self.webhooks.get() {
            if st.policy.presence {
                w.emit(Kind::MemberRemoved, Some(channel), Some(gone.member()));
            }
            if st.subscribers.is_empty() {
                w.emit(Kind::ChannelVacated, Some(channel), None);
            }
        }
        true
    }
}

/// The `from` of a publication's frame (an unmasked server text frame
/// holding `protocol::message`'s JSON).
fn frame_from(frame: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct From {
        from: Option<String>,
    }
    let start = match frame.get(1)? & 0x7f {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    serde_json::from_slice::<From>(frame.get(start..)?)
        .ok()?
        .from
}

impl Engine for MemoryEngine {
    fn publish(
        &self,
        channel: &str,
        data: &RawValue,
        from: Option<&str>,
        before_delivery: impl FnOnce(u64) + Send,
    ) -> impl Future<Output = Result<u64, EngineError>> + Send {
        std::future::ready(self.publish_now(channel, data, from, before_delivery))
    }

    fn subscribe(
        &self,
        channel: &str,
        subscriber: Subscriber,
        since: Option<u64>,
        epoch: Option<&str>,
        reply: impl FnOnce(&Subscribed) -> Bytes + Send,
    ) -> impl Future<Output = Result<Subscribed, EngineError>> + Send {
        let r = self.subscribe_now(channel, subscriber, since, epoch, reply);
        std::future::ready(Ok(r))
    }

    fn replay(
        &self,
        channel: &str,
        client: &str,
        room: usize,
    ) -> impl Future<Output = bool> + Send {
        std::future::ready(self.replay_now(channel, client, room))
    }

    fn unsubscribe(&self, channel: &str, client: &str) -> impl Future<Output = bool> + Send {
        std::future::ready(self.unsubscribe_now(channel, client))
    }

    fn presence(
        &self,
        channel: &str,
    ) -> impl Future<Output = Result<Vec<Member>, EngineError>> + Send {
        let members = lock(&self.channels)
            .get(channel)
            .map_or_else(Vec::new, |ch| {
                lock(ch)
                    .subscribers
                    .iter()
                    .map(|s| s.member().clone())
                    .collect()
            });
        std::future::ready(Ok(members))
    }

    fn channels(&self) -> impl Future<Output = Vec<(String, usize)>> + Send {
        let mut list: Vec<(String, usize)> = lock(&self.channels)
            .iter()
            .map(|(name, ch)| (name.to_string(), lock(ch).subscribers.len()))
            .filter(|(_, n)| *n > 0)
            .collect();
        list.sort();
        std::future::ready(list)
    }

    fn is_up(&self) -> bool {
        self.store.as_ref().is_none_or(|s| s.is_up())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With a channel of its own per connection, a channel's state is paid
    /// once per connection: rarely used parts stay boxed or shared. 104
    /// bytes today; it was 176 with the replays' map and the policy inline.
    #[test]
    fn a_channel_state_stays_small() {
        let size = std::mem::size_of::<ChannelState>();
        eprintln!("a channel's state: {size} bytes");
        assert!(size <= 112, "a channel's state is {size} bytes");
    }

    #[test]
    fn a_channel_the_sweep_removed_is_marked_and_publishing_finds_a_live_one() {
        let engine = MemoryEngine::new(Arc::new(HubConfig::default()), Arc::default());
        // A publisher's lookup, just before the sweep.
        let stale = engine.channel("c");
        engine.sweep();
        assert!(lock(&stale).gone, "no subscribers, no history: removed");
        let data = RawValue::from_string("1".to_owned()).unwrap();
        assert_eq!(engine.publish_now("c", &data, None, |_| {}).ok(), Some(1));
        let live = lock(&engine.channels)["c"].clone();
        assert!(!Arc::ptr_eq(&live, &stale));
        assert_eq!(
            lock(&live).history.len(),
            1,
            "the publication is in the live channel"
        );
        assert!(lock(&stale).history.is_empty());
    }

    #[test]
    fn last_from_finds_the_latest_publication_whose_from_has_a_prefix() {
        let engine = MemoryEngine::new(Arc::new(HubConfig::default()), Arc::default());
        let small = RawValue::from_string("1".to_owned()).unwrap();
        // Frames of each header length: 2, 4 and 10 bytes.
        let medium = RawValue::from_string(format!("\"{}\"", "m".repeat(300))).unwrap();
        let big = RawValue::from_string(format!("\"{}\"", "b".repeat(70_000))).unwrap();
        for (data, from) in [(&small, "bridge:nats:S#1"), (&medium, "bridge:nats:S#2")] {
            engine.publish_now("c", data, Some(from), |_| {}).unwrap();
        }
        assert_eq!(
            engine.last_from("c", "bridge:nats:S#").as_deref(),
            Some("bridge:nats:S#2")
        );
        engine
            .publish_now("c", &big, Some("bridge:nats:S#3"), |_| {})
            .unwrap();
        engine
            .publish_now("c", &small, Some("client-1"), |_| {})
            .unwrap();
        engine.publish_now("c", &small, None, |_| {}).unwrap();
        assert_eq!(
            engine.last_from("c", "bridge:nats:S#").as_deref(),
            Some("bridge:nats:S#3")
        );
        assert_eq!(engine.last_from("c", "bridge:nats:T#"), None);
        assert_eq!(engine.last_from("elsewhere", ""), None);
    }
}
