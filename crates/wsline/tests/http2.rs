//! WebSocket over HTTP/2 (RFC 8441) on real sockets, both sides:
//!
//! - wsline's client (`HttpVersion::Http2`, `wsline::h2::Connection`)
//!   against a hyper server built as `examples/hyper_echo.rs` is
//!   (hyper_util's auto builder, HTTP/1.1 and cleartext HTTP/2 on one
//!   port, `enable_connect_protocol`) with `wsline::upgrade` in it: echo,
//!   close codes, several WebSockets on one connection, subprotocols and
//!   permessage-deflate agreed over HTTP/2;
//! - `HttpVersion::Auto` over TLS: HTTP/2 when the server chooses `h2` by
//!   ALPN and announces SETTINGS_ENABLE_CONNECT_PROTOCOL, HTTP/1.1
//!   otherwise; `Http2` refused with `Http2Unavailable` by such a server;
//! - the server's refusals (400 for a wrong version or a plain CONNECT,
//!   405 for a GET, 403 for an Origin) and a hand-built WebSocket frame,
//!   from the raw `h2` crate's client, an independent peer;
//! - the client's checks (200 required, a subprotocol or extension not
//!   offered, a refusal's body) against a raw `h2` server.
//!
//! Built with `--features hyper,http2` (scripts/test.sh's `test` suite).
#![cfg(all(feature = "hyper", feature = "http2"))]

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use support::{client_frame, close_payload, listen, within, BINARY, CLOSE, TEXT};
use tokio::sync::mpsc;
use wsline::proto::handshake::HandshakeError;
use wsline::{ClientConfig, CloseCode, Error, HttpVersion, MaybeTlsStream, Message, ServerConfig};

/// What the hyper service saw of one request.
#[derive(Debug)]
enum Outcome {
    /// Refused, with this error.
    Refused(HandshakeError),
    /// Upgraded over this HTTP version; the echo ended with this result.
    Echoed(http::Version, Result<(), Error>),
}

/// How the test server serves its connections.
#[derive(Clone, Copy)]
struct Serving {
    /// Announce SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 8441 §3).
    connect_protocol: bool,
    /// TLS with ALPN `h2` and `http/1.1` (a self-signed certificate).
    tls: bool,
}

const PLAIN: Serving = Serving {
    connect_protocol: true,
    tls: false,
};

/// An echo service with `wsline::upgrade`, served as
/// `examples/hyper_echo.rs` serves it; each request's outcome comes out of
/// the channel.
async fn serve(
    config: ServerConfig,
    serving: Serving,
) -> (SocketAddr, mpsc::UnboundedReceiver<Outcome>) {
    let (listener, addr) = listen().await;
    let (tx, rx) = mpsc::unbounded_channel();
    let mut http = auto::Builder::new(TokioExecutor::new());
    if serving.connect_protocol {
        http.http2().enable_connect_protocol();
    }
    let tls = serving.tls.then(tls_acceptor);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let config = config.clone();
            let tx = tx.clone();
            let http = http.clone();
            let tls = tls.clone();
            let service = service_fn(move |mut request: hyper::Request<Incoming>| {
                let config = config.clone();
                let tx = tx.clone();
                async move {
                    let version = request.version();
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
                        let _ = tx.send(Outcome::Echoed(version, echoed.await));
                    });
                    Ok(response)
                }
            });
            tokio::spawn(async move {
                match tls {
                    None => {
                        let _ = http
                            .serve_connection_with_upgrades(TokioIo::new(tcp), service)
                            .await;
                    }
                    Some(tls) => {
                        let Ok(stream) = tls.accept(tcp).await else {
                            return;
                        };
                        let _ = http
                            .serve_connection_with_upgrades(TokioIo::new(stream), service)
                            .await;
                    }
                }
            });
        }
    });
    (addr, rx)
}

/// A TLS acceptor for `localhost` offering `h2` and `http/1.1` by ALPN.
fn tls_acceptor() -> tokio_rustls::TlsAcceptor {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der());
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_no_client_auth()
    .with_single_cert(vec![certified.cert.der().clone()], key.into())
    .expect("server certificate");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

async fn next_outcome(outcomes: &mut mpsc::UnboundedReceiver<Outcome>) -> Outcome {
    within("the server's outcome", outcomes.recv())
        .await
        .expect("the server is running")
}

fn http2_config() -> ClientConfig {
    let mut config = ClientConfig::default();
    config.http_version = HttpVersion::Http2;
    config
}

async fn echo(ws: &mut wsline::WebSocket<impl AsyncIo>, message: Message) {
    within("send", ws.send(message.clone()))
        .await
        .expect("send");
    let echoed = within("the echo", ws.recv())
        .await
        .expect("a message")
        .expect("ok");
    assert_eq!(echoed, message);
}

/// One echo, a normal close, and the server's word that it echoed over
/// `version` and ended cleanly.
async fn echo_and_close(
    ws: &mut wsline::WebSocket<impl AsyncIo>,
    outcomes: &mut mpsc::UnboundedReceiver<Outcome>,
    text: &str,
    version: http::Version,
) {
    echo(ws, Message::text(text)).await;
    within("close", ws.close(CloseCode::NORMAL, ""))
        .await
        .expect("close");
    match next_outcome(outcomes).await {
        Outcome::Echoed(v, Ok(())) if v == version => {}
        other => panic!("expected a clean echo over {version:?}, got {other:?}"),
    }
}

trait AsyncIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> AsyncIo for T {}

#[tokio::test]
async fn http2_client_echoes_text_and_binary_and_closes_with_its_code() {
    let (addr, mut outcomes) = serve(ServerConfig::default(), PLAIN).await;
    let url = format!("ws://{addr}/echo");
    let (mut ws, handshake) = within("connect", wsline::connect_with(&url, &http2_config()))
        .await
        .expect("handshake over HTTP/2");
    assert_eq!(handshake.response.status, 200);
    assert!(!handshake.response.headers.contains("sec-websocket-accept"));
    assert!(matches!(ws.get_ref(), MaybeTlsStream::H2(_)));
    assert!(ws.get_ref().tcp().is_none());

    echo(&mut ws, Message::text("over one HTTP/2 stream")).await;
    echo(&mut ws, Message::binary(vec![0u8, 1, 2, 255])).await;
    // Larger than HTTP/2's default 64 KiB window: flow control both ways.
    echo(&mut ws, Message::binary(vec![42u8; 300_000])).await;

    let code = CloseCode::new(4001).expect("a close code");
    let termination = within("close", ws.close(code, "done"))
        .await
        .expect("the closing handshake");
    assert_eq!(termination.code(), code, "the server echoes the code");
    match next_outcome(&mut outcomes).await {
        Outcome::Echoed(http::Version::HTTP_2, Err(Error::Closed(t))) => {
            assert_eq!(t.code(), code);
        }
        other => panic!("expected the client's 4001 over HTTP/2, got {other:?}"),
    }
}

#[tokio::test]
async fn http2_normal_close_ends_both_sides_cleanly() {
    let (addr, mut outcomes) = serve(ServerConfig::default(), PLAIN).await;
    let (mut ws, _) = within(
        "connect",
        wsline::connect_with(&format!("ws://{addr}/"), &http2_config()),
    )
    .await
    .expect("handshake");
    echo(&mut ws, Message::text("hi")).await;
    let termination = within("close", ws.close(CloseCode::NORMAL, "bye"))
        .await
        .expect("close");
    assert_eq!(termination.code(), CloseCode::NORMAL);
    assert!(within("end", ws.recv()).await.is_none());
    match next_outcome(&mut outcomes).await {
        Outcome::Echoed(http::Version::HTTP_2, Ok(())) => {}
        other => panic!("expected a clean echo over HTTP/2, got {other:?}"),
    }
}

#[tokio::test]
async fn several_websockets_share_one_http2_connection() {
    let (addr, mut outcomes) = serve(ServerConfig::default(), PLAIN).await;
    let config = ClientConfig::default();
    let conn = within(
        "the HTTP/2 connection",
        wsline::h2::Connection::connect(&format!("ws://{addr}"), &config),
    )
    .await
    .expect("an HTTP/2 connection");
    assert!(conn.takes_websockets());

    let mut sockets = Vec::new();
    for i in 0..5 {
        let target = if i % 2 == 0 {
            format!("/room/{i}?n={i}")
        } else {
            format!("ws://{addr}/room/{i}")
        };
        let (ws, handshake) = within("a WebSocket", conn.websocket(&target, &config))
            .await
            .expect("a stream");
        assert_eq!(handshake.response.status, 200);
        sockets.push(ws);
    }
    // All at once, interleaved on the one connection.
    let tasks = sockets.into_iter().enumerate().map(|(i, mut ws)| {
        tokio::spawn(async move {
            for round in 0..20 {
                let message = Message::text(format!("socket {i} round {round}"));
                echo(&mut ws, message).await;
            }
            within("close", ws.close(CloseCode::NORMAL, ""))
                .await
                .expect("close");
        })
    });
    for task in tasks.collect::<Vec<_>>() {
        within("a socket's rounds", task).await.expect("no panic");
    }
    for _ in 0..5 {
        match next_outcome(&mut outcomes).await {
            Outcome::Echoed(http::Version::HTTP_2, Ok(())) => {}
            other => panic!("expected clean echoes over HTTP/2, got {other:?}"),
        }
    }
    // Another server's URL is not opened on this connection.
    let err = conn
        .websocket("ws://example.com/x", &config)
        .await
        .expect_err("another authority");
    assert!(matches!(err, Error::Url { .. }), "{err}");
}

#[tokio::test]
async fn a_dropped_websocket_resets_only_its_own_stream() {
    let (addr, mut outcomes) = serve(ServerConfig::default(), PLAIN).await;
    let config = ClientConfig::default();
    let conn = within(
        "the HTTP/2 connection",
        wsline::h2::Connection::connect(&format!("ws://{addr}"), &config),
    )
    .await
    .expect("an HTTP/2 connection");
    let (mut kept, _) = within("a WebSocket", conn.websocket("/kept", &config))
        .await
        .expect("a stream");
    let (mut dropped, _) = within("a WebSocket", conn.websocket("/dropped", &config))
        .await
        .expect("a stream");
    echo(&mut dropped, Message::text("before the drop")).await;
    // No closing handshake: RST_STREAM, the counterpart of a TCP reset.
    drop(dropped);
    match next_outcome(&mut outcomes).await {
        Outcome::Echoed(http::Version::HTTP_2, Err(error)) => {
            assert_eq!(
                error.termination().map(|t| t.code()),
                Some(CloseCode::ABNORMAL),
                "{error}"
            );
        }
        other => panic!("expected an abnormal end (1006), got {other:?}"),
    }
    // The connection and the other stream go on; new streams open.
    echo(&mut kept, Message::text("still here")).await;
    let (mut fresh, _) = within("a WebSocket", conn.websocket("/fresh", &config))
        .await
        .expect("a stream");
    echo(&mut fresh, Message::text("new stream")).await;
    for mut ws in [kept, fresh] {
        within("close", ws.close(CloseCode::NORMAL, ""))
            .await
            .expect("close");
    }
}

#[tokio::test]
async fn subprotocol_and_permessage_deflate_are_agreed_over_http2() {
    let mut server = ServerConfig::default();
    server.subprotocols = vec!["chat.v2".into(), "chat.v1".into()];
    let (addr, _outcomes) = serve(server, PLAIN).await;
    let mut client = http2_config();
    client.protocols = vec!["chat.v1".into(), "chat.v2".into()];
    let (mut ws, handshake) = within(
        "connect",
        wsline::connect_with(&format!("ws://{addr}/chat"), &client),
    )
    .await
    .expect("handshake");
    assert_eq!(ws.protocol(), Some("chat.v2"), "the server's preference");
    assert!(
        handshake.deflate.is_some(),
        "permessage-deflate agreed: {:?}",
        handshake.response.headers
    );
    // Large and repetitive: compressed both ways.
    echo(&mut ws, Message::text("hyper, h2 and wsline ".repeat(4096))).await;
    echo(&mut ws, Message::binary(vec![7u8; 100])).await;
    within("close", ws.close(CloseCode::NORMAL, ""))
        .await
        .expect("close");
}

#[tokio::test]
async fn the_same_port_still_takes_http1_upgrades() {
    let (addr, mut outcomes) = serve(ServerConfig::default(), PLAIN).await;
    let (mut ws, handshake) = within(
        "connect",
        wsline::connect_with(&format!("ws://{addr}/"), &ClientConfig::default()),
    )
    .await
    .expect("handshake");
    assert_eq!(handshake.response.status, 101);
    echo_and_close(&mut ws, &mut outcomes, "HTTP/1.1", http::Version::HTTP_11).await;
}

#[tokio::test]
async fn http2_is_refused_by_a_server_without_the_connect_protocol_setting() {
    let serving = Serving {
        connect_protocol: false,
        tls: false,
    };
    let (addr, _outcomes) = serve(ServerConfig::default(), serving).await;
    let err = within(
        "connect",
        wsline::connect_with(&format!("ws://{addr}/"), &http2_config()),
    )
    .await
    .expect_err("no extended CONNECT");
    assert!(matches!(err, Error::Http2Unavailable { .. }), "{err}");
    assert!(
        err.to_string().contains("SETTINGS_ENABLE_CONNECT_PROTOCOL"),
        "{err}"
    );
    let err = within(
        "connect",
        wsline::h2::Connection::connect(&format!("ws://{addr}/"), &ClientConfig::default()),
    )
    .await
    .expect_err("no extended CONNECT");
    assert!(matches!(err, Error::Http2Unavailable { .. }), "{err}");
}

#[tokio::test]
async fn auto_uses_http2_over_tls_when_the_server_takes_it() {
    let serving = Serving {
        connect_protocol: true,
        tls: true,
    };
    let (addr, mut outcomes) = serve(ServerConfig::default(), serving).await;
    let mut config = ClientConfig::default();
    config.http_version = HttpVersion::Auto;
    // A fresh self-signed certificate: this test is about ALPN.
    config.tls.insecure = true;
    let url = format!("wss://localhost:{}/", addr.port());
    let (mut ws, handshake) = within("connect", wsline::connect_with(&url, &config))
        .await
        .expect("handshake");
    assert_eq!(handshake.response.status, 200);
    assert!(matches!(ws.get_ref(), MaybeTlsStream::H2(_)));
    echo_and_close(&mut ws, &mut outcomes, "h2 by ALPN", http::Version::HTTP_2).await;
}

#[tokio::test]
async fn auto_falls_back_to_http1_when_the_server_does_not_enable_connect_protocol() {
    let serving = Serving {
        connect_protocol: false,
        tls: true,
    };
    let (addr, mut outcomes) = serve(ServerConfig::default(), serving).await;
    let mut config = ClientConfig::default();
    config.http_version = HttpVersion::Auto;
    config.tls.insecure = true;
    let url = format!("wss://localhost:{}/", addr.port());
    let (mut ws, handshake) = within("connect", wsline::connect_with(&url, &config))
        .await
        .expect("handshake");
    assert_eq!(handshake.response.status, 101, "HTTP/1.1 after all");
    assert!(matches!(ws.get_ref(), MaybeTlsStream::Tls(_)));
    echo_and_close(&mut ws, &mut outcomes, "fallback", http::Version::HTTP_11).await;

    // Required, HTTP/2 is refused by the same server.
    config.http_version = HttpVersion::Http2;
    let err = within("connect", wsline::connect_with(&url, &config))
        .await
        .expect_err("no extended CONNECT");
    assert!(matches!(err, Error::Http2Unavailable { .. }), "{err}");
}

// ---- The server against the raw h2 crate's client (an independent peer).

/// A raw h2 client connection to `addr` (prior knowledge), once the
/// server's SETTINGS are in.
async fn raw_h2(addr: SocketAddr) -> h2::client::SendRequest<Bytes> {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (send, mut conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let mut ping = conn.ping_pong().expect("ping_pong");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    within("the server's SETTINGS", ping.ping(h2::Ping::opaque()))
        .await
        .expect("pong");
    assert!(
        send.is_extended_connect_protocol_enabled(),
        "the server announces SETTINGS_ENABLE_CONNECT_PROTOCOL"
    );
    send
}

/// Sends `request` and returns the answer's head and its body.
async fn raw_request(
    send: &h2::client::SendRequest<Bytes>,
    request: http::Request<()>,
) -> (http::response::Parts, h2::RecvStream, h2::SendStream<Bytes>) {
    let mut send = within("ready", send.clone().ready()).await.expect("ready");
    let (answer, stream) = send.send_request(request, false).expect("send");
    let (head, body) = within("the answer", answer)
        .await
        .expect("an answer")
        .into_parts();
    (head, body, stream)
}

fn extended_connect(addr: SocketAddr, fields: &[(&str, &str)]) -> http::Request<()> {
    let mut request = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(format!("http://{addr}/chat"));
    for (name, value) in fields {
        request = request.header(*name, *value);
    }
    let mut request = request.body(()).expect("a request");
    request
        .extensions_mut()
        .insert(h2::ext::Protocol::from_static("websocket"));
    request
}

async fn body_text(body: &mut h2::RecvStream) -> String {
    let mut out = Vec::new();
    while let Some(chunk) = within("the body", body.data()).await {
        let chunk = chunk.expect("data");
        let _ = body.flow_control().release_capacity(chunk.len());
        out.extend_from_slice(&chunk);
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn raw_h2_client_gets_a_200_and_an_echo_of_its_own_frames() {
    let (addr, mut outcomes) = serve(ServerConfig::default(), PLAIN).await;
    let send = raw_h2(addr).await;
    let request = extended_connect(
        addr,
        &[
            ("sec-websocket-version", "13"),
            ("sec-websocket-protocol", "chat"),
        ],
    );
    let (head, mut body, mut stream) = raw_request(&send, request).await;
    assert_eq!(head.status, 200);
    for absent in ["sec-websocket-accept", "upgrade", "connection"] {
        assert!(!head.headers.contains_key(absent), "{absent}");
    }
    // No subprotocol configured: none chosen.
    assert!(!head.headers.contains_key("sec-websocket-protocol"));

    // Hand-built masked frames; the server's come back unmasked.
    let mut out = client_frame(true, TEXT, b"hello h2");
    out.extend(client_frame(true, BINARY, &[1, 2, 3]));
    out.extend(client_frame(true, CLOSE, &close_payload(1000, "bye")));
    stream.send_data(Bytes::from(out), false).expect("data");
    let mut received = Vec::new();
    let expected = [
        support::server_frame(true, TEXT, b"hello h2"),
        support::server_frame(true, BINARY, &[1, 2, 3]),
        // The reply echoes the code, not the reason.
        support::server_frame(true, CLOSE, &close_payload(1000, "")),
    ]
    .concat();
    while received.len() < expected.len() {
        match within("the echo", body.data()).await {
            Some(chunk) => {
                let chunk = chunk.expect("data");
                let _ = body.flow_control().release_capacity(chunk.len());
                received.extend_from_slice(&chunk);
            }
            None => break,
        }
    }
    assert_eq!(received, expected);
    // After its Close, the server ends the stream (END_STREAM).
    // (hyper ends it with an empty DATA frame carrying the flag.)
    let rest = body_text(&mut body).await;
    assert!(rest.is_empty(), "nothing after the Close: {rest:?}");
    // hyper may then reset the stream (NO_ERROR, RFC 9113 §8.1): our
    // END_STREAM is best effort.
    let _ = stream.send_data(Bytes::new(), true);
    match next_outcome(&mut outcomes).await {
        Outcome::Echoed(http::Version::HTTP_2, Ok(())) => {}
        other => panic!("expected a clean echo over HTTP/2, got {other:?}"),
    }
}

#[tokio::test]
async fn raw_h2_requests_that_break_rfc_8441_are_refused() {
    let mut config = ServerConfig::default();
    config.allowed_origins = vec!["https://good.example".into()];
    let (addr, mut outcomes) = serve(config, PLAIN).await;
    let send = raw_h2(addr).await;

    // (request, status, a header the answer carries)
    let no_version = extended_connect(addr, &[]);
    let wrong_version = extended_connect(addr, &[("sec-websocket-version", "8")]);
    let bad_origin = extended_connect(
        addr,
        &[
            ("sec-websocket-version", "13"),
            ("origin", "https://evil.example"),
        ],
    );
    let mut other_protocol = extended_connect(addr, &[("sec-websocket-version", "13")]);
    other_protocol
        .extensions_mut()
        .insert(h2::ext::Protocol::from_static("connect-udp"));
    let get = http::Request::builder()
        .uri(format!("http://{addr}/chat"))
        .header("sec-websocket-version", "13")
        .body(())
        .expect("a request");
    let cases = [
        (no_version, 400, Some(("sec-websocket-version", "13"))),
        (wrong_version, 400, Some(("sec-websocket-version", "13"))),
        (other_protocol, 400, None),
        (get, 405, Some(("allow", "CONNECT"))),
        (bad_origin, 403, None),
    ];
    for (request, status, field) in cases {
        let (head, mut body, _stream) = raw_request(&send, request).await;
        assert_eq!(head.status.as_u16(), status);
        assert!(!head.headers.contains_key("connection"));
        if let Some((name, value)) = field {
            assert_eq!(head.headers[name], value, "{status}");
        }
        let text = body_text(&mut body).await;
        assert!(!text.is_empty(), "the refusal says why ({status})");
        match next_outcome(&mut outcomes).await {
            Outcome::Refused(error) => assert!(
                error.status() == status || (status == 400 && error.status() == 426),
                "{error}"
            ),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
}

// ---- The client against a raw h2 server (an independent peer).

/// A raw h2 server with SETTINGS_ENABLE_CONNECT_PROTOCOL that answers every
/// request with `status` and `fields` (and `body` for a refusal), and
/// reports each request's head.
async fn raw_h2_server(
    status: u16,
    fields: &'static [(&'static str, &'static str)],
    body: &'static str,
) -> (SocketAddr, mpsc::UnboundedReceiver<http::request::Parts>) {
    let (listener, addr) = listen().await;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let Ok((tcp, _)) = listener.accept().await else {
            return;
        };
        let mut conn = h2::server::Builder::new()
            .enable_connect_protocol()
            .handshake::<_, Bytes>(tcp)
            .await
            .expect("h2 server handshake");
        // 200 streams stay open: the client decides when they end.
        let mut open = Vec::new();
        while let Some(Ok((request, mut respond))) = conn.accept().await {
            let (head, _body) = request.into_parts();
            let _ = tx.send(head);
            let mut answer = http::Response::builder().status(status);
            for (name, value) in fields {
                answer = answer.header(*name, *value);
            }
            let answer = answer.body(()).expect("an answer");
            let end = body.is_empty() && status != 200;
            let Ok(mut stream) = respond.send_response(answer, end) else {
                continue;
            };
            if !body.is_empty() {
                let _ = stream.send_data(Bytes::from_static(body.as_bytes()), true);
            }
            open.push(stream);
        }
    });
    (addr, rx)
}

#[tokio::test]
async fn client_sends_an_rfc_8441_extended_connect() {
    let (addr, mut heads) = raw_h2_server(200, &[], "").await;
    let mut config = http2_config();
    config.protocols = vec!["chat".into()];
    config.headers.push("Origin", "https://app.example");
    config.headers.push("Connection", "keep-alive");
    let (_ws, handshake) = within(
        "connect",
        wsline::connect_with(&format!("ws://{addr}/chat?x=1"), &config),
    )
    .await
    .expect("200 without extensions is a WebSocket");
    assert!(handshake.deflate.is_none());
    let head = within("the request", heads.recv())
        .await
        .expect("a request");
    assert_eq!(head.method, http::Method::CONNECT);
    assert_eq!(
        head.extensions
            .get::<h2::ext::Protocol>()
            .map(|p| p.as_str()),
        Some("websocket")
    );
    assert_eq!(head.uri.path(), "/chat");
    assert_eq!(head.uri.query(), Some("x=1"));
    assert_eq!(head.uri.scheme_str(), Some("http"));
    assert_eq!(head.headers["sec-websocket-version"], "13");
    assert_eq!(head.headers["sec-websocket-protocol"], "chat");
    assert_eq!(head.headers["origin"], "https://app.example");
    assert!(head.headers["sec-websocket-extensions"]
        .to_str()
        .expect("text")
        .contains("permessage-deflate"));
    for absent in ["sec-websocket-key", "upgrade", "connection", "host"] {
        assert!(!head.headers.contains_key(absent), "{absent}");
    }
}

#[tokio::test]
async fn client_refuses_a_subprotocol_it_did_not_offer_over_http2() {
    let (addr, _heads) = raw_h2_server(200, &[("sec-websocket-protocol", "other")], "").await;
    let mut config = http2_config();
    config.protocols = vec!["chat".into()];
    let err = within(
        "connect",
        wsline::connect_with(&format!("ws://{addr}/"), &config),
    )
    .await
    .expect_err("not offered");
    assert!(
        matches!(err, Error::Handshake(HandshakeError::ProtocolNotOffered(_))),
        "{err}"
    );
}

#[tokio::test]
async fn client_refuses_an_extension_it_did_not_offer_over_http2() {
    let (addr, _heads) = raw_h2_server(
        200,
        &[("sec-websocket-extensions", "permessage-deflate")],
        "",
    )
    .await;
    let mut config = http2_config();
    config.deflate = None;
    let err = within(
        "connect",
        wsline::connect_with(&format!("ws://{addr}/"), &config),
    )
    .await
    .expect_err("not offered");
    assert!(
        matches!(
            err,
            Error::Handshake(HandshakeError::ExtensionNotOffered(_))
        ),
        "{err}"
    );
}

#[tokio::test]
async fn client_reports_an_http2_refusal_with_its_status_and_body() {
    let (addr, _heads) = raw_h2_server(
        403,
        &[("content-type", "text/plain")],
        "origin not allowed\n",
    )
    .await;
    let err = within(
        "connect",
        wsline::connect_with(&format!("ws://{addr}/"), &http2_config()),
    )
    .await
    .expect_err("refused");
    assert_eq!(err.http_status(), Some(403));
    match err {
        Error::Handshake(HandshakeError::Rejected { body, .. }) => {
            assert_eq!(body, b"origin not allowed\n");
        }
        other => panic!("expected a refusal, got {other}"),
    }
}
