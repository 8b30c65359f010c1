//! The two deadlines a [`crate::WebSocket`] keeps besides the core's
//! timers: the write stall (output is waiting and the transport has taken
//! no byte for `write_timeout`) and the idle timeout (no message from the
//! peer for `idle_timeout`).
//!
//! Owns only the clocks; the WebSocket decides what to do when one
//! expires. Both cost nothing until configured and armed: the timer is
//! allocated on first use, and the idle deadline is pushed back lazily
//! (checked when the timer fires) rather than reset on every message.

use std::future::Future;
use std::pin::Pin;
use std::task::Context;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

fn poll_at(timer: &mut Option<Pin<Box<Sleep>>>, at: Instant, cx: &mut Context<'_>) -> bool {
    let sleep = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
    if sleep.deadline() != at {
        sleep.as_mut().reset(at);
    }
    sleep.as_mut().poll(cx).is_ready()
}

/// Fails writes that make no progress for a while.
#[derive(Debug, Default)]
pub(crate) struct WriteStall {
    timeout: Option<Duration>,
    deadline: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
}

impl WriteStall {
    pub(crate) fn set_timeout(&mut self, timeout: Option<Duration>) {
        self.timeout = timeout;
        self.deadline = None;
    }

    pub(crate) fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// The transport took bytes: the stall, if any, is over.
    #[inline]
    pub(crate) fn progress(&mut self) {
        self.deadline = None;
    }

    /// The transport would not take a byte: starts the stall clock if it
    /// is not running, and says whether it ran out (the waker is armed
    /// otherwise).
    pub(crate) fn poll_expired(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(timeout) = self.timeout else {
            return false;
        };
        let deadline = *self
            .deadline
            .get_or_insert_with(|| Instant::now() + timeout);
        poll_at(&mut self.timer, deadline, cx)
    }
}

/// Notices a peer that sends no message for a while.
#[derive(Debug, Default)]
pub(crate) struct Idle {
    timeout: Option<Duration>,
    last: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
}

impl Idle {
    pub(crate) fn set_timeout(&mut self, timeout: Option<Duration>) {
        self.timeout = timeout;
        self.last = Some(Instant::now());
        self.timer = None;
    }

    /// A message arrived.
    #[inline]
    pub(crate) fn activity(&mut self) {
        if self.timeout.is_some() {
            self.last = Some(Instant::now());
        }
    }

    /// True once no message came for the timeout (then it stays off);
    /// arms the waker otherwise.
    pub(crate) fn poll_expired(&mut self, cx: &mut Context<'_>) -> bool {
        let (Some(timeout), Some(last)) = (self.timeout, self.last) else {
            return false;
        };
        // The timer may be earlier than the deadline (activity since it
        // was set): when it fires early, move it to the real deadline.
        let armed = self.timer.as_ref().map(|t| t.deadline());
        let at = armed.unwrap_or(last + timeout);
        if !poll_at(&mut self.timer, at, cx) {
            return false;
        }
        let due = last + timeout;
        if due <= Instant::now() {
            self.timeout = None;
            self.timer = None;
            return true;
        }
        let fired = poll_at(&mut self.timer, due, cx);
        if fired {
            self.timeout = None;
            self.timer = None;
        }
        fired
    }
}
