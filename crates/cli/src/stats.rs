//! `--stats-interval`: a line on stderr every few seconds with the
//! server's own counts, for soak tests and for watching a server by eye.
//!
//! Owns the line's format, which `scripts/soak.sh` parses:
//! `stats open=N handshakes=N addresses=N refused=N tasks=N`. `tasks` is
//! the runtime's live tasks (`RuntimeMetrics::num_alive_tasks`), this
//! printer included, plus, for `wsline echo` on the reactor, the
//! connections its event loop holds; the other counts are the admission
//! gate's.

use std::time::Duration;

use wsline::Gate;

/// Prints the stats line every `interval` until the runtime ends.
pub(crate) fn spawn(gate: Gate, interval: Duration) {
    spawn_with(gate, interval, || 0);
}

/// As [`spawn`], adding `held()` (connections held outside tokio tasks)
/// to the task count.
pub(crate) fn spawn_with(
    gate: Gate,
    interval: Duration,
    held: impl Fn() -> usize + Send + 'static,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            eprintln!("{}", line(&gate, held()));
        }
    });
}

/// The stats line; `held` is added to the runtime's task count.
pub(crate) fn line(gate: &Gate, held: usize) -> String {
    let s = gate.stats();
    let tasks = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
        + held;
    format!(
        "stats open={} handshakes={} addresses={} refused={} tasks={tasks}",
        s.open, s.handshakes, s.addresses, s.refused
    )
}
