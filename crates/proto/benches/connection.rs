//! Connection-level micro-benchmarks: text frames through the receive path
//! (unmasking and UTF-8 validation), and a full in-memory message round
//! trip between a client and a server `Connection`.
//!
//! `cargo bench -p wsline-proto --bench connection`.
//! - `receive/{binary,text_ascii,text_utf8}/N`: one masked frame of N bytes
//!   fed to a server's `receive_data`, then taken with `poll_event`. Text
//!   minus binary is the cost of UTF-8 validation.
//! - `round_trip/{text,binary}/N`: client `send_text` (or `send_binary`)
//!   → `take_output` → server `receive_data` → `poll_event`.

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use wsline_proto::{Config, Connection, Event, Role};

const SIZES: [usize; 3] = [16, 1024, 64 * 1024];

fn ascii(n: usize) -> String {
    (0..n).map(|i| (b'a' + (i % 26) as u8) as char).collect()
}

/// Mixed 1- to 4-byte characters, cut to exactly `n` bytes on a boundary
/// and padded with ASCII.
fn utf8(n: usize) -> String {
    let mut s = String::with_capacity(n);
    let pattern = "aé€😀κόσμε ";
    'outer: loop {
        for ch in pattern.chars() {
            if s.len() + ch.len_utf8() > n {
                break 'outer;
            }
            s.push(ch);
        }
    }
    while s.len() < n {
        s.push('x');
    }
    s
}

/// The bytes a client puts on the wire for one message (masked).
fn client_frame(text: Option<&str>, binary: &[u8], now: Instant) -> Vec<u8> {
    let mut client = Connection::new(Role::Client, Config::default(), now);
    match text {
        Some(t) => client.send_text(t).unwrap(),
        None => client.send_binary(binary).unwrap(),
    }
    client.take_output().to_vec()
}

fn take_message(server: &mut Connection) -> usize {
    match server.poll_event() {
        Some(Event::Message(m)) => m.len(),
        other => panic!("expected a message, got {other:?}"),
    }
}

fn receive(c: &mut Criterion) {
    let now = Instant::now();
    let mut group = c.benchmark_group("receive");
    for size in SIZES {
        group.throughput(Throughput::Bytes(size as u64));
        let cases = [
            ("binary", client_frame(None, &vec![7u8; size], now)),
            ("text_ascii", client_frame(Some(&ascii(size)), &[], now)),
            ("text_utf8", client_frame(Some(&utf8(size)), &[], now)),
        ];
        for (name, frame) in cases {
            let mut server = Connection::new(Role::Server, Config::default(), now);
            group.bench_with_input(BenchmarkId::new(name, size), &frame, |b, frame| {
                b.iter(|| {
                    server.receive_data(black_box(frame), now);
                    take_message(&mut server)
                })
            });
        }
    }
    group.finish();
}

fn round_trip(c: &mut Criterion) {
    let now = Instant::now();
    let mut group = c.benchmark_group("round_trip");
    for size in [16usize, 1024] {
        group.throughput(Throughput::Bytes(size as u64));
        let text = ascii(size);
        let data = vec![7u8; size];
        for kind in ["text", "binary"] {
            let mut client = Connection::new(Role::Client, Config::default(), now);
            let mut server = Connection::new(Role::Server, Config::default(), now);
            group.bench_function(BenchmarkId::new(kind, size), |b| {
                b.iter(|| {
                    if kind == "text" {
                        client.send_text(black_box(&text)).unwrap();
                    } else {
                        client.send_binary(black_box(&data)).unwrap();
                    }
                    let wire = client.take_output();
                    server.receive_data(&wire, now);
                    take_message(&mut server)
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, receive, round_trip);
criterion_main!(benches);
