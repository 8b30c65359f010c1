//! `wsline::axum::WebSocketUpgrade` in a real axum router served by
//! `axum::serve` on a real socket: an echo exchange (with a subprotocol
//! the handler sets), a request the extractor rejects, and an Origin the
//! router's `ServerConfig` extension refuses. Built with `--features axum`
//! (scripts/test.sh's `test` suite runs it).
#![cfg(feature = "axum")]

mod support;

use std::net::SocketAddr;

use axum::response::Response;
use axum::routing::get;
use axum::{Extension, Router};
use support::{head, listen, upgrade_request, within, Raw};
use wsline::axum::WebSocketUpgrade;
use wsline::{ClientConfig, Message, ServerConfig};

async fn echo(mut ws: WebSocketUpgrade) -> Response {
    ws.config_mut().subprotocols = vec!["echo".into()];
    ws.on_upgrade(|mut ws| async move {
        while let Some(Ok(message)) = ws.recv().await {
            if ws.send(message).await.is_err() {
                break;
            }
        }
    })
}

/// The router on a free port: `/ws` echoes, with `config` as the
/// router-wide extension.
async fn serve(config: ServerConfig) -> SocketAddr {
    let (listener, addr) = listen().await;
    let app = Router::new()
        .route("/ws", get(echo))
        .layer(Extension(config));
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

#[tokio::test]
async fn an_axum_route_upgrades_and_echoes() {
    let addr = serve(ServerConfig::default()).await;
    let mut client = ClientConfig::default();
    client.protocols = vec!["echo".into()];
    let url = format!("ws://{addr}/ws");
    let (mut ws, handshake) = within("connect", wsline::connect_with(&url, &client))
        .await
        .expect("handshake");
    assert_eq!(ws.protocol(), Some("echo"), "set by the handler");
    assert!(handshake.deflate.is_some(), "permessage-deflate agreed");
    let message = Message::text("hello from axum ".repeat(100));
    within("send", ws.send(message.clone()))
        .await
        .expect("send");
    let echoed = within("the echo", ws.recv())
        .await
        .expect("a message")
        .expect("ok");
    assert_eq!(echoed, message);
    within("close", ws.close(wsline::CloseCode::NORMAL, ""))
        .await
        .expect("a normal close");
}

/// RFC 8441: the same extractor takes an extended CONNECT over HTTP/2
/// (routed with `any`, since it is a CONNECT; `axum::serve` announces
/// SETTINGS_ENABLE_CONNECT_PROTOCOL with axum's `http2` feature).
#[cfg(feature = "http2")]
#[tokio::test]
async fn an_axum_route_takes_websockets_over_http2() {
    let (listener, addr) = listen().await;
    let app = Router::new()
        .route("/ws", axum::routing::any(echo))
        .layer(Extension(ServerConfig::default()));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let mut client = ClientConfig::default();
    client.protocols = vec!["echo".into()];
    client.http_version = wsline::HttpVersion::Http2;
    let url = format!("ws://{addr}/ws");
    let (mut ws, handshake) = within("connect", wsline::connect_with(&url, &client))
        .await
        .expect("handshake over HTTP/2");
    assert_eq!(handshake.response.status, 200);
    assert_eq!(ws.protocol(), Some("echo"), "set by the handler");
    assert!(handshake.deflate.is_some(), "permessage-deflate agreed");
    let message = Message::text("hello from axum over h2 ".repeat(100));
    within("send", ws.send(message.clone()))
        .await
        .expect("send");
    let echoed = within("the echo", ws.recv())
        .await
        .expect("a message")
        .expect("ok");
    assert_eq!(echoed, message);
    within("close", ws.close(wsline::CloseCode::NORMAL, ""))
        .await
        .expect("a normal close");

    // A version other than 13 over HTTP/2: refused by the extractor, 400.
    client.headers.push("Sec-WebSocket-Version", "8");
    let err = within("connect", wsline::connect_with(&url, &client))
        .await
        .expect_err("two versions offered");
    assert_eq!(err.http_status(), Some(400), "{err}");
}

#[tokio::test]
async fn the_extractor_rejects_a_bad_request_with_wslines_status() {
    let addr = serve(ServerConfig::default()).await;
    let host = format!("Host: {addr}");
    let request = head(&[
        "GET /ws HTTP/1.1",
        &host,
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    ]);
    let mut raw = Raw::connect(addr).await;
    raw.send(request.as_bytes()).await;
    let response = raw.read_response().await;
    assert_eq!(response.status, 426, "{}", response.head);
    assert_eq!(response.header("Sec-WebSocket-Version"), Some("13"));
    let body = String::from_utf8(response.body).expect("text");
    assert!(body.contains("Sec-WebSocket-Version"), "{body:?}");
    raw.expect_eof().await;
}

#[tokio::test]
async fn an_origin_not_in_the_routers_config_gets_403() {
    let mut config = ServerConfig::default();
    config.allowed_origins = vec!["https://good.example".into()];
    let addr = serve(config).await;

    let mut raw = Raw::connect(addr).await;
    let request = upgrade_request(&addr.to_string(), &["Origin: https://evil.example"])
        .replace("GET /chat", "GET /ws");
    raw.send(request.as_bytes()).await;
    let response = raw.read_response().await;
    assert_eq!(response.status, 403, "{}", response.head);
    let body = String::from_utf8(response.body).expect("text");
    assert!(body.contains("https://evil.example"), "{body:?}");
    raw.expect_eof().await;
}
