//! The two deadlines a [`crate::WebSocket`] keeps besides the core's
//! timers: the write stall (output is waiting and the transport has taken
//! no byte for `write_timeout`) and the idle timeout (no message from the
//! peer for `idle_timeout`).
//!
//! Owns only the clocks; the WebSocket decides what to do when one
//! expires. Both cost a few bytes per connection until used: the write
//! stall's timer is allocated at the first stall, the idle timeout only
//! when configured, and the idle deadline is pushed back lazily (checked
//! when the timer fires) rather than reset on every message.

use std::future::Future;
use std::pin::Pin;
use std::task::Context;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// Polls `sleep` after moving it to `at` if needed; true once it is due.
fn poll_at(sleep: &mut Pin<Box<Sleep>>, at: Instant, cx: &mut Context<'_>) -> bool {
    if sleep.deadline() != at {
        sleep.as_mut().reset(at);
    }
    sleep.as_mut().poll(cx).is_ready()
}

/// Fails writes that make no progress for a while.
#[derive(Debug, Default)]
pub(crate) struct WriteStall {
    timeout: Option<Duration>,
    /// Allocated at the first stall.
    clock: Option<Box<StallClock>>,
}

#[derive(Debug)]
struct StallClock {
    /// The deadline of the stall under way (`None`: not stalled).
    deadline: Option<Instant>,
    timer: Pin<Box<Sleep>>,
}

impl WriteStall {
    pub(crate) fn set_timeout(&mut self, timeout: Option<Duration>) {
        self.timeout = timeout;
        self.progress();
    }

    pub(crate) fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// The transport took bytes: the stall, if any, is over.
    #[inline]
    pub(crate) fn progress(&mut self) {
        if let Some(clock) = &mut self.clock {
            clock.deadline = None;
        }
    }

    /// The transport would not take a byte: starts the stall clock if it
    /// is not running, and says whether it ran out (the waker is armed
    /// otherwise).
    pub(crate) fn poll_expired(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(timeout) = self.timeout else {
            return false;
        };
        let clock = self.clock.get_or_insert_with(|| {
            let at = Instant::now() + timeout;
            Box::new(StallClock {
                deadline: None,
                timer: Box::pin(tokio::time::sleep_until(at)),
            })
        });
        let deadline = *clock
            .deadline
            .get_or_insert_with(|| Instant::now() + timeout);
        poll_at(&mut clock.timer, deadline, cx)
    }
}

/// Notices a peer that sends no message for a while. Boxed by its owner,
/// which holds `None` when no idle timeout is configured.
#[derive(Debug)]
pub(crate) struct Idle {
    timeout: Duration,
    last: Instant,
    timer: Pin<Box<Sleep>>,
}

impl Idle {
    pub(crate) fn new(timeout: Duration) -> Self {
        let last = Instant::now();
        Self {
            timeout,
            last,
            timer: Box::pin(tokio::time::sleep_until(last + timeout)),
        }
    }

    /// A message arrived.
    #[inline]
    pub(crate) fn activity(&mut self) {
        self.last = Instant::now();
    }

    /// True once no message came for the timeout; arms the waker
    /// otherwise. The owner drops it once it expired.
    pub(crate) fn poll_expired(&mut self, cx: &mut Context<'_>) -> bool {
        // The timer may be earlier than the deadline (activity since it
        // was set): when it fires early, move it to the real deadline.
        if !self.timer.as_mut().poll(cx).is_ready() {
            return false;
        }
        let due = self.last + self.timeout;
        if due <= Instant::now() {
            return true;
        }
        poll_at(&mut self.timer, due, cx)
    }
}
