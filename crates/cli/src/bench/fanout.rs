//! `wsline bench URL --mode fanout`: one publisher, N subscribers on one
//! channel of a hub speaking the wsline hub protocol (docs/protocol.md).
//!
//! Owns the fan-out workload and its figures: N connections subscribe to
//! `--channel` on URL; once all are subscribed, one more connection (on
//! `--publish-url`, default URL) publishes messages whose `data` is a JSON
//! string of exactly `--size` bytes carrying a sequence number and the send
//! time. Every subscriber checks that it gets every sequence number once
//! and in order (a gap counts as lost deliveries, a repeat or step back as
//! a duplicate) and records publish-to-delivery latency.
//!
//! Pacing: a closed loop with `--in-flight K` publishes outstanding (the
//! next publish goes out when the oldest one has reached every subscriber),
//! so every server is offered the same window and runs as fast as it can;
//! with `--rate R`, publishes also go out at most R per second (open loop
//! when K is large enough never to bind). The report names the pacing.
//!
//! Cheap on purpose, since it receives N times what it sends: everything
//! runs on the one current-thread runtime, the clock is read once per batch
//! of messages read, a message is recognised by two substring searches and
//! its numbers read in place (no JSON parse), and all subscribers record
//! into one histogram. With `--server-pid`, the server's CPU time over the
//! publishing phase is read from /proc and reported per delivery.

use std::future::poll_fn;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use wsline::{ClientConfig, Message};

use super::{
    close, cpu_between, histogram, open_measured, process_cpu, progress_bar, record, run_bar,
    spawn_ticker, BenchArgs, Errors, Report, Ws,
};

/// Publishes tracked at once: slots of the completion ring (the window
/// never exceeds it).
const RING: usize = 1 << 16;
/// With no progress for this long, the run stops (a lost delivery would
/// otherwise hold the closed loop forever).
const STALL: Duration = Duration::from_secs(3);
/// How long subscribing may take in all.
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(60);
/// The smallest `--size`: the quotes, a 10-digit sequence number, a dot,
/// a 15-digit send time in ns, a dot.
pub(super) const MIN_SIZE: usize = 29;

/// The fan-out figures of a run (in the JSON report under `fanout`).
#[derive(Debug, Default, Serialize)]
pub(super) struct FanoutReport {
    /// The channel used.
    pub(super) channel: String,
    /// How publishes were paced.
    pub(super) pacing: String,
    /// Subscribers that subscribed.
    pub(super) subscribers: usize,
    /// Seconds subscribing took.
    pub(super) subscribe_s: f64,
    /// Messages published.
    pub(super) publishes: u64,
    /// `publishes × subscribers`.
    pub(super) expected_deliveries: u64,
    /// Distinct messages received, over all subscribers.
    pub(super) deliveries: u64,
    /// Expected but never received (gaps, subscribers lost on the way).
    pub(super) lost: u64,
    /// Received again or out of order.
    pub(super) duplicates: u64,
    /// Error replies the publisher got (e.g. `rate_limited`).
    pub(super) publish_errors: u64,
    /// Server utime + stime over the publishing phase (with --server-pid).
    pub(super) server_cpu_s: Option<f64>,
    /// `server_cpu_s / deliveries`, in microseconds.
    pub(super) server_cpu_us_per_delivery: Option<f64>,
    /// Each `--server-pid`'s share of `server_cpu_s`, in the order given.
    pub(super) server_cpu_by_pid: Vec<PidCpu>,
}

/// One server process's CPU over the publishing phase.
#[derive(Debug, Default, Serialize)]
pub(super) struct PidCpu {
    /// The process ID.
    pub(super) pid: u32,
    /// utime + stime over the publishing phase, in seconds.
    pub(super) cpu_s: f64,
    /// `cpu_s / deliveries`, in microseconds.
    pub(super) us_per_delivery: f64,
}

/// Each process's CPU between two readings of the same processes, and their
/// sum; `None` when any process could not be read.
fn cpu_deltas(
    pids: &[u32],
    before: &[Option<Duration>],
    after: &[Option<Duration>],
) -> Option<(Duration, Vec<(u32, Duration)>)> {
    if pids.is_empty() {
        return None;
    }
    let mut each = Vec::with_capacity(pids.len());
    for ((pid, b), a) in pids.iter().zip(before).zip(after) {
        each.push((*pid, a.as_ref()?.saturating_sub((*b)?)));
    }
    Some((each.iter().map(|(_, d)| *d).sum(), each))
}

/// What the publisher and the subscribers share (all on one thread).
struct Shared {
    subscribers: u32,
    /// Per publish (sequence number modulo RING): subscribers that got it.
    reached: Vec<AtomicU32>,
    /// Wakes the publisher when a publish has reached every subscriber.
    complete: Notify,
    /// Deliveries so far, for the progress bar.
    counter: Arc<AtomicU64>,
    /// Publish-to-delivery latency of every delivery.
    hist: Mutex<Histogram<u64>>,
    /// What the send times in the data count from.
    epoch: Instant,
}

/// What one subscriber saw.
#[derive(Default)]
struct SubStats {
    /// Distinct messages received (in order, gaps skipped).
    received: u64,
    /// The next sequence number expected.
    next: u64,
    lost_in_gaps: u64,
    duplicates: u64,
    errors: Errors,
    close_error: Option<String>,
}

/// The data of publish `seq`: a JSON string of exactly `size` bytes.
fn data(seq: u64, sent_ns: u64, size: usize) -> String {
    let mut s = format!("\"{:010}.{:015}.", seq % 10_000_000_000, sent_ns);
    while s.len() + 1 < size {
        s.push('x');
    }
    s.push('"');
    s
}

/// Reads the sequence number and send time out of a `message` event;
/// `None` for any other event.
fn parse(text: &str) -> Option<(u64, u64)> {
    const DATA: &str = "\"data\":\"";
    if !text.contains("\"op\":\"message\"") {
        return None;
    }
    let at = text.find(DATA)? + DATA.len();
    let b = text.as_bytes().get(at..at + 26)?;
    let digits = |d: &[u8]| {
        d.iter().try_fold(0u64, |n, c| {
            c.is_ascii_digit().then(|| n * 10 + u64::from(c - b'0'))
        })
    };
    if b[10] != b'.' {
        return None;
    }
    Some((digits(&b[..10])?, digits(&b[11..26])?))
}

fn ns_since(epoch: Instant, t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX)
}

/// utime + stime of process `pid`, from /proc/PID/stat (Linux).
fn pid_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

fn subscribe_request(channel: &str) -> Message {
    Message::text(serde_json::json!({"op": "subscribe", "channel": channel}).to_string())
}

/// Subscribes connection `i` to each of `channels(i)` in turn; keeps the
/// connections whose every `subscribed` came.
pub(super) async fn subscribe_all(
    conns: Vec<Ws>,
    channels: impl Fn(usize) -> Vec<String>,
    errors: &mut Errors,
) -> Vec<Ws> {
    let pb = progress_bar(
        conns.len() as u64,
        "subscribing [{elapsed_precise}] [{bar:30}] {pos}/{len}",
    );
    let mut set = JoinSet::new();
    for (i, mut ws) in conns.into_iter().enumerate() {
        let names = channels(i);
        set.spawn(async move {
            for channel in names {
                subscribe_one(&mut ws, &channel).await?;
            }
            Ok::<_, String>(ws)
        });
    }
    let mut subscribed = Vec::new();
    while let Some(r) = set.join_next().await {
        match r {
            Ok(Ok(ws)) => {
                subscribed.push(ws);
                pb.inc(1);
            }
            Ok(Err(e)) => errors.add(e),
            Err(e) => errors.add(format_args!("subscribe task: {e}")),
        }
    }
    pb.finish_and_clear();
    subscribed
}

/// Sends one subscribe and waits (bounded) for its `subscribed`.
async fn subscribe_one(ws: &mut Ws, channel: &str) -> Result<(), String> {
    ws.send(subscribe_request(channel))
        .await
        .map_err(|e| format!("subscribe: {e}"))?;
    let wait = async {
        loop {
            match ws.recv().await {
                Some(Ok(Message::Text(t))) if t.contains("\"op\":\"subscribed\"") => return Ok(()),
                Some(Ok(Message::Text(t))) if t.contains("\"op\":\"error\"") => {
                    return Err(format!("subscribe refused: {}", t.as_str()))
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(format!("subscribe: {e}")),
                None => return Err("subscribe: the server closed the connection".into()),
            }
        }
    };
    match tokio::time::timeout(SUBSCRIBE_WAIT, wait).await {
        Ok(r) => r,
        Err(_) => Err("subscribe: no reply".into()),
    }
}

/// One subscriber: reads until told to stop, checking every message.
async fn subscriber(mut ws: Ws, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) -> SubStats {
    let mut st = SubStats::default();
    let mut lat: Vec<Duration> = Vec::new();
    loop {
        let batch = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            b = poll_fn(|cx| {
                let mut at: Option<Instant> = None;
                loop {
                    match ws.poll_recv(cx) {
                        Poll::Ready(Some(Ok(Message::Text(t)))) => {
                            let Some((seq, sent)) = parse(&t) else { continue };
                            let now = *at.get_or_insert_with(Instant::now);
                            lat.push(Duration::from_nanos(ns_since(shared.epoch, now).saturating_sub(sent)));
                            if seq < st.next {
                                st.duplicates += 1;
                                continue;
                            }
                            st.lost_in_gaps += seq - st.next;
                            st.next = seq + 1;
                            st.received += 1;
                            let slot = &shared.reached[(seq as usize) % RING];
                            if slot.fetch_add(1, Relaxed) + 1 == shared.subscribers {
                                shared.complete.notify_one();
                            }
                        }
                        Poll::Ready(Some(Ok(_))) => {}
                        Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e.to_string())),
                        Poll::Ready(None) => {
                            return Poll::Ready(Err("the server closed the connection".into()))
                        }
                        Poll::Pending => break,
                    }
                }
                if at.is_some() { Poll::Ready(Ok(())) } else { Poll::Pending }
            }) => b,
        };
        if let Err(e) = batch {
            st.errors.add(format_args!("subscriber: {e}"));
            return st;
        }
        shared.counter.fetch_add(lat.len() as u64, Relaxed);
        if let Ok(mut h) = shared.hist.lock() {
            for d in lat.drain(..) {
                record(&mut h, d);
            }
        }
    }
    st.close_error = close(&mut ws).await;
    st
}

/// What the publisher did.
struct Published {
    publishes: u64,
    /// From the first publish to the last one reaching every subscriber
    /// (or the stall).
    window: Duration,
    errors: Errors,
    replies_with_error: u64,
}

/// The publisher: closed loop with `window` publishes outstanding, at most
/// `rate` per second when given; stops `duration` after its first publish
/// and waits for the outstanding ones.
async fn publisher(
    mut ws: Ws,
    shared: Arc<Shared>,
    channel: String,
    size: usize,
    window: usize,
    rate: Option<f64>,
    duration: Duration,
) -> Published {
    let mut out = Published {
        publishes: 0,
        window: Duration::ZERO,
        errors: Errors::default(),
        replies_with_error: 0,
    };
    let prefix = format!(
        "{{\"op\":\"publish\",\"channel\":{},\"data\":",
        serde_json::Value::from(channel.as_str())
    );
    let interval = rate.map(|r| Duration::from_secs_f64(1.0 / r));
    let start = Instant::now();
    let deadline = start + duration;
    let mut next_due = start;
    let mut next_seq: u64 = 0;
    let mut oldest: u64 = 0;
    let mut last_progress = Instant::now();
    loop {
        // Retire publishes that reached everyone.
        while oldest < next_seq {
            let slot = &shared.reached[(oldest as usize) % RING];
            if slot.load(Relaxed) < shared.subscribers {
                break;
            }
            slot.store(0, Relaxed);
            oldest += 1;
            last_progress = Instant::now();
        }
        let now = Instant::now();
        if oldest == next_seq {
            last_progress = now;
        }
        let publishing = now < deadline;
        if !publishing && oldest == next_seq {
            break;
        }
        if now.duration_since(last_progress) > STALL {
            out.errors.add(format_args!(
                "stalled: publish {oldest} reached {} of {} subscribers in {STALL:?}",
                shared.reached[(oldest as usize) % RING].load(Relaxed),
                shared.subscribers
            ));
            break;
        }
        let mut sent = false;
        while publishing
            && ((next_seq - oldest) as usize) < window
            && interval.is_none_or(|_| next_due <= now)
        {
            let text = format!(
                "{prefix}{}}}",
                data(next_seq, ns_since(shared.epoch, Instant::now()), size)
            );
            if let Err(e) = ws.feed(Message::text(text)).await {
                out.errors.add(format_args!("publish: {e}"));
                out.publishes = next_seq;
                out.window = start.elapsed();
                return out;
            }
            next_seq += 1;
            sent = true;
            if let Some(i) = interval {
                next_due += i;
            }
        }
        if sent {
            if let Err(e) = ws.flush().await {
                out.errors.add(format_args!("publish: {e}"));
                break;
            }
            continue;
        }
        let rate_wait = match interval {
            Some(_) if publishing && ((next_seq - oldest) as usize) < window => {
                tokio::time::Instant::from_std(next_due)
            }
            _ => tokio::time::Instant::from_std(now + STALL),
        };
        tokio::select! {
            biased;
            _ = shared.complete.notified() => {}
            reply = ws.recv() => match reply {
                Some(Ok(Message::Text(t))) => {
                    if t.contains("\"op\":\"error\"") {
                        out.replies_with_error += 1;
                        out.errors.add(format_args!("publish refused: {}", t.as_str()));
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    out.errors.add(format_args!("publisher: {e}"));
                    break;
                }
                None => {
                    out.errors.add("publisher: the server closed the connection");
                    break;
                }
            },
            _ = tokio::time::sleep_until(rate_wait) => {}
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)), if publishing => {}
        }
    }
    out.publishes = next_seq;
    out.window = start.elapsed();
    if let Some(e) = close(&mut ws).await {
        out.errors.add(e);
    }
    out
}

/// Runs the fan-out workload.
pub(super) async fn fanout_mode(
    args: &BenchArgs,
    url: Arc<str>,
    config: Arc<ClientConfig>,
) -> Report {
    let mut report = Report::new(args);
    let mut fan = FanoutReport {
        channel: args.channel.clone(),
        pacing: match args.rate {
            Some(r) => format!(
                "at most {r} publishes/s, at most {} in flight",
                args.in_flight
            ),
            None => format!(
                "closed loop: {} publishes in flight (the next when the oldest reached every subscriber)",
                args.in_flight
            ),
        },
        ..FanoutReport::default()
    };
    let conns = open_measured(args, &url, &config, &mut report).await;
    let publish_url = args.publish_url.as_deref().unwrap_or(&args.url);
    let publisher_ws = match wsline::connect_with(publish_url, &config).await {
        Ok((ws, _)) => ws,
        Err(e) => {
            report.errors += 1;
            report.sample(format!("publisher connect: {e}"));
            report.fanout = Some(fan);
            return report;
        }
    };
    let t0 = Instant::now();
    let mut errors = Errors::default();
    let subs = subscribe_all(conns, |_| vec![args.channel.clone()], &mut errors).await;
    report.add_errors(errors);
    fan.subscribe_s = t0.elapsed().as_secs_f64();
    fan.subscribers = subs.len();
    if subs.is_empty() {
        report.fanout = Some(fan);
        return report;
    }
    let counter = Arc::new(AtomicU64::new(0));
    let shared = Arc::new(Shared {
        subscribers: subs.len() as u32,
        reached: (0..RING).map(|_| AtomicU32::new(0)).collect(),
        complete: Notify::new(),
        counter: counter.clone(),
        hist: Mutex::new(histogram()),
        epoch: Instant::now(),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut set = JoinSet::new();
    for ws in subs {
        set.spawn(subscriber(ws, shared.clone(), stop_rx.clone()));
    }
    let pb = run_bar(args.duration);
    let cpu0 = process_cpu();
    let server0: Vec<_> = args.server_pid.iter().map(|&p| pid_cpu(p)).collect();
    let start = Instant::now();
    let ticker = spawn_ticker(&pb, start, args.duration, counter, "deliveries");
    let published = publisher(
        publisher_ws,
        shared.clone(),
        args.channel.clone(),
        args.size,
        args.in_flight.min(RING),
        args.rate,
        args.duration,
    )
    .await;
    let cpu = cpu_between(cpu0, process_cpu());
    let server1: Vec<_> = args.server_pid.iter().map(|&p| pid_cpu(p)).collect();
    let server_cpu = cpu_deltas(&args.server_pid, &server0, &server1);
    if let Some(t) = ticker {
        t.abort();
    }
    pb.finish_and_clear();
    let _ = stop_tx.send(true);
    report.add_errors(published.errors);
    fan.publishes = published.publishes;
    fan.publish_errors = published.replies_with_error;
    while let Some(r) = set.join_next().await {
        match r {
            Ok(st) => {
                fan.deliveries += st.received.min(fan.publishes);
                fan.duplicates += st.duplicates;
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
    fan.expected_deliveries = fan.publishes * fan.subscribers as u64;
    // Subscribers that never got going count all their deliveries as lost.
    fan.lost = fan.expected_deliveries - fan.deliveries;
    report.messages = fan.deliveries;
    report.messages_total = fan.deliveries;
    let hist = shared
        .hist
        .lock()
        .map(|h| h.clone())
        .unwrap_or_else(|_| histogram());
    report.finish(published.window, &hist, cpu);
    if let (Some((c, each)), true) = (server_cpu, fan.deliveries > 0) {
        let per = |d: Duration| d.as_secs_f64() * 1e6 / fan.deliveries as f64;
        fan.server_cpu_s = Some(c.as_secs_f64());
        fan.server_cpu_us_per_delivery = Some(per(c));
        fan.server_cpu_by_pid = each
            .into_iter()
            .map(|(pid, d)| PidCpu {
                pid,
                cpu_s: d.as_secs_f64(),
                us_per_delivery: per(d),
            })
            .collect();
    }
    report.fanout = Some(fan);
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_has_the_size_and_parses_back() {
        for size in [MIN_SIZE, 100, 1000] {
            let d = data(42, 123_456_789, size);
            assert_eq!(d.len(), size);
            let v: serde_json::Value = serde_json::from_str(&d).unwrap();
            assert!(v.is_string());
            let wsline_style =
                format!(r#"{{"op":"message","channel":"c","offset":7,"data":{d},"from":"x"}}"#);
            assert_eq!(parse(&wsline_style), Some((42, 123_456_789)));
            // serde_json's default map sorts keys: the peers' order.
            let sorted =
                format!(r#"{{"channel":"c","data":{d},"from":"x","offset":7,"op":"message"}}"#);
            assert_eq!(parse(&sorted), Some((42, 123_456_789)));
        }
    }

    #[test]
    fn server_cpu_sums_every_pid_and_needs_all() {
        let ms = Duration::from_millis;
        let (sum, each) = cpu_deltas(
            &[1, 2],
            &[Some(ms(100)), Some(ms(50))],
            &[Some(ms(130)), Some(ms(60))],
        )
        .unwrap();
        assert_eq!(sum, ms(40));
        assert_eq!(each, vec![(1, ms(30)), (2, ms(10))]);
        assert!(cpu_deltas(&[1, 2], &[Some(ms(1)), None], &[Some(ms(2)), Some(ms(3))]).is_none());
        assert!(cpu_deltas(&[], &[], &[]).is_none());
    }

    #[test]
    fn other_events_are_not_messages() {
        assert_eq!(
            parse(r#"{"op":"published","channel":"c","offset":1}"#),
            None
        );
        assert_eq!(parse(r#"{"op":"message","data":"short"}"#), None);
    }
}
