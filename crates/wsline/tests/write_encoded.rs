//! `WebSocket::write_encoded` (shared frames straight to the transport in
//! one vectored write, the rest queued) against the simple path,
//! `queue_encoded` per frame: the same bytes on the wire, in the same
//! order, through partial writes, and the same refusals.

use std::future::poll_fn;
use std::task::Poll;
use std::time::Instant;

use tokio::io::{AsyncReadExt, DuplexStream};
use wsline::proto::frame::{encode_server_frame, OpCode};
use wsline::proto::{Config, Connection, Role};
use wsline::{CloseCode, WebSocket};

fn frames() -> Vec<Vec<u8>> {
    (0..300)
        .map(|i| {
            let payload: Vec<u8> = (0..(i * 7) % 301).map(|j| (i + j) as u8).collect();
            encode_server_frame(OpCode::Binary, &payload)
        })
        .collect()
}

fn socket(io: DuplexStream, role: Role) -> WebSocket<DuplexStream> {
    WebSocket::from_parts(
        io,
        Connection::new(role, Config::default(), Instant::now()),
        &[],
        None,
    )
}

/// Sends `frames` through a pipe of `capacity` bytes, either way; returns
/// the bytes the other end read.
async fn wire(frames: &[Vec<u8>], capacity: usize, vectored: bool) -> Vec<u8> {
    let (server, mut peer) = tokio::io::duplex(capacity);
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        peer.read_to_end(&mut got).await.expect("read");
        got
    });
    let mut ws = socket(server, Role::Server);
    for (i, chunk) in frames.chunks(37).enumerate() {
        if vectored {
            // Sometimes something is queued first: it must stay first.
            if i % 3 == 1 {
                ws.queue_encoded(&chunk[0]).expect("queue");
                poll_fn(|cx| Poll::Ready(ws.write_encoded(cx, &chunk[1..])))
                    .await
                    .expect("write");
            } else {
                poll_fn(|cx| Poll::Ready(ws.write_encoded(cx, chunk)))
                    .await
                    .expect("write");
            }
        } else {
            for f in chunk {
                ws.queue_encoded(f).expect("queue");
            }
        }
        if i % 2 == 0 {
            ws.flush().await.expect("flush");
        }
    }
    ws.flush().await.expect("flush");
    drop(ws);
    reader.await.expect("reader")
}

#[tokio::test]
async fn same_bytes_as_queue_encoded() {
    let frames = frames();
    let expected: Vec<u8> = frames.concat();
    for capacity in [7, 100, 4096, 1 << 20] {
        assert_eq!(
            wire(&frames, capacity, false).await,
            expected,
            "simple path, pipe {capacity}"
        );
        assert_eq!(
            wire(&frames, capacity, true).await,
            expected,
            "vectored path, pipe {capacity}"
        );
    }
}

#[tokio::test]
async fn refused_when_queue_encoded_is() {
    let frame = encode_server_frame(OpCode::Text, b"hi");
    let (io, _peer) = tokio::io::duplex(1 << 16);
    let mut client = socket(io, Role::Client);
    assert!(client.queue_encoded(&frame).is_err());
    assert!(
        poll_fn(|cx| Poll::Ready(client.write_encoded(cx, &[&frame[..]])))
            .await
            .is_err()
    );

    let (io, _peer) = tokio::io::duplex(1 << 16);
    let mut server = socket(io, Role::Server);
    server.start_close(CloseCode::NORMAL, "").expect("close");
    // With the Close written, nothing waits: the direct path must refuse too.
    server.flush().await.expect("flush");
    assert_eq!(server.buffered_output(), 0);
    assert!(server.queue_encoded(&frame).is_err());
    assert!(
        poll_fn(|cx| Poll::Ready(server.write_encoded(cx, &[&frame[..]])))
            .await
            .is_err()
    );
}
