//! `--stats-interval`: a line on stderr every few seconds with the
//! server's own counts, for soak tests and for watching a server by eye.
//!
//! Owns the line's format, which `scripts/soak.sh` parses:
//! `stats open=N handshakes=N addresses=N refused=N tasks=N`. `tasks` is
//! the runtime's live tasks (`RuntimeMetrics::num_alive_tasks`), this
//! printer included; the other counts are the admission gate's.

use std::time::Duration;

use wsline::Gate;

/// Prints the stats line every `interval` until the runtime ends.
pub(crate) fn spawn(gate: Gate, interval: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            eprintln!("{}", line(&gate));
        }
    });
}

/// The stats line.
pub(crate) fn line(gate: &Gate) -> String {
    let s = gate.stats();
    let tasks = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    format!(
        "stats open={} handshakes={} addresses={} refused={} tasks={tasks}",
        s.open, s.handshakes, s.addresses, s.refused
    )
}
