//! Counters and the delivery-latency histogram, rendered in the Prometheus
//! text format at `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

/// Histogram bucket bounds in seconds.
const BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
];

/// The `hook` label of `wsline_hook_requests_total`, in the order of
/// [`Metrics::hook_requests`].
pub const HOOKS: [&str; 3] = ["connect", "subscribe", "publish"];
/// The `result` label of `wsline_hook_requests_total`: the backend
/// allowed, denied; the call failed (down, not 200, a malformed answer),
/// took past the timeout, or was refused at once by `max_in_flight`.
pub const HOOK_RESULTS: [&str; 5] = ["allow", "deny", "error", "timeout", "overload"];
/// The `transport` label of `wsline_connections_opened_total`, in the
/// order of [`Metrics::opened`]: an HTTP/1.1 upgrade (over TCP or TLS),
/// or an RFC 8441 extended CONNECT stream of an HTTP/2 connection.
pub const TRANSPORTS: [&str; 2] = ["http1", "h2"];

/// The `result` label of `wsline_webhook_requests_total`: the receiver
/// answered 2xx; something else (down, not 2xx); no answer in time.
pub const WEBHOOK_RESULTS: [&str; 3] = ["ok", "error", "timeout"];
/// The `reason` label of `wsline_webhook_events_dropped_total`: the queue
/// was full; the retry window passed without a 2xx.
pub const WEBHOOK_DROPS: [&str; 2] = ["overflow", "retries"];

/// Publish-to-delivery latencies of a batch of deliveries, added to the
/// metrics at once with [`Metrics::record_latencies`].
#[derive(Debug, Default, Clone)]
pub struct LatencyTally {
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum_ns: u64,
}

impl LatencyTally {
    /// Tallies one delivery.
    pub fn add(&mut self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|bound| secs <= *bound) {
            self.buckets[i] += 1;
        }
        self.count += 1;
        self.sum_ns = self
            .sum_ns
            .saturating_add(d.as_nanos().min(u128::from(u64::MAX)) as u64);
    }
}

/// The hub's metrics.
#[derive(Default)]
pub struct Metrics {
    /// Open WebSocket connections.
    pub connections: AtomicI64,
    /// Client messages received.
    pub messages_received: AtomicU64,
    /// Messages sent to clients.
    pub messages_sent: AtomicU64,
    /// Bytes received from clients.
    pub bytes_received: AtomicU64,
    /// Bytes sent to clients.
    pub bytes_sent: AtomicU64,
    /// Publications (WebSocket and HTTP).
    pub publishes: AtomicU64,
    /// Publications queued to subscribers.
    pub deliveries: AtomicU64,
    /// Slow consumers closed with 4008.
    pub slow_consumer_disconnects: AtomicU64,
    /// Replays that found history trimmed under their cursor (the client
    /// was sent `recovered: false`).
    pub replay_gaps: AtomicU64,
    /// 1 while the engine is usable.
    pub engine_up: AtomicI64,
    /// Connections refused by the connection and handshake caps (503).
    pub refused: AtomicU64,
    /// 1 once a drain has started (SIGTERM, `POST /api/drain`).
    pub draining: AtomicI64,
    /// Backend hook calls by hook ([`HOOKS`]) and result
    /// ([`HOOK_RESULTS`]).
    pub hook_requests: [[AtomicU64; HOOK_RESULTS.len()]; HOOKS.len()],
    /// Webhook events queued, by name
    /// ([`crate::config::WEBHOOK_EVENTS`]).
    pub webhook_events: [AtomicU64; 6],
    /// Webhook POSTs by result ([`WEBHOOK_RESULTS`]).
    pub webhook_requests: [AtomicU64; WEBHOOK_RESULTS.len()],
    /// Webhook events dropped, by reason ([`WEBHOOK_DROPS`]).
    pub webhook_dropped: [AtomicU64; WEBHOOK_DROPS.len()],
    closes: Mutex<BTreeMap<u16, u64>>,
    /// Deliveries per latency bucket, not cumulative (the exposition adds
    /// them up); those above the last bound are only in the count.
    buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_ns: AtomicU64,
    /// WebSocket connections opened, by transport ([`TRANSPORTS`]).
    pub opened: [AtomicU64; TRANSPORTS.len()],
    /// Bridge messages by bridge, direction (`in`, `out`) and result
    /// (`crate::bridge`).
    pub(crate) bridge_messages: Mutex<BTreeMap<(String, &'static str, &'static str), u64>>,
}

impl Metrics {
    /// Counts a closed connection by close code.
    pub fn closed(&self, code: u16) {
        *self
            .closes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(code)
            .or_default() += 1;
    }

    /// Records one publish-to-delivery latency.
    pub fn delivered_after(&self, d: Duration) {
        let mut tally = LatencyTally::default();
        tally.add(d);
        self.record_latencies(&tally);
    }

    /// Records latencies tallied for a batch: an atomic add per bucket
    /// used rather than per delivery and bucket.
    pub fn record_latencies(&self, tally: &LatencyTally) {
        if tally.count == 0 {
            return;
        }
        for (bucket, n) in self.buckets.iter().zip(tally.buckets) {
            if n > 0 {
                bucket.fetch_add(n, Relaxed);
            }
        }
        self.latency_count.fetch_add(tally.count, Relaxed);
        self.latency_sum_ns.fetch_add(tally.sum_ns, Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let mut gauge = |name: &str, help: &str, kind: &str, v: String| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        };
        gauge(
            "wsline_connections",
            "Open WebSocket connections.",
            "gauge",
            self.connections.load(Relaxed).to_string(),
        );
        gauge(
            "wsline_engine_up",
            "1 when the engine is usable.",
            "gauge",
            self.engine_up.load(Relaxed).to_string(),
        );
        gauge(
            "wsline_draining",
            "1 once the hub is draining (SIGTERM or POST /api/drain): /healthz answers 503.",
            "gauge",
            self.draining.load(Relaxed).to_string(),
        );
        for (name, help, c) in [
            (
                "wsline_messages_received_total",
                "Client messages received.",
                &self.messages_received,
            ),
            (
                "wsline_messages_sent_total",
                "Messages sent to clients.",
                &self.messages_sent,
            ),
            (
                "wsline_bytes_received_total",
                "Bytes received from clients.",
                &self.bytes_received,
            ),
            (
                "wsline_bytes_sent_total",
                "Bytes sent to clients.",
                &self.bytes_sent,
            ),
            ("wsline_publishes_total", "Publications.", &self.publishes),
            (
                "wsline_deliveries_total",
                "Publications queued to subscribers.",
                &self.deliveries,
            ),
            (
                "wsline_slow_consumer_disconnects_total",
                "Slow consumers closed with 4008.",
                &self.slow_consumer_disconnects,
            ),
            (
                "wsline_replay_gaps_total",
                "Replays that found history trimmed under them (recovered:false sent).",
                &self.replay_gaps,
            ),
        ] {
            gauge(name, help, "counter", c.load(Relaxed).to_string());
        }
        gauge(
            "wsline_refused_total",
            "Connections refused by the connection and handshake caps (503).",
            "counter",
            self.refused.load(Relaxed).to_string(),
        );
        // Every session, HTTP request and handshake in progress is a task:
        // a leak of any of them shows here.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            gauge(
                "wsline_tasks",
                "Tasks alive in the hub's runtime.",
                "gauge",
                rt.metrics().num_alive_tasks().to_string(),
            );
        }
        let _ = writeln!(s, "# HELP wsline_hook_requests_total Backend hook calls by hook and result.\n# TYPE wsline_hook_requests_total counter");
        for (hook, counts) in HOOKS.iter().zip(&self.hook_requests) {
            for (result, n) in HOOK_RESULTS.iter().zip(counts) {
                let _ = writeln!(
                    s,
                    "wsline_hook_requests_total{{hook=\"{hook}\",result=\"{result}\"}} {}",
                    n.load(Relaxed)
                );
            }
        }
        let _ = writeln!(s, "# HELP wsline_webhook_events_total Webhook events queued, by name.\n# TYPE wsline_webhook_events_total counter");
        for (name, n) in crate::config::WEBHOOK_EVENTS
            .iter()
            .zip(&self.webhook_events)
        {
            let _ = writeln!(
                s,
                "wsline_webhook_events_total{{name=\"{name}\"}} {}",
                n.load(Relaxed)
            );
        }
        let _ = writeln!(s, "# HELP wsline_webhook_requests_total Webhook POSTs by result.\n# TYPE wsline_webhook_requests_total counter");
        for (result, n) in WEBHOOK_RESULTS.iter().zip(&self.webhook_requests) {
            let _ = writeln!(
                s,
                "wsline_webhook_requests_total{{result=\"{result}\"}} {}",
                n.load(Relaxed)
            );
        }
        let _ = writeln!(s, "# HELP wsline_webhook_events_dropped_total Webhook events dropped: the queue was full, or the retry window passed.\n# TYPE wsline_webhook_events_dropped_total counter");
        for (reason, n) in WEBHOOK_DROPS.iter().zip(&self.webhook_dropped) {
            let _ = writeln!(
                s,
                "wsline_webhook_events_dropped_total{{reason=\"{reason}\"}} {}",
                n.load(Relaxed)
            );
        }
        let _ = writeln!(s, "# HELP wsline_connections_opened_total WebSocket connections opened, by transport (http1: an HTTP/1.1 upgrade; h2: a stream of an HTTP/2 connection, RFC 8441).\n# TYPE wsline_connections_opened_total counter");
        for (transport, n) in TRANSPORTS.iter().zip(&self.opened) {
            let _ = writeln!(
                s,
                "wsline_connections_opened_total{{transport=\"{transport}\"}} {}",
                n.load(Relaxed)
            );
        }
        let _ = writeln!(s, "# HELP wsline_closes_total Closed connections by close code.\n# TYPE wsline_closes_total counter");
        for (code, n) in self.closes.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(s, "wsline_closes_total{{code=\"{code}\"}} {n}");
        }
        let bridged = self
            .bridge_messages
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if !bridged.is_empty() {
            let _ = writeln!(s, "# HELP wsline_bridge_messages_total Message-queue bridge messages by bridge, direction and result.\n# TYPE wsline_bridge_messages_total counter");
            for ((bridge, direction, result), n) in bridged.iter() {
                let _ = writeln!(
                    s,
                    "wsline_bridge_messages_total{{bridge=\"{bridge}\",direction=\"{direction}\",result=\"{result}\"}} {n}"
                );
            }
        }
        drop(bridged);
        let _ = writeln!(s, "# HELP wsline_publish_delivery_seconds From publish to the write to the subscriber's socket.\n# TYPE wsline_publish_delivery_seconds histogram");
        let mut cumulative = 0;
        for (i, bound) in BUCKETS.iter().enumerate() {
            cumulative += self.buckets[i].load(Relaxed);
            let _ = writeln!(
                s,
                "wsline_publish_delivery_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = self.latency_count.load(Relaxed);
        let _ = writeln!(
            s,
            "wsline_publish_delivery_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            s,
            "wsline_publish_delivery_seconds_sum {}",
            self.latency_sum_ns.load(Relaxed) as f64 / 1e9
        );
        let _ = writeln!(s, "wsline_publish_delivery_seconds_count {count}");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(text: &str, le: &str) -> u64 {
        let key = format!("wsline_publish_delivery_seconds_bucket{{le=\"{le}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&key))
            .and_then(|v| v.parse().ok())
            .expect("bucket present")
    }

    #[test]
    fn tallied_batches_render_like_single_deliveries() {
        let latencies: Vec<Duration> = [50, 100, 300, 2_000, 40_000, 2_000_000]
            .iter()
            .map(|us| Duration::from_micros(*us))
            .collect();
        let one_by_one = Metrics::default();
        for d in &latencies {
            one_by_one.delivered_after(*d);
        }
        let batched = Metrics::default();
        let mut tally = LatencyTally::default();
        for d in &latencies {
            tally.add(*d);
        }
        batched.record_latencies(&tally);
        let (a, b) = (one_by_one.render(), batched.render());
        assert_eq!(a, b);
        // Cumulative: le=0.0001 holds 50 µs and 100 µs; le=1 all but 2 s.
        assert_eq!(bucket(&a, "0.0001"), 2);
        assert_eq!(bucket(&a, "0.0005"), 3);
        assert_eq!(bucket(&a, "1"), 5);
        assert_eq!(bucket(&a, "+Inf"), 6);
    }
}
