//! `wsline bench URL`: a load generator for any WebSocket server.
//!
//! Owns four workloads and their report:
//! - `echo` (default): N connections, K messages in flight on each; every
//!   echo's round trip goes into a latency histogram;
//! - `handshake`: connect, upgrade, close, N at a time;
//! - `idle`: open N connections and hold them for the duration;
//! - `fanout`: N subscribers and one publisher on a hub speaking the wsline
//!   hub protocol (`wsline serve`); see [`fanout`].
//!
//! A progress bar goes to stderr when it is a terminal; the summary (or,
//! with `--json`, one JSON object) goes to stdout.
//!
//! Built not to be the bottleneck: it runs on the current-thread runtime
//! `main` sets up, every message shares one payload `Bytes`, echoes are
//! matched to their send times by order (a server echoes in order, so a
//! queue of send times per connection is enough), the clock is read once
//! per batch, and each batch of sends is queued with `feed` and written
//! with one `flush`. Its own CPU time (utime + stime of this process) per
//! message is measured and reported, so a run can show that the client had
//! room to spare.

use std::collections::VecDeque;
use std::fmt::Display;
use std::future::poll_fn;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use tokio::task::JoinSet;
use wsline::{ClientConfig, CloseCode, MaybeTlsStream, Message, TerminationKind, Utf8Bytes};

use crate::secs::parse_secs;

mod fanout;

type Ws = wsline::WebSocket<MaybeTlsStream>;

/// How long a connection may take to finish its closing handshake at the
/// end of a run before it is counted as a close error.
const CLOSE_WAIT: Duration = Duration::from_secs(10);
/// Error messages kept for the report (the count covers all of them).
const ERROR_SAMPLES: usize = 5;
/// Latencies are recorded in nanoseconds, up to this many.
const MAX_LATENCY_NS: u64 = 60_000_000_000;

/// What `wsline bench` measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Mode {
    /// N connections sending messages and timing their echoes.
    Echo,
    /// Connect, upgrade and close, N at a time.
    Handshake,
    /// Open N connections and hold them, silent, for the duration.
    Idle,
    /// N subscribers on one channel of a hub, one publisher.
    Fanout,
}

/// Options of `wsline bench`.
#[derive(Args, Debug)]
pub(crate) struct BenchArgs {
    /// ws:// or wss:// URL of the server (for echo: one that echoes every
    /// message back, in order, with the same type).
    url: String,
    /// What to measure.
    #[arg(long, value_enum, default_value_t = Mode::Echo)]
    mode: Mode,
    /// Connections (echo, idle), subscribers (fanout), or handshakes at a
    /// time (handshake).
    #[arg(long, short = 'c', value_name = "N", default_value_t = 10)]
    connections: usize,
    /// Payload size of each message in bytes (echo; fanout: the published
    /// `data`, a JSON string of this many bytes, at least 29).
    #[arg(long, value_name = "BYTES", default_value_t = 16)]
    size: usize,
    /// Messages in flight on each connection (echo); publishes not yet
    /// received by every subscriber (fanout).
    #[arg(long, value_name = "K", default_value_t = 1)]
    in_flight: usize,
    /// Seconds to send for (echo), to keep handshaking for (handshake), or
    /// to hold the connections once all are open (idle).
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    duration: Duration,
    /// Send text messages.
    #[arg(long, overrides_with = "binary")]
    text: bool,
    /// Send binary messages (the default).
    #[arg(long, overrides_with = "text")]
    binary: bool,
    /// Offer permessage-deflate.
    #[arg(long, overrides_with = "no_compression")]
    compression: bool,
    /// Do not offer permessage-deflate (the default, so that servers with
    /// and without compression are compared alike).
    #[arg(long, overrides_with = "compression")]
    no_compression: bool,
    /// Idle: send one message (of `--size`, `--text` or `--binary`) on each
    /// connection and wait for its echo before holding it, so that state a
    /// server allocates only once traffic flows (compression contexts,
    /// buffers) is counted in its memory per connection.
    #[arg(long)]
    warm: bool,
    /// Idle, against `wsline serve`: subscribe each connection to this
    /// channel before holding it (repeatable; `{i}` in the name is the
    /// connection's number, so `--subscribe 'own.{i}' --subscribe all`
    /// gives every connection a channel of its own and one shared one).
    #[arg(long, value_name = "CHANNEL")]
    subscribe: Vec<String>,
    /// Connections opened at a time while setting up (echo, idle).
    #[arg(long, value_name = "N", default_value_t = 64)]
    connect_concurrency: usize,
    /// Do not verify the server's certificate (wss://, testing only).
    #[arg(long)]
    insecure: bool,
    /// Print one JSON object on stdout instead of the summary.
    #[arg(long)]
    json: bool,
    /// Where the publisher connects (fanout) [default: URL].
    #[arg(long, value_name = "URL")]
    publish_url: Option<String>,
    /// Publishes per second at most (fanout) [default: as fast as the
    /// in-flight window allows].
    #[arg(long, value_name = "MSGS_PER_SEC")]
    rate: Option<f64>,
    /// The channel to subscribe and publish to (fanout).
    #[arg(long, value_name = "NAME", default_value = "bench-fanout")]
    channel: String,
    /// The server's process ID, to report its CPU time per delivery
    /// (fanout, Linux). Repeatable: with several (e.g. two hub nodes and
    /// their Redis), each one's CPU is reported and the server CPU is
    /// their sum.
    #[arg(long, value_name = "PID")]
    server_pid: Vec<u32>,
    /// Open each WebSocket as a stream of an HTTP/2 connection (RFC 8441
    /// extended CONNECT, one HTTP/2 connection per WebSocket) instead of
    /// an HTTP/1.1 upgrade: against a server that takes them (`wsline
    /// serve`, the hyper_echo example), to compare the cost of each.
    #[arg(long)]
    http2: bool,
}

impl BenchArgs {
    fn check(&self) -> Result<(), String> {
        if self.connections == 0 {
            return Err("--connections must be at least 1".into());
        }
        if !self.subscribe.is_empty() && self.mode != Mode::Idle {
            return Err("--subscribe goes with --mode idle".into());
        }
        if self.in_flight == 0 {
            return Err("--in-flight must be at least 1".into());
        }
        if self.connect_concurrency == 0 {
            return Err("--connect-concurrency must be at least 1".into());
        }
        if self.mode == Mode::Fanout && self.size < fanout::MIN_SIZE {
            return Err(format!(
                "--size must be at least {} for fanout",
                fanout::MIN_SIZE
            ));
        }
        if self.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
            return Err("--rate must be more than 0".into());
        }
        if self.duration.is_zero() && self.mode != Mode::Idle {
            return Err("--duration must be more than 0".into());
        }
        Ok(())
    }

    fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::default();
        // The client sends no keepalive pings of its own: only the
        // workload's traffic reaches the server.
        config.protocol.ping_interval = None;
        config.protocol.ping_timeout = None;
        config.protocol.close_timeout = Duration::from_secs(5);
        config.protocol.max_message_size = config.protocol.max_message_size.max(self.size);
        config.protocol.max_frame_size = config.protocol.max_frame_size.max(self.size);
        config.tls.insecure = self.insecure;
        if self.http2 {
            config.http_version = wsline::HttpVersion::Http2;
        }
        if !self.compression {
            config.deflate = None;
        }
        config
    }

    /// The one message every send shares.
    fn message(&self) -> Message {
        if self.text {
            match Utf8Bytes::try_from(json_like_text(self.size)) {
                Ok(t) => Message::Text(t),
                Err(_) => unreachable!("ASCII is UTF-8"),
            }
        } else {
            let data: Vec<u8> = (0..self.size).map(|i| (i * 31 % 251) as u8).collect();
            Message::Binary(Bytes::from(data))
        }
    }
}

/// `size` bytes of chat-like JSON records (ASCII), varied enough that
/// permessage-deflate shrinks them about as much as a real JSON feed
/// (roughly 3 to 4 times for 1 KiB), not the 50 times a repeated letter
/// pattern would give.
fn json_like_text(size: usize) -> Vec<u8> {
    const WORDS: [&str; 16] = [
        "hello", "world", "price", "update", "channel", "ready", "order", "filled", "ping",
        "status", "online", "typing", "message", "room", "lobby", "score",
    ];
    let mut out = Vec::with_capacity(size + 96);
    let mut seed: u32 = 0x2545_f491;
    let mut next = || {
        seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        seed >> 8
    };
    let mut seq = 0u32;
    while out.len() < size {
        seq += 1;
        let (a, b, c, n) = (next(), next(), next(), next());
        let record = format!(
            "{{\"seq\":{seq},\"user\":\"user{}\",\"text\":\"{} {} {}\",\"value\":{}.{:02}}}\n",
            a % 1000,
            WORDS[(b % 16) as usize],
            WORDS[(c % 16) as usize],
            WORDS[(n % 16) as usize],
            n % 100_000,
            a % 100
        );
        out.extend_from_slice(record.as_bytes());
    }
    out.truncate(size);
    out
}

/// Runs the benchmark; the exit code is 0 when it ran without errors.
pub(crate) async fn run(args: BenchArgs) -> i32 {
    if let Err(e) = args.check() {
        eprintln!("error: {e}");
        return 2;
    }
    let config = Arc::new(args.client_config());
    let url: Arc<str> = Arc::from(args.url.as_str());
    let mut report = match args.mode {
        Mode::Echo => echo_mode(&args, url, config).await,
        Mode::Handshake => handshake_mode(&args, url, config).await,
        Mode::Idle => idle_mode(&args, url, config).await,
        Mode::Fanout => fanout::fanout_mode(&args, url, config).await,
    };
    report.bench_cpu_total_s = process_cpu().map(|c| c.as_secs_f64());
    if args.json {
        match serde_json::to_string(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("error: {e}");
                return 2;
            }
        }
    } else {
        report.print();
    }
    let worked = match args.mode {
        Mode::Idle => report.connections_open > 0,
        _ => report.messages_total > 0,
    };
    if !worked {
        2
    } else if report.errors > 0 {
        1
    } else {
        0
    }
}

// ------------------------------------------------------------------ report

/// Latency percentiles in microseconds.
#[derive(Debug, Serialize)]
struct Latency {
    p50: f64,
    p90: f64,
    p99: f64,
    p999: f64,
    max: f64,
    mean: f64,
}

impl Latency {
    fn from_histogram(h: &Histogram<u64>) -> Option<Self> {
        if h.is_empty() {
            return None;
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Some(Self {
            p50: us(h.value_at_quantile(0.50)),
            p90: us(h.value_at_quantile(0.90)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
            mean: h.mean() / 1000.0,
        })
    }
}

/// The result of a run, as printed or as JSON.
#[derive(Debug, Serialize)]
struct Report {
    mode: Mode,
    url: String,
    /// Connections asked for (handshake: at a time).
    connections: usize,
    /// Payload bytes per message (echo).
    size: usize,
    in_flight: usize,
    text: bool,
    compression: bool,
    /// The duration asked for, in seconds.
    duration_s: f64,
    /// Connections that opened (echo, idle).
    connections_open: usize,
    /// Seconds it took to open them.
    connect_s: f64,
    /// Echoes (handshakes) completed within the measured window.
    messages: u64,
    /// All echoes (handshakes) completed, including those still in flight
    /// when the window closed: what the server processed.
    messages_total: u64,
    /// The measured window in seconds.
    elapsed_s: f64,
    /// `messages / elapsed_s`.
    msgs_per_sec: f64,
    /// Payload megabytes (10^6) per second, each way.
    mb_per_sec: f64,
    /// Round trip of each echo (handshake: connect, upgrade and close).
    latency_us: Option<Latency>,
    /// Failed connects, transport errors, unexpected closes, wrong echoes.
    errors: u64,
    /// Connections whose closing handshake did not end cleanly at the end.
    close_errors: u64,
    /// The first few errors, for diagnosis.
    error_samples: Vec<String>,
    /// utime + stime of this process during the measured phase, seconds.
    bench_cpu_s: Option<f64>,
    /// `bench_cpu_s / messages_total`, in microseconds.
    bench_cpu_us_per_msg: Option<f64>,
    /// utime + stime of this process from its start to the report.
    bench_cpu_total_s: Option<f64>,
    /// The fan-out figures (fanout only; `messages` counts deliveries).
    #[serde(skip_serializing_if = "Option::is_none")]
    fanout: Option<fanout::FanoutReport>,
}

impl Report {
    fn new(args: &BenchArgs) -> Self {
        Self {
            mode: args.mode,
            url: args.url.clone(),
            connections: args.connections,
            size: args.size,
            in_flight: args.in_flight,
            text: args.text,
            compression: args.compression,
            duration_s: args.duration.as_secs_f64(),
            connections_open: 0,
            connect_s: 0.0,
            messages: 0,
            messages_total: 0,
            elapsed_s: 0.0,
            msgs_per_sec: 0.0,
            mb_per_sec: 0.0,
            latency_us: None,
            errors: 0,
            close_errors: 0,
            error_samples: Vec::new(),
            bench_cpu_s: None,
            bench_cpu_us_per_msg: None,
            bench_cpu_total_s: None,
            fanout: None,
        }
    }

    fn add_errors(&mut self, e: Errors) {
        self.errors += e.count;
        for s in e.samples {
            self.sample(s);
        }
    }

    fn sample(&mut self, s: String) {
        if self.error_samples.len() < ERROR_SAMPLES && !self.error_samples.contains(&s) {
            self.error_samples.push(s);
        }
    }

    fn finish(&mut self, window: Duration, hist: &Histogram<u64>, cpu: Option<Duration>) {
        self.elapsed_s = window.as_secs_f64();
        if self.elapsed_s > 0.0 {
            self.msgs_per_sec = self.messages as f64 / self.elapsed_s;
            if self.mode == Mode::Echo {
                self.mb_per_sec = self.msgs_per_sec * self.size as f64 / 1e6;
            }
        }
        self.latency_us = Latency::from_histogram(hist);
        self.bench_cpu_s = cpu.map(|c| c.as_secs_f64());
        if let Some(c) = cpu {
            if self.messages_total > 0 {
                self.bench_cpu_us_per_msg =
                    Some(c.as_secs_f64() * 1e6 / self.messages_total as f64);
            }
        }
    }

    fn print(&self) {
        let kind = if self.text { "text" } else { "binary" };
        let compression = if self.compression {
            "compression offered"
        } else {
            "no compression"
        };
        let setup = match self.mode {
            Mode::Echo => format!(
                "{} connections, {} B {kind}, {} in flight, {} s",
                self.connections, self.size, self.in_flight, self.duration_s
            ),
            Mode::Handshake => {
                format!("{} at a time, {} s", self.connections, self.duration_s)
            }
            Mode::Idle => format!(
                "{} connections held {} s",
                self.connections, self.duration_s
            ),
            Mode::Fanout => format!(
                "{} subscribers, {} B data, {} s",
                self.connections, self.size, self.duration_s
            ),
        };
        println!(
            "wsline bench {:?} {}: {setup}, {compression}",
            self.mode, self.url
        );
        if self.mode != Mode::Handshake {
            println!(
                "connections   {} of {} open in {:.2} s",
                self.connections_open, self.connections, self.connect_s
            );
        }
        let unit = match self.mode {
            Mode::Handshake => "handshakes",
            Mode::Fanout => "deliveries",
            _ => "msgs",
        };
        if self.mode != Mode::Idle {
            let mb = if self.mode == Mode::Echo {
                format!(", {:.2} MB/s each way", self.mb_per_sec)
            } else {
                String::new()
            };
            println!(
                "{:<13} {} in {:.2} s: {} {unit}/s{mb} ({} in all, with those in flight at the end)",
                unit,
                group(self.messages),
                self.elapsed_s,
                group(self.msgs_per_sec.round() as u64),
                group(self.messages_total),
            );
        }
        if let Some(f) = &self.fanout {
            println!("pacing        {}", f.pacing);
            println!(
                "fan-out       {} publishes to {} subscribers (subscribed in {:.2} s): {} of {} deliveries, {} lost, {} duplicates, {} publish errors",
                group(f.publishes),
                group(f.subscribers as u64),
                f.subscribe_s,
                group(f.deliveries),
                group(f.expected_deliveries),
                group(f.lost),
                group(f.duplicates),
                f.publish_errors,
            );
            if let (Some(c), Some(per)) = (f.server_cpu_s, f.server_cpu_us_per_delivery) {
                println!("server CPU    {c:.2} s, {per:.3} µs per delivery");
            }
            if f.server_cpu_by_pid.len() > 1 {
                for p in &f.server_cpu_by_pid {
                    println!(
                        "  pid {:<9} {:.2} s, {:.3} µs per delivery",
                        p.pid, p.cpu_s, p.us_per_delivery
                    );
                }
            }
        }
        if let Some(l) = &self.latency_us {
            println!(
                "latency       p50 {}, p90 {}, p99 {}, p99.9 {}, max {}",
                us(l.p50),
                us(l.p90),
                us(l.p99),
                us(l.p999),
                us(l.max)
            );
        }
        println!(
            "errors        {} (close errors {})",
            self.errors, self.close_errors
        );
        for s in &self.error_samples {
            println!("              {s}");
        }
        match (self.bench_cpu_s, self.bench_cpu_us_per_msg) {
            (Some(c), Some(per)) => {
                let one = match self.mode {
                    Mode::Handshake => "handshake",
                    Mode::Fanout => "delivery",
                    _ => "message",
                };
                println!("bench CPU     {c:.2} s, {per:.2} µs per {one}")
            }
            (Some(c), None) => println!("bench CPU     {c:.2} s"),
            _ => {}
        }
    }
}

/// Microseconds, readably.
fn us(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.1} ms", v / 1000.0)
    } else if v >= 100.0 {
        format!("{v:.0} µs")
    } else {
        format!("{v:.1} µs")
    }
}

/// 1234567 → "1,234,567".
fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// An error count and the first few messages.
#[derive(Debug, Default)]
struct Errors {
    count: u64,
    samples: Vec<String>,
}

impl Errors {
    fn add(&mut self, what: impl Display) {
        self.count += 1;
        if self.samples.len() < ERROR_SAMPLES {
            let s = what.to_string();
            if !self.samples.contains(&s) {
                self.samples.push(s);
            }
        }
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("valid histogram bounds")
}

fn record(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1));
}

/// utime + stime of this process so far, from /proc/self/stat (Linux).
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces; the fields after its
    // closing parenthesis start with field 3 (state).
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // In clock ticks of USER_HZ, which is 100 on Linux.
    Some(Duration::from_millis((utime + stime) * 10))
}

fn cpu_between(before: Option<Duration>, after: Option<Duration>) -> Option<Duration> {
    Some(after?.saturating_sub(before?))
}

// ---------------------------------------------------------------- progress

fn progress_bar(len: u64, template: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(template) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb
}

/// Redraws `pb` ten times a second from `counter`: the run itself only
/// adds to the counter, once per batch.
fn spawn_ticker(
    pb: &ProgressBar,
    start: Instant,
    duration: Duration,
    counter: Arc<AtomicU64>,
    unit: &'static str,
) -> Option<tokio::task::JoinHandle<()>> {
    if pb.is_hidden() {
        return None;
    }
    let pb = pb.clone();
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            let elapsed = start.elapsed();
            pb.set_position(elapsed.min(duration).as_millis() as u64);
            let n = counter.load(Ordering::Relaxed);
            let rate = n as f64 / elapsed.as_secs_f64().max(1e-3);
            pb.set_message(format!(
                "{} {unit}, {} {unit}/s",
                group(n),
                group(rate.round() as u64)
            ));
        }
    }))
}

fn run_bar(duration: Duration) -> ProgressBar {
    progress_bar(
        duration.as_millis() as u64,
        "{spinner} [{elapsed_precise}] [{bar:30}] {msg}",
    )
}

// ------------------------------------------------------------- connecting

/// Opens `n` connections, `at_once` at a time.
/// Opens the connections and records how long that took, how many opened,
/// and the errors, in `report`.
async fn open_measured(
    args: &BenchArgs,
    url: &Arc<str>,
    config: &Arc<ClientConfig>,
    report: &mut Report,
) -> Vec<Ws> {
    let mut errors = Errors::default();
    let t0 = Instant::now();
    let conns = open_all(
        url,
        config,
        args.connections,
        args.connect_concurrency,
        &mut errors,
    )
    .await;
    report.connect_s = t0.elapsed().as_secs_f64();
    report.connections_open = conns.len();
    report.add_errors(errors);
    conns
}

async fn open_all(
    url: &Arc<str>,
    config: &Arc<ClientConfig>,
    n: usize,
    at_once: usize,
    errors: &mut Errors,
) -> Vec<Ws> {
    let pb = progress_bar(
        n as u64,
        "connecting [{elapsed_precise}] [{bar:30}] {pos}/{len}",
    );
    let mut set = JoinSet::new();
    let mut opened = Vec::with_capacity(n);
    let mut started = 0;
    loop {
        while started < n && set.len() < at_once {
            let (url, config) = (url.clone(), config.clone());
            set.spawn(async move { wsline::connect_with(&url, &config).await });
            started += 1;
        }
        match set.join_next().await {
            None => break,
            Some(Ok(Ok((ws, _)))) => {
                opened.push(ws);
                pb.inc(1);
            }
            Some(Ok(Err(e))) => errors.add(format_args!("connect: {e}")),
            Some(Err(e)) => errors.add(format_args!("connect task: {e}")),
        }
    }
    pb.finish_and_clear();
    opened
}

/// Closes normally, waiting for the server's reply and TCP close; an
/// error message if that did not happen cleanly.
async fn close(ws: &mut Ws) -> Option<String> {
    match tokio::time::timeout(CLOSE_WAIT, ws.close(CloseCode::NORMAL, "")).await {
        Ok(Ok(t)) if t.kind == TerminationKind::Clean => None,
        Ok(Ok(t)) => Some(format!("close: {:?} {} {}", t.kind, t.code(), t.reason())),
        Ok(Err(e)) => Some(format!("close: {e}")),
        Err(_) => Some(format!("close: no answer within {CLOSE_WAIT:?}")),
    }
}

// -------------------------------------------------------------------- echo

/// What one connection (or handshake worker) measured.
struct ConnStats {
    hist: Histogram<u64>,
    in_window: u64,
    total: u64,
    errors: Errors,
    close_error: Option<String>,
}

impl ConnStats {
    fn new() -> Self {
        Self {
            hist: histogram(),
            in_window: 0,
            total: 0,
            errors: Errors::default(),
            close_error: None,
        }
    }
}

/// Merges the per-task results into `report`, returning the merged histogram.
async fn collect(set: &mut JoinSet<ConnStats>, report: &mut Report) -> Histogram<u64> {
    let mut hist = histogram();
    while let Some(r) = set.join_next().await {
        match r {
            Ok(st) => {
                let _ = hist.add(&st.hist);
                report.messages += st.in_window;
                report.messages_total += st.total;
                report.add_errors(st.errors);
                if let Some(e) = st.close_error {
                    report.close_errors += 1;
                    report.sample(e);
                }
            }
            Err(e) => {
                report.errors += 1;
                report.sample(format!("task: {e}"));
            }
        }
    }
    hist
}

async fn echo_mode(args: &BenchArgs, url: Arc<str>, config: Arc<ClientConfig>) -> Report {
    let mut report = Report::new(args);
    let conns = open_measured(args, &url, &config, &mut report).await;
    if conns.is_empty() {
        return report;
    }

    let message = args.message();
    let counter = Arc::new(AtomicU64::new(0));
    let pb = run_bar(args.duration);
    let cpu0 = process_cpu();
    let start = Instant::now();
    let deadline = start + args.duration;
    let mut set = JoinSet::new();
    for ws in conns {
        set.spawn(echo_conn(
            ws,
            message.clone(),
            args.in_flight,
            deadline,
            counter.clone(),
        ));
    }
    let ticker = spawn_ticker(&pb, start, args.duration, counter, "msgs");
    let hist = collect(&mut set, &mut report).await;
    let cpu = cpu_between(cpu0, process_cpu());
    if let Some(t) = ticker {
        t.abort();
    }
    pb.finish_and_clear();
    report.finish(args.duration, &hist, cpu);
    report
}

/// One connection of the echo workload: keeps `in_flight` messages
/// outstanding until `deadline`, then waits for the last echoes and closes.
async fn echo_conn(
    mut ws: Ws,
    message: Message,
    in_flight: usize,
    deadline: Instant,
    counter: Arc<AtomicU64>,
) -> ConnStats {
    let mut st = ConnStats::new();
    let size = message.len();
    let text = message.is_text();
    // Send time of every message in flight, oldest first.
    let mut sent: VecDeque<Instant> = VecDeque::with_capacity(in_flight);
    let mut now = Instant::now();
    let mut to_send = in_flight;
    loop {
        if to_send > 0 {
            for _ in 0..to_send {
                if let Err(e) = ws.feed(message.clone()).await {
                    st.errors.add(format_args!("send: {e}"));
                    return st;
                }
                sent.push_back(now);
            }
            if let Err(e) = ws.flush().await {
                st.errors.add(format_args!("send: {e}"));
                return st;
            }
        }
        if sent.is_empty() {
            break;
        }
        // Wait for one echo, then take every echo already here.
        let batch = poll_fn(|cx| {
            let mut got = 0usize;
            let mut at: Option<Instant> = None;
            while !sent.is_empty() {
                match ws.poll_recv(cx) {
                    Poll::Ready(Some(Ok(m))) => {
                        let t = *at.get_or_insert_with(Instant::now);
                        if let Some(sent_at) = sent.pop_front() {
                            record(&mut st.hist, t.saturating_duration_since(sent_at));
                        }
                        if m.len() != size || m.is_text() != text {
                            st.errors.add(format_args!(
                                "wrong echo: {} B {}, expected {size} B {}",
                                m.len(),
                                if m.is_text() { "text" } else { "binary" },
                                if text { "text" } else { "binary" },
                            ));
                        }
                        got += 1;
                    }
                    Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e.to_string())),
                    Poll::Ready(None) => {
                        return Poll::Ready(Err("the server closed the connection".into()))
                    }
                    Poll::Pending => break,
                }
            }
            match at {
                Some(t) => Poll::Ready(Ok((got, t))),
                None => Poll::Pending,
            }
        })
        .await;
        let (got, at) = match batch {
            Ok(b) => b,
            Err(e) => {
                st.errors.add(format_args!("receive: {e}"));
                return st;
            }
        };
        st.total += got as u64;
        counter.fetch_add(got as u64, Ordering::Relaxed);
        now = at;
        if now < deadline {
            st.in_window += got as u64;
            to_send = got;
        } else {
            to_send = 0;
        }
    }
    st.close_error = close(&mut ws).await;
    st
}

// --------------------------------------------------------------- handshake

async fn handshake_mode(args: &BenchArgs, url: Arc<str>, config: Arc<ClientConfig>) -> Report {
    let mut report = Report::new(args);
    let counter = Arc::new(AtomicU64::new(0));
    let pb = run_bar(args.duration);
    let cpu0 = process_cpu();
    let start = Instant::now();
    let deadline = start + args.duration;
    let mut set = JoinSet::new();
    for _ in 0..args.connections {
        let (url, config, counter) = (url.clone(), config.clone(), counter.clone());
        set.spawn(async move {
            let mut st = ConnStats::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                match wsline::connect_with(&url, &config).await {
                    Ok((mut ws, _)) => {
                        if let Some(e) = close(&mut ws).await {
                            st.errors.add(e);
                            continue;
                        }
                        let done = Instant::now();
                        record(&mut st.hist, done - t);
                        st.total += 1;
                        if done < deadline {
                            st.in_window += 1;
                        }
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        st.errors.add(format_args!("connect: {e}"));
                        // Do not spin against a server that refuses.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            st
        });
    }
    let ticker = spawn_ticker(&pb, start, args.duration, counter, "handshakes");
    let hist = collect(&mut set, &mut report).await;
    let cpu = cpu_between(cpu0, process_cpu());
    if let Some(t) = ticker {
        t.abort();
    }
    pb.finish_and_clear();
    report.connections_open = args.connections;
    report.finish(args.duration, &hist, cpu);
    report
}

// -------------------------------------------------------------------- idle

async fn idle_mode(args: &BenchArgs, url: Arc<str>, config: Arc<ClientConfig>) -> Report {
    let mut report = Report::new(args);
    let cpu0 = process_cpu();
    let mut conns = open_measured(args, &url, &config, &mut report).await;
    if !args.subscribe.is_empty() {
        let mut errors = Errors::default();
        let names = |i: usize| {
            let n = i.to_string();
            args.subscribe
                .iter()
                .map(|c| c.replace("{i}", &n))
                .collect()
        };
        conns = fanout::subscribe_all(conns, names, &mut errors).await;
        report.add_errors(errors);
    }
    if conns.is_empty() {
        return report;
    }
    let pb = run_bar(args.duration);
    let start = Instant::now();
    let deadline = tokio::time::Instant::from_std(start + args.duration);
    let mut set = JoinSet::new();
    let warm = args.warm.then(|| args.message());
    for mut ws in conns {
        let warm = warm.clone();
        set.spawn(async move {
            let mut st = ConnStats::new();
            if let Some(message) = warm {
                if let Err(e) = exchange_one(&mut ws, message).await {
                    st.errors.add(format_args!("warm-up message: {e}"));
                    return st;
                }
            }
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => break,
                    r = ws.recv() => match r {
                        Some(Ok(m)) => st.errors.add(format_args!("unexpected {} B message", m.len())),
                        Some(Err(e)) => {
                            st.errors.add(format_args!("held connection: {e}"));
                            return st;
                        }
                        None => {
                            st.errors.add("held connection: the server closed it");
                            return st;
                        }
                    },
                }
            }
            st.close_error = close(&mut ws).await;
            st
        });
    }
    let ticker = spawn_ticker(
        &pb,
        start,
        args.duration,
        Arc::new(AtomicU64::new(0)),
        "msgs",
    );
    let hist = collect(&mut set, &mut report).await;
    let cpu = cpu_between(cpu0, process_cpu());
    if let Some(t) = ticker {
        t.abort();
    }
    pb.finish_and_clear();
    report.finish(args.duration, &hist, cpu);
    report
}

/// Sends `message` and waits (bounded) for its echo.
async fn exchange_one(ws: &mut Ws, message: Message) -> Result<(), String> {
    ws.send(message).await.map_err(|e| e.to_string())?;
    match tokio::time::timeout(CLOSE_WAIT, ws.recv()).await {
        Ok(Some(Ok(_))) => Ok(()),
        Ok(Some(Err(e))) => Err(e.to_string()),
        Ok(None) => Err("the server closed the connection".into()),
        Err(_) => Err(format!("no echo within {CLOSE_WAIT:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_thousands() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1,000");
        assert_eq!(group(1234567), "1,234,567");
    }

    #[test]
    fn json_like_text_is_ascii_of_the_exact_size_and_compressible_but_not_trivially() {
        for size in [0, 1, 100, 1024, 65536] {
            let t = json_like_text(size);
            assert_eq!(t.len(), size);
            assert!(t.is_ascii());
        }
        let t = json_like_text(1024);
        let distinct: std::collections::HashSet<&[u8]> = t.split(|&b| b == b'\n').collect();
        assert!(distinct.len() > 10, "records vary");
    }

    #[test]
    fn reads_own_cpu_time() {
        if cfg!(target_os = "linux") {
            assert!(process_cpu().is_some());
        }
    }
}
