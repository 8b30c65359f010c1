//! Webhooks: the hub tells the application's backend what happened
//! (a channel occupied or vacated, a member added or removed, a client
//! connected or disconnected) with signed POSTs in batches
//! (docs/hooks.md#webhooks).
//!
//! Owns the bounded queue of events of this node ([`Webhooks::emit`]
//! never waits: past `queue_size` an event is dropped, counted in
//! `wsline_webhook_events_dropped_total` and logged), the delivery task
//! (batches of at most `batch_size` events gathered for `batch_delay`,
//! one POST at a time in order, signed with HMAC-SHA256 over the body,
//! retried with exponential backoff for `retry_window` with the same
//! body, so the same event ids) and the event ids. Does not own deciding
//! when an event happened: the engines do (the Redis engine decides
//! `channel_occupied`/`channel_vacated` in Redis, so one node of a
//! cluster emits each), and the session emits the client events.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use tokio::sync::{mpsc, Notify};

use crate::config::{HubConfig, WEBHOOK_EVENTS};
use crate::http_client::Endpoint;
use crate::metrics::Metrics;
use crate::protocol::Member;

/// The header carrying the body's signature: `sha256=` and the hex of
/// HMAC-SHA256(secret, body).
pub(crate) const SIGNATURE_HEADER: &str = "X-Wsline-Signature";

/// The largest answer body read from the receiver (it is not used).
const MAX_ANSWER: usize = 64 << 10;
/// Retry backoff: doubles from the first to the last, with jitter.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// A webhook event (the index in [`WEBHOOK_EVENTS`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    ChannelOccupied = 0,
    ChannelVacated = 1,
    MemberAdded = 2,
    MemberRemoved = 3,
    ClientConnected = 4,
    ClientDisconnected = 5,
}

impl Kind {
    fn name(self) -> &'static str {
        WEBHOOK_EVENTS[self as usize]
    }
}

/// One event as the receiver gets it: every key present, `null` where
/// it does not apply.
#[derive(Debug, Serialize)]
struct Event {
    name: &'static str,
    channel: Option<String>,
    user: Option<String>,
    client: Option<String>,
    id: String,
}

/// A batch's body.
#[derive(Serialize)]
struct Body<'a> {
    time_ms: u64,
    events: &'a [Event],
}

/// How the delivery task sends.
struct Delivery {
    url: String,
    endpoint: Endpoint,
    secret: Vec<u8>,
    batch_size: usize,
    batch_delay: Duration,
    timeout: Duration,
    retry_window: Duration,
    metrics: Arc<Metrics>,
    unsent: Arc<Unsent>,
}

/// Events queued or being sent, and who waits for none to be left.
#[derive(Default)]
struct Unsent {
    count: AtomicUsize,
    none_left: Notify,
}

/// The webhooks of a hub: where events are queued. Dropping the last
/// handle lets the delivery task send what is queued and end.
pub(crate) struct Webhooks {
    /// Bit `1 << Kind` set for each event configured.
    wanted: u8,
    queue: mpsc::Sender<Event>,
    /// This process's prefix of event ids.
    prefix: String,
    next: AtomicU64,
    metrics: Arc<Metrics>,
    /// When an overflow was last logged, in ms after `started` (0: never):
    /// at most one a second (every drop is counted).
    warned: AtomicU64,
    started: Instant,
    unsent: Arc<Unsent>,
}

impl Webhooks {
    /// The webhooks `[webhooks]` configures, their delivery task started
    /// (call inside a tokio runtime); `None` without a URL.
    pub(crate) fn start(
        config: &HubConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Option<Arc<Self>>, String> {
        let w = &config.webhooks;
        let Some(url) = &w.url else {
            return Ok(None);
        };
        let endpoint = Endpoint::new(url).map_err(|e| format!("webhooks.url {url:?}: {e}"))?;
        let secs = |s: f64| Duration::try_from_secs_f64(s.clamp(0.0, 86_400.0)).unwrap_or_default();
        let wanted = w
            .events
            .iter()
            .filter_map(|e| WEBHOOK_EVENTS.iter().position(|k| k == e))
            .fold(0u8, |m, i| m | 1 << i);
        let (queue, rx) = mpsc::channel(w.queue_size.max(1));
        let unsent = Arc::new(Unsent::default());
        let delivery = Delivery {
            url: url.clone(),
            endpoint,
            secret: w.secret.clone().unwrap_or_default().into_bytes(),
            batch_size: w.batch_size.max(1),
            batch_delay: secs(w.batch_delay),
            timeout: secs(w.timeout).max(Duration::from_millis(1)),
            retry_window: secs(w.retry_window),
            metrics: metrics.clone(),
            unsent: unsent.clone(),
        };
        tokio::spawn(delivery.run(rx));
        Ok(Some(Arc::new(Self {
            wanted,
            queue,
            prefix: format!("{:016x}", rand::random::<u64>()),
            next: AtomicU64::new(1),
            metrics,
            warned: AtomicU64::new(0),
            started: Instant::now(),
            unsent,
        })))
    }

    /// Whether `kind` is configured.
    pub(crate) fn wants(&self, kind: Kind) -> bool {
        self.wanted & (1 << kind as u8) != 0
    }

    /// Queues `kind` about `channel` and `member` if configured; never
    /// waits (a full queue drops it).
    pub(crate) fn emit(&self, kind: Kind, channel: Option<&str>, member: Option<&Member>) {
        if !self.wants(kind) {
            return;
        }
        let n = self.next.fetch_add(1, Relaxed);
        let event = Event {
            name: kind.name(),
            channel: channel.map(str::to_owned),
            user: member.and_then(|m| m.user.clone()),
            client: member.map(|m| m.client.clone()),
            id: format!("{}-{n}", self.prefix),
        };
        // Counted before it can be sent, so a flush never sees it gone early.
        self.unsent.count.fetch_add(1, SeqCst);
        match self.queue.try_send(event) {
            Ok(()) => {
                self.metrics.webhook_events[kind as usize].fetch_add(1, Relaxed);
            }
            Err(mpsc::error::TrySendError::Full(event)) => {
                self.unsent.done(1);
                self.metrics.webhook_dropped[0].fetch_add(1, Relaxed);
                if self.may_warn() {
                    tracing::warn!(
                        event = event.name,
                        channel = event.channel.as_deref(),
                        "webhook queue full ({} events): event dropped (counted in wsline_webhook_events_dropped_total)",
                        self.queue.max_capacity()
                    );
                }
            }
            // The delivery task is gone (the runtime is shutting down).
            Err(mpsc::error::TrySendError::Closed(_)) => self.unsent.done(1),
        }
    }

    /// Waits until every event queued so far has been sent (or dropped
    /// after its retries), for at most `at_most`; false if some are left.
    /// How a hub that stops delivers what its last clients did.
    pub(crate) async fn flush(&self, at_most: Duration) -> bool {
        let none_left = async {
            loop {
                let told = self.unsent.none_left.notified();
                tokio::pin!(told);
                told.as_mut().enable();
                if self.unsent.count.load(SeqCst) == 0 {
                    return;
                }
                told.await;
            }
        };
        tokio::time::timeout(at_most, none_left).await.is_ok()
    }

    /// Whether an overflow may be logged now.
    fn may_warn(&self) -> bool {
        let now = (self.started.elapsed().as_millis() as u64).max(1);
        let prev = self.warned.load(Relaxed);
        (prev == 0 || now >= prev + 1000)
            && self
                .warned
                .compare_exchange(prev, now, Relaxed, Relaxed)
                .is_ok()
    }
}

impl Unsent {
    /// `n` events sent or dropped.
    fn done(&self, n: usize) {
        if self.count.fetch_sub(n, SeqCst) == n {
            self.none_left.notify_waiters();
        }
    }
}

/// Now, in ms since the Unix epoch.
fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `sha256=` and the lower-case hex of HMAC-SHA256(`secret`, `body`): the
/// value of [`SIGNATURE_HEADER`].
pub(crate) fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes keys of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("any key length");
    mac.update(body);
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for b in mac.finalize().into_bytes() {
        let _ = write!(out, "{b:02x}");
    }
    out
}

impl Delivery {
    /// Gathers batches and sends them, one at a time, until every handle
    /// is dropped and the queue is empty.
    async fn run(self, mut rx: mpsc::Receiver<Event>) {
        let mut batch = Vec::with_capacity(self.batch_size.min(1024));
        while let Some(first) = rx.recv().await {
            batch.push(first);
            let deadline = tokio::time::Instant::now() + self.batch_delay;
            while batch.len() < self.batch_size {
                match rx.try_recv() {
                    Ok(e) => batch.push(e),
                    Err(mpsc::error::TryRecvError::Disconnected) => break,
                    Err(mpsc::error::TryRecvError::Empty) => {
                        match tokio::time::timeout_at(deadline, rx.recv()).await {
                            Ok(Some(e)) => batch.push(e),
                            Ok(None) | Err(_) => break,
                        }
                    }
                }
            }
            self.send(&batch).await;
            self.unsent.done(batch.len());
            batch.clear();
        }
    }

    /// POSTs `events` until a 2xx or the retry window is over; a retry
    /// sends the same bytes (same ids, same signature).
    async fn send(&self, events: &[Event]) {
        let body = match serde_json::to_vec(&Body {
            time_ms: wall_ms(),
            events,
        }) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!("a webhook batch could not be encoded: {e}");
                return;
            }
        };
        let headers = format!(
            "Content-Type: application/json\r\n{SIGNATURE_HEADER}: {}\r\n",
            signature(&self.secret, &body)
        );
        let started = Instant::now();
        let mut backoff = BACKOFF_MIN;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let exchange = self.endpoint.send("POST", &headers, &body, MAX_ANSWER);
            let (result, why) = match tokio::time::timeout(self.timeout, exchange).await {
                Ok(Ok((status, _))) if (200..300).contains(&status) => {
                    self.metrics.webhook_requests[0].fetch_add(1, Relaxed);
                    return;
                }
                Ok(Ok((status, _))) => (1, format!("HTTP {status}, not 2xx")),
                Ok(Err(e)) => (1, e.to_string()),
                Err(_) => (2, format!("no answer within {:?}", self.timeout)),
            };
            self.metrics.webhook_requests[result].fetch_add(1, Relaxed);
            let pause = backoff.mul_f64(0.5 + rand::random::<f64>() / 2.0);
            if started.elapsed() + pause > self.retry_window {
                self.metrics.webhook_dropped[1].fetch_add(events.len() as u64, Relaxed);
                tracing::warn!(
                    url = %self.url,
                    events = events.len(),
                    attempts,
                    "webhook batch dropped: no 2xx within the retry window ({why})"
                );
                return;
            }
            if attempts == 1 {
                tracing::info!(url = %self.url, "webhook POST failed ({why}); retrying with backoff");
            } else {
                tracing::debug!(url = %self.url, attempts, "webhook POST failed ({why})");
            }
            tokio::time::sleep(pause).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_hmac_sha256_of_the_body_in_hex() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn an_event_has_every_key_null_where_it_does_not_apply() {
        let events = [Event {
            name: Kind::ChannelOccupied.name(),
            channel: Some("a".into()),
            user: None,
            client: None,
            id: "x-1".into(),
        }];
        let body = serde_json::to_string(&Body {
            time_ms: 5,
            events: &events,
        })
        .unwrap();
        assert_eq!(
            body,
            r#"{"time_ms":5,"events":[{"name":"channel_occupied","channel":"a","user":null,"client":null,"id":"x-1"}]}"#
        );
    }
}
