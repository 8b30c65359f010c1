//! `wsline soak-load` (hidden): the load of `scripts/soak.sh`, a steady mix
//! of well-behaved and hostile clients against `wsline echo` or the hub.
//!
//! Owns the scenarios and their mix; it checks little about the answers
//! (the soak measures the server, not the client) beyond counting what
//! happened. `--workers` clients run at once, each running one scenario
//! after another with a short pause, so the rate stays moderate.
//!
//! Scenarios: a normal session (messages of mixed sizes, echoes read or hub
//! publications, then a clean close), an abrupt drop (TCP closed without a
//! Close), a slow reader (sends much, reads nothing for a while), an
//! oversized frame (length above the server's limit), a malformed frame
//! (reserved opcode, invalid UTF-8, unmasked), a stalled handshake (half a
//! request, then nothing).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wsline::{ClientConfig, CloseCode, Message};

use crate::secs::parse_secs;

/// Which server the load is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Target {
    /// `wsline echo`: messages come back.
    Echo,
    /// `wsline serve`: JSON protocol on /ws.
    Hub,
}

/// Options of `wsline soak-load`.
#[derive(Args, Debug)]
pub(crate) struct SoakArgs {
    /// The server's IP:PORT.
    addr: SocketAddr,
    /// The kind of server.
    #[arg(long, value_enum)]
    target: Target,
    /// Seconds to run.
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    duration: Duration,
    /// Clients at a time.
    #[arg(long, default_value_t = 6)]
    workers: usize,
    /// Milliseconds each worker pauses between scenarios.
    #[arg(long, default_value_t = 100)]
    pause_ms: u64,
    /// The server's largest message (oversized frames claim more).
    #[arg(long, default_value_t = 65536)]
    max_message_size: u64,
}

#[derive(Default)]
struct Counts {
    normal: AtomicU64,
    dropped: AtomicU64,
    slow: AtomicU64,
    oversized: AtomicU64,
    malformed: AtomicU64,
    stalled: AtomicU64,
    failed: AtomicU64,
}

/// A small xorshift generator: the mix needs variety, not quality.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

pub(crate) async fn run(args: SoakArgs) -> i32 {
    let args = Arc::new(args);
    let counts = Arc::new(Counts::default());
    let end = Instant::now() + args.duration;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    let mut workers = tokio::task::JoinSet::new();
    for i in 0..args.workers {
        let (args, counts) = (args.clone(), counts.clone());
        let mut rng = Rng(seed.wrapping_mul(i as u64 * 2 + 1) | 1);
        workers.spawn(async move {
            while Instant::now() < end {
                let outcome = tokio::time::timeout(
                    Duration::from_secs(30),
                    scenario(&args, &counts, &mut rng),
                )
                .await;
                if !matches!(outcome, Ok(Ok(()))) {
                    counts.failed.fetch_add(1, Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(args.pause_ms)).await;
            }
        });
    }
    while workers.join_next().await.is_some() {}
    let c = &counts;
    println!(
        "soak-load normal={} dropped={} slow={} oversized={} malformed={} stalled={} failed={}",
        c.normal.load(Relaxed),
        c.dropped.load(Relaxed),
        c.slow.load(Relaxed),
        c.oversized.load(Relaxed),
        c.malformed.load(Relaxed),
        c.stalled.load(Relaxed),
        c.failed.load(Relaxed),
    );
    0
}

type Res = Result<(), Box<dyn std::error::Error + Send + Sync>>;

async fn scenario(args: &SoakArgs, counts: &Counts, rng: &mut Rng) -> Res {
    match rng.below(20) {
        0..=9 => {
            normal(args, rng).await?;
            counts.normal.fetch_add(1, Relaxed);
        }
        10..=12 => {
            abrupt_drop(args, rng).await?;
            counts.dropped.fetch_add(1, Relaxed);
        }
        13..=14 => {
            slow_reader(args, rng).await?;
            counts.slow.fetch_add(1, Relaxed);
        }
        15..=16 => {
            oversized(args).await?;
            counts.oversized.fetch_add(1, Relaxed);
        }
        17..=18 => {
            malformed(args, rng).await?;
            counts.malformed.fetch_add(1, Relaxed);
        }
        _ => {
            stalled_handshake(args, rng).await?;
            counts.stalled.fetch_add(1, Relaxed);
        }
    }
    Ok(())
}

fn path(args: &SoakArgs) -> &'static str {
    match args.target {
        Target::Echo => "/",
        Target::Hub => "/ws",
    }
}

fn client_config() -> ClientConfig {
    let mut config = ClientConfig::default();
    config.protocol.ping_interval = None;
    config.protocol.ping_timeout = None;
    config
}

async fn normal(args: &SoakArgs, rng: &mut Rng) -> Res {
    let url = format!("ws://{}{}", args.addr, path(args));
    let (mut ws, _) = wsline::connect_with(&url, &client_config()).await?;
    let n = 1 + rng.below(20);
    match args.target {
        Target::Echo => {
            for _ in 0..n {
                let size = [16, 200, 4096, 60_000][rng.below(4) as usize];
                let message = if rng.below(2) == 0 {
                    Message::text("x".repeat(size))
                } else {
                    Message::binary(vec![7u8; size])
                };
                ws.send(message).await?;
                match ws.recv().await {
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e.into()),
                    None => return Err("the server closed".into()),
                }
            }
        }
        Target::Hub => {
            let channel = format!("soak:{}", rng.below(4));
            ws.send(Message::text(format!(
                r#"{{"op":"subscribe","channel":"{channel}","id":1}}"#
            )))
            .await?;
            for i in 0..n {
                ws.send(Message::text(format!(
                    r#"{{"op":"publish","channel":"{channel}","data":{{"n":{i},"pad":"{}"}},"id":{}}}"#,
                    "p".repeat(rng.below(2000) as usize),
                    i + 2
                )))
                .await?;
                // Replies and publications of other clients on the channel.
                let _ = tokio::time::timeout(Duration::from_millis(20), ws.recv()).await;
            }
        }
    }
    ws.close(CloseCode::NORMAL, "").await?;
    Ok(())
}

async fn abrupt_drop(args: &SoakArgs, rng: &mut Rng) -> Res {
    let url = format!("ws://{}{}", args.addr, path(args));
    let (mut ws, _) = wsline::connect_with(&url, &client_config()).await?;
    let text = match args.target {
        Target::Echo => "x".repeat(rng.below(10_000) as usize),
        Target::Hub => r#"{"op":"subscribe","channel":"soak:0","id":1}"#.to_owned(),
    };
    ws.send(Message::text(text)).await?;
    // Dropped without a Close: the server sees EOF (1006).
    drop(ws);
    Ok(())
}

/// Sends much and reads nothing for a while, then drops: the server's
/// output backs up (echo: write stall; hub: slow consumer on a busy
/// channel).
async fn slow_reader(args: &SoakArgs, rng: &mut Rng) -> Res {
    let mut tcp = raw_handshake(args).await?;
    let hold = Duration::from_millis(1000 + rng.below(4000));
    let until = Instant::now() + hold;
    match args.target {
        Target::Echo => {
            let payload = vec![b'a'; 60_000];
            while Instant::now() < until {
                let frame = masked_frame(0x2, &payload, true);
                match tokio::time::timeout(Duration::from_millis(200), tcp.write_all(&frame)).await
                {
                    Ok(r) => r?,
                    // The server stopped reading: it is protecting itself.
                    Err(_) => break,
                }
            }
        }
        Target::Hub => {
            tcp.write_all(&masked_frame(
                0x1,
                br#"{"op":"subscribe","channel":"soak:0","id":1}"#,
                true,
            ))
            .await?;
        }
    }
    tokio::time::sleep_until(until.into()).await;
    // Read a little, slowly, then go.
    let mut buf = [0u8; 512];
    for _ in 0..4 {
        let _ = tokio::time::timeout(Duration::from_millis(50), tcp.read(&mut buf)).await;
    }
    Ok(())
}

async fn oversized(args: &SoakArgs) -> Res {
    let mut tcp = raw_handshake(args).await?;
    // A header claiming more than the server's limit, then some of it.
    let len = args.max_message_size * 4 + 1;
    let mut frame = vec![0x82, 0x80 | 127];
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&[1, 2, 3, 4]);
    frame.extend_from_slice(&[0u8; 1024]);
    tcp.write_all(&frame).await?;
    read_until_eof(&mut tcp).await;
    Ok(())
}

async fn malformed(args: &SoakArgs, rng: &mut Rng) -> Res {
    let mut tcp = raw_handshake(args).await?;
    // A valid message first, then the bad frame.
    tcp.write_all(&masked_frame(0x1, b"{}", true)).await?;
    let bad = match rng.below(3) {
        0 => masked_frame(0x3, b"reserved opcode", true),
        1 => masked_frame(0x1, &[0xff, 0xfe, 0xfd], true),
        _ => masked_frame(0x1, b"unmasked", false),
    };
    tcp.write_all(&bad).await?;
    read_until_eof(&mut tcp).await;
    Ok(())
}

async fn stalled_handshake(args: &SoakArgs, rng: &mut Rng) -> Res {
    let mut tcp = TcpStream::connect(args.addr).await?;
    tcp.write_all(format!("GET {} HTTP/1.1\r\nHost: soak\r\nUpg", path(args)).as_bytes())
        .await?;
    tokio::time::sleep(Duration::from_millis(200 + rng.below(1500))).await;
    Ok(())
}

async fn raw_handshake(
    args: &SoakArgs,
) -> Result<TcpStream, Box<dyn std::error::Error + Send + Sync>> {
    let mut tcp = TcpStream::connect(args.addr).await?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        path(args),
        args.addr
    );
    tcp.write_all(request.as_bytes()).await?;
    // Read the response head byte by byte: nothing past it is consumed.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 8192 || tcp.read(&mut byte).await? == 0 {
            return Err("no complete handshake response".into());
        }
        head.push(byte[0]);
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        return Err("handshake refused".into());
    }
    Ok(tcp)
}

fn masked_frame(opcode: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut frame = vec![0x80 | opcode];
    let mask_bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => frame.push(mask_bit | n as u8),
        n if n <= 0xffff => {
            frame.push(mask_bit | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(mask_bit | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        let key = [0x12, 0x34, 0x56, 0x78];
        frame.extend_from_slice(&key);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        frame.extend_from_slice(payload);
    }
    frame
}

async fn read_until_eof(tcp: &mut TcpStream) {
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while matches!(tcp.read(&mut buf).await, Ok(n) if n > 0) {}
    })
    .await;
}
