//! Every refusal of the server handshake (`wsline::accept`) over a raw
//! socket: the status, a short text/plain body, and the connection closed
//! afterwards. Requests are written by hand, so the server is tested
//! independently of the library's client.

mod support;

use std::time::Duration;

use support::{head, listen, upgrade_request, within, HttpResponse, Raw, ACCEPT, KEY};
use tokio::task::JoinHandle;
use wsline::proto::handshake::HandshakeError;
use wsline::ServerConfig;

/// A server that handles one connection with `accept`; the outcome.
async fn serve_one(
    config: ServerConfig,
) -> (std::net::SocketAddr, JoinHandle<Result<(), wsline::Error>>) {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        wsline::accept(tcp, &config).await.map(|_| ())
    });
    (addr, server)
}

/// Sends `request`, expects a refusal with `status`, checks its body and
/// that the server closed the connection. Returns the response and the
/// server's error.
async fn expect_refusal(request: &str, status: u16) -> (HttpResponse, HandshakeError) {
    let (addr, server) = serve_one(ServerConfig::default()).await;
    let mut raw = Raw::connect(addr).await;
    raw.send(request.as_bytes()).await;
    let response = raw.read_response().await;
    assert_refusal(&response, status);
    raw.expect_eof().await;
    let error = match within("the server", server).await.expect("task") {
        Err(wsline::Error::Handshake(e)) => e,
        other => panic!("expected a handshake error, got {other:?}"),
    };
    assert_eq!(error.status(), status, "{error}");
    (response, error)
}

fn assert_refusal(response: &HttpResponse, status: u16) {
    assert_eq!(response.status, status, "{}", response.head);
    let content_type = response.header("Content-Type").unwrap_or_default();
    assert!(
        content_type.starts_with("text/plain"),
        "Content-Type {content_type:?}"
    );
    let body = std::str::from_utf8(&response.body).expect("a UTF-8 body");
    assert!(
        !body.trim().is_empty() && body.len() < 512,
        "expected a short text body, got {body:?}"
    );
    assert_eq!(response.header("Sec-WebSocket-Accept"), None);
}

fn host() -> &'static str {
    "Host: server.example"
}

fn key() -> String {
    format!("Sec-WebSocket-Key: {KEY}")
}

#[tokio::test]
async fn post_is_refused_with_405() {
    let k = key();
    let request = head(&[
        "POST /chat HTTP/1.1",
        host(),
        "Upgrade: websocket",
        "Connection: Upgrade",
        &k,
        "Sec-WebSocket-Version: 13",
        "Content-Length: 0",
    ]);
    let (response, _) = expect_refusal(&request, 405).await;
    assert_eq!(response.header("Allow"), Some("GET"));
}

#[tokio::test]
async fn http_1_0_is_refused_with_400() {
    let k = key();
    let request = head(&[
        "GET /chat HTTP/1.0",
        host(),
        "Upgrade: websocket",
        "Connection: Upgrade",
        &k,
        "Sec-WebSocket-Version: 13",
    ]);
    let (_, error) = expect_refusal(&request, 400).await;
    assert_eq!(error, HandshakeError::UnsupportedHttpVersion);
}

#[tokio::test]
async fn missing_host_is_refused_with_400() {
    let k = key();
    let request = head(&[
        "GET /chat HTTP/1.1",
        "Upgrade: websocket",
        "Connection: Upgrade",
        &k,
        "Sec-WebSocket-Version: 13",
    ]);
    let (_, error) = expect_refusal(&request, 400).await;
    assert_eq!(error, HandshakeError::MissingHost);
}

#[tokio::test]
async fn missing_upgrade_is_refused_with_400() {
    let k = key();
    let request = head(&[
        "GET /chat HTTP/1.1",
        host(),
        "Connection: Upgrade",
        &k,
        "Sec-WebSocket-Version: 13",
    ]);
    let (_, error) = expect_refusal(&request, 400).await;
    assert_eq!(error, HandshakeError::MissingUpgrade);
}

#[tokio::test]
async fn wrong_upgrade_is_refused_with_400() {
    let k = key();
    let request = head(&[
        "GET /chat HTTP/1.1",
        host(),
        "Upgrade: h2c",
        "Connection: Upgrade",
        &k,
        "Sec-WebSocket-Version: 13",
    ]);
    let (_, error) = expect_refusal(&request, 400).await;
    assert_eq!(error, HandshakeError::MissingUpgrade);
}

#[tokio::test]
async fn connection_without_upgrade_token_is_refused_with_400() {
    let k = key();
    let request = head(&[
        "GET /chat HTTP/1.1",
        host(),
        "Upgrade: websocket",
        "Connection: keep-alive",
        &k,
        "Sec-WebSocket-Version: 13",
    ]);
    let (_, error) = expect_refusal(&request, 400).await;
    assert_eq!(error, HandshakeError::MissingConnectionUpgrade);
}

#[tokio::test]
async fn connection_keep_alive_upgrade_is_accepted_with_101() {
    let (addr, server) = serve_one(ServerConfig::default()).await;
    let mut raw = Raw::connect(addr).await;
    let k = key();
    let request = head(&[
        "GET /chat HTTP/1.1",
        host(),
        "Upgrade: websocket",
        "Connection: keep-alive, Upgrade",
        &k,
        "Sec-WebSocket-Version: 13",
    ]);
    raw.send(request.as_bytes()).await;
    let response = raw.read_response().await;
    assert_eq!(response.status, 101, "{}", response.head);
    assert_eq!(response.header("Sec-WebSocket-Accept"), Some(ACCEPT));
    within("the server", server)
        .await
        .expect("task")
        .expect("accepted");
}

#[tokio::test]
async fn version_8_is_refused_with_426_naming_version_13() {
    let k = key();
    let request = head(&[
        "GET /chat HTTP/1.1",
        host(),
        "Upgrade: websocket",
        "Connection: Upgrade",
        &k,
        "Sec-WebSocket-Version: 8",
    ]);
    let (response, _) = expect_refusal(&request, 426).await;
    assert_eq!(response.header("Sec-WebSocket-Version"), Some("13"));
}

#[tokio::test]
async fn missing_version_is_refused_with_426_naming_version_13() {
    let k = key();
    let request = head(&[
        "GET /chat HTTP/1.1",
        host(),
        "Upgrade: websocket",
        "Connection: Upgrade",
        &k,
    ]);
    let (response, _) = expect_refusal(&request, 426).await;
    assert_eq!(response.header("Sec-WebSocket-Version"), Some("13"));
}

#[tokio::test]
async fn key_not_16_bytes_is_refused_with_400() {
    // Valid base64, but of 15 bytes.
    let request = head(&[
        "GET /chat HTTP/1.1",
        host(),
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAA",
        "Sec-WebSocket-Version: 13",
    ]);
    let (_, error) = expect_refusal(&request, 400).await;
    assert_eq!(error, HandshakeError::BadKey);
}

#[tokio::test]
async fn oversized_head_is_refused_with_431_without_waiting_for_its_end() {
    let mut config = ServerConfig::default();
    // Far beyond the wait bound: a server that waited for the end of the
    // head would send nothing in time.
    config.handshake_timeout = Duration::from_secs(60);
    let (addr, server) = serve_one(config).await;
    let mut raw = Raw::connect(addr).await;

    // 70 KiB of header fields in 10 lines (well under the field-count
    // limit), never followed by the blank line.
    let mut request = String::from("GET /chat HTTP/1.1\r\nHost: server.example\r\n");
    for i in 0..10 {
        request.push_str(&format!("X-Filler-{i}: {}\r\n", "a".repeat(7 * 1024)));
    }
    assert!(request.len() > 70 * 1024);
    assert!(!request.ends_with("\r\n\r\n"));
    raw.send(request.as_bytes()).await;

    let response = raw.read_response().await;
    assert_refusal(&response, 431);
    // The server stopped reading mid-request: closing with unread bytes
    // may reset the connection after the FIN.
    raw.expect_closed().await;
    match within("the server", server).await.expect("task") {
        Err(wsline::Error::Handshake(HandshakeError::HeadTooLarge { limit })) => {
            assert_eq!(limit, 64 * 1024)
        }
        other => panic!("expected HeadTooLarge, got {other:?}"),
    }
}

#[tokio::test]
async fn valid_request_is_accepted_with_101() {
    let (addr, server) = serve_one(ServerConfig::default()).await;
    let mut raw = Raw::connect(addr).await;
    raw.send(upgrade_request("server.example", &[]).as_bytes())
        .await;
    let response = raw.read_response().await;
    assert_eq!(response.status, 101, "{}", response.head);
    assert_eq!(response.header("Sec-WebSocket-Accept"), Some(ACCEPT));
    assert_eq!(response.header("Sec-WebSocket-Protocol"), None);
    within("the server", server)
        .await
        .expect("task")
        .expect("accepted");
}
