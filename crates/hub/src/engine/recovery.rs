//! Recovery with `since`, shared by both engines: the rule that decides
//! what a subscribe recovers, and the paced replay of history.
//!
//! Owns [`rule`] (whether nothing is missing, where the replay starts),
//! [`Replay`] (one subscriber's replay cursor and the offset it must reach
//! before it goes live), [`page`] (queues the next entries of history
//! within the room the session gives, and notices history trimmed under
//! the cursor), the resync frame, and the pacing constants.
//!
//! The replay is pulled, not pushed: a subscribe with `since` queues only
//! its reply; the session then asks its engine for the next page of
//! history each time its outbox has drained below [`low_water`], filling
//! it to [`fill_to`]. While a subscriber replays, live publications are
//! not queued to it: they are in history, and the replay reaches them.
//! The subscriber goes live once its cursor reaches the channel's latest
//! offset (each engine does that switch atomically with respect to its
//! live deliveries), so no message is lost or doubled between replay and
//! live, and the outbox never grows because of a recovery: `max_queue`
//! only ever closes a client that does not read what it is sent live.

use bytes::Bytes;

use super::text_frame;
use crate::outbox::Outbox;
use crate::protocol;

/// The session asks for more replay once its outbox holds at most this.
pub fn low_water(max_queue: usize) -> usize {
    max_queue / 4
}

/// A replay page fills the outbox up to this.
pub fn fill_to(max_queue: usize) -> usize {
    max_queue / 2
}

/// What recovery with `since` (and the client's `epoch`) achieves against
/// a channel at (`epoch`, `latest`) whose oldest entry after `since` still
/// in history is `first`: whether nothing is missing (`recovered`), and
/// where a replay starts (`Some(after)`: the entries above `after`), or
/// `None` when there is nothing to replay. One rule for both engines.
pub fn rule(
    since: Option<u64>,
    client_epoch: Option<&str>,
    epoch: &str,
    latest: u64,
    first: Option<u64>,
) -> (bool, Option<u64>) {
    match since {
        None => (false, None),
        Some(_) if client_epoch.is_some_and(|e| e != epoch) => (false, None),
        Some(s) if s >= latest => (s == latest, None),
        Some(s) => match first {
            // History reaches back to `since + 1`: everything is replayed.
            Some(f) if f <= s + 1 => (true, Some(s)),
            // Trimmed: what is left is replayed (the reply says false).
            Some(f) => (false, Some(f - 1)),
            None => (false, None),
        },
    }
}

/// One subscriber's replay in progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replay {
    /// The last offset queued to the subscriber.
    pub after: u64,
    /// The replay is over once `after` reaches this: the channel's latest
    /// offset at the subscribe, raised by every live publication the
    /// subscriber was not sent meanwhile.
    pub target: u64,
}

impl Replay {
    /// A replay of the entries above `after`, up to at least `target`.
    pub fn new(after: u64, target: u64) -> Self {
        Self { after, target }
    }

    /// A live publication at `offset` was not queued because of the
    /// replay: the replay must reach it (it is in history).
    pub fn defer(&mut self, offset: u64) {
        self.target = self.target.max(offset);
    }

    /// Whether the subscriber has everything up to its target.
    pub fn done(&self) -> bool {
        self.after >= self.target
    }

    /// Whether a page read from history that ended there (`end`) when
    /// its latest offset was `latest` is the end of this replay: not when
    /// a live publication past `latest` was deferred to it while the page
    /// was read (the page could not see it; the next one will).
    pub fn ends_with(&self, end: bool, latest: u64) -> bool {
        end && self.target <= latest
    }
}

/// A `subscribed` without `id`, `recovered: false`: messages were lost
/// (the client reloads its state and carries on from `offset`).
pub fn resync_frame(channel: &str, epoch: &str, offset: u64) -> Bytes {
    text_frame(&protocol::subscribed(&None, channel, offset, epoch, false))
}

/// What one [`page`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Paged {
    /// Entries queued.
    pub queued: usize,
    /// Offsets found missing (history trimmed under the cursor): the
    /// client was sent a resync frame.
    pub lost: u64,
    /// Whether the page stopped for lack of room (more entries were at
    /// hand): the engine must not conclude that history ends there.
    pub full: bool,
}

/// Queues entries of history above `replay.after` (ascending, as read
/// from history from `replay.after + 1` on: a first offset above that
/// means history was trimmed under the cursor) into `outbox`, within
/// `room` bytes; always at least one entry when there is one, so a replay
/// progresses (an entry larger than the room is what a live delivery would
/// queue too). `end` is true when `entries` reaches the end of history
/// (nothing was left out after them). When it does and the cursor is still
/// below `replay.target`, the rest is gone (trimmed or expired): the
/// client is told with a resync frame and the cursor moves to the target.
pub fn page<'a>(
    replay: &mut Replay,
    entries: impl IntoIterator<Item = (u64, &'a Bytes)>,
    end: bool,
    outbox: &Outbox,
    room: usize,
    resync: impl Fn(u64) -> Bytes,
) -> Paged {
    let mut done = Paged::default();
    let mut used = 0;
    for (offset, frame) in entries {
        if offset <= replay.after {
            continue;
        }
        if done.queued > 0 && used + frame.len() > room {
            done.full = true;
            return done;
        }
        if offset > replay.after + 1 {
            done.lost += offset - replay.after - 1;
            outbox.push(resync(offset - 1), None);
        }
        outbox.push(frame.clone(), None);
        used += frame.len();
        replay.after = offset;
        done.queued += 1;
    }
    if end && replay.after < replay.target {
        done.lost += replay.target - replay.after;
        outbox.push(resync(replay.target), None);
        replay.after = replay.target;
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The balancer tests' rolling restart lost a publication now and
    /// then: a subscriber replaying on the Redis engine had its target
    /// raised by a live publication while a page was being read; the page
    /// (history as it was before that publication) said "end", and the
    /// publication was reported lost (`recovered:false`) instead of read by
    /// the next page.
    #[test]
    fn a_publication_deferred_while_a_page_is_read_is_not_lost() {
        let mut replay = Replay::new(164, 168);
        // The page is read: history ends at 168.
        let (end, latest) = (true, 168);
        // Meanwhile 169 is published and deferred to the replay.
        replay.defer(169);
        let ends = replay.ends_with(end, latest);
        assert!(!ends, "the next page reads 169");
        let o = Outbox::new(1 << 20);
        let page_entries = frames(&[165, 166, 167, 168]);
        let entries = page_entries.iter().map(|(o, f)| (*o, f));
        let paged = page(&mut replay, entries, ends, &o, 1 << 20, |_| {
            Bytes::from_static(b"resync")
        });
        assert_eq!(paged.lost, 0);
        assert!(!replay.done());
        assert!(!drained(&o).iter().any(|f| f == "resync"));
        // A page that saw everything up to the target ends the replay.
        assert!(replay.ends_with(true, 169));
        assert!(!replay.ends_with(false, 169));
    }

    #[test]
    fn the_rule() {
        assert_eq!(rule(None, None, "e", 5, None), (false, None));
        assert_eq!(rule(Some(2), Some("old"), "e", 5, Some(3)), (false, None));
        assert_eq!(rule(Some(5), Some("e"), "e", 5, None), (true, None));
        assert_eq!(rule(Some(9), None, "e", 5, None), (false, None));
        assert_eq!(rule(Some(2), None, "e", 5, Some(3)), (true, Some(2)));
        assert_eq!(rule(Some(0), None, "e", 5, Some(1)), (true, Some(0)));
        // History trimmed: 3 is gone, what is left is still replayed.
        assert_eq!(rule(Some(2), Some("e"), "e", 5, Some(4)), (false, Some(3)));
        assert_eq!(rule(Some(2), None, "e", 5, None), (false, None));
    }

    fn frames(offsets: &[u64]) -> Vec<(u64, Bytes)> {
        offsets
            .iter()
            .map(|o| (*o, Bytes::from(format!("{o:03}"))))
            .collect()
    }

    fn drained(o: &Outbox) -> Vec<String> {
        let mut out = Vec::new();
        o.drain(
            |_| true,
            |(f, _)| out.push(String::from_utf8_lossy(&f).into_owned()),
        );
        out
    }

    fn resync(o: u64) -> Bytes {
        Bytes::from(format!("resync {o}"))
    }

    #[test]
    fn pages_stay_within_the_room_and_end_at_the_target() {
        let o = Outbox::new(1 << 20);
        let h = frames(&[1, 2, 3, 4, 5]);
        let mut r = Replay::new(0, 5);
        let p = page(&mut r, h.iter().map(|(o, f)| (*o, f)), true, &o, 7, resync);
        assert_eq!(
            p,
            Paged {
                queued: 2,
                lost: 0,
                full: true
            }
        );
        assert_eq!(drained(&o), ["001", "002"]);
        assert!(!r.done());
        // A live publication meanwhile raises the target.
        r.defer(6);
        let h = frames(&[1, 2, 3, 4, 5, 6]);
        let p = page(
            &mut r,
            h.iter().map(|(o, f)| (*o, f)),
            true,
            &o,
            100,
            resync,
        );
        assert_eq!(p.queued, 4);
        assert!(r.done());
        assert_eq!(drained(&o), ["003", "004", "005", "006"]);
    }

    #[test]
    fn an_entry_larger_than_the_room_still_progresses() {
        let o = Outbox::new(1 << 20);
        let h = frames(&[1, 2]);
        let mut r = Replay::new(0, 2);
        let p = page(&mut r, h.iter().map(|(o, f)| (*o, f)), true, &o, 1, resync);
        assert_eq!(p.queued, 1);
        assert_eq!(r.after, 1);
    }

    #[test]
    fn history_trimmed_under_the_cursor_is_told() {
        let o = Outbox::new(1 << 20);
        let h = frames(&[5, 6]);
        let mut r = Replay::new(2, 6);
        let p = page(
            &mut r,
            h.iter().map(|(o, f)| (*o, f)),
            true,
            &o,
            100,
            resync,
        );
        assert_eq!(p.lost, 2);
        assert!(r.done());
        assert_eq!(drained(&o), ["resync 4", "005", "006"]);
        // Nothing left at all.
        let mut r = Replay::new(2, 9);
        let p = page(&mut r, std::iter::empty(), true, &o, 100, resync);
        assert_eq!(p.lost, 7);
        assert!(r.done());
        assert_eq!(drained(&o), ["resync 9"]);
    }
}
