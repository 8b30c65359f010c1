//! The reactor's deadlines: one heap for every connection of the loop.
//!
//! Owns only ordering. A connection keeps its own next deadline; the heap
//! gets an entry only when that deadline moves *earlier* than the one
//! already scheduled, so a deadline pushed back on every message (idle
//! timeout) costs nothing until the old entry comes due, when the
//! connection is looked at and scheduled again. Entries of connections
//! that are gone are skipped by generation.
//!
//! Deadlines are kept as [`Tick`]s, whole milliseconds since the loop
//! started, rounded up: an entry is 16 bytes (an `Instant` alone is 16)
//! and never comes due before its deadline, at most a millisecond after.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// Milliseconds since the loop's epoch.
pub(super) type Tick = u64;

/// A slot's `scheduled` when it has no entry in the heap.
pub(super) const NOT_SCHEDULED: Tick = Tick::MAX;

/// A deadline for one slot: when, the slot's index and its generation.
type Entry = Reverse<(Tick, u32, u32)>;

/// Deadlines of the loop's connections.
#[derive(Debug)]
pub(super) struct Timers {
    epoch: Instant,
    heap: BinaryHeap<Entry>,
}

impl Timers {
    /// No deadlines; ticks count from `epoch`.
    pub(super) fn new(epoch: Instant) -> Self {
        Self {
            epoch,
            heap: BinaryHeap::new(),
        }
    }

    /// The first tick at or after `at` (the epoch's tick for earlier ones).
    pub(super) fn tick_at(&self, at: Instant) -> Tick {
        let nanos = at.saturating_duration_since(self.epoch).as_nanos();
        // Below NOT_SCHEDULED for 580 million years.
        nanos.div_ceil(1_000_000) as Tick
    }

    /// The last tick at or before `now`.
    fn tick_before(&self, now: Instant) -> Tick {
        (now.saturating_duration_since(self.epoch).as_nanos() / 1_000_000) as Tick
    }

    /// Schedules slot `index` (generation `gen`) at `tick`.
    pub(super) fn push(&mut self, tick: Tick, index: u32, gen: u32) {
        self.heap.push(Reverse((tick, index, gen)));
    }

    /// The earliest deadline.
    pub(super) fn next(&self) -> Option<Instant> {
        self.heap
            .peek()
            .map(|Reverse((tick, _, _))| self.epoch + Duration::from_millis(*tick))
    }

    /// Takes the earliest entry if it is due at `now`.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<(Tick, u32, u32)> {
        match self.heap.peek() {
            Some(Reverse((tick, _, _))) if *tick <= self.tick_before(now) => {
                self.heap.pop().map(|Reverse(e)| e)
            }
            _ => None,
        }
    }

    /// Entries held (stale ones included).
    pub(super) fn len(&self) -> usize {
        self.heap.len()
    }

    /// Drops every entry; the caller schedules the live ones again.
    pub(super) fn clear(&mut self) {
        self.heap.clear();
        if self.heap.capacity() > 1024 {
            self.heap.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_deadline_order_only_when_due() {
        let t0 = Instant::now();
        let mut timers = Timers::new(t0);
        let at = |s| timers.tick_at(t0 + Duration::from_secs(s));
        let (t1, t2, t3) = (at(1), at(2), at(3));
        timers.push(t3, 3, 0);
        timers.push(t1, 1, 0);
        timers.push(t2, 2, 7);
        assert_eq!(timers.next(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(timers.pop_due(t0), None);
        let now = t0 + Duration::from_secs(2);
        assert_eq!(timers.pop_due(now).map(|e| e.1), Some(1));
        assert_eq!(timers.pop_due(now).map(|e| (e.1, e.2)), Some((2, 7)));
        assert_eq!(timers.pop_due(now), None);
        assert_eq!(timers.len(), 1);
    }

    /// A deadline between two milliseconds comes due at the later one,
    /// never before the deadline itself.
    #[test]
    fn never_due_before_the_deadline() {
        let t0 = Instant::now();
        let mut timers = Timers::new(t0);
        let deadline = t0 + Duration::from_micros(2_300);
        let tick = timers.tick_at(deadline);
        assert_eq!(tick, 3);
        timers.push(tick, 0, 0);
        assert!(timers.next().unwrap() >= deadline);
        assert_eq!(timers.pop_due(deadline), None);
        assert_eq!(timers.pop_due(t0 + Duration::from_micros(2_999)), None);
        assert!(timers.pop_due(t0 + Duration::from_millis(3)).is_some());
        // Exactly on a millisecond: due then.
        assert_eq!(timers.tick_at(t0 + Duration::from_millis(5)), 5);
        assert_eq!(timers.tick_at(t0), 0);
    }

    #[test]
    fn an_entry_is_16_bytes() {
        assert_eq!(std::mem::size_of::<Entry>(), 16);
    }
}
