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
    /// 1 while the engine is usable.
    pub engine_up: AtomicI64,
    /// Connections refused by the connection and handshake caps (503).
    pub refused: AtomicU64,
    closes: Mutex<BTreeMap<u16, u64>>,
    buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_ns: AtomicU64,
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
        let secs = d.as_secs_f64();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                self.buckets[i].fetch_add(1, Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Relaxed);
        self.latency_sum_ns
            .fetch_add(d.as_nanos().min(u128::from(u64::MAX)) as u64, Relaxed);
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
        let _ = writeln!(s, "# HELP wsline_closes_total Closed connections by close code.\n# TYPE wsline_closes_total counter");
        for (code, n) in self.closes.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(s, "wsline_closes_total{{code=\"{code}\"}} {n}");
        }
        let _ = writeln!(s, "# HELP wsline_publish_delivery_seconds From publish to the write to the subscriber's socket.\n# TYPE wsline_publish_delivery_seconds histogram");
        for (i, bound) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                s,
                "wsline_publish_delivery_seconds_bucket{{le=\"{bound}\"}} {}",
                self.buckets[i].load(Relaxed)
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
