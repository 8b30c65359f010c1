//! Plain HTTP on the hub's port: the publish API, channel and presence
//! queries, `/metrics`, `/healthz` and the demo page.
//!
//! Owns the API's access rule (a bearer key when configured, else loopback
//! clients only) and its JSON answers. One request per connection
//! (`Connection: close`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use wsline::{Headers, Request, Response};
use wsline_proto::handshake::reason_phrase;

use crate::config::valid_channel;
use crate::engine::Engine;
use crate::Hub;

/// The demo page (a placeholder until the browser client lands).
const INDEX_HTML: &str = include_str!("index.html");

fn respond(status: u16, content_type: &str, body: Vec<u8>) -> Response {
    let mut headers = Headers::new();
    headers.push("Content-Type", content_type);
    headers.push("Content-Length", body.len().to_string());
    headers.push("Cache-Control", "no-store");
    headers.push("Connection", "close");
    Response {
        status,
        reason: reason_phrase(status).to_owned(),
        headers,
        body,
    }
}

fn json_response(status: u16, value: serde_json::Value) -> Response {
    respond(status, "application/json", value.to_string().into_bytes())
}

fn error(status: u16, text: &str) -> Response {
    json_response(status, json!({ "error": text }))
}

pub(crate) async fn answer(
    hub: &Arc<Hub>,
    mut tcp: TcpStream,
    peer: SocketAddr,
    request: Request,
    leftover: Vec<u8>,
) {
    let response = route(hub, &mut tcp, peer, &request, leftover).await;
    wsline::refuse(&mut tcp, &response).await;
}

async fn route(
    hub: &Arc<Hub>,
    tcp: &mut TcpStream,
    peer: SocketAddr,
    request: &Request,
    leftover: Vec<u8>,
) -> Response {
    let path = request.path();
    let method = request.method.as_str();
    match (method, path) {
        ("GET", "/healthz") => {
            if hub.engine.is_up() {
                json_response(200, json!({"status": "ok"}))
            } else {
                json_response(503, json!({"status": "unavailable"}))
            }
        }
        ("GET", "/metrics") => respond(
            200,
            "text/plain; version=0.0.4",
            hub.metrics.render().into_bytes(),
        ),
        ("GET", "/") | ("GET", "/index.html") => respond(
            200,
            "text/html; charset=utf-8",
            INDEX_HTML.as_bytes().to_vec(),
        ),
        (_, p) if p.starts_with("/api/") => {
            if let Some(refusal) = check_api_access(hub, peer, request) {
                return refusal;
            }
            api(hub, tcp, method, p, request, leftover).await
        }
        (_, "/healthz" | "/metrics" | "/") => error(405, "method not allowed"),
        _ => error(404, "not found"),
    }
}

/// With an API key: `Authorization: Bearer KEY` (else 401). Without one:
/// loopback clients only (else 403).
fn check_api_access(hub: &Hub, peer: SocketAddr, request: &Request) -> Option<Response> {
    match &hub.config.api_key {
        Some(key) => {
            let given = request
                .headers
                .get("authorization")
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim);
            (given != Some(key.as_str())).then(|| {
                error(
                    401,
                    "missing or wrong API key: send Authorization: Bearer KEY",
                )
            })
        }
        None => (!peer.ip().is_loopback()).then(|| {
            error(
                403,
                "the API answers only loopback clients unless the hub has an API key",
            )
        }),
    }
}

#[derive(Deserialize)]
struct PublishBody<'a> {
    channel: String,
    #[serde(borrow)]
    data: &'a RawValue,
}

async fn api(
    hub: &Arc<Hub>,
    tcp: &mut TcpStream,
    method: &str,
    path: &str,
    request: &Request,
    leftover: Vec<u8>,
) -> Response {
    match (method, path) {
        ("POST", "/api/publish") => {
            let body = match read_body(hub, tcp, request, leftover).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            let parsed: PublishBody<'_> = match serde_json::from_slice(&body) {
                Ok(p) => p,
                Err(e) => {
                    return error(
                        400,
                        &format!("expected {{\"channel\": C, \"data\": ANY}}: {e}"),
                    )
                }
            };
            if !valid_channel(&parsed.channel) {
                return error(
                    400,
                    "invalid channel name: 1-255 characters of A-Za-z0-9_-:.@",
                );
            }
            match hub
                .engine
                .publish(&parsed.channel, parsed.data, None, |_| {})
                .await
            {
                Ok(offset) => json_response(200, json!({ "offset": offset })),
                Err(e) => error(503, &e.to_string()),
            }
        }
        ("GET", "/api/channels") => {
            let list: Vec<_> = hub
                .engine
                .channels()
                .await
                .into_iter()
                .map(|(channel, n)| json!({"channel": channel, "subscribers": n}))
                .collect();
            json_response(200, json!({ "channels": list }))
        }
        ("GET", p) if p.starts_with("/api/presence/") => {
            let channel = &p["/api/presence/".len()..];
            if !valid_channel(channel) {
                return error(
                    400,
                    "invalid channel name: 1-255 characters of A-Za-z0-9_-:.@",
                );
            }
            match hub.engine.presence(channel).await {
                Ok(members) => {
                    let members: Vec<_> = members.iter().map(|m| m.to_json()).collect();
                    json_response(200, json!({"channel": channel, "members": members}))
                }
                Err(e) => error(503, &e.to_string()),
            }
        }
        (_, "/api/publish" | "/api/channels") => error(405, "method not allowed"),
        _ => error(404, "not found"),
    }
}

/// Reads a request body of `Content-Length` bytes, at most the hub's max
/// message size, within the handshake timeout.
async fn read_body(
    hub: &Hub,
    tcp: &mut TcpStream,
    request: &Request,
    mut body: Vec<u8>,
) -> Result<Vec<u8>, Response> {
    let Some(len) = request
        .headers
        .get("content-length")
        .and_then(|v| v.trim().parse::<usize>().ok())
    else {
        return Err(error(411, "a Content-Length header is required"));
    };
    if len > hub.config.max_message_size {
        return Err(error(413, "body larger than the max message size"));
    }
    let read = async {
        while body.len() < len {
            let mut chunk = [0u8; 8192];
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => body.extend_from_slice(&chunk[..n]),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), read).await;
    if body.len() < len {
        return Err(error(400, "the body ended before Content-Length bytes"));
    }
    body.truncate(len);
    Ok(body)
}
