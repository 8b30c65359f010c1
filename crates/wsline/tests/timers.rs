//! Keepalive and closing timers of the tokio layer, against raw peers on
//! real sockets: a peer that never answers a Ping, and one that never
//! answers a Close.

mod support;

use std::time::{Duration, Instant};

use support::{listen, within, Raw, CLOSE, PING};
use wsline::{ClientConfig, CloseCode, ServerConfig, Termination, TerminationKind};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Reads a server-side connection that receives no message; the
/// termination it ends with.
async fn read_to_end<S>(ws: &mut wsline::WebSocket<S>) -> Termination
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    match ws.recv().await {
        Some(Ok(m)) => panic!("unexpected message {m:?}"),
        Some(Err(e)) => e.termination().cloned().expect("Error::Closed"),
        None => ws.termination().cloned().expect("a termination"),
    }
}

#[tokio::test]
async fn server_keepalive_timeout_sends_ping_then_close_1011_then_closes_tcp() {
    let (listener, addr) = listen().await;
    let mut config = ServerConfig::default();
    config.protocol.ping_interval = Some(ms(200));
    config.protocol.ping_timeout = Some(ms(300));
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        let mut ws = wsline::accept(tcp, &config).await.expect("handshake");
        read_to_end(&mut ws).await
    });

    let (mut raw, _) = Raw::handshake(addr, &[]).await;
    let ping = raw.read_frame().await;
    let ping_at = Instant::now();
    assert_eq!(ping.opcode, PING, "first frame: {ping:?}");
    assert!(!ping.masked, "a server must not mask");
    let (code, _) = raw.read_close().await;
    let waited = ping_at.elapsed();
    assert_eq!(code, 1011);
    assert!(
        waited >= ms(250),
        "Close 1011 came {waited:?} after the Ping; the ping timeout is 300 ms"
    );
    raw.expect_eof().await;

    let termination = within("the server to end", server).await.expect("task");
    assert_eq!(termination.kind, TerminationKind::KeepaliveTimeout);
    assert_eq!(termination.code(), CloseCode::INTERNAL_ERROR);
}

#[tokio::test]
async fn client_keepalive_timeout_reports_keepalive_timeout_1011() {
    let (listener, addr) = listen().await;
    // A server that completes the handshake and never answers a Ping.
    let server = tokio::spawn(async move {
        let mut raw = Raw::accept(&listener).await;
        raw.serve_handshake().await;
        let ping = raw.read_frame().await;
        let close = raw.read_frame().await;
        raw.expect_eof().await;
        (ping, close)
    });

    let mut config = ClientConfig::default();
    config.protocol.ping_interval = Some(ms(200));
    config.protocol.ping_timeout = Some(ms(300));
    let url = format!("ws://{addr}/");
    let (mut ws, _) = within("connect", wsline::connect_with(&url, &config))
        .await
        .expect("handshake");
    let end = within("the keepalive timeout", ws.recv()).await;
    let termination = match end {
        Some(Err(e)) => e.termination().cloned().expect("Error::Closed"),
        other => panic!("expected Err(Closed), got {other:?}"),
    };
    assert_eq!(termination.kind, TerminationKind::KeepaliveTimeout);
    assert_eq!(termination.code(), CloseCode::INTERNAL_ERROR);
    assert_eq!(ws.termination(), Some(&termination));

    let (ping, close) = within("the raw server", server).await.expect("task");
    assert_eq!(ping.opcode, PING);
    assert!(ping.masked, "a client must mask");
    assert_eq!(close.opcode, CLOSE);
    assert!(close.masked, "a client must mask");
    assert_eq!(close.close_code(), Some(1011));
}

#[tokio::test]
async fn close_timeout_drops_a_peer_that_never_answers_the_close() {
    let (listener, addr) = listen().await;
    let mut config = ServerConfig::default();
    config.protocol.ping_interval = None;
    config.protocol.close_timeout = ms(300);
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        let mut ws = wsline::accept(tcp, &config).await.expect("handshake");
        ws.close(CloseCode::NORMAL, "bye").await
    });

    let (mut raw, _) = Raw::handshake(addr, &[]).await;
    let (code, reason) = raw.read_close().await;
    let close_at = Instant::now();
    assert_eq!((code, reason.as_str()), (1000, "bye"));
    // Never answer: the server must give up and close TCP.
    raw.expect_eof().await;
    let waited = close_at.elapsed();
    assert!(
        waited >= ms(250),
        "TCP closed {waited:?} after the Close; the close timeout is 300 ms"
    );

    let termination = within("the server to end", server)
        .await
        .expect("task")
        .expect("close() returns the termination");
    assert_eq!(termination.kind, TerminationKind::CloseTimeout);
    assert_eq!(termination.code(), CloseCode::ABNORMAL);
}
