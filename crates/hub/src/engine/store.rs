//! Durable history for the in-memory engine (`data_dir`): one append-only
//! log per node.
//!
//! Owns the file format, reading it back at start (a torn or corrupt tail
//! is cut off at the last good record), appends with the fsync policy
//! (group commit), and compaction (the log rewritten from what the
//! engine still keeps). What is kept and for how long is the engine's
//! business (history_size, history_ttl); delivery too.
//!
//! Why a log and not an embedded store: history is only ever appended at
//! one end and trimmed at the other, and read back whole at start. A
//! record is one `write(2)` of the bytes the subscribers get anyway; a
//! B-tree store (redb, fjall) would add page or journal writes per
//! publish for lookups the engine does in memory.
//!
//! The file, `DIR/history.log`: the magic `WSLLOG1\n`, then records
//! `len: u32 LE | crc32(payload): u32 LE | payload`, where payload is
//! `channel_len: u16 LE | channel | epoch_len: u8 | epoch | offset: u64 LE
//! | time_ms: u64 LE | frame` (the WebSocket frame subscribers get; empty
//! for a marker that only carries a channel's offset). Within an epoch a
//! channel's offsets go up by one; a record that breaks that is corrupt.
//!
//! Crash safety: a record is written before the publication is delivered,
//! so a killed process loses nothing it delivered (the kernel keeps what
//! was written). `fsync` decides what a machine crash may lose: `always`
//! syncs before delivery and reply; an interval syncs that often, and
//! after a reboot that was not preceded by a sync of everything, the
//! channels start new epochs (clients are told `recovered:false` rather
//! than given offsets that were lost and then reused).

use std::collections::HashMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::Bytes;

const LOG_NAME: &str = "history.log";
const BOOT_NAME: &str = "boot_id";
const LOCK_NAME: &str = "lock";
const MAGIC: &[u8; 8] = b"WSLLOG1\n";
/// Bytes before the payload: its length and checksum.
const RECORD_HEAD: usize = 8;
/// No record is larger (a frame is at most the max message size).
const MAX_PAYLOAD: usize = 256 << 20;
/// The log is compacted when it has grown past this and past twice its
/// size after the last compaction.
const COMPACT_FLOOR: u64 = 16 << 20;

/// When history reaches the disk (`fsync`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fsync {
    /// Before a publication is delivered or acknowledged.
    Always,
    /// Every this long (a machine crash loses at most this much).
    Every(Duration),
}

impl FromStr for Fsync {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("always") {
            return Ok(Fsync::Always);
        }
        let secs: f64 = s
            .parse()
            .map_err(|_| format!("fsync is `always` or seconds (e.g. 0.5), not {s:?}"))?;
        if !(secs > 0.0 && secs <= 3600.0) {
            return Err(format!(
                "fsync interval must be more than 0 and at most 3600 seconds, not {s}"
            ));
        }
        Ok(Fsync::Every(Duration::from_secs_f64(secs)))
    }
}

impl fmt::Display for Fsync {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fsync::Always => f.write_str("always"),
            Fsync::Every(d) => write!(f, "{}", d.as_secs_f64()),
        }
    }
}

/// Why the history log cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A file of the data directory could not be opened, read or written.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Another process holds the directory.
    #[error("data_dir {} is in use by another wsline process (one node per directory)", .0.display())]
    InUse(PathBuf),
    /// The file is not a history log of this format.
    #[error("{} is not a wsline history log (move it away or choose another data_dir)", .0.display())]
    NotALog(PathBuf),
    /// An earlier failure left the log in an unknown state.
    #[error("the history log is out of service after an earlier write failure; restart the hub once the disk is fixed")]
    Broken,
}

/// One entry of a channel's history as stored.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub(crate) offset: u64,
    /// Wall-clock time of the publication, in ms since the Unix epoch.
    pub(crate) time_ms: u64,
    pub(crate) frame: Bytes,
}

/// A channel as the log left it.
#[derive(Debug)]
pub(crate) struct Saved {
    pub(crate) epoch: String,
    pub(crate) offset: u64,
    pub(crate) entries: Vec<Entry>,
}

/// What [`Store::open`] found.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub(crate) channels: HashMap<String, Saved>,
    /// The machine restarted since the log was last written and not all
    /// of it was known to be synced: epochs must change.
    pub(crate) rebooted_unsynced: bool,
    /// Bytes cut off a torn or corrupt tail.
    pub(crate) cut: u64,
}

struct Log {
    file: File,
    len: u64,
    compacted_len: u64,
    buf: Vec<u8>,
}

struct Synced {
    /// A handle on the current file, for fsync without the append lock.
    file: File,
    /// Bytes written (over the store's life) known to be on disk.
    upto: u64,
}

/// The open log of one data directory.
pub(crate) struct Store {
    dir: PathBuf,
    path: PathBuf,
    fsync: Fsync,
    log: Mutex<Log>,
    synced: Mutex<Synced>,
    /// Bytes written over the store's life (a sequence, not a position:
    /// compaction does not reset it).
    written: AtomicU64,
    broken: AtomicBool,
    /// Holds the directory's lock for the store's life.
    _lock: File,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// The kernel's boot id (changes at every boot), if it can be read.
fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_owned())
}

/// Appends one record to `buf`.
fn encode(buf: &mut Vec<u8>, channel: &str, epoch: &str, offset: u64, time_ms: u64, frame: &[u8]) {
    let start = buf.len();
    buf.extend_from_slice(&[0; RECORD_HEAD]);
    let channel = &channel.as_bytes()[..channel.len().min(u16::MAX as usize)];
    let epoch = &epoch.as_bytes()[..epoch.len().min(u8::MAX as usize)];
    buf.extend_from_slice(&(channel.len() as u16).to_le_bytes());
    buf.extend_from_slice(channel);
    buf.push(epoch.len() as u8);
    buf.extend_from_slice(epoch);
    buf.extend_from_slice(&offset.to_le_bytes());
    buf.extend_from_slice(&time_ms.to_le_bytes());
    buf.extend_from_slice(frame);
    let payload = &buf[start + RECORD_HEAD..];
    let len = payload.len() as u32;
    let crc = crc32fast::hash(payload);
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// A record read back.
struct Record<'a> {
    channel: &'a str,
    epoch: &'a str,
    offset: u64,
    time_ms: u64,
    frame: &'a [u8],
}

/// The record at the start of `data` and its length, or `None` if what is
/// there is not a whole, intact record.
fn decode(data: &[u8]) -> Option<(Record<'_>, usize)> {
    let len = u32::from_le_bytes(data.get(0..4)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(data.get(4..8)?.try_into().ok()?);
    if len > MAX_PAYLOAD {
        return None;
    }
    let payload = data.get(RECORD_HEAD..RECORD_HEAD + len)?;
    if crc32fast::hash(payload) != crc {
        return None;
    }
    let take = |at: &mut usize, n: usize| -> Option<&[u8]> {
        let s = payload.get(*at..*at + n)?;
        *at += n;
        Some(s)
    };
    let mut at = 0;
    let channel_len = u16::from_le_bytes(take(&mut at, 2)?.try_into().ok()?) as usize;
    let channel = std::str::from_utf8(take(&mut at, channel_len)?).ok()?;
    let epoch_len = *take(&mut at, 1)?.first()? as usize;
    let epoch = std::str::from_utf8(take(&mut at, epoch_len)?).ok()?;
    let offset = u64::from_le_bytes(take(&mut at, 8)?.try_into().ok()?);
    let time_ms = u64::from_le_bytes(take(&mut at, 8)?.try_into().ok()?);
    let frame = &payload[at..];
    Some((
        Record {
            channel,
            epoch,
            offset,
            time_ms,
            frame,
        },
        RECORD_HEAD + len,
    ))
}

/// Reads the records of `data` (after the magic) into channels; returns
/// them and how many bytes were good.
fn replay(data: &[u8]) -> (HashMap<String, Saved>, usize) {
    let mut channels: HashMap<String, Saved> = HashMap::new();
    let mut good = 0;
    while good < data.len() {
        let Some((r, n)) = decode(&data[good..]) else {
            break;
        };
        match channels.get_mut(r.channel) {
            Some(ch) if ch.epoch == r.epoch => {
                // Within an epoch offsets go up by one: anything else is
                // not a record this hub wrote in order.
                if r.offset != ch.offset + 1 && !(r.frame.is_empty() && r.offset >= ch.offset) {
                    break;
                }
            }
            _ => {
                channels.insert(
                    r.channel.to_owned(),
                    Saved {
                        epoch: r.epoch.to_owned(),
                        offset: 0,
                        entries: Vec::new(),
                    },
                );
            }
        }
        let ch = channels.get_mut(r.channel).expect("just inserted");
        ch.offset = r.offset;
        if !r.frame.is_empty() {
            ch.entries.push(Entry {
                offset: r.offset,
                time_ms: r.time_ms,
                frame: Bytes::copy_from_slice(r.frame),
            });
        }
        good += n;
    }
    (channels, good)
}

impl Store {
    /// Opens (or creates) the log in `dir`, cuts a bad tail off, and gives
    /// what it holds. Only one process may hold a directory.
    pub(crate) fn open(dir: &Path, fsync: Fsync) -> Result<(Arc<Store>, Recovered), StoreError> {
        std::fs::create_dir_all(dir).map_err(io_err("cannot create", dir))?;
        let lock_path = dir.join(LOCK_NAME);
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err("cannot open", &lock_path))?;
        match rustix::fs::flock(
            &lock_file,
            rustix::fs::FlockOperation::NonBlockingLockExclusive,
        ) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => return Err(StoreError::InUse(dir.to_owned())),
            Err(e) => return Err(io_err("cannot lock", &lock_path)(e.into())),
        }
        let path = dir.join(LOG_NAME);
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(io_err("cannot open", &path))?;
        let mut data = Vec::new();
        file.read_to_end(&mut data)
            .map_err(io_err("cannot read", &path))?;
        let (channels, good, cut) = if data.is_empty() {
            file.write_all(MAGIC)
                .and_then(|()| file.sync_all())
                .map_err(io_err("cannot write", &path))?;
            (HashMap::new(), MAGIC.len(), 0)
        } else {
            if !data.starts_with(MAGIC) {
                return Err(StoreError::NotALog(path));
            }
            let (channels, good) = replay(&data[MAGIC.len()..]);
            let good = MAGIC.len() + good;
            let cut = (data.len() - good) as u64;
            if cut > 0 {
                tracing::warn!(
                    path = %path.display(),
                    cut,
                    "the history log ended in a torn or corrupt record: cut off at the last good one"
                );
                file.set_len(good as u64)
                    .and_then(|()| file.sync_all())
                    .map_err(io_err("cannot truncate", &path))?;
            }
            (channels, good, cut)
        };
        // A reboot since the last write, with an interval policy: what
        // was written but not synced may be gone.
        let boot_path = dir.join(BOOT_NAME);
        let now_boot = boot_id();
        let last_boot = std::fs::read_to_string(&boot_path).ok();
        let rebooted_unsynced = fsync != Fsync::Always
            && !channels.is_empty()
            && matches!((&last_boot, &now_boot), (Some(a), Some(b)) if a.trim() != b);
        if let Some(b) = &now_boot {
            std::fs::write(&boot_path, b).map_err(io_err("cannot write", &boot_path))?;
        }
        let synced = file.try_clone().map_err(io_err("cannot open", &path))?;
        let store = Arc::new(Store {
            dir: dir.to_owned(),
            path,
            fsync,
            log: Mutex::new(Log {
                file,
                len: good as u64,
                compacted_len: good as u64,
                buf: Vec::new(),
            }),
            synced: Mutex::new(Synced {
                file: synced,
                upto: 0,
            }),
            written: AtomicU64::new(0),
            broken: AtomicBool::new(false),
            _lock: lock_file,
        });
        if let Fsync::Every(every) = fsync {
            let weak = Arc::downgrade(&store);
            std::thread::Builder::new()
                .name("wsline-fsync".into())
                .spawn(move || sync_every(weak, every))
                .map_err(io_err("cannot start the fsync thread for", dir))?;
        }
        Ok((
            store,
            Recovered {
                channels,
                rebooted_unsynced,
                cut,
            },
        ))
    }

    /// The directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// False once a write failed in a way that left the file unknown.
    pub(crate) fn is_up(&self) -> bool {
        !self.broken.load(SeqCst)
    }

    /// Writes one entry (an empty `frame`: a marker of the channel's
    /// offset); with `fsync = always`, also syncs it. On failure nothing
    /// of it stays in the file.
    pub(crate) fn append(
        &self,
        channel: &str,
        epoch: &str,
        offset: u64,
        time_ms: u64,
        frame: &[u8],
    ) -> Result<(), StoreError> {
        if self.broken.load(SeqCst) {
            return Err(StoreError::Broken);
        }
        let seq = {
            let mut log = lock(&self.log);
            let log = &mut *log;
            log.buf.clear();
            encode(&mut log.buf, channel, epoch, offset, time_ms, frame);
            if let Err(e) = log.file.write_all(&log.buf) {
                // Cut a partial record off, or stop writing altogether.
                if log.file.set_len(log.len).is_err() {
                    self.broken.store(true, SeqCst);
                }
                return Err(io_err("cannot write", &self.path)(e));
            }
            let n = log.buf.len() as u64;
            log.len += n;
            if log.buf.capacity() > 1 << 20 {
                log.buf = Vec::new();
            }
            self.written.fetch_add(n, SeqCst) + n
        };
        if self.fsync == Fsync::Always {
            self.sync_through(seq)?;
        }
        Ok(())
    }

    /// Syncs everything written up to `seq` (and whatever else was written
    /// by then: one fsync serves every writer waiting).
    fn sync_through(&self, seq: u64) -> Result<(), StoreError> {
        let mut synced = lock(&self.synced);
        if synced.upto >= seq {
            return Ok(());
        }
        let upto = self.written.load(SeqCst);
        if let Err(e) = synced.file.sync_data() {
            // After a failed fsync the kernel may have dropped the pages:
            // nothing more is promised.
            self.broken.store(true, SeqCst);
            return Err(io_err("cannot sync", &self.path)(e));
        }
        synced.upto = upto;
        Ok(())
    }

    /// Whether the log has grown enough to be rewritten.
    pub(crate) fn wants_compaction(&self) -> bool {
        let log = lock(&self.log);
        log.len > COMPACT_FLOOR && log.len > 2 * log.compacted_len
    }

    /// Rewrites the log from `write`, which must give every channel's
    /// state (its entries, or a marker of its offset) while no entry can
    /// be appended (the engine holds every channel). The new file is
    /// synced and renamed over the old one.
    pub(crate) fn compact(
        &self,
        write: impl FnOnce(&mut Snapshot) -> io::Result<()>,
    ) -> Result<(), StoreError> {
        if self.broken.load(SeqCst) {
            return Err(StoreError::Broken);
        }
        let tmp = self.dir.join(format!("{LOG_NAME}.tmp"));
        let file = File::create(&tmp).map_err(io_err("cannot create", &tmp))?;
        let mut snapshot = Snapshot {
            out: BufWriter::with_capacity(1 << 16, file),
            buf: Vec::new(),
            len: 0,
        };
        let written = snapshot
            .out
            .write_all(MAGIC)
            .and_then(|()| {
                snapshot.len += MAGIC.len() as u64;
                write(&mut snapshot)
            })
            .and_then(|()| snapshot.out.flush())
            .and_then(|()| snapshot.out.get_ref().sync_all());
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(io_err("cannot write", &tmp)(e));
        }
        let len = snapshot.len;
        drop(snapshot);
        let mut log = lock(&self.log);
        std::fs::rename(&tmp, &self.path).map_err(io_err("cannot replace", &self.path))?;
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        let reopen = || OpenOptions::new().read(true).append(true).open(&self.path);
        let (file, handle) = match reopen().and_then(|f| Ok((f.try_clone()?, f))) {
            Ok(pair) => pair,
            Err(e) => {
                self.broken.store(true, SeqCst);
                return Err(io_err("cannot reopen", &self.path)(e));
            }
        };
        log.file = file;
        log.len = len;
        log.compacted_len = len;
        let mut synced = lock(&self.synced);
        synced.file = handle;
        synced.upto = self.written.load(SeqCst);
        Ok(())
    }
}

/// The new log being written by [`Store::compact`].
pub(crate) struct Snapshot {
    out: BufWriter<File>,
    buf: Vec<u8>,
    len: u64,
}

impl Snapshot {
    /// One entry, or with an empty `frame` a marker of the channel's
    /// offset.
    pub(crate) fn record(
        &mut self,
        channel: &str,
        epoch: &str,
        offset: u64,
        time_ms: u64,
        frame: &[u8],
    ) -> io::Result<()> {
        self.buf.clear();
        encode(&mut self.buf, channel, epoch, offset, time_ms, frame);
        self.out.write_all(&self.buf)?;
        self.len += self.buf.len() as u64;
        Ok(())
    }
}

/// The interval policy's thread: syncs whatever was written, every
/// `every`, until the store is gone.
fn sync_every(store: Weak<Store>, every: Duration) {
    loop {
        std::thread::sleep(every);
        let Some(store) = store.upgrade() else {
            return;
        };
        let written = store.written.load(SeqCst);
        if let Err(e) = store.sync_through(written) {
            tracing::error!("history log: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "wsline-store-{name}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn fsync_is_always_or_seconds() {
        assert_eq!("always".parse::<Fsync>(), Ok(Fsync::Always));
        assert_eq!(
            "0.5".parse::<Fsync>(),
            Ok(Fsync::Every(Duration::from_millis(500)))
        );
        assert!("0".parse::<Fsync>().is_err());
        assert!("sometimes".parse::<Fsync>().is_err());
        assert_eq!(Fsync::Every(Duration::from_secs(1)).to_string(), "1");
    }

    #[test]
    fn entries_come_back_after_reopening() {
        let dir = temp_dir("reopen");
        {
            let (store, rec) = Store::open(&dir, Fsync::Always).unwrap();
            assert!(rec.channels.is_empty());
            for o in 1..=3 {
                store.append("a", "e1", o, 1000 + o, b"frame").unwrap();
            }
            store.append("b", "e2", 1, 7, b"x").unwrap();
        }
        let (_store, rec) = Store::open(&dir, Fsync::Always).unwrap();
        assert_eq!(rec.cut, 0);
        let a = &rec.channels["a"];
        assert_eq!((a.epoch.as_str(), a.offset, a.entries.len()), ("e1", 3, 3));
        assert_eq!(a.entries[2].time_ms, 1003);
        assert_eq!(&a.entries[0].frame[..], b"frame");
        assert_eq!(rec.channels["b"].offset, 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_torn_or_corrupt_tail_is_cut_at_the_last_good_record() {
        let dir = temp_dir("torn");
        {
            let (store, _) = Store::open(&dir, Fsync::Always).unwrap();
            for o in 1..=5 {
                store.append("a", "e", o, 0, b"12345678").unwrap();
            }
        }
        let path = dir.join(LOG_NAME);
        let whole = std::fs::read(&path).unwrap();
        // A record cut in the middle (a torn write).
        std::fs::write(&path, &whole[..whole.len() - 3]).unwrap();
        {
            let (store, rec) = Store::open(&dir, Fsync::Always).unwrap();
            assert_eq!(rec.channels["a"].offset, 4);
            assert!(rec.cut > 0);
            // Offsets continue from the last good entry.
            store.append("a", "e", 5, 0, b"again").unwrap();
        }
        let (_, rec) = Store::open(&dir, Fsync::Always).unwrap();
        assert_eq!(rec.cut, 0);
        assert_eq!(&rec.channels["a"].entries[4].frame[..], b"again");
        drop(rec);
        // A flipped bit in the last record: the checksum catches it.
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 2] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let (_, rec) = Store::open(&dir, Fsync::Always).unwrap();
        assert_eq!(rec.channels["a"].offset, 4);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_offset_out_of_order_is_corruption_not_history() {
        let mut data = Vec::new();
        encode(&mut data, "a", "e", 1, 0, b"one");
        encode(&mut data, "a", "e", 2, 0, b"two");
        encode(&mut data, "a", "e", 2, 0, b"two again");
        encode(&mut data, "a", "e", 3, 0, b"three");
        let (channels, good) = replay(&data);
        assert_eq!(channels["a"].offset, 2);
        assert!(good < data.len());
        // A new epoch starts where it likes (history trimmed before it).
        let mut data = Vec::new();
        encode(&mut data, "a", "e1", 1, 0, b"one");
        encode(&mut data, "a", "e2", 40, 0, b"forty");
        encode(&mut data, "a", "e2", 41, 0, b"forty-one");
        let (channels, good) = replay(&data);
        assert_eq!(
            (channels["a"].epoch.as_str(), channels["a"].offset),
            ("e2", 41)
        );
        assert_eq!(good, data.len());
    }

    #[test]
    fn compaction_keeps_what_it_is_given_and_appends_continue() {
        let dir = temp_dir("compact");
        {
            let (store, _) = Store::open(&dir, Fsync::Every(Duration::from_millis(50))).unwrap();
            for o in 1..=100 {
                store.append("a", "e", o, 0, b"payload").unwrap();
            }
            store
                .compact(|snap| {
                    snap.record("a", "e", 99, 0, b"payload")?;
                    snap.record("a", "e", 100, 0, b"payload")?;
                    // A channel whose history is gone keeps its offset.
                    snap.record("b", "f", 12, 0, b"")
                })
                .unwrap();
            store.append("a", "e", 101, 0, b"after").unwrap();
        }
        let (_, rec) = Store::open(&dir, Fsync::Always).unwrap();
        let a = &rec.channels["a"];
        assert_eq!(
            a.entries.iter().map(|e| e.offset).collect::<Vec<_>>(),
            [99, 100, 101]
        );
        assert_eq!(
            (rec.channels["b"].offset, rec.channels["b"].entries.len()),
            (12, 0)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn one_process_per_directory_and_only_our_files() {
        let dir = temp_dir("inuse");
        let (_held, _) = Store::open(&dir, Fsync::Always).unwrap();
        // flock is per open file: a second open in this process conflicts too.
        assert!(matches!(
            Store::open(&dir, Fsync::Always),
            Err(StoreError::InUse(_))
        ));
        let other = temp_dir("notalog");
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(other.join(LOG_NAME), b"hello, not a log").unwrap();
        let err = Store::open(&other, Fsync::Always).err().expect("refused");
        assert!(
            err.to_string().contains("not a wsline history log"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(&other);
    }
}
