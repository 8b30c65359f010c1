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

use crate::protocol::Member;

/// One queued frame and, for publications, when it was published.
pub type Entry = (Bytes, Option<Instant>);

/// A FIFO of frames that holds its first one inline: a connection that
/// keeps up has at most one frame waiting at a time, so it never touches
/// the heap for its queue, and an idle one holds no queue memory.
/// Invariant: `first` is empty only when `rest` is.
#[derive(Default)]
struct Frames {
    first: Option<Entry>,
    rest: VecDeque<Entry>,
}

/// A backlog past this many frames is released once it drains, not kept.
const KEEP_CAPACITY: usize = 16;

impl Frames {
    fn push_back(&mut self, entry: Entry) {
        if self.first.is_none() {
            self.first = Some(entry);
        } else {
            self.rest.push_back(entry);
        }
    }

    fn front(&self) -> Option<&Entry> {
        self.first.as_ref()
    }

    fn pop_front(&mut self) -> Option<Entry> {
        let entry = self.first.take();
        self.first = self.rest.pop_front();
        if self.first.is_none() && self.rest.capacity() > KEEP_CAPACITY {
            self.rest = VecDeque::new();
        }
        entry
    }

    fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    fn clear(&mut self) {
        self.first = None;
        self.rest = VecDeque::new();
    }
}

#[derive(Default)]
struct Inner {
    frames: Frames,
    bytes: usize,
    overflowed: bool,
    closed: bool,
    shut_down: bool,
    waker: Option<Waker>,
}

/// Why a connection must stop reading its outbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Halt {
    /// A push went past the limit: close with 4008.
    Overflowed,
    /// The server is shutting down: close with 1001.
    ShutDown,
}

/// The outgoing queue of one connection, and who the connection is (the
/// engines' subscriber lists hold just this, one pointer per entry).
pub struct Outbox {
    inner: Mutex<Inner>,
    max_bytes: usize,
    member: Member,
}

impl Outbox {
    /// An empty queue holding at most `max_bytes`, for no one in
    /// particular (an empty client ID; tests).
    pub fn new(max_bytes: usize) -> Self {
        Self::for_member(Member::default(), max_bytes)
    }

    /// An empty queue holding at most `max_bytes`, for `member`'s
    /// connection.
    pub fn for_member(member: Member, max_bytes: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            max_bytes,
            member,
        }
    }

    /// Whose connection this is.
    pub fn member(&self) -> &Member {
        &self.member
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
    /// length first). Returns why the connection must stop instead, if
    /// it must (nothing is taken then).
    pub fn drain(&self, room: impl FnMut(usize) -> bool, out: impl FnMut(Entry)) -> Option<Halt> {
        Self::take(&mut self.lock(), room, out)
    }

    /// [`drain`](Self::drain) and [`register`](Self::register) under one
    /// lock, for the connection's writer: takes what fits, registers
    /// `waker` for the next push, and says whether frames are left.
    pub fn drain_and_register(
        &self,
        waker: &Waker,
        room: impl FnMut(usize) -> bool,
        out: impl FnMut(Entry),
    ) -> Result<bool, Halt> {
        let mut inner = self.lock();
        if let Some(halt) = Self::take(&mut inner, room, out) {
            return Err(halt);
        }
        match &inner.waker {
            Some(w) if w.will_wake(waker) => {}
            _ => inner.waker = Some(waker.clone()),
        }
        Ok(!inner.frames.is_empty())
    }

    fn take(
        inner: &mut Inner,
        mut room: impl FnMut(usize) -> bool,
        mut out: impl FnMut(Entry),
    ) -> Option<Halt> {
        if inner.overflowed {
            return Some(Halt::Overflowed);
        }
        if inner.shut_down {
            return Some(Halt::ShutDown);
        }
        while let Some((frame, _)) = inner.frames.front() {
            if !room(frame.len()) {
                break;
            }
            if let Some(entry) = inner.frames.pop_front() {
                inner.bytes -= entry.0.len();
                out(entry);
            }
        }
        None
    }

    /// Tells the connection the server is shutting down: its next
    /// [`drain`](Self::drain) answers [`Halt::ShutDown`].
    pub fn shut_down(&self) {
        let waker = {
            let mut inner = self.lock();
            inner.shut_down = true;
            inner.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
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
    fn frames_stay_in_order_through_the_inline_slot() {
        let o = Outbox::new(1 << 20);
        let mut next = 0u32;
        let mut expect = 0u32;
        // Bursts of growing size, each drained in part, then all.
        for burst in [1usize, 2, 3, 40, 1, 0, 5] {
            for _ in 0..burst {
                o.push(Bytes::from(next.to_string()), None);
                next += 1;
            }
            let mut take = burst / 2 + 1;
            o.drain(
                |_| {
                    let ok = take > 0;
                    take = take.saturating_sub(1);
                    ok
                },
                |(f, _)| {
                    assert_eq!(f, Bytes::from(expect.to_string()));
                    expect += 1;
                },
            );
        }
        o.drain(
            |_| true,
            |(f, _)| {
                assert_eq!(f, Bytes::from(expect.to_string()));
                expect += 1;
            },
        );
        assert_eq!(expect, next);
        assert!(o.is_empty());
        assert_eq!(o.len_bytes(), 0);
    }

    #[test]
    fn overflow_drops_and_flags() {
        let o = Outbox::new(10);
        assert!(o.push(Bytes::from_static(b"12345"), None));
        assert!(o.push(Bytes::from_static(b"12345"), None));
        assert!(!o.push(Bytes::from_static(b"1"), None));
        assert_eq!(o.len_bytes(), 0, "memory released");
        assert_eq!(o.drain(|_| true, |_| {}), Some(Halt::Overflowed));
    }

    #[test]
    fn shut_down_wakes_and_halts() {
        use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
        use std::sync::Arc;
        use std::task::Wake;
        struct Flag(AtomicBool);
        impl Wake for Flag {
            fn wake(self: Arc<Self>) {
                self.0.store(true, SeqCst);
            }
        }
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let o = Outbox::new(100);
        o.push(Bytes::from_static(b"abcd"), None);
        o.register(&Waker::from(flag.clone()));
        o.shut_down();
        assert!(flag.0.load(SeqCst), "the connection is woken");
        let mut taken = 0;
        assert_eq!(o.drain(|_| true, |_| taken += 1), Some(Halt::ShutDown));
        assert_eq!(taken, 0);
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
