//! permessage-deflate (RFC 7692) end to end against `wsline echo`:
//! negotiation as seen in the response headers, RSV1 rules, round trips
//! with our own client, and a compression bomb stopped at the limit.

#[path = "../../wsline/tests/support/mod.rs"]
mod support;

mod child;

use child::{on_both_runtimes, spawn_echo, Runtime};
use support::{client_frame, frame, within, Raw, BINARY, CLOSE, CONTINUATION, MASK, PING, TEXT};
use wsline::{ClientConfig, Message};
use zlib_rs::{Deflate, DeflateFlush};

/// Compresses `input` with a sync flush into a fresh Vec.
fn deflate_chunk(d: &mut Deflate, input: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; input.len() + 1024];
    let before = d.total_out();
    d.compress(input, &mut out, DeflateFlush::SyncFlush)
        .unwrap();
    out.truncate((d.total_out() - before) as usize);
    out
}

/// A compressed payload that inflates to `chunks` MiB of zeros: after the
/// first chunk, every sync-flushed MiB of zeros compresses to the same bytes.
fn zero_bomb(chunks: usize) -> Vec<u8> {
    let mut d = Deflate::new(9, false, 15);
    let zeros = vec![0u8; 1 << 20];
    let first = deflate_chunk(&mut d, &zeros);
    let second = deflate_chunk(&mut d, &zeros);
    let third = deflate_chunk(&mut d, &zeros);
    assert_eq!(second, third, "steady-state chunks repeat");
    let mut out = first;
    for _ in 1..chunks {
        out.extend_from_slice(&second);
    }
    out
}

fn rsv1(mut frame: Vec<u8>) -> Vec<u8> {
    frame[0] |= 0x40;
    frame
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

async fn echo_negotiates_permessage_deflate_as_browsers_offer_it(runtime: Runtime) {
    let echo = spawn_echo(runtime, &[]).await;
    let (_raw, response) = Raw::handshake(
        echo.addr,
        &["Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits"],
    )
    .await;
    assert_eq!(
        response.header("Sec-WebSocket-Extensions"),
        Some("permessage-deflate; server_max_window_bits=12; client_max_window_bits=12")
    );
}

async fn echo_skips_invalid_offers_and_takes_the_next(runtime: Runtime) {
    let echo = spawn_echo(runtime, &[]).await;
    let (_raw, response) = Raw::handshake(
        echo.addr,
        &["Sec-WebSocket-Extensions: permessage-deflate; bogus=1, permessage-deflate; server_no_context_takeover"],
    )
    .await;
    let answer = response.header("Sec-WebSocket-Extensions").unwrap();
    assert!(answer.contains("server_no_context_takeover"), "{answer}");
}

async fn echo_without_compression_answers_no_extension(runtime: Runtime) {
    let echo = spawn_echo(runtime, &["--no-compression"]).await;
    let (_raw, response) =
        Raw::handshake(echo.addr, &["Sec-WebSocket-Extensions: permessage-deflate"]).await;
    assert_eq!(response.header("Sec-WebSocket-Extensions"), None);
}

async fn rsv1_without_negotiation_is_a_protocol_error(runtime: Runtime) {
    let echo = spawn_echo(runtime, &["--no-compression"]).await;
    let (mut raw, _) =
        Raw::handshake(echo.addr, &["Sec-WebSocket-Extensions: permessage-deflate"]).await;
    raw.send(&rsv1(client_frame(true, TEXT, b"x"))).await;
    assert_eq!(raw.read_close().await.0, 1002);
}

async fn rsv1_on_a_continuation_or_control_frame_is_a_protocol_error(runtime: Runtime) {
    let echo = spawn_echo(runtime, &[]).await;
    for bad in [
        {
            let mut f = rsv1(client_frame(false, TEXT, &[]));
            f.extend(rsv1(client_frame(true, CONTINUATION, &[])));
            f
        },
        rsv1(client_frame(true, PING, b"p")),
    ] {
        let (mut raw, _) =
            Raw::handshake(echo.addr, &["Sec-WebSocket-Extensions: permessage-deflate"]).await;
        raw.send(&bad).await;
        assert_eq!(raw.read_close().await.0, 1002);
    }
}

async fn compressed_messages_round_trip_through_our_client(runtime: Runtime) {
    let echo = spawn_echo(runtime, &[]).await;
    let (mut ws, response) = within(
        "connect",
        wsline::connect_with(&echo.url(), &ClientConfig::default()),
    )
    .await
    .unwrap();
    assert!(response.deflate.is_some(), "compression negotiated");
    let text = "chat message with some repetition, ".repeat(3000);
    let binary: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    for m in [
        Message::text(text.clone()),
        Message::binary(binary.clone()),
        Message::text("short"),
        Message::text(""),
        Message::text(text),
    ] {
        ws.send(m.clone()).await.unwrap();
        let back = within("echo", ws.recv()).await.unwrap().unwrap();
        assert_eq!(back, m);
    }
}

async fn compressed_frames_are_inflated_and_answered(runtime: Runtime) {
    let echo = spawn_echo(runtime, &[]).await;
    let (mut raw, _) =
        Raw::handshake(echo.addr, &["Sec-WebSocket-Extensions: permessage-deflate"]).await;
    let mut d = Deflate::new(6, false, 15);
    let mut payload = deflate_chunk(&mut d, "Hello, Hello, Hello".as_bytes());
    assert!(payload.ends_with(&[0, 0, 0xff, 0xff]));
    payload.truncate(payload.len() - 4);
    // One compressed message in two frames: RSV1 on the first only.
    let (a, b) = payload.split_at(payload.len() / 2);
    let mut bytes = rsv1(client_frame(false, TEXT, a));
    bytes.extend(client_frame(true, CONTINUATION, b));
    raw.send(&bytes).await;
    let echoed = raw.read_frame().await;
    assert_eq!(echoed.opcode, TEXT);
    // Server messages under 32 bytes go uncompressed (RSV1 clear).
    assert_eq!(echoed.payload, b"Hello, Hello, Hello");
}

async fn compression_bomb_gets_1009_without_inflating_it_in_full(runtime: Runtime) {
    let echo = spawn_echo(runtime, &[]).await;
    let pid = echo.child.id().expect("pid");
    let baseline = peak_rss_kib(pid);
    // 1 GiB of zeros, about 1 MB on the wire.
    let bomb = zero_bomb(1024);
    assert!(bomb.len() < 2 << 20, "bomb is {} bytes", bomb.len());
    let (mut raw, _) =
        Raw::handshake(echo.addr, &["Sec-WebSocket-Extensions: permessage-deflate"]).await;
    raw.send(&rsv1(frame(true, BINARY, &bomb, Some(MASK))))
        .await;
    let (code, _) = raw.read_close().await;
    assert_eq!(code, 1009);
    let peak = peak_rss_kib(pid);
    eprintln!("bomb: peak RSS {peak} KiB, baseline {baseline} KiB");
    // The default limit is 16 MiB: the process never gets near 1 GiB.
    assert!(
        peak < baseline + 100 * 1024,
        "peak RSS {peak} KiB (baseline {baseline} KiB)"
    );
    // The server keeps serving.
    let (mut other, _) = Raw::handshake(echo.addr, &[]).await;
    other.send(&client_frame(true, TEXT, b"still here")).await;
    assert_eq!(other.read_frame().await.payload, b"still here");
    let _ = CLOSE;
}

on_both_runtimes! {
    #[tokio::test] echo_negotiates_permessage_deflate_as_browsers_offer_it,
    #[tokio::test] echo_skips_invalid_offers_and_takes_the_next,
    #[tokio::test] echo_without_compression_answers_no_extension,
    #[tokio::test] rsv1_without_negotiation_is_a_protocol_error,
    #[tokio::test] rsv1_on_a_continuation_or_control_frame_is_a_protocol_error,
    #[tokio::test] compressed_messages_round_trip_through_our_client,
    #[tokio::test] compressed_frames_are_inflated_and_answered,
    #[tokio::test] compression_bomb_gets_1009_without_inflating_it_in_full,
}
