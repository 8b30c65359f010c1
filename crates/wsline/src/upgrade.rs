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
//! The function chooses the status of the answer: 101 for an HTTP/1.1
//! upgrade. RFC 8441 (WebSocket over an HTTP/2 extended CONNECT, answered
//! with 200) will go through the same calls: see `from_http` and `answer`.

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

use crate::driver::{answer_request, Accepted, Refused};
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
    let ws_request = from_http(
        request.method(),
        request.uri(),
        request.version(),
        request.headers(),
    )
    .map_err(UpgradeRefused::from_error)?;
    let answer = answer(&ws_request, config, decide)?;
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
/// the application's own refusal) and why.
#[derive(Debug)]
pub struct UpgradeRefused {
    response: http::Response<UpgradeBody>,
    error: HandshakeError,
}

impl UpgradeRefused {
    /// The refusal wsline's server answers `error` with.
    pub(crate) fn from_error(error: HandshakeError) -> Self {
        Self {
            response: to_http(Response::from_error(&error)),
            error,
        }
    }

    /// A refusal with `response`, of the server's own choosing.
    #[cfg(feature = "axum")]
    pub(crate) fn from_response(response: Response) -> Self {
        let error = HandshakeError::Rejected {
            status: response.status,
            reason: response.reason.clone(),
            headers: response.headers.clone(),
            body: response.body.clone(),
        };
        Self {
            response: to_http(response),
            error,
        }
    }

    /// The status of the response (the same as `self.error().status()`).
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

/// wsline's view of a request head that hyper parsed: method, target,
/// version and header fields (a non-UTF-8 value in a field the handshake
/// reads is refused with 400, as wsline's own parser does).
pub(crate) fn from_http(
    method: &Method,
    uri: &Uri,
    version: Version,
    headers: &HeaderMap,
) -> Result<Request, HandshakeError> {
    let version_minor = match version {
        Version::HTTP_11 => 1,
        // Refused by the RFC checks, as on wsline's own server (400).
        Version::HTTP_10 | Version::HTTP_09 => 0,
        // RFC 8441 plugs in here: an HTTP/2 extended CONNECT
        // (`:protocol websocket`, hyper's `ext::Protocol` extension) is
        // checked by its own rules (no Upgrade, Connection or
        // Sec-WebSocket-Key), then goes through the same `answer`
        // (Origin, subprotocol, permessage-deflate, the config's timers),
        // answered with 200 and no Sec-WebSocket-Accept.
        other => {
            return Err(HandshakeError::Malformed(format!(
                "WebSocket over {other:?} is not supported: use HTTP/1.1"
            )))
        }
    };
    let mut fields = Headers::new();
    for (name, value) in headers {
        fields.push_received(name.as_str(), value.as_bytes())?;
    }
    Ok(Request {
        method: method.as_str().to_owned(),
        // Origin form prints as path and query, absolute form in full
        // (`Request::path` strips the scheme and authority).
        target: uri.to_string(),
        version_minor,
        headers: fields,
    })
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
    config: &ServerConfig,
    decide: F,
) -> Result<Answer, UpgradeRefused>
where
    F: FnOnce(&Request) -> Result<Acceptance, Response>,
{
    let now = tokio::time::Instant::now().into_std();
    match answer_request(request, config, decide, now) {
        // 101 for HTTP/1.1; an RFC 8441 stream will get 200 here.
        Ok(Accepted {
            response,
            conn,
            protocol,
        }) => Ok(Answer {
            response: to_http(response),
            conn,
            protocol,
            opening: Opening::new(config),
            timeout: config.handshake_timeout,
        }),
        Err(Refused { response, error }) => Err(UpgradeRefused {
            response: to_http(response),
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
            // `Upgraded`: nothing is left over here.
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

/// wsline's response as an `http::Response`. hyper writes
/// `Content-Length` from the body; the reason phrase is the standard one.
fn to_http(response: Response) -> http::Response<UpgradeBody> {
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
        let response = to_http(Response::reject(426, "version 13 only"));
        assert_eq!(response.status(), StatusCode::UPGRADE_REQUIRED);
        assert_eq!(response.headers()["sec-websocket-version"], "13");
        assert_eq!(response.headers()["connection"], "close");
        assert!(response.headers().get(CONTENT_LENGTH).is_none());
    }

    #[test]
    fn http2_requests_are_refused_until_rfc_8441_lands() {
        let error = from_http(
            &Method::CONNECT,
            &Uri::from_static("https://example.com/chat"),
            Version::HTTP_2,
            &HeaderMap::new(),
        )
        .unwrap_err();
        assert_eq!(error.status(), 400);
    }

    #[test]
    fn non_utf8_handshake_fields_are_refused_and_others_kept_lossily() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-note",
            HeaderValue::from_bytes(b"caf\xe9").expect("obs-text"),
        );
        let request = from_http(
            &Method::GET,
            &Uri::from_static("/chat?room=1"),
            Version::HTTP_11,
            &headers,
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
        )
        .unwrap_err();
        assert_eq!(error.status(), 400);
    }
}
