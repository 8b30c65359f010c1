//! The open connection of the tokio layer on real sockets: split halves
//! from two tasks, cancellation safety of `recv`, an abrupt disconnect,
//! and messages that arrive just before the peer's Close.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use support::{
    client_frame, close_payload, listen, server_frame, within, Raw, BINARY, CLOSE, TEXT,
};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::mpsc;
use wsline::{
    ClientConfig, CloseCode, Message, ServerConfig, Termination, TerminationKind, WebSocket,
};

fn quiet_server() -> ServerConfig {
    let mut config = ServerConfig::default();
    config.protocol.ping_interval = None;
    config
}

fn quiet_client() -> ClientConfig {
    let mut config = ClientConfig::default();
    config.protocol.ping_interval = None;
    config
}

/// Echoes every message until the end; the termination.
async fn echo<S>(mut ws: WebSocket<S>) -> Termination
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match ws.recv().await {
            Some(Ok(m)) => ws.send(m).await.expect("echo"),
            Some(Err(e)) => return e.termination().cloned().expect("Error::Closed"),
            None => return ws.termination().cloned().expect("a termination"),
        }
    }
}

/// A library echo server for every connection on `listener`.
fn spawn_echo_server(listener: TcpListener) {
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.expect("accept");
            tokio::spawn(async move {
                if let Ok(ws) = wsline::accept(tcp, &quiet_server()).await {
                    echo(ws).await;
                }
            });
        }
    });
}

async fn connect(addr: SocketAddr) -> WebSocket<wsline::MaybeTlsStream> {
    let url = format!("ws://{addr}/");
    within("connect", wsline::connect_with(&url, &quiet_client()))
        .await
        .expect("handshake")
        .0
}

/// The i-th message of the split test: text and binary in turn, up to
/// 1 KiB, with a pattern that shows any shifted, lost or repeated byte.
fn nth_message(i: usize) -> Message {
    let len = (i * 389) % 1024;
    let mut p = format!("{i:04}|").into_bytes();
    p.extend((0..len).map(|j| b'a' + ((i * 13 + j * 5) % 26) as u8));
    if i % 2 == 0 {
        Message::text(String::from_utf8(p).expect("ASCII"))
    } else {
        Message::binary(p)
    }
}

/// A TCP socket with 4 KiB kernel buffers (doubled by Linux): ~0.5 MB of
/// traffic each way is then enough to make writers wait for readers.
fn small_buffer_socket() -> TcpSocket {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_send_buffer_size(4096).expect("SO_SNDBUF");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    socket
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_halves_send_and_receive_1000_messages_from_two_tasks() {
    const N: usize = 1000;
    // Small buffers on both ends (accepted sockets inherit the listener's),
    // so the write half waits for the transport while the read half reads.
    let listener = small_buffer_socket();
    listener
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let listener = listener.listen(16).expect("listen");
    let addr = listener.local_addr().expect("addr");
    spawn_echo_server(listener);
    let tcp = within("TCP connect", small_buffer_socket().connect(addr))
        .await
        .expect("connect");
    let (ws, _) = within(
        "handshake",
        wsline::client_handshake(tcp, &addr.to_string(), "/", &quiet_client()),
    )
    .await
    .expect("handshake");
    let (mut sink, mut stream) = ws.split();
    assert!(stream.is_pair_of(&sink));

    let messages: Arc<Vec<Message>> = Arc::new((0..N).map(nth_message).collect());
    let to_send = messages.clone();
    let sender = tokio::spawn(async move {
        for m in to_send.iter() {
            sink.send(m.clone()).await.expect("send");
        }
        sink
    });
    let reader = tokio::spawn(async move {
        for (i, want) in messages.iter().enumerate() {
            let got = stream
                .recv()
                .await
                .unwrap_or_else(|| panic!("stream ended after {i} echoes"))
                .expect("echo");
            assert_eq!(got.is_text(), want.is_text(), "type of echo {i}");
            assert!(got.payload() == want.payload(), "echo {i} corrupted");
        }
        stream
    });
    let (mut sink, mut stream) = within("1000 echoes both ways", async {
        (sender.await.expect("sender"), reader.await.expect("reader"))
    })
    .await;

    sink.close(CloseCode::NORMAL, "done").await.expect("close");
    let end = within("the closing handshake", stream.recv()).await;
    assert!(end.is_none(), "expected the end, got {end:?}");
    let termination = stream.termination().expect("a termination");
    assert_eq!(termination.kind, TerminationKind::Clean);
    assert_eq!(termination.code(), CloseCode::NORMAL);
}

/// The i-th message of the cancellation test: its index, then a slice of
/// a pattern (shifted per message) that shows any shifted, lost or
/// repeated byte. Sizes vary up to 24 KiB, more than one read of the
/// library, so that cancellations land in the middle of frames.
fn nth_payload(i: usize) -> Vec<u8> {
    static PATTERN: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let pattern =
        PATTERN.get_or_init(|| (0..32 * 1024).map(|j| b'a' + (j * 7 % 26) as u8).collect());
    let len = (i * 7919) % (24 * 1024);
    let start = i % 26;
    let mut p = format!("{i:04}|").into_bytes();
    p.extend_from_slice(&pattern[start..start + len]);
    p
}

#[tokio::test]
async fn recv_is_cancellation_safe_inside_select_with_a_timer() {
    const N: usize = 500;
    let (listener, addr) = listen().await;
    // A raw server that sends N messages, pausing in the middle of every
    // tenth frame so that the client's timer branch fires mid-frame.
    let server = tokio::spawn(async move {
        let mut raw = Raw::accept(&listener).await;
        raw.serve_handshake().await;
        for i in 0..N {
            let opcode = if i % 2 == 0 { TEXT } else { BINARY };
            let frame = server_frame(true, opcode, &nth_payload(i));
            if i % 10 == 0 {
                let (a, b) = frame.split_at(frame.len() / 2);
                raw.send(a).await;
                tokio::time::sleep(Duration::from_millis(3)).await;
                raw.send(b).await;
            } else {
                raw.send(&frame).await;
            }
        }
        raw.send(&server_frame(true, CLOSE, &close_payload(1000, "")))
            .await;
        let (code, _) = raw.read_close().await;
        assert_eq!(code, 1000);
    });

    let mut ws = connect(addr).await;
    let mut received = 0;
    let mut timer_fired = 0u32;
    within("500 messages", async {
        while received < N {
            tokio::select! {
                m = ws.recv() => {
                    let m = m.unwrap_or_else(|| panic!("ended after {received} messages"))
                        .expect("message");
                    let want = nth_payload(received);
                    assert_eq!(m.is_text(), received % 2 == 0, "type of message {received}");
                    assert!(m.payload() == want.as_slice(), "message {received} corrupted");
                    received += 1;
                }
                _ = tokio::time::sleep(Duration::from_millis(1)) => timer_fired += 1,
            }
        }
    })
    .await;
    assert!(
        timer_fired > 0,
        "the timer branch never fired: recv() was never cancelled"
    );
    let end = within("the server's close", ws.recv()).await;
    assert!(end.is_none(), "expected the end, got {end:?}");
    within("the raw server", server).await.expect("server");
}

#[tokio::test]
async fn abrupt_disconnect_reports_abnormal_1006_and_the_server_keeps_serving() {
    let (listener, addr) = listen().await;
    let (ended_tx, mut ended) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        for index in 0.. {
            let (tcp, _) = listener.accept().await.expect("accept");
            let ended_tx = ended_tx.clone();
            tokio::spawn(async move {
                let ws = wsline::accept(tcp, &quiet_server())
                    .await
                    .expect("handshake");
                let _ = ended_tx.send((index, echo(ws).await));
            });
        }
    });

    // Connection 0: a raw client that drops TCP without a Close.
    let (raw, _) = Raw::handshake(addr, &[]).await;
    // Connection 1: a well-behaved client, connected before the drop.
    let mut other = connect(addr).await;
    drop(raw);

    let (index, termination) = within("the server to see the drop", ended.recv())
        .await
        .expect("a report");
    assert_eq!(index, 0, "the wrong connection ended: {termination:?}");
    assert_eq!(termination.kind, TerminationKind::Abnormal);
    assert_eq!(termination.code(), CloseCode::ABNORMAL);

    // The same server still serves the other connection.
    other
        .send(Message::text("still there?"))
        .await
        .expect("send");
    let echo = within("the echo", other.recv()).await;
    assert_eq!(
        echo.expect("open").expect("echo"),
        Message::text("still there?")
    );
    let termination = within("close", other.close(CloseCode::NORMAL, ""))
        .await
        .expect("close");
    assert_eq!(termination.kind, TerminationKind::Clean);
    let (index, server_side) = within("the server's report", ended.recv())
        .await
        .expect("a report");
    assert_eq!(index, 1);
    assert_eq!(server_side.kind, TerminationKind::Clean);
}

#[tokio::test]
async fn messages_before_the_peer_close_are_delivered_and_echoed_before_the_close_reply() {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        let mut ws = wsline::accept(tcp, &quiet_server())
            .await
            .expect("handshake");
        let mut received = Vec::new();
        loop {
            match ws.recv().await {
                Some(Ok(m)) => {
                    received.push(m.clone());
                    ws.send(m).await.expect("echo");
                }
                Some(Err(e)) => panic!("unexpected end: {e}"),
                None => break,
            }
        }
        (received, ws.termination().cloned().expect("a termination"))
    });

    let (mut raw, _) = Raw::handshake(addr, &[]).await;
    let mut burst = Vec::new();
    for text in ["one", "two", "three"] {
        burst.extend(client_frame(true, TEXT, text.as_bytes()));
    }
    burst.extend(client_frame(true, CLOSE, &close_payload(1000, "done")));
    raw.send(&burst).await;

    for text in ["one", "two", "three"] {
        let frame = raw.read_frame().await;
        assert_eq!(
            (frame.opcode, frame.payload.as_slice()),
            (TEXT, text.as_bytes()),
            "expected the echo of {text:?} before the Close reply, got {frame:?}"
        );
    }
    let (code, _) = raw.read_close().await;
    assert_eq!(code, 1000);
    raw.expect_eof().await;

    let (received, termination) = within("the server", server).await.expect("task");
    assert_eq!(
        received,
        ["one", "two", "three"].map(Message::text).to_vec(),
        "every message before the Close is delivered"
    );
    assert_eq!(termination.kind, TerminationKind::Clean);
    let peer_close = termination.received.expect("the peer's Close");
    assert_eq!(peer_close.code, CloseCode::NORMAL);
    assert_eq!(peer_close.reason, "done");
}

/// A server that opens, sends `close` (a Close frame's payload), reads the
/// client's reply, and closes TCP.
async fn raw_server_closing_with(
    close: Vec<u8>,
) -> (SocketAddr, tokio::task::JoinHandle<support::Frame>) {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let mut raw = Raw::accept(&listener).await;
        raw.serve_handshake().await;
        raw.send(&server_frame(true, CLOSE, &close)).await;
        let reply = raw.read_frame().await;
        drop(raw);
        reply
    });
    (addr, server)
}

/// An empty Close (1005) is a normal end, as 1000 and 1001 are: the
/// stream ends with `None`, the termination says 1005 and `is_normal`.
#[tokio::test]
async fn an_empty_close_from_the_server_is_a_normal_end_1005() {
    let (addr, server) = raw_server_closing_with(Vec::new()).await;
    let mut ws = connect(addr).await;
    let end = within("the server's close", ws.recv()).await;
    assert!(end.is_none(), "expected a normal end, got {end:?}");
    let t = ws.termination().expect("a termination");
    assert_eq!(
        (t.kind, t.code(), t.is_normal()),
        (TerminationKind::Clean, CloseCode::NO_STATUS, true)
    );
    let reply = within("the raw server", server).await.expect("server");
    assert_eq!(reply.opcode, CLOSE);
    assert!(reply.payload.is_empty(), "an empty Close is answered empty");

    // Any other code ends the stream with the error, once.
    let (addr, server) = raw_server_closing_with(close_payload(4000, "bye")).await;
    let mut ws = connect(addr).await;
    match within("the server's close", ws.recv()).await {
        Some(Err(e)) => {
            let t = e.termination().expect("Error::Closed");
            assert_eq!(
                (t.code().as_u16(), t.reason(), t.is_normal()),
                (4000, "bye", false)
            );
        }
        other => panic!("expected Error::Closed, got {other:?}"),
    }
    assert!(within("the end", ws.recv()).await.is_none());
    within("the raw server", server).await.expect("server");
}
