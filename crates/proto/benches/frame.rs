//! Frame-level micro-benchmarks: header parse and encode, and masking.
//!
//! `cargo bench -p wsline-proto --bench frame`. Masking compares the
//! word-at-a-time `apply_mask` with the byte-at-a-time reference
//! `apply_mask_simple` at 16 B, 1 KiB and 64 KiB, in bytes per second,
//! and buffering a payload: `extend_masked` (copy and unmask in one pass)
//! against copying then unmasking in place.

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use wsline_proto::frame::{
    apply_mask, apply_mask_simple, encode_header, extend_masked, parse_header, FrameHeader,
    MAX_HEADER_LEN,
};

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// The header forms a connection meets: (name, header).
fn headers() -> Vec<(&'static str, FrameHeader)> {
    let h = |mask: Option<[u8; 4]>, len: u64| FrameHeader {
        fin: true,
        rsv: 0,
        opcode: 2,
        mask,
        payload_len: len,
    };
    vec![
        // Server to client: no mask.
        ("2B_unmasked_16", h(None, 16)),
        // Client to server: masked, 7-bit, 16-bit and 64-bit lengths.
        ("6B_masked_16", h(Some(KEY), 16)),
        ("8B_masked_1KiB", h(Some(KEY), 1024)),
        ("14B_masked_1MiB", h(Some(KEY), 1 << 20)),
    ]
}

fn header(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse_header");
    for (name, h) in headers() {
        let mut buf = [0u8; MAX_HEADER_LEN];
        let n = encode_header(&h, &mut buf);
        // A header followed by payload bytes, as it sits in a read buffer.
        let mut wire = buf[..n].to_vec();
        wire.extend_from_slice(&[0u8; 32]);
        group.bench_with_input(BenchmarkId::from_parameter(name), &wire, |b, wire| {
            b.iter(|| parse_header(black_box(wire)))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("encode_header");
    for (name, h) in headers() {
        group.bench_with_input(BenchmarkId::from_parameter(name), &h, |b, h| {
            let mut out = [0u8; MAX_HEADER_LEN];
            b.iter(|| encode_header(black_box(h), black_box(&mut out)))
        });
    }
    group.finish();
}

fn mask(c: &mut Criterion) {
    let mut group = c.benchmark_group("mask");
    for size in [16usize, 1024, 64 * 1024] {
        let mut buf: Vec<u8> = (0..size).map(|i| i as u8).collect();
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(BenchmarkId::new("apply_mask", size), |b| {
            b.iter(|| apply_mask(black_box(&mut buf), black_box(KEY), 0))
        });
        group.bench_function(BenchmarkId::new("apply_mask_simple", size), |b| {
            b.iter(|| apply_mask_simple(black_box(&mut buf), black_box(KEY), 0))
        });
        // A payload that starts one byte into the buffer (unaligned) and
        // one byte into the key, as when a frame arrives in pieces.
        group.bench_function(BenchmarkId::new("apply_mask_offset1", size), |b| {
            b.iter(|| apply_mask(black_box(&mut buf[1..]), black_box(KEY), 1))
        });
        // Buffering a payload that arrived in the caller's bytes.
        let mut into = BytesMut::with_capacity(size);
        group.bench_function(BenchmarkId::new("extend_masked", size), |b| {
            b.iter(|| {
                into.clear();
                extend_masked(&mut into, black_box(&buf), black_box(KEY), 0);
            })
        });
        group.bench_function(BenchmarkId::new("copy_then_apply_mask", size), |b| {
            b.iter(|| {
                into.clear();
                into.extend_from_slice(black_box(&buf));
                apply_mask(&mut into, black_box(KEY), 0);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, header, mask);
criterion_main!(benches);
