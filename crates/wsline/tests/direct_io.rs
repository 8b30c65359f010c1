//! The large-message fast paths against the simple ones, through pipes
//! small enough to force partial reads and writes: `write_message` (a
//! large message written straight from its bytes) must put the same bytes
//! on the wire as queueing it, and a large frame read straight into the
//! connection's buffer must give the same messages as the scratch path.

mod support;

use std::future::poll_fn;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use support::sample_messages;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use wsline::proto::{Config, Connection, Role};
use wsline::{CloseCode, Message, WebSocket};

fn socket(io: DuplexStream, role: Role) -> WebSocket<DuplexStream> {
    let mut config = Config::default();
    config.ping_interval = None;
    WebSocket::from_parts(io, Connection::new(role, config, Instant::now()), &[], None)
}

/// The bytes a server puts on the wire for `messages`, through a pipe of
/// `capacity` bytes, with `write_message` (fast) or the Sink (simple).
async fn server_wire(capacity: usize, fast: bool) -> Vec<u8> {
    let (server, mut peer) = tokio::io::duplex(capacity);
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        peer.read_to_end(&mut got).await.expect("read");
        got
    });
    let mut ws = socket(server, Role::Server);
    for message in sample_messages() {
        if fast {
            poll_fn(|cx| Poll::Ready(ws.write_message(cx, message.clone())))
                .await
                .expect("write_message");
            ws.flush().await.expect("flush");
        } else {
            ws.send(message).await.expect("send");
        }
    }
    ws.flush().await.expect("flush");
    drop(ws);
    tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .expect("reader done in time")
        .expect("reader task")
}

#[tokio::test]
async fn write_message_puts_the_same_bytes_on_the_wire_as_queueing() {
    for capacity in [7_777, 64 * 1024, 4 << 20] {
        let fast = server_wire(capacity, true).await;
        let simple = server_wire(capacity, false).await;
        assert!(fast.len() > 2_000_000);
        assert!(fast == simple, "capacity {capacity}: wire bytes differ");
    }
}

/// A client sends every message through a small pipe (so large frames
/// arrive in many reads, most of them straight into the connection's
/// buffer); the server echoes each with `write_message`; the client gets
/// every message back, equal and in order.
#[tokio::test]
async fn large_frames_read_in_pieces_and_echoed_arrive_whole() {
    for capacity in [3_000, 50_000] {
        let (a, b) = tokio::io::duplex(capacity);
        let server = tokio::spawn(async move {
            let mut ws = socket(a, Role::Server);
            while let Some(Ok(m)) = ws.recv().await {
                poll_fn(|cx| Poll::Ready(ws.write_message(cx, m.clone())))
                    .await
                    .expect("echo");
            }
        });
        let client = socket(b, Role::Client);
        let sent = sample_messages();
        let (mut sink, mut stream) = client.split();
        let to_send = sent.clone();
        let writer = tokio::spawn(async move {
            for m in to_send {
                sink.send(m).await.expect("client send");
            }
            sink
        });
        for want in &sent {
            let got = tokio::time::timeout(Duration::from_secs(30), stream.recv())
                .await
                .expect("echo in time")
                .expect("a message")
                .expect("no error");
            assert_eq!(&got, want);
        }
        let mut sink = writer.await.expect("writer");
        sink.close(CloseCode::NORMAL, "").await.ok();
        drop((sink, stream));
        tokio::time::timeout(Duration::from_secs(30), server)
            .await
            .expect("server ends")
            .expect("server task");
    }
}

/// Bytes written by hand: one 200 KiB masked frame in 1-byte, then 40 KiB
/// pieces, so the read path switches between scratch and direct reads
/// mid-frame.
#[tokio::test]
async fn a_frame_split_anywhere_is_read_whole() {
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    let key = [1u8, 2, 3, 4];
    let mut frame = vec![0x82, 0xFF];
    frame.extend_from_slice(&(payload.len() as u64).to_be_bytes());
    frame.extend_from_slice(&key);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    let (a, mut b) = tokio::io::duplex(1 << 20);
    let mut ws = socket(a, Role::Server);
    let writer = tokio::spawn(async move {
        let (head, rest) = frame.split_at(20);
        for byte in head {
            b.write_all(&[*byte]).await.expect("write");
            tokio::task::yield_now().await;
        }
        for piece in rest.chunks(40_000) {
            b.write_all(piece).await.expect("write");
            tokio::task::yield_now().await;
        }
        b
    });
    let got = tokio::time::timeout(Duration::from_secs(30), ws.recv())
        .await
        .expect("in time")
        .expect("a message")
        .expect("no error");
    assert_eq!(got, Message::Binary(Bytes::from(payload)));
    drop(writer.await);
}
