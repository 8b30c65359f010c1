//! A connection's outgoing queue: frames encoded once and shared by every
//! subscriber, bounded in bytes.
//!
//! Owns the slow-consumer rule: a push past the limit marks the queue
//! overflowed (the connection is then closed with 4008) instead of
//! blocking the publisher or growing without bound.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::task::Waker;
use std::time::Instant;

use bytes::Bytes;

/// One queued frame and, for publications, when it was published.
pub type Entry = (Bytes, Option<Instant>);

#[derive(Default)]
struct Inner {
    frames: VecDeque<Entry>,
    bytes: usize,
    overflowed: bool,
    closed: bool,
    waker: Option<Waker>,
}

/// The outgoing queue of one connection.
pub struct Outbox {
    inner: Mutex<Inner>,
    max_bytes: usize,
}

impl Outbox {
    /// An empty queue holding at most `max_bytes`.
    pub fn new(max_bytes: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            max_bytes,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a frame; false if the queue is closed or now overflowed.
    pub fn push(&self, frame: Bytes, published: Option<Instant>) -> bool {
        // One lock per push: a publish takes it once for every subscriber.
        let (waker, queued) = {
            let mut inner = self.lock();
            if inner.closed || inner.overflowed {
                return false;
            }
            if inner.bytes + frame.len() > self.max_bytes {
                inner.overflowed = true;
                inner.frames.clear();
                inner.bytes = 0;
            } else {
                inner.bytes += frame.len();
                inner.frames.push_back((frame, published));
            }
            (inner.waker.take(), !inner.overflowed)
        };
        if let Some(w) = waker {
            w.wake();
        }
        queued
    }

    /// Takes queued frames while `take` says yes (it sees each frame's
    /// length first). Returns whether the queue overflowed.
    pub fn drain(&self, mut room: impl FnMut(usize) -> bool, mut out: impl FnMut(Entry)) -> bool {
        let mut inner = self.lock();
        while let Some((frame, _)) = inner.frames.front() {
            if !room(frame.len()) {
                break;
            }
            if let Some(entry) = inner.frames.pop_front() {
                inner.bytes -= entry.0.len();
                out(entry);
            }
        }
        inner.overflowed
    }

    /// Whether frames are waiting.
    pub fn is_empty(&self) -> bool {
        self.lock().frames.is_empty()
    }

    /// Bytes waiting.
    pub fn len_bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Wakes `waker` on the next push.
    pub fn register(&self, waker: &Waker) {
        let mut inner = self.lock();
        match &inner.waker {
            Some(w) if w.will_wake(waker) => {}
            _ => inner.waker = Some(waker.clone()),
        }
    }

    /// Refuses further pushes (the connection is going away).
    pub fn close(&self) {
        let mut inner = self.lock();
        inner.closed = true;
        inner.frames.clear();
        inner.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_drops_and_flags() {
        let o = Outbox::new(10);
        assert!(o.push(Bytes::from_static(b"12345"), None));
        assert!(o.push(Bytes::from_static(b"12345"), None));
        assert!(!o.push(Bytes::from_static(b"1"), None));
        assert_eq!(o.len_bytes(), 0, "memory released");
        assert!(o.drain(|_| true, |_| {}));
    }

    #[test]
    fn drain_respects_room() {
        let o = Outbox::new(100);
        for _ in 0..3 {
            o.push(Bytes::from_static(b"abcd"), None);
        }
        let mut got = 0;
        let mut budget = 8;
        o.drain(
            |n| {
                let ok = n <= budget;
                budget = budget.saturating_sub(n);
                ok
            },
            |_| got += 1,
        );
        assert_eq!(got, 2);
        assert_eq!(o.len_bytes(), 4);
    }
}
