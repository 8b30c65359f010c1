//! The reactor's deadlines: one heap for every connection of the loop.
//!
//! Owns only ordering. A connection keeps its own next deadline; the heap
//! gets an entry only when that deadline moves *earlier* than the one
//! already scheduled, so a deadline pushed back on every message (idle
//! timeout) costs nothing until the old entry comes due, when the
//! connection is looked at and scheduled again. Entries of connections
//! that are gone are skipped by generation.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// A deadline for one slot: when, the slot's index and its generation.
type Entry = Reverse<(Instant, u32, u32)>;

/// Deadlines of the loop's connections.
#[derive(Debug, Default)]
pub(super) struct Timers {
    heap: BinaryHeap<Entry>,
}

impl Timers {
    /// Schedules slot `index` (generation `gen`) at `at`.
    pub(super) fn push(&mut self, at: Instant, index: u32, gen: u32) {
        self.heap.push(Reverse((at, index, gen)));
    }

    /// The earliest deadline.
    pub(super) fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Takes the earliest entry if it is due at `now`.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<(Instant, u32, u32)> {
        match self.heap.peek() {
            Some(Reverse((at, _, _))) if *at <= now => self.heap.pop().map(|Reverse(e)| e),
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
    use std::time::Duration;

    #[test]
    fn pops_in_deadline_order_only_when_due() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        timers.push(t0 + Duration::from_secs(3), 3, 0);
        timers.push(t0 + Duration::from_secs(1), 1, 0);
        timers.push(t0 + Duration::from_secs(2), 2, 7);
        assert_eq!(timers.next(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(timers.pop_due(t0), None);
        let now = t0 + Duration::from_secs(2);
        assert_eq!(timers.pop_due(now).map(|e| e.1), Some(1));
        assert_eq!(timers.pop_due(now).map(|e| (e.1, e.2)), Some((2, 7)));
        assert_eq!(timers.pop_due(now), None);
        assert_eq!(timers.len(), 1);
    }
}
