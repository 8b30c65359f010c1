//! The NATS bridge: `[[bridge.nats]]` entries (docs/bridges.md).
//!
//! Owns one NATS connection per entry (async-nats: it reconnects by
//! itself, and resubscribes) and three kinds of task on it: core
//! subscriptions whose messages go through a bounded queue to one
//! publisher task; a JetStream durable pull consumer whose messages are
//! published one at a time and acknowledged only once the engine has
//! stored them; an outbound task that sends the [`Outbound`] queue the
//! engine's [`super::Tap`] fills. It does not own the channels, the
//! templates or the counters ([`super`]), nor storage (the engine).
//!
//! Order: each entry publishes its messages one after another, in the
//! order NATS delivered them, so one subject's order is kept.
//!
//! JetStream duplicates: every publication carries its message id in its
//! `from`, `bridge:nats:STREAM#SEQ` (the stream sequence). A message whose
//! sequence is not above the last one stored in its channel is a
//! redelivery of one already stored (killed between the store and the
//! ack): acknowledged, not published again. The last sequence per channel
//! is kept in memory, and found again in the channel's history after a
//! restart (memory engine; with `data_dir` that history survives).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::consumer::pull;
use async_nats::HeaderMap;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::{payload_to_data, Outbound, Route, Template, FROM_PREFIX};
use crate::config::{mask_password, valid_channel};
use crate::engine::Engine;
use crate::Hub;

/// Header naming the hub that mirrored a publication out: the inbound
/// side of the same hub drops what carries its own id (no echo).
const HUB_HEADER: &str = "Wsline-Hub";

/// Why a bridge could not do something now (logged; it tries again).
#[derive(Debug, thiserror::Error)]
enum BridgeError {
    #[error("cannot reach NATS JetStream stream {stream:?} (does it exist? create it, e.g. `nats stream add {stream}`): {source}")]
    Stream {
        stream: String,
        source: jetstream::context::GetStreamError,
    },
    #[error(
        "cannot create or read the durable consumer {durable:?} of stream {stream:?}: {source}"
    )]
    Consumer {
        stream: String,
        durable: String,
        source: jetstream::stream::ConsumerError,
    },
    #[error("cannot fetch from the consumer {durable:?}: {source}")]
    Fetch {
        durable: String,
        source: jetstream::consumer::pull::BatchError,
    },
}

/// Whether every server URL parses (the config check).
pub(super) fn check_servers(servers: &[String]) -> Result<(), String> {
    for url in servers {
        url.parse::<async_nats::ServerAddr>()
            .map_err(|e| format!("server {url:?} is not a NATS URL (nats://host:port): {e}"))?;
    }
    Ok(())
}

/// What every task of one entry shares.
struct Entry {
    hub: Arc<Hub>,
    name: String,
    /// Inbound: the channel from the subject.
    channel: Template,
    /// This hub's id in [`HUB_HEADER`] (one for all the entries, so what
    /// one entry mirrors out another does not feed back in).
    hub_id: String,
}

impl Entry {
    fn count(&self, direction: &'static str, result: &'static str) {
        self.hub.metrics.bridge_count(&self.name, direction, result);
    }

    /// Whether `message` is one this hub mirrored out (counted as an
    /// echo): it is not published in again.
    fn is_own(&self, message: &async_nats::Message) -> bool {
        let own = message
            .headers
            .as_ref()
            .and_then(|h| h.get(HUB_HEADER))
            .is_some_and(|v| v.as_str() == self.hub_id);
        if own {
            self.count("in", "echo");
        }
        own
    }

    /// The channel for `subject`, or None (counted, logged).
    fn channel_for(&self, subject: &str) -> Option<String> {
        match self.channel.render(subject) {
            Some(c) if valid_channel(&c) => Some(c),
            other => {
                self.count("in", "invalid");
                tracing::warn!(
                    bridge = %self.name,
                    subject,
                    channel = ?other,
                    "no valid channel name for this subject (1-255 of A-Za-z0-9_-:.@): message dropped"
                );
                None
            }
        }
    }

    /// Publishes `payload` on `channel` until the engine takes it (it
    /// may be down: retried with backoff, so order is kept); None when
    /// the payload is neither JSON nor UTF-8 text.
    async fn publish(&self, channel: &str, payload: &[u8], from: &str) -> Option<u64> {
        let Some(data) = payload_to_data(payload) else {
            self.count("in", "invalid");
            tracing::warn!(bridge = %self.name, channel, "payload is not UTF-8: message dropped");
            return None;
        };
        let mut backoff = Backoff::default();
        loop {
            match self
                .hub
                .engine
                .publish(channel, &data, Some(from), |_| {})
                .await
            {
                Ok(offset) => {
                    self.count("in", "published");
                    return Some(offset);
                }
                Err(e) => {
                    self.count("in", "error");
                    tracing::warn!(bridge = %self.name, channel, "cannot publish, retrying: {e}");
                    backoff.wait().await;
                }
            }
        }
    }
}

/// Exponential backoff from 100 ms to 5 s.
#[derive(Default)]
struct Backoff(u32);

impl Backoff {
    async fn wait(&mut self) {
        let ms = (100u64 << self.0.min(6)).min(5000);
        self.0 += 1;
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

/// Starts entry `index`: its connection, and its tasks in `tasks`; its
/// outbound route, if any, in `routes`. `hub_id` is this hub's id in
/// [`HUB_HEADER`], the same for every entry.
pub(super) fn start(
    hub: &Arc<Hub>,
    config: &super::NatsBridgeConfig,
    index: usize,
    hub_id: &str,
    routes: &mut Vec<Route>,
    tasks: &mut JoinSet<()>,
) {
    let name = config.name(index);
    // Checked with the configuration: these parse.
    let (Ok(channel), Ok(subject)) = (
        Template::parse(&config.channel, "subject"),
        Template::parse(&config.subject, "channel"),
    ) else {
        return;
    };
    let entry = Arc::new(Entry {
        hub: hub.clone(),
        name: name.clone(),
        channel,
        hub_id: hub_id.to_owned(),
    });
    let log_name = name.clone();
    let servers = config.servers.clone();
    let shown: Vec<String> = servers.iter().map(|u| mask_password(u)).collect();
    let options = async_nats::ConnectOptions::new()
        .name(format!("wsline {name}"))
        .retry_on_initial_connect()
        .max_reconnects(None)
        .event_callback(move |event| {
            let name = log_name.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        tracing::info!(bridge = %name, "connected to NATS")
                    }
                    async_nats::Event::Disconnected => {
                        tracing::warn!(bridge = %name, "disconnected from NATS: reconnecting")
                    }
                    other => tracing::warn!(bridge = %name, "NATS: {other}"),
                }
            }
        });
    let outbound = (!config.channels.is_empty()).then(|| {
        let (queue, rx) = mpsc::channel(config.max_pending);
        routes.push(Route {
            bridge: name.clone(),
            patterns: config.channels.clone(),
            queue,
        });
        rx
    });
    let config = config.clone();
    tasks.spawn(async move {
        tracing::info!(bridge = %entry.name, servers = ?shown, "connecting to NATS");
        let client = match options.connect(servers.clone()).await {
            Ok(c) => c,
            Err(e) => {
                // Only for what retrying cannot fix (e.g. a TLS setup).
                tracing::error!(bridge = %entry.name, "cannot connect to NATS at {shown:?}: {e}");
                return;
            }
        };
        let mut tasks = JoinSet::new();
        if let Some(rx) = outbound {
            tasks.spawn(send_out(entry.clone(), client.clone(), rx, subject));
        }
        match &config.stream {
            Some(stream) => {
                let durable = config
                    .durable
                    .clone()
                    .unwrap_or_else(|| "wsline".to_owned());
                tasks.spawn(consume_stream(
                    entry.clone(),
                    client.clone(),
                    stream.clone(),
                    durable,
                    config.subjects.first().cloned(),
                    Duration::from_secs_f64(config.ack_wait),
                    config.max_pending,
                ));
            }
            None if !config.subjects.is_empty() => {
                let (tx, rx) = mpsc::channel(config.max_pending);
                for subject in &config.subjects {
                    tasks.spawn(subscribe(
                        entry.clone(),
                        client.clone(),
                        subject.clone(),
                        tx.clone(),
                    ));
                }
                tasks.spawn(publish_in(entry.clone(), rx));
            }
            None => {}
        }
        while tasks.join_next().await.is_some() {}
    });
}

/// One core subscription: its messages into the entry's bounded queue
/// (full: dropped, counted, logged).
async fn subscribe(
    entry: Arc<Entry>,
    client: async_nats::Client,
    subject: String,
    queue: mpsc::Sender<async_nats::Message>,
) {
    let mut backoff = Backoff::default();
    let mut sub = loop {
        match client.subscribe(subject.clone()).await {
            Ok(s) => break s,
            Err(e) => {
                tracing::warn!(bridge = %entry.name, subject, "cannot subscribe, retrying: {e}");
                backoff.wait().await;
            }
        }
    };
    tracing::info!(bridge = %entry.name, subject, "subscribed");
    while let Some(message) = sub.next().await {
        if entry.is_own(&message) {
            continue;
        }
        if let Err(e) = queue.try_send(message) {
            entry.count("in", "dropped");
            if let mpsc::error::TrySendError::Full(m) = e {
                tracing::warn!(
                    bridge = %entry.name,
                    subject = %m.subject,
                    "inbound queue full (max_pending): message dropped"
                );
            }
        }
    }
}

/// Publishes the core subscriptions' messages, one after another.
async fn publish_in(entry: Arc<Entry>, mut queue: mpsc::Receiver<async_nats::Message>) {
    let from = format!("{FROM_PREFIX}nats:{}", entry.name);
    while let Some(message) = queue.recv().await {
        if let Some(channel) = entry.channel_for(&message.subject) {
            entry.publish(&channel, &message.payload, &from).await;
        }
    }
}

/// The outbound queue to NATS: each publication's data (its JSON text)
/// to the subject its channel names, with its channel and offset in
/// headers.
async fn send_out(
    entry: Arc<Entry>,
    client: async_nats::Client,
    mut queue: mpsc::Receiver<Outbound>,
    subject: Template,
) {
    while let Some(out) = queue.recv().await {
        let Some(to) = subject.render(&out.channel) else {
            entry.count("out", "invalid");
            tracing::warn!(bridge = %entry.name, channel = out.channel, "no subject for this channel: not mirrored");
            continue;
        };
        let mut headers = HeaderMap::new();
        headers.insert(HUB_HEADER, entry.hub_id.as_str());
        headers.insert("Wsline-Channel", out.channel.as_str());
        headers.insert("Wsline-Offset", out.offset.to_string().as_str());
        let payload = Bytes::from(out.data.get().to_owned());
        match client
            .publish_with_headers(to.clone(), headers, payload)
            .await
        {
            Ok(()) => entry.count("out", "published"),
            Err(e) => {
                entry.count("out", "error");
                tracing::warn!(bridge = %entry.name, subject = to, "cannot publish to NATS: {e}");
            }
        }
    }
}

/// The last stream sequence stored per channel; at most this many
/// channels remembered (then forgotten, and looked up in history again).
const REMEMBERED: usize = 10_000;

/// A JetStream durable pull consumer: each message published, then
/// acknowledged; redeliveries of stored ones dropped.
async fn consume_stream(
    entry: Arc<Entry>,
    client: async_nats::Client,
    stream: String,
    durable: String,
    filter: Option<String>,
    ack_wait: Duration,
    max_pending: usize,
) {
    let js = jetstream::new(client);
    let mut applied: HashMap<String, u64> = HashMap::new();
    let id_prefix = format!("{FROM_PREFIX}nats:{stream}#");
    let mut backoff = Backoff::default();
    loop {
        let result = consume_once(
            &entry,
            &js,
            &stream,
            &durable,
            filter.as_deref(),
            ack_wait,
            max_pending,
            &id_prefix,
            &mut applied,
            &mut backoff,
        )
        .await;
        if let Err(e) = result {
            tracing::warn!(bridge = %entry.name, "JetStream: {e}; retrying");
        }
        backoff.wait().await;
    }
}

/// Sets the consumer up and reads it until an error.
#[allow(clippy::too_many_arguments)]
async fn consume_once(
    entry: &Entry,
    js: &jetstream::Context,
    stream: &str,
    durable: &str,
    filter: Option<&str>,
    ack_wait: Duration,
    max_pending: usize,
    id_prefix: &str,
    applied: &mut HashMap<String, u64>,
    backoff: &mut Backoff,
) -> Result<(), BridgeError> {
    let s = js
        .get_stream(stream)
        .await
        .map_err(|source| BridgeError::Stream {
            stream: stream.to_owned(),
            source,
        })?;
    let consumer: jetstream::consumer::Consumer<pull::Config> = s
        .get_or_create_consumer(
            durable,
            pull::Config {
                durable_name: Some(durable.to_owned()),
                filter_subject: filter.unwrap_or_default().to_owned(),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait,
                // One message at a time: the next is not sent before this
                // one is acknowledged, so a redelivery (after a kill, or an
                // ack_wait spent retrying) comes before anything newer.
                // That keeps order, and makes "not above the last stored
                // sequence" an exact test for a duplicate.
                max_ack_pending: 1,
                ..Default::default()
            },
        )
        .await
        .map_err(|source| BridgeError::Consumer {
            stream: stream.to_owned(),
            durable: durable.to_owned(),
            source,
        })?;
    let pending = consumer.cached_info().config.max_ack_pending;
    if pending != 1 {
        tracing::warn!(
            bridge = %entry.name,
            stream,
            durable,
            max_ack_pending = pending,
            "the durable consumer existed with max_ack_pending other than 1: a redelivery may come after newer messages, \
             which are then out of order and the redelivered one taken for a duplicate; delete the consumer and let wsline create it"
        );
    }
    tracing::info!(bridge = %entry.name, stream, durable, "reading the JetStream consumer");
    let batch_size = max_pending.clamp(1, 256);
    loop {
        let mut batch = consumer
            .fetch()
            .max_messages(batch_size)
            .expires(Duration::from_secs(2))
            .messages()
            .await
            .map_err(|source| BridgeError::Fetch {
                durable: durable.to_owned(),
                source,
            })?;
        while let Some(message) = batch.next().await {
            let message = match message {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(bridge = %entry.name, "JetStream fetch ended: {e}");
                    break;
                }
            };
            *backoff = Backoff::default();
            let seq = match message.info() {
                Ok(info) => info.stream_sequence,
                Err(e) => {
                    entry.count("in", "invalid");
                    tracing::warn!(bridge = %entry.name, "a JetStream message without its metadata: {e}");
                    continue;
                }
            };
            if entry.is_own(&message) {
                // Acknowledged below, never published.
            } else if let Some(channel) = entry.channel_for(&message.subject) {
                let last = match applied.get(&channel) {
                    Some(&last) => last,
                    None => last_stored(entry, &channel, id_prefix),
                };
                if seq <= last {
                    entry.count("in", "duplicate");
                    tracing::debug!(bridge = %entry.name, channel, seq, "already stored: acknowledged again");
                } else {
                    let from = format!("{id_prefix}{seq}");
                    // Not until it is stored: a kill before that leaves
                    // the message unacknowledged, so delivered again.
                    entry.publish(&channel, &message.payload, &from).await;
                    if applied.len() >= REMEMBERED && !applied.contains_key(&channel) {
                        applied.clear();
                    }
                    applied.insert(channel, seq);
                }
            }
            if let Err(e) = message.ack().await {
                // Delivered again after ack_wait, and dropped then as a
                // duplicate.
                tracing::warn!(bridge = %entry.name, seq, "cannot acknowledge: {e}");
            }
        }
    }
}

/// The last stream sequence `channel`'s history holds from this stream
/// (0 when none, or with the Redis engine).
fn last_stored(entry: &Entry, channel: &str, id_prefix: &str) -> u64 {
    entry
        .hub
        .engine
        .memory()
        .and_then(|m| m.last_from(channel, id_prefix))
        .and_then(|from| from.strip_prefix(id_prefix)?.parse().ok())
        .unwrap_or(0)
}
