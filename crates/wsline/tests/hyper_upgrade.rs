//! `wsline::upgrade` inside a real hyper 1 server on real sockets: the
//! agreed subprotocol and permessage-deflate with an echo, the refusals
//! (the same status and text as `wsline::accept` gives), the Origin
//! allow-list, and the config's timers (idle timeout, keepalive) applied
//! on the upgraded connection. Built with `--features hyper`
//! (scripts/test.sh's `test` suite runs it).
#![cfg(feature = "hyper")]

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use support::{client_frame, head, listen, upgrade_request, within, Raw, CLOSE, PING, TEXT};
use tokio::sync::mpsc;
use wsline::proto::handshake::HandshakeError;
use wsline::{ClientConfig, Message, ServerConfig, UpgradeBody};

/// What the hyper service saw of one request.
#[derive(Debug)]
enum Outcome {
    /// Refused, with this error.
    Refused(HandshakeError),
    /// Upgraded; the echo loop ended with this result.
    Echoed(Result<(), wsline::Error>),
}

/// A hyper server (HTTP/1.1, with upgrades) whose one route upgrades with
/// `config` and echoes; each request's outcome comes out of the channel.
async fn serve_hyper(config: ServerConfig) -> (SocketAddr, mpsc::UnboundedReceiver<Outcome>) {
    let (listener, addr) = listen().await;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let config = config.clone();
            let tx = tx.clone();
            let service = service_fn(move |mut request: hyper::Request<Incoming>| {
                let config = config.clone();
                let tx = tx.clone();
                async move {
                    let (response, websocket) = match wsline::upgrade(&mut request, &config) {
                        Ok(upgrade) => upgrade,
                        Err(refused) => {
                            let _ = tx.send(Outcome::Refused(refused.error().clone()));
                            return Ok::<_, Infallible>(refused.into_response());
                        }
                    };
                    tokio::spawn(async move {
                        let echoed = async {
                            let mut ws = websocket.await?;
                            while let Some(message) = ws.recv().await {
                                ws.send(message?).await?;
                            }
                            Ok(())
                        };
                        let _ = tx.send(Outcome::Echoed(echoed.await));
                    });
                    Ok::<hyper::Response<UpgradeBody>, Infallible>(response)
                }
            });
            tokio::spawn(
                http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .with_upgrades(),
            );
        }
    });
    (addr, rx)
}

/// `wsline::accept` on one connection: the reference for refusals.
async fn serve_accept() -> SocketAddr {
    let (listener, addr) = listen().await;
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        let _ = wsline::accept(tcp, &ServerConfig::default()).await;
    });
    addr
}

async fn next_outcome(outcomes: &mut mpsc::UnboundedReceiver<Outcome>) -> Outcome {
    within("the server's outcome", outcomes.recv())
        .await
        .expect("an outcome")
}

#[tokio::test]
async fn upgrade_agrees_subprotocol_and_deflate_and_echoes() {
    let mut config = ServerConfig::default();
    config.subprotocols = vec!["chat.v2".into(), "chat.v1".into()];
    let (addr, mut outcomes) = serve_hyper(config).await;

    let mut client = ClientConfig::default();
    client.protocols = vec!["chat.v1".into(), "chat.v2".into()];
    let url = format!("ws://{addr}/chat");
    let (mut ws, handshake) = within("connect", wsline::connect_with(&url, &client))
        .await
        .expect("handshake");
    assert_eq!(handshake.response.status, 101);
    assert_eq!(ws.protocol(), Some("chat.v2"), "the server's preference");
    assert!(
        handshake.deflate.is_some(),
        "permessage-deflate agreed: {:?}",
        handshake.response.headers
    );

    // Large and repetitive: compressed both ways.
    let text = "hyper and wsline ".repeat(4096);
    let messages = [Message::text(text), Message::binary(vec![7u8; 100])];
    for message in messages {
        within("send", ws.send(message.clone()))
            .await
            .expect("send");
        let echoed = within("the echo", ws.recv())
            .await
            .expect("a message")
            .expect("ok");
        assert_eq!(echoed, message);
    }
    within("close", ws.close(wsline::CloseCode::NORMAL, "bye"))
        .await
        .expect("a normal close");
    match next_outcome(&mut outcomes).await {
        Outcome::Echoed(Ok(())) => {}
        other => panic!("expected a clean echo, got {other:?}"),
    }
}

#[tokio::test]
async fn bad_requests_get_the_status_and_text_of_wslines_own_server() {
    let (addr, mut outcomes) = serve_hyper(ServerConfig::default()).await;
    let host = addr.to_string();
    let host_line = format!("Host: {host}");
    let no_key = head(&[
        "GET /chat HTTP/1.1",
        &host_line,
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Version: 13",
    ]);
    let wrong_version = head(&[
        "GET /chat HTTP/1.1",
        &host_line,
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 8",
    ]);
    let cases = [
        (no_key, 400, HandshakeError::BadKey),
        (
            wrong_version,
            426,
            HandshakeError::UnsupportedVersion(Some("8".into())),
        ),
    ];
    for (request, status, error) in cases {
        let mut raw = Raw::connect(addr).await;
        raw.send(request.as_bytes()).await;
        let response = raw.read_response().await;
        assert_eq!(response.status, status, "{}", response.head);
        raw.expect_eof().await;
        match next_outcome(&mut outcomes).await {
            Outcome::Refused(e) => assert_eq!(e, error),
            other => panic!("expected a refusal, got {other:?}"),
        }

        let mut reference = Raw::connect(serve_accept().await).await;
        reference.send(request.as_bytes()).await;
        let expected = reference.read_response().await;
        assert_eq!(response.status, expected.status);
        assert_eq!(response.body, expected.body, "the same reason text");
        for name in ["Content-Type", "Sec-WebSocket-Version", "Connection"] {
            assert_eq!(
                response.header(name).map(str::to_ascii_lowercase),
                expected.header(name).map(str::to_ascii_lowercase),
                "{name}"
            );
        }
    }
}

#[tokio::test]
async fn an_origin_not_allowed_gets_403() {
    let mut config = ServerConfig::default();
    config.allowed_origins = vec!["https://good.example".into()];
    let (addr, mut outcomes) = serve_hyper(config).await;

    let mut raw = Raw::connect(addr).await;
    let request = upgrade_request(&addr.to_string(), &["Origin: https://evil.example"]);
    raw.send(request.as_bytes()).await;
    let response = raw.read_response().await;
    assert_eq!(response.status, 403, "{}", response.head);
    assert_eq!(response.header("Sec-WebSocket-Accept"), None);
    raw.expect_eof().await;
    match next_outcome(&mut outcomes).await {
        Outcome::Refused(HandshakeError::OriginRefused(origin)) => {
            assert_eq!(origin, "https://evil.example")
        }
        other => panic!("expected an Origin refusal, got {other:?}"),
    }

    let (_raw, _) = Raw::handshake(addr, &["Origin: https://good.example"]).await;
}

#[tokio::test]
async fn the_configured_idle_timeout_closes_an_upgraded_connection() {
    let mut config = ServerConfig::default();
    config.idle_timeout = Some(Duration::from_millis(300));
    let (addr, mut outcomes) = serve_hyper(config).await;

    let (mut raw, _) = Raw::handshake(addr, &[]).await;
    // A message restarts the idle timer; its echo comes first.
    raw.send(&client_frame(true, TEXT, b"hello")).await;
    let echo = raw.read_frame().await;
    assert_eq!(
        (echo.opcode, echo.payload.as_slice()),
        (TEXT, &b"hello"[..])
    );
    let (code, reason) = raw.read_close().await;
    assert_eq!((code, reason.as_str()), (1001, "idle timeout"));
    raw.send(&client_frame(true, CLOSE, &1001u16.to_be_bytes()))
        .await;
    raw.expect_eof().await;
    match next_outcome(&mut outcomes).await {
        Outcome::Echoed(Ok(())) => {}
        other => panic!("expected a normal end (1001), got {other:?}"),
    }
}

#[tokio::test]
async fn the_configured_keepalive_pings_an_upgraded_connection() {
    let mut config = ServerConfig::default();
    config.protocol.ping_interval = Some(Duration::from_millis(200));
    config.protocol.ping_timeout = Some(Duration::from_millis(300));
    let (addr, mut outcomes) = serve_hyper(config).await;

    let (mut raw, _) = Raw::handshake(addr, &[]).await;
    let ping = raw.read_frame().await;
    assert_eq!(ping.opcode, PING, "first frame: {ping:?}");
    // No Pong: the Pong deadline ends it with 1011.
    let (code, _) = raw.read_close().await;
    assert_eq!(code, 1011);
    raw.expect_eof().await;
    match next_outcome(&mut outcomes).await {
        Outcome::Echoed(Err(e)) => {
            let termination = e.termination().expect("Error::Closed");
            assert_eq!(termination.kind, wsline::TerminationKind::KeepaliveTimeout);
        }
        other => panic!("expected a keepalive timeout, got {other:?}"),
    }
}
