//! HTTP on the hub's port: the publish API, channel and presence
//! queries, `POST /api/drain`, `/metrics`, `/healthz` and the demo page,
//! and WebSocket upgrades that arrive through hyper (RFC 8441 extended
//! CONNECTs over HTTP/2, and `/ws` on a keep-alive HTTP/1.1 connection).
//!
//! Owns the API's access rule (a bearer key when configured, else loopback
//! clients only) and its JSON answers, as hyper requests (keep-alive
//! HTTP/1.1 and HTTP/2: `front.rs` chooses). Not the HTTP/1.1 WebSocket
//! fast path (`front.rs`, `session.rs`).

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;
use wsline::{Headers, Request, Response};
use wsline_proto::handshake::reason_phrase;

use crate::config::valid_channel;
use crate::engine::Engine;
use crate::session;
use crate::Hub;

/// The answers the hub gives through hyper.
pub(crate) type Answer = http::Response<Full<Bytes>>;

/// The demo chat page (crates/hub/static/index.html).
const INDEX_HTML: &str = include_str!("../static/index.html");
/// The JavaScript client (crates/hub/static/wsline.js, docs/js-client.md).
const WSLINE_JS: &str = include_str!("../static/wsline.js");

fn respond(status: u16, content_type: &str, body: Vec<u8>) -> Response {
    let mut headers = Headers::new();
    headers.push("Content-Type", content_type);
    headers.push("Content-Length", body.len().to_string());
    headers.push("Cache-Control", "no-store");
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

/// The answer to a WebSocket upgrade once a drain's grace is over.
pub(crate) fn draining() -> Response {
    let mut response = error(
        503,
        "this hub is draining: connect again (a load balancer sends you to another node)",
    );
    response.headers.push("Retry-After", "1");
    response
}

/// Answers one request hyper has read (HTTP/1.1 or HTTP/2). `/ws`
/// becomes a WebSocket (an HTTP/1.1 upgrade, or an RFC 8441 extended
/// CONNECT over HTTP/2) whose session runs on a task of its own.
pub(crate) async fn serve_request(
    hub: Arc<Hub>,
    peer: SocketAddr,
    request: http::Request<Incoming>,
) -> Answer {
    if request.uri().path() == "/ws" {
        return upgrade(hub, peer, request).await;
    }
    let (parts, body) = request.into_parts();
    let head = head_of(&parts.method, &parts.uri, parts.version, &parts.headers);
    let response = route(&hub, peer, &head, parts.version, body).await;
    to_http(response)
}

/// The hub's view of a request head hyper parsed: HTTP/2's `:authority`
/// is its `Host`.
fn head_of(
    method: &http::Method,
    uri: &http::Uri,
    version: http::Version,
    headers: &http::HeaderMap,
) -> Request {
    let mut fields = Headers::new();
    if let (Some(authority), false) = (uri.authority(), headers.contains_key(http::header::HOST)) {
        fields.push("host", authority.as_str());
    }
    for (name, value) in headers {
        fields.push(name.as_str(), String::from_utf8_lossy(value.as_bytes()));
    }
    Request {
        method: method.as_str().to_owned(),
        target: uri.path_and_query().map_or("/", |p| p.as_str()).to_owned(),
        version_minor: u8::from(version != http::Version::HTTP_10),
        headers: fields,
    }
}

/// `response` as hyper sends it (without connection-specific fields,
/// which HTTP/2 forbids and hyper writes itself on HTTP/1.1).
fn to_http(response: Response) -> Answer {
    let mut answer = http::Response::new(Full::new(Bytes::from(response.body)));
    *answer.status_mut() = http::StatusCode::from_u16(response.status)
        .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in response.headers.iter() {
        if name.eq_ignore_ascii_case("connection") || name.eq_ignore_ascii_case("content-length") {
            continue;
        }
        if let (Ok(name), Ok(value)) = (
            http::header::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_str(value),
        ) {
            answer.headers_mut().append(name, value);
        }
    }
    answer
}

/// A WebSocket through hyper: the upgrade's checks, the gate, the hub's
/// admission (connection cap, token, connect hook), then the session on a
/// task of its own once hyper hands the stream over.
async fn upgrade(hub: Arc<Hub>, peer: SocketAddr, mut request: http::Request<Incoming>) -> Answer {
    if hub.is_stopping() {
        return to_http(draining());
    }
    let transport = usize::from(request.version() == http::Version::HTTP_2);
    let (response, websocket) = match wsline::upgrade(&mut request, &hub.config.server) {
        Ok(upgrade) => upgrade,
        Err(refused) => {
            tracing::debug!(%peer, "upgrade refused: {refused}");
            return refused.into_response();
        }
    };
    let open = match hub.gate.admit(peer.ip()).and_then(|h| h.open()) {
        Ok(permit) => permit,
        Err(refusal) => {
            hub.metrics.refused.fetch_add(1, Relaxed);
            return to_http(refusal.response());
        }
    };
    let head = head_of(
        request.method(),
        request.uri(),
        request.version(),
        request.headers(),
    );
    let admitted = match session::admit(&hub, peer, &head, true).await {
        Ok(admitted) => admitted,
        Err(refusal) => return to_http(refusal),
    };
    tokio::spawn(async move {
        let mut ws = match websocket.await {
            Ok(ws) => ws,
            Err(e) => {
                tracing::debug!(%peer, "upgrade failed: {e}");
                return;
            }
        };
        hub.metrics.opened[transport].fetch_add(1, Relaxed);
        if let Some(session) = admitted.into_session(hub, &mut ws, open).await {
            session.serve(ws).await;
        }
    });
    response
}

async fn route(
    hub: &Arc<Hub>,
    peer: SocketAddr,
    request: &Request,
    version: http::Version,
    body: Incoming,
) -> Response {
    let path = request.path();
    let method = request.method.as_str();
    match (method, path) {
        ("GET", "/healthz") => {
            if hub.is_draining() {
                json_response(503, json!({"status": "draining"}))
            } else if hub.engine.is_up() {
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
        ("GET", "/wsline.js") => respond(
            200,
            "application/javascript; charset=utf-8",
            WSLINE_JS.as_bytes().to_vec(),
        ),
        (_, p) if p.starts_with("/api/") => {
            if let Some(refusal) = check_api_access(hub.config.api_key.as_deref(), peer, request) {
                return refusal;
            }
            api(hub, method, p, request, version, body).await
        }
        (_, "/healthz" | "/metrics" | "/" | "/wsline.js") => error(405, "method not allowed"),
        _ => error(404, "not found"),
    }
}

/// With an API key: `Authorization: Bearer KEY` (else 401). Without one:
/// loopback clients only (else 403); an IPv4 client of a dual-stack
/// listener (`[::]`) arrives as `::ffff:127.0.0.1`, which is loopback too.
fn check_api_access(
    api_key: Option<&str>,
    peer: SocketAddr,
    request: &Request,
) -> Option<Response> {
    match api_key {
        Some(key) => {
            let given = request
                .headers
                .get("authorization")
                .and_then(|v| {
                    // The scheme is case-insensitive (RFC 7235).
                    let (scheme, credentials) = v.trim().split_once(' ')?;
                    scheme.eq_ignore_ascii_case("bearer").then_some(credentials)
                })
                .map(str::trim);
            (given != Some(key)).then(|| {
                error(
                    401,
                    "missing or wrong API key: send Authorization: Bearer KEY",
                )
            })
        }
        None => (!peer.ip().to_canonical().is_loopback()).then(|| {
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
    method: &str,
    path: &str,
    request: &Request,
    version: http::Version,
    body: Incoming,
) -> Response {
    match (method, path) {
        ("POST", "/api/publish") => {
            let body = match read_body(hub, request, version, body).await {
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
            if !hub.config.policy(channel).presence {
                return error(403, "presence is off for this channel");
            }
            match hub.engine.presence(channel).await {
                Ok(members) => {
                    let members: Vec<_> = members.iter().map(|m| m.to_json()).collect();
                    json_response(200, json!({"channel": channel, "members": members}))
                }
                Err(e) => error(503, &e.to_string()),
            }
        }
        ("POST", "/api/drain") => {
            let started = hub.start_drain();
            json_response(
                202,
                json!({
                    "status": "draining",
                    "started": started,
                    "connections": hub.open_sessions(),
                }),
            )
        }
        (_, "/api/publish" | "/api/channels" | "/api/drain") => error(405, "method not allowed"),
        _ => error(404, "not found"),
    }
}

/// Reads a request body: at most the hub's max message size, within 10
/// seconds. HTTP/1.x bodies need a `Content-Length` (HTTP/2 ones may end
/// with their stream instead).
async fn read_body(
    hub: &Hub,
    request: &Request,
    version: http::Version,
    body: Incoming,
) -> Result<Bytes, Response> {
    let max = hub.config.server.protocol.max_message_size;
    let declared = request.headers.get("content-length");
    let len = match declared.map(|v| v.trim().parse::<usize>()) {
        Some(Ok(len)) => Some(len),
        Some(Err(_)) => return Err(error(400, "an invalid Content-Length")),
        None if version == http::Version::HTTP_2 => None,
        None => return Err(error(411, "a Content-Length header is required")),
    };
    if len.is_some_and(|len| len > max) {
        return Err(error(413, "body larger than the max message size"));
    }
    let read = Limited::new(body, max).collect();
    match tokio::time::timeout(Duration::from_secs(10), read).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            Err(error(413, "body larger than the max message size"))
        }
        Ok(Err(_)) | Err(_) => Err(error(400, "the body ended before Content-Length bytes")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wsline_proto::handshake::parse_request;

    fn request(extra: &str) -> Request {
        let head = format!("GET /api/channels HTTP/1.1\r\nHost: h\r\n{extra}\r\n");
        parse_request(head.as_bytes(), 8192)
            .expect("valid")
            .expect("complete")
            .0
    }

    fn peer(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), 5000)
    }

    #[test]
    fn without_a_key_only_loopback_peers_pass() {
        let r = request("");
        for ip in ["127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1"] {
            assert!(check_api_access(None, peer(ip), &r).is_none(), "{ip}");
        }
        for ip in ["192.0.2.7", "10.1.2.3", "2001:db8::1", "::ffff:192.0.2.7"] {
            let refusal = check_api_access(None, peer(ip), &r).expect(ip);
            assert_eq!(refusal.status, 403, "{ip}");
            let body: serde_json::Value = serde_json::from_slice(&refusal.body).unwrap();
            assert!(body["error"].is_string());
        }
    }

    #[test]
    fn with_a_key_the_bearer_key_decides_wherever_the_peer_is() {
        let good = request("Authorization: Bearer k\r\n");
        let wrong = request("Authorization: Bearer x\r\n");
        let lowercase = request("Authorization: bearer k\r\n");
        assert!(check_api_access(Some("k"), peer("127.0.0.1"), &lowercase).is_none());
        for ip in ["127.0.0.1", "192.0.2.7"] {
            assert!(check_api_access(Some("k"), peer(ip), &good).is_none());
            assert_eq!(
                check_api_access(Some("k"), peer(ip), &wrong)
                    .unwrap()
                    .status,
                401
            );
            assert_eq!(
                check_api_access(Some("k"), peer(ip), &request(""))
                    .unwrap()
                    .status,
                401
            );
        }
    }
}
