//! The write pattern of `wsline serve --data-dir` (one publication: append
//! it to its channel's history, drop what falls out of `history_size`),
//! run against three ways of storing it, under the hub's two fsync
//! policies:
//!
//! - `log`: what the hub does (crates/hub/src/engine/store.rs): one
//!   record (length, CRC32, channel, offset, frame) written with one
//!   `write(2)` per publication to one append-only file; trimming is in
//!   memory (the file is compacted now and then, not measured here).
//! - `redb`: one write transaction per publication, key (channel, offset),
//!   the entry `history_size` back removed in the same transaction.
//! - `fjall`: one insert and one remove per publication in an LSM
//!   partition, key channel + offset.
//!
//! Policies: `interval` (the default `--fsync 1`: nothing synced per
//! publication, a sync once a second) and `always` (a sync per
//! publication). Prints one line per store: publications/s and CPU
//! (user + system) per publication.
//!
//!   cargo run --release -- DIR [publications] [always|interval]

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

const CHANNELS: u64 = 100;
const HISTORY: u64 = 100;
const FRAME: usize = 1024;

fn cpu() -> Duration {
    // SAFETY: getrusage writes into the struct we pass and nothing else.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |v: libc::timeval| Duration::new(v.tv_sec as u64, v.tv_usec as u32 * 1000);
    t(u.ru_utime) + t(u.ru_stime)
}

trait Store {
    fn append(&mut self, channel: &str, offset: u64, frame: &[u8]);
    fn sync(&mut self);
}

struct Log {
    file: File,
    buf: Vec<u8>,
}

impl Store for Log {
    fn append(&mut self, channel: &str, offset: u64, frame: &[u8]) {
        self.buf.clear();
        let body = 1 + channel.len() + 8 + 8 + frame.len();
        self.buf.extend_from_slice(&(body as u32).to_le_bytes());
        self.buf.extend_from_slice(&[0; 4]);
        self.buf.push(channel.len() as u8);
        self.buf.extend_from_slice(channel.as_bytes());
        self.buf.extend_from_slice(&offset.to_le_bytes());
        self.buf.extend_from_slice(&0u64.to_le_bytes());
        self.buf.extend_from_slice(frame);
        let crc = crc32fast::hash(&self.buf[8..]);
        self.buf[4..8].copy_from_slice(&crc.to_le_bytes());
        self.file.write_all(&self.buf).unwrap();
    }
    fn sync(&mut self) {
        self.file.sync_data().unwrap();
    }
}

const TABLE: redb::TableDefinition<(&str, u64), &[u8]> = redb::TableDefinition::new("history");

struct Redb {
    db: redb::Database,
    always: bool,
}

impl Store for Redb {
    fn append(&mut self, channel: &str, offset: u64, frame: &[u8]) {
        let mut txn = self.db.begin_write().unwrap();
        txn.set_durability(if self.always {
            redb::Durability::Immediate
        } else {
            redb::Durability::None
        });
        {
            let mut t = txn.open_table(TABLE).unwrap();
            t.insert((channel, offset), frame).unwrap();
            if offset > HISTORY {
                t.remove((channel, offset - HISTORY)).unwrap();
            }
        }
        txn.commit().unwrap();
    }
    fn sync(&mut self) {
        // A commit with Immediate durability makes the earlier
        // non-durable ones durable.
        let txn = self.db.begin_write().unwrap();
        txn.commit().unwrap();
    }
}

struct Fjall {
    keyspace: fjall::Keyspace,
    part: fjall::PartitionHandle,
    always: bool,
}

fn fjall_key(channel: &str, offset: u64) -> Vec<u8> {
    let mut k = channel.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(&offset.to_be_bytes());
    k
}

impl Store for Fjall {
    fn append(&mut self, channel: &str, offset: u64, frame: &[u8]) {
        self.part.insert(fjall_key(channel, offset), frame).unwrap();
        if offset > HISTORY {
            self.part.remove(fjall_key(channel, offset - HISTORY)).unwrap();
        }
        if self.always {
            self.keyspace.persist(fjall::PersistMode::SyncData).unwrap();
        }
    }
    fn sync(&mut self) {
        self.keyspace.persist(fjall::PersistMode::SyncData).unwrap();
    }
}

fn run(name: &str, store: &mut dyn Store, n: u64, always: bool) {
    let frame: Vec<u8> = (0..FRAME).map(|i| b'a' + (i % 26) as u8).collect();
    let names: Vec<String> = (0..CHANNELS).map(|c| format!("room:{c}")).collect();
    let (t0, c0) = (Instant::now(), cpu());
    let mut last_sync = Instant::now();
    for i in 0..n {
        let channel = &names[(i % CHANNELS) as usize];
        store.append(channel, i / CHANNELS + 1, &frame);
        if always {
            if name == "log" {
                store.sync();
            }
        } else if last_sync.elapsed() >= Duration::from_secs(1) {
            store.sync();
            last_sync = Instant::now();
        }
    }
    store.sync();
    let (wall, cpu) = (t0.elapsed(), cpu() - c0);
    println!(
        "{name:6} {:>9.0} publications/s  {:>7.2} us CPU/publication",
        n as f64 / wall.as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / n as f64
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = Path::new(args.get(1).map(String::as_str).unwrap_or("/tmp/wsline-bench-store"));
    let n: u64 = args.get(2).map(|s| s.parse().unwrap()).unwrap_or(50_000);
    let always = args.get(3).map(String::as_str) == Some("always");
    let which = args.get(4).map(String::as_str).unwrap_or("log,redb,fjall");
    for name in which.split(',') {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).unwrap();
        match name {
            "log" => {
                let file = OpenOptions::new().create(true).append(true).open(dir.join("history.log")).unwrap();
                run(name, &mut Log { file, buf: Vec::new() }, n, always);
            }
            "redb" => {
                let db = redb::Database::create(dir.join("history.redb")).unwrap();
                run(name, &mut Redb { db, always }, n, always);
            }
            "fjall" => {
                let keyspace = fjall::Config::new(dir.join("fjall")).open().unwrap();
                let part = keyspace.open_partition("history", fjall::PartitionCreateOptions::default()).unwrap();
                run(name, &mut Fjall { keyspace, part, always }, n, always);
            }
            other => panic!("unknown store {other}"),
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}
