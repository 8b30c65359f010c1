//! Draining: how a hub leaves without sending every client back at once.
//!
//! Owns the drain's sequence and its pace. A drain starts when `serve`'s
//! `shutdown` future completes (`wsline serve`: SIGTERM or SIGINT) or on
//! `POST /api/drain` ([`Hub::start_drain`]); then
//! 1. at once: `/healthz` answers 503 `draining` (the `http` module reads
//!    [`Hub::is_draining`]), so a load balancer stops sending clients here;
//! 2. for `drain_grace`: nothing else changes, new upgrades are served
//!    (the balancer may not have noticed yet);
//! 3. then new upgrades get 503, and the connections open at that moment
//!    are closed with 1001 one by one in a random order, paced at
//!    `drain_rate` a second but over no more than `drain_window`
//!    ([`moments`]); a connection that opens in between is closed at once;
//! 4. `serve` returns when the last session has ended, or `close_timeout`
//!    (plus a second, [`wsline::shutdown_grace`]) after the window.
//!
//! Does not own how a session closes (the session sees its outbox's
//! [`Outbox::shut_down`](crate::outbox::Outbox::shut_down) and sends
//! [`wsline::SHUTDOWN_CLOSE`]) nor the accept loop (`serve` keeps it
//! running until the sequence ends, so `/healthz` keeps answering).
//!
//! Nothing here is per connection: one list of outboxes, taken when the
//! closing starts, and one timer at a time.

use std::time::Duration;

use rand::seq::SliceRandom;
use tokio::time::Instant;

use crate::Hub;

/// What a finished drain did, for its closing log line.
pub(crate) struct Drained {
    /// When the drain started.
    pub(crate) started: Instant,
    /// Connections open when the closing started.
    pub(crate) closed: usize,
    /// The latest moment `serve` waits until.
    pub(crate) deadline: Instant,
}

/// Runs steps 2 and 3 of a drain [`Hub::start_drain`] has started, and
/// waits, until the deadline, for every session to end.
pub(crate) async fn run(hub: &Hub) -> Drained {
    let started = Instant::now();
    let config = &hub.config;
    tracing::info!(
        connections = hub.open_sessions(),
        grace = ?config.drain_grace,
        window = ?config.drain_window,
        rate = config.drain_rate,
        "draining: /healthz answers 503; new connections are accepted for the grace, then refused; \
         open ones are closed with 1001 over the window"
    );
    tokio::time::sleep(config.drain_grace).await;

    let (outboxes, at) = {
        let mut outboxes = hub.stop_admitting();
        let mut rng = rand::rng();
        outboxes.shuffle(&mut rng);
        let at = moments(
            outboxes.len(),
            config.drain_window,
            config.drain_rate,
            || rand::Rng::random::<f64>(&mut rng),
        );
        (outboxes, at)
    };
    let closing = Instant::now();
    let deadline = closing
        + config.drain_window
        + wsline::shutdown_grace(config.server.protocol.close_timeout);
    tracing::info!(
        connections = outboxes.len(),
        over = ?at.last().copied().unwrap_or_default(),
        "draining: closing the open connections"
    );
    let pace = async {
        for (outbox, at) in outboxes.iter().zip(&at) {
            let at = closing + *at;
            if at > Instant::now() {
                tokio::time::sleep_until(at).await;
            }
            outbox.shut_down();
        }
    };
    let _ = tokio::time::timeout_at(deadline, async {
        // Every session may end before its turn (clients that leave by
        // themselves): then there is nothing left to pace.
        tokio::select! {
            _ = pace => {}
            _ = hub.all_sessions_ended() => {}
        }
        hub.all_sessions_ended().await;
    })
    .await;
    Drained {
        started,
        closed: outboxes.len(),
        deadline,
    }
}

/// When each of `n` connections is closed, from the start of the closing:
/// the closes are spread over `n / rate` seconds, or `window` if that is
/// shorter, in `n` equal slots, one connection at a random moment of each
/// (`jitter` gives a fraction in `[0, 1)`). In increasing order.
///
/// Even slots rather than `n` independent random moments: the rate of
/// reconnects the other nodes see is flat (uniform moments bunch up, and
/// the busiest tenth of a window gets well over a tenth of the closes),
/// while the random order (the caller shuffles) and the random moment in
/// each slot keep any two hubs, or two drains, from closing in step.
pub(crate) fn moments(
    n: usize,
    window: Duration,
    rate: u32,
    mut jitter: impl FnMut() -> f64,
) -> Vec<Duration> {
    if n == 0 {
        return Vec::new();
    }
    let paced = Duration::from_secs_f64(n as f64 / f64::from(rate.max(1)));
    let spread = paced.min(window);
    let slot = spread.as_secs_f64() / n as f64;
    (0..n)
        .map(|i| {
            let within = jitter().clamp(0.0, 1.0 - f64::EPSILON);
            Duration::from_secs_f64(slot * (i as f64 + within)).min(spread)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(d: Duration) -> f64 {
        d.as_secs_f64()
    }

    #[test]
    fn few_connections_are_closed_at_the_rate_not_over_the_whole_window() {
        let at = moments(3, Duration::from_secs(5), 200, || 0.5);
        assert_eq!(at.len(), 3);
        // 3 connections at 200/s: 15 ms in all, 5 ms slots.
        assert!((secs(at[0]) - 0.0025).abs() < 1e-9, "{at:?}");
        assert!((secs(at[2]) - 0.0125).abs() < 1e-9, "{at:?}");
    }

    #[test]
    fn many_connections_are_spread_over_the_window_and_no_more() {
        let window = Duration::from_secs(2);
        let mut draws = [0.0, 0.999_999, 0.3].into_iter().cycle();
        let at = moments(10_000, window, 200, || draws.next().unwrap());
        assert_eq!(at.len(), 10_000);
        assert!(at.windows(2).all(|w| w[0] <= w[1]), "in order");
        assert!(*at.last().unwrap() <= window);
        assert!(secs(*at.last().unwrap()) > 1.99, "the whole window is used");
        // Flat: every tenth of the window closes a tenth of them.
        for tenth in 0..10 {
            let lo = 0.2 * tenth as f64;
            let count = at
                .iter()
                .filter(|d| (lo..lo + 0.2).contains(&secs(**d)))
                .count();
            assert!((998..=1002).contains(&count), "tenth {tenth}: {count}");
        }
    }

    #[test]
    fn a_zero_window_closes_everything_at_once_and_none_is_nothing() {
        assert!(moments(0, Duration::from_secs(5), 200, || 0.5).is_empty());
        let at = moments(50, Duration::ZERO, 200, || 0.9);
        assert!(at.iter().all(|d| d.is_zero()), "{at:?}");
    }

    #[test]
    fn a_jitter_outside_its_range_stays_in_its_slot() {
        let at = moments(2, Duration::from_secs(1), 1, || 7.0);
        assert!(at[0] <= Duration::from_millis(500), "{at:?}");
        assert!(at[1] <= Duration::from_secs(1), "{at:?}");
    }
}
