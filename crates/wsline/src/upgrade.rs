//! hyper 1 integration (`hyper` feature): a WebSocket from a request that
//! a hyper server has parsed, with everything [`crate::accept`] applies.
//!
//! Owns the conversions between the `http` crate's types and wsline's
//! handshake types, and the hand-over of hyper's upgraded connection to
//! the same construction `accept` uses (`server::Opening`: write stall and
//! idle timeouts; the core's limits, keepalive and close timeout come with
//! its `Connection`). It does not own the rules (RFC 6455 §4.2 checks,
//! Origin, the application's answer, subprotocol, permessage-deflate: the
//! [`crate::driver`]'s `answer_request`, shared with every other server
//! path), nor serving HTTP (reading heads, keep-alive, writing the
//! response: hyper's), nor axum's extractor (`axum.rs`, feature `axum`).
//!
//! The same calls take both handshakes: an HTTP/1.1 upgrade (answered
//! with 101) and, with the `http2` feature, an RFC 8441 extended CONNECT
//! over HTTP/2 (`:protocol websocket`, which hyper hands over as
//! `hyper::ext::Protocol`; answered with 200, no `Sec-WebSocket-Accept`).
//! [`Transport`] says which one a request asked for; the rules of each
//! are the core's (`validate_request`, `validate_extended_connect`), the
//! rest (Origin, subprotocol, permessage-deflate, timers) is shared. Over
//! HTTP/2 the WebSocket's transport is one stream: shutting it down ends
//! the stream (END_STREAM), dropping it resets the stream, and the TCP
//! connection stays hyper's.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH};
use http::{HeaderMap, Method, StatusCode, Uri, Version};
use http_body_util::Full;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use wsline_proto::handshake::{HandshakeError, Headers, Request, Response};
use wsline_proto::Connection;

use crate::driver::{answer_with, Accepted, HandshakeRules, Refused};
use crate::server::Opening;
use crate::{Acceptance, Error, ServerConfig, WebSocket};

/// The body of the responses [`upgrade`] gives: empty for the 101, the
/// refusal's short text otherwise.
pub type UpgradeBody = Full<Bytes>;

/// A WebSocket over hyper's upgraded connection, as [`upgrade`] gives it.
pub type HyperWebSocket = WebSocket<TokioIo<Upgraded>>;

/// Upgrades a request served by hyper 1 to a WebSocket, with the checks
/// and settings of `config`, as [`crate::accept`] does on a bare stream:
/// RFC 6455 §4.2 checks, the Origin allow-list, subprotocol choice,
/// permessage-deflate, the core's limits, keepalive and close timeout,
/// and the write stall and idle timeouts.
///
/// Gives the response to return from the service (101 Switching
/// Protocols) and a future to spawn: it yields the WebSocket once hyper
/// has written the 101 and handed the connection over. A request that
/// fails a check gets [`UpgradeRefused`], holding the response wsline's
/// own server answers with (400, 403, 405, 426) and why.
///
/// With the `http2` feature, the same call accepts WebSockets over
/// HTTP/2 (RFC 8441): an extended CONNECT with `:protocol websocket` and
/// `sec-websocket-version: 13`, answered with 200 (and the negotiated
/// subprotocol and extensions), the WebSocket then running over that one
/// stream. The hyper server must announce SETTINGS_ENABLE_CONNECT_PROTOCOL
/// (`http2::Builder::enable_connect_protocol()`, also on hyper_util's auto
/// builder), or clients will not send the request. Refusals over HTTP/2
/// are 400 for a plain CONNECT, another `:protocol` or a version other
/// than 13 (with `sec-websocket-version: 13`), 405 for another method,
/// and otherwise those of HTTP/1.1. Without the feature, HTTP/2 requests
/// are refused with 400.
///
/// The hyper connection must be served `.with_upgrades()`, or the future
/// fails with [`Error::Upgrade`]; it fails with [`Error::HandshakeTimeout`]
/// if the 101 is not written within `config.handshake_timeout`. hyper
/// reads the request head itself: its own limits apply there
/// (`http1::Builder::max_buf_size`, `header_read_timeout`), not
/// `config.max_head_size`. `config.limits` is for an accept loop's
/// [`crate::Gate`], as with `accept`.
///
/// ```no_run
/// use http_body_util::Full;
/// use hyper::body::{Bytes, Incoming};
/// use hyper::server::conn::http1;
/// use hyper::service::service_fn;
/// use hyper::{Request, Response};
/// use hyper_util::rt::TokioIo;
/// use wsline::ServerConfig;
///
/// async fn handle(mut request: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
///     let config = ServerConfig::default();
///     let (response, websocket) = match wsline::upgrade(&mut request, &config) {
///         Ok(upgrade) => upgrade,
///         // Not a valid upgrade: wsline's answer (400, 403, 426...).
///         Err(refused) => return Ok(refused.into_response()),
///     };
///     tokio::spawn(async move {
///         let mut ws = websocket.await?;
///         while let Some(message) = ws.recv().await {
///             ws.send(message?).await?;
///         }
///         Ok::<_, wsline::Error>(())
///     });
///     Ok(response)
/// }
///
/// # async fn serve() -> std::io::Result<()> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:9001").await?;
/// loop {
///     let (tcp, _) = listener.accept().await?;
///     tokio::spawn(
///         http1::Builder::new()
///             .serve_connection(TokioIo::new(tcp), service_fn(handle))
///             .with_upgrades(),
///     );
/// }
/// # }
/// ```
// The refusal holds the response it answers with; boxing it would only add
// an allocation to a path that ends the request.
#[allow(clippy::result_large_err)]
pub fn upgrade<B>(
    request: &mut http::Request<B>,
    config: &ServerConfig,
) -> Result<(http::Response<UpgradeBody>, UpgradeFuture), UpgradeRefused> {
    upgrade_with(request, config, |_| Ok(Acceptance::default()))
}

/// [`upgrade`], letting `decide` look at the request after the RFC checks
/// and accept it (choosing a subprotocol, adding headers) or refuse it
/// with a response, e.g. `Response::reject(401, "token required")`, as
/// [`crate::accept_with`] does.
#[allow(clippy::result_large_err)]
pub fn upgrade_with<B, F>(
    request: &mut http::Request<B>,
    config: &ServerConfig,
    decide: F,
) -> Result<(http::Response<UpgradeBody>, UpgradeFuture), UpgradeRefused>
where
    F: FnOnce(&Request) -> Result<Acceptance, Response>,
{
    let (ws_request, transport) = from_http(
        request.method(),
        request.uri(),
        request.version(),
        request.headers(),
        request.extensions(),
    )
    .map_err(|e| UpgradeRefused::from_error(e, Transport::of(request.version())))?;
    let answer = answer(&ws_request, &transport, config, decide)?;
    Ok(answer.on(hyper::upgrade::on(request)))
}

/// Resolves to the WebSocket once hyper has written the 101 and handed
/// the connection over (see [`upgrade`]). hyper writes the 101 only after
/// the service returned it: spawn this future, do not await it in the
/// service.
#[must_use = "the WebSocket comes from this future: spawn it"]
pub struct UpgradeFuture {
    inner: Pin<Box<dyn Future<Output = Result<HyperWebSocket, Error>> + Send>>,
}

impl Future for UpgradeFuture {
    type Output = Result<HyperWebSocket, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl fmt::Debug for UpgradeFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpgradeFuture").finish_non_exhaustive()
    }
}

/// A request [`upgrade`] refused: the response to send (the status and
/// short text wsline's own server answers with: 400, 403, 405, 426, or
/// the application's own refusal) and why. Over HTTP/2 a version other
/// than 13 is answered with 400 rather than 426 (which asks for an
/// HTTP/1.1 `Upgrade`).
#[derive(Debug)]
pub struct UpgradeRefused {
    response: http::Response<UpgradeBody>,
    error: HandshakeError,
}

impl UpgradeRefused {
    /// The refusal wsline's server answers `error` with, over `transport`.
    pub(crate) fn from_error(error: HandshakeError, transport: Transport) -> Self {
        let response = match transport {
            Transport::Http1 => Response::from_error(&error),
            Transport::Http2 { .. } => Response::reject_extended_connect(&error),
        };
        Self {
            response: to_http(response, transport.is_http2()),
            error,
        }
    }

    /// A refusal with `response`, of the server's own choosing.
    #[cfg(feature = "axum")]
    pub(crate) fn from_response(response: Response, http2: bool) -> Self {
        let error = HandshakeError::Rejected {
            status: response.status,
            reason: response.reason.clone(),
            headers: response.headers.clone(),
            body: response.body.clone(),
        };
        Self {
            response: to_http(response, http2),
            error,
        }
    }

    /// The status of the response (the same as `self.error().status()`,
    /// but for a version refused over HTTP/2: 400).
    pub fn status(&self) -> StatusCode {
        self.response.status()
    }

    /// Why the request was refused.
    pub fn error(&self) -> &HandshakeError {
        &self.error
    }

    /// The response to send.
    pub fn into_response(self) -> http::Response<UpgradeBody> {
        self.response
    }
}

impl fmt::Display for UpgradeRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "WebSocket upgrade refused with {}: {}",
            self.response.status(),
            self.error
        )
    }
}

impl std::error::Error for UpgradeRefused {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl From<UpgradeRefused> for Error {
    fn from(refused: UpgradeRefused) -> Self {
        Error::Handshake(refused.error)
    }
}

/// Which opening handshake a request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Transport {
    /// An HTTP/1.x upgrade (RFC 6455 §4).
    Http1,
    /// An HTTP/2 request, with its `:protocol` (RFC 8441 §4) if any.
    Http2 { protocol: Option<String> },
}

impl Transport {
    /// The transport of a request of `version` whose head could not be
    /// read: for the shape of its refusal.
    pub(crate) fn of(version: Version) -> Self {
        if version == Version::HTTP_2 {
            Transport::Http2 { protocol: None }
        } else {
            Transport::Http1
        }
    }

    pub(crate) fn is_http2(&self) -> bool {
        matches!(self, Transport::Http2 { .. })
    }

    fn rules(&self) -> HandshakeRules<'_> {
        match self {
            Transport::Http1 => HandshakeRules::Http1,
            Transport::Http2 { protocol } => HandshakeRules::ExtendedConnect {
                protocol: protocol.as_deref(),
            },
        }
    }
}

/// wsline's view of a request head that hyper parsed: method, target,
/// version and header fields (a non-UTF-8 value in a field the handshake
/// reads is refused with 400, as wsline's own parser does), and which
/// handshake it asks for.
///
/// An HTTP/2 request keeps its method (`CONNECT`) and absolute target
/// (`Request::path` strips the scheme and authority), has
/// `version_minor` 0 (HTTP/2.0), and gets a `host` field from its
/// `:authority` when it has none, so that `Request::host` reads the same
/// over both versions.
pub(crate) fn from_http(
    method: &Method,
    uri: &Uri,
    version: Version,
    headers: &HeaderMap,
    extensions: &http::Extensions,
) -> Result<(Request, Transport), HandshakeError> {
    let (version_minor, transport) = match version {
        Version::HTTP_11 => (1, Transport::Http1),
        // Refused by the RFC checks, as on wsline's own server (400).
        Version::HTTP_10 | Version::HTTP_09 => (0, Transport::Http1),
        Version::HTTP_2 => (0, http2_transport(extensions)?),
        other => {
            return Err(HandshakeError::Malformed(format!(
                "WebSocket over {other:?} is not supported: use HTTP/1.1 or HTTP/2"
            )))
        }
    };
    let mut fields = Headers::new();
    for (name, value) in headers {
        fields.push_received(name.as_str(), value.as_bytes())?;
    }
    if transport.is_http2() && !fields.contains("host") {
        if let Some(authority) = uri.authority() {
            fields.push("host", authority.as_str());
        }
    }
    Ok((
        Request {
            method: method.as_str().to_owned(),
            // Origin form prints as path and query, absolute form in full
            // (`Request::path` strips the scheme and authority).
            target: uri.to_string(),
            version_minor,
            headers: fields,
        },
        transport,
    ))
}

/// An HTTP/2 request's `:protocol`, which hyper's HTTP/2 server puts in
/// the extensions as `hyper::ext::Protocol`.
#[cfg(feature = "http2")]
fn http2_transport(extensions: &http::Extensions) -> Result<Transport, HandshakeError> {
    let protocol = extensions
        .get::<hyper::ext::Protocol>()
        .map(|p| p.as_str().to_owned());
    Ok(Transport::Http2 { protocol })
}

#[cfg(not(feature = "http2"))]
fn http2_transport(_: &http::Extensions) -> Result<Transport, HandshakeError> {
    Err(HandshakeError::Malformed(
        "WebSocket over HTTP/2 (RFC 8441) needs wsline's `http2` feature: use HTTP/1.1".to_owned(),
    ))
}

/// The transport's own checks (RFC 6455 §4.2.1 or RFC 8441 §4–§5), before
/// the config's: for an extractor that refuses early.
#[cfg(feature = "axum")]
pub(crate) fn validate(request: &Request, transport: &Transport) -> Result<(), HandshakeError> {
    match transport.rules() {
        HandshakeRules::Http1 => wsline_proto::handshake::validate_request(request),
        HandshakeRules::ExtendedConnect { protocol } => {
            wsline_proto::handshake::validate_extended_connect(request, protocol)
        }
    }
}

/// An accepted request waiting for hyper's connection: the response to
/// send, and what the WebSocket is built from once upgraded.
pub(crate) struct Answer {
    response: http::Response<UpgradeBody>,
    conn: Connection,
    protocol: Option<String>,
    opening: Opening,
    timeout: Duration,
}

/// The server's answer to `request` ([`answer_request`], as every wsline
/// server path gives it), in the `http` crate's types.
#[allow(clippy::result_large_err)]
pub(crate) fn answer<F>(
    request: &Request,
    transport: &Transport,
    config: &ServerConfig,
    decide: F,
) -> Result<Answer, UpgradeRefused>
where
    F: FnOnce(&Request) -> Result<Acceptance, Response>,
{
    let now = tokio::time::Instant::now().into_std();
    let http2 = transport.is_http2();
    match answer_with(request, transport.rules(), config, decide, now) {
        // 101 for HTTP/1.1, 200 for an RFC 8441 stream.
        Ok(Accepted {
            response,
            conn,
            protocol,
        }) => Ok(Answer {
            response: to_http(response, http2),
            conn,
            protocol,
            opening: Opening::new(config),
            timeout: config.handshake_timeout,
        }),
        Err(Refused { response, error }) => Err(UpgradeRefused {
            response: to_http(response, http2),
            error,
        }),
    }
}

impl Answer {
    /// The response, and the future that opens the WebSocket on the
    /// connection `on_upgrade` hands over.
    pub(crate) fn on(self, on_upgrade: OnUpgrade) -> (http::Response<UpgradeBody>, UpgradeFuture) {
        let Answer {
            response,
            conn,
            protocol,
            opening,
            timeout,
        } = self;
        let future = async move {
            let upgraded = match tokio::time::timeout(timeout, on_upgrade).await {
                Err(_) => return Err(Error::HandshakeTimeout(timeout)),
                Ok(upgraded) => upgraded.map_err(Error::Upgrade)?,
            };
            // hyper keeps any bytes it read past the head inside
            // `Upgraded`: nothing is left over here. Over HTTP/2 it is the
            // stream: its shutdown is END_STREAM, not a TCP half-close.
            Ok(opening.open(TokioIo::new(upgraded), conn, &[], protocol))
        };
        (
            response,
            UpgradeFuture {
                inner: Box::pin(future),
            },
        )
    }
}

/// Header fields that belong to one HTTP/1.1 connection, which HTTP/2
/// forbids (RFC 9113 §8.2.2).
const CONNECTION_SPECIFIC: [&str; 5] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
];

/// wsline's response as an `http::Response`. hyper writes
/// `Content-Length` from the body; the reason phrase is the standard one.
/// For HTTP/2 (`http2`), connection-specific fields (e.g. the
/// `Connection: close` of a refusal) are left out.
fn to_http(response: Response, http2: bool) -> http::Response<UpgradeBody> {
    let Response {
        status,
        headers,
        body,
        ..
    } = response;
    let mut out = http::Response::new(Full::new(Bytes::from(body)));
    *out.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let map = out.headers_mut();
    for (name, value) in headers.iter() {
        let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
            continue;
        };
        if http2 && CONNECTION_SPECIFIC.contains(&name.as_str()) {
            continue;
        }
        if name != CONTENT_LENGTH {
            map.append(name, header_value(value));
        }
    }
    out
}

/// `value` as a header value: control characters (CR, LF, NUL...) become
/// spaces, as wsline's own writer does, so that a value from the
/// application cannot end its field.
fn header_value(value: &str) -> HeaderValue {
    HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| {
        let clean: Vec<u8> = value
            .bytes()
            .map(|b| {
                if (b < 0x20 && b != b'\t') || b == 0x7f {
                    b' '
                } else {
                    b
                }
            })
            .collect();
        HeaderValue::from_bytes(&clean).unwrap_or(HeaderValue::from_static(""))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_with_line_breaks_cannot_end_their_field() {
        let value = header_value("a\r\nSet-Cookie: x");
        assert_eq!(value.as_bytes(), b"a  Set-Cookie: x");
    }

    #[test]
    fn refusals_keep_status_type_and_text_and_leave_the_length_to_hyper() {
        let response = to_http(Response::reject(426, "version 13 only"), false);
        assert_eq!(response.status(), StatusCode::UPGRADE_REQUIRED);
        assert_eq!(response.headers()["sec-websocket-version"], "13");
        assert_eq!(response.headers()["connection"], "close");
        assert!(response.headers().get(CONTENT_LENGTH).is_none());
    }

    #[cfg(not(feature = "http2"))]
    #[test]
    fn http2_requests_are_refused_without_the_http2_feature() {
        let error = from_http(
            &Method::CONNECT,
            &Uri::from_static("https://example.com/chat"),
            Version::HTTP_2,
            &HeaderMap::new(),
            &http::Extensions::new(),
        )
        .unwrap_err();
        assert_eq!(error.status(), 400);
        assert!(error.to_string().contains("http2"), "{error}");
    }

    #[cfg(feature = "http2")]
    #[test]
    fn http2_requests_carry_their_protocol_and_authority_as_host() {
        let mut extensions = http::Extensions::new();
        extensions.insert(hyper::ext::Protocol::from_static("websocket"));
        let (request, transport) = from_http(
            &Method::CONNECT,
            &Uri::from_static("https://example.com/chat?room=1"),
            Version::HTTP_2,
            &HeaderMap::new(),
            &extensions,
        )
        .expect("a request");
        assert_eq!(
            transport,
            Transport::Http2 {
                protocol: Some("websocket".to_owned())
            }
        );
        assert_eq!(request.path(), "/chat");
        assert_eq!(request.query(), Some("room=1"));
        assert_eq!(request.host(), Some("example.com"));
    }

    #[test]
    fn http2_answers_leave_out_connection_specific_fields() {
        let response = to_http(Response::reject(403, "no"), true);
        assert!(response.headers().get("connection").is_none());
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
    }

    #[test]
    fn non_utf8_handshake_fields_are_refused_and_others_kept_lossily() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-note",
            HeaderValue::from_bytes(b"caf\xe9").expect("obs-text"),
        );
        let (request, _) = from_http(
            &Method::GET,
            &Uri::from_static("/chat?room=1"),
            Version::HTTP_11,
            &headers,
            &http::Extensions::new(),
        )
        .expect("a request");
        assert_eq!(request.path(), "/chat");
        assert_eq!(request.query(), Some("room=1"));
        assert_eq!(request.headers.get("x-note"), Some("caf\u{fffd}"));

        headers.insert(
            "origin",
            HeaderValue::from_bytes(b"\xff").expect("obs-text"),
        );
        let error = from_http(
            &Method::GET,
            &Uri::from_static("/"),
            Version::HTTP_11,
            &headers,
            &http::Extensions::new(),
        )
        .unwrap_err();
        assert_eq!(error.status(), 400);
    }
}
