//! Server role of the opening handshake (RFC 6455 §4.2).
//!
//! This file owns parsing the client's upgrade request ([`parse_request`]),
//! the §4.2.1 validity checks ([`validate_request`]), the origin policy
//! ([`check_origin`]), subprotocol selection ([`select_subprotocol`]), and
//! writing the server's answer, whether `101 Switching Protocols` or a
//! refusal ([`Response`]).
//!
//! It also owns the same handshake over HTTP/2 (RFC 8441): the checks of
//! an extended CONNECT ([`validate_extended_connect`]) and its answers
//! ([`Response::accept_extended_connect`], 200 with no
//! `Sec-WebSocket-Accept`; [`Response::reject_extended_connect`]). The
//! HTTP/2 framing itself (`:protocol`, SETTINGS_ENABLE_CONNECT_PROTOCOL) is
//! the HTTP/2 server's; this file only sees the request it parsed.

use std::mem::MaybeUninit;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use super::{
    accept_key_into, convert_headers, map_httparse_error, parse_extensions, push_header,
    push_sanitized, reason_phrase, trim_ows, ExtensionOffer, HandshakeError, Headers,
    ACCEPT_KEY_LEN, MAX_HEADERS, WEBSOCKET_VERSION,
};

/// A parsed HTTP/1.x request head, as received from a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The request method, e.g. `GET`.
    pub method: String,
    /// The request target: path and query as sent.
    pub target: String,
    /// The minor HTTP version: `1` for HTTP/1.1, `0` for HTTP/1.0.
    pub version_minor: u8,
    /// The header fields in arrival order.
    pub headers: Headers,
}

impl Request {
    /// The path part of the target, without the query.
    ///
    /// For an absolute-form target (`http://host/path?q`) the scheme and
    /// authority are dropped; an empty path reads as `/`.
    pub fn path(&self) -> &str {
        let t = strip_absolute_form(&self.target);
        let path = t.split_once('?').map_or(t, |(p, _)| p);
        if path.is_empty() {
            "/"
        } else {
            path
        }
    }

    /// The query part of the target (after the first `?`), if any.
    pub fn query(&self) -> Option<&str> {
        strip_absolute_form(&self.target)
            .split_once('?')
            .map(|(_, q)| q)
    }

    /// The value of the first `Host` header, whitespace trimmed.
    pub fn host(&self) -> Option<&str> {
        self.headers.get("Host").map(trim_ows)
    }

    /// The value of the first `Origin` header, whitespace trimmed.
    pub fn origin(&self) -> Option<&str> {
        self.headers.get("Origin").map(trim_ows)
    }

    /// The value of the first `Sec-WebSocket-Key` header, whitespace trimmed.
    pub fn key(&self) -> Option<&str> {
        self.headers.get("Sec-WebSocket-Key").map(trim_ows)
    }

    /// All Sec-WebSocket-Protocol tokens, from all such headers, in order
    /// (empty list elements skipped).
    pub fn protocols(&self) -> Vec<String> {
        self.offered_protocols().map(str::to_owned).collect()
    }

    /// Whether the client offered subprotocol `protocol` (exact match, as
    /// RFC 6455 §4.2.2 compares them).
    pub fn offers_protocol(&self, protocol: &str) -> bool {
        self.offered_protocols().any(|p| p == protocol)
    }

    /// [`protocols`](Request::protocols), borrowed.
    fn offered_protocols(&self) -> impl Iterator<Item = &str> {
        self.headers
            .get_all("Sec-WebSocket-Protocol")
            .flat_map(|v| v.split(','))
            .map(trim_ows)
            .filter(|t| !t.is_empty())
    }

    /// The extensions offered in all `Sec-WebSocket-Extensions` headers, in
    /// order; [`HandshakeError::Malformed`] when their syntax is invalid.
    pub fn extensions(&self) -> Result<Vec<ExtensionOffer>, HandshakeError> {
        parse_extensions(self.headers.get_all("Sec-WebSocket-Extensions"))
    }
}

/// Drops `scheme://authority` from an absolute-form request target.
fn strip_absolute_form(target: &str) -> &str {
    if target.starts_with('/') {
        return target;
    }
    match target.split_once("://") {
        Some((scheme, rest))
            if !scheme.is_empty()
                && scheme
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)) =>
        {
            rest.find(['/', '?']).map_or("", |i| &rest[i..])
        }
        _ => target,
    }
}

/// Incremental: Ok(None) = head incomplete, read more. Ok(Some((req, consumed))) = head complete, `consumed` bytes used.
///
/// `buf` holds everything received so far; bytes after the head (the first
/// WebSocket frames, if the client pipelined them) are left for the caller.
///
/// Errors: [`HeadTooLarge`](HandshakeError::HeadTooLarge) as soon as
/// `buf.len() > max_head` without a complete head, even though the head is
/// still incomplete, so a server can refuse at once;
/// [`TooManyHeaders`](HandshakeError::TooManyHeaders) past
/// [`MAX_HEADERS`] fields; [`Malformed`](HandshakeError::Malformed) for
/// anything that is not an HTTP/1.x request head, including non-UTF-8 values
/// in the header fields the handshake interprets (`Host`, `Upgrade`,
/// `Connection`, `Origin`, `Sec-WebSocket-*`). Other fields are decoded
/// lossily.
pub fn parse_request(
    buf: &[u8],
    max_head: usize,
) -> Result<Option<(Request, usize)>, HandshakeError> {
    let window = &buf[..buf.len().min(max_head)];
    // Uninitialized: httparse fills in only the fields it finds, which
    // spares zeroing 4 KiB of header slots per call.
    let mut raw = [MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    match req
        .parse_with_uninit_headers(window, &mut raw)
        .map_err(map_httparse_error)?
    {
        httparse::Status::Partial => {
            if buf.len() > max_head {
                Err(HandshakeError::HeadTooLarge { limit: max_head })
            } else {
                Ok(None)
            }
        }
        httparse::Status::Complete(consumed) => {
            let incomplete = || HandshakeError::Malformed("incomplete request line".to_owned());
            let request = Request {
                method: req.method.ok_or_else(incomplete)?.to_owned(),
                target: req.path.ok_or_else(incomplete)?.to_owned(),
                version_minor: req.version.ok_or_else(incomplete)?,
                headers: convert_headers(req.headers)?,
            };
            Ok(Some((request, consumed)))
        }
    }
}

/// RFC 6455 §4.2.1 checks, in this order, each with its own error variant:
/// method GET (else 405 [`MethodNotAllowed`](HandshakeError::MethodNotAllowed)),
/// HTTP/1.1 or later (400), exactly one Host (400), Upgrade has token
/// `websocket` (400), Connection has token `upgrade` (400;
/// `Connection: keep-alive, Upgrade` is valid), Sec-WebSocket-Version is
/// exactly `13` (else 426 [`UnsupportedVersion`](HandshakeError::UnsupportedVersion);
/// also when missing), Sec-WebSocket-Key present, exactly one, base64-decodes
/// to exactly 16 bytes (400 [`BadKey`](HandshakeError::BadKey)).
///
/// Header names and the `websocket`/`upgrade` tokens are matched
/// ASCII case-insensitively. The origin policy is separate:
/// [`check_origin`].
pub fn validate_request(req: &Request) -> Result<(), HandshakeError> {
    if req.method != "GET" {
        return Err(HandshakeError::MethodNotAllowed(req.method.clone()));
    }
    if req.version_minor < 1 {
        return Err(HandshakeError::UnsupportedHttpVersion);
    }
    match req.headers.get_all("Host").count() {
        0 => return Err(HandshakeError::MissingHost),
        1 => {}
        _ => {
            return Err(HandshakeError::Malformed(
                "more than one Host header".to_owned(),
            ))
        }
    }
    if !req.headers.has_token("Upgrade", "websocket") {
        return Err(HandshakeError::MissingUpgrade);
    }
    if !req.headers.has_token("Connection", "upgrade") {
        return Err(HandshakeError::MissingConnectionUpgrade);
    }
    check_version(req)?;
    let mut keys = req.headers.get_all("Sec-WebSocket-Key");
    let key = match (keys.next(), keys.next()) {
        (Some(key), None) => trim_ows(key),
        _ => return Err(HandshakeError::BadKey),
    };
    // A 16-byte value is 24 base64 characters; checking the length first
    // keeps oversized input away from the decoder, whose output needs room
    // for 18 bytes before the padding is accounted for.
    let mut decoded = [0; 18];
    if key.len() != 24 || STANDARD.decode_slice(key, &mut decoded) != Ok(16) {
        return Err(HandshakeError::BadKey);
    }
    Ok(())
}

/// The `:protocol` of an RFC 8441 extended CONNECT that opens a WebSocket.
pub const EXTENDED_CONNECT_PROTOCOL: &str = "websocket";

/// RFC 8441 §4–§5 checks on a WebSocket request over HTTP/2: an extended
/// CONNECT whose `:protocol` pseudo-header (which HTTP/2 servers keep out
/// of the header fields: pass it as `protocol`) is `websocket`.
///
/// In this order:
/// 1. method `CONNECT` (else 405
///    [`MethodNotAllowed`](HandshakeError::MethodNotAllowed));
/// 2. `protocol` is `websocket`, ASCII case-insensitively (else 400
///    [`Malformed`](HandshakeError::Malformed): a CONNECT without it is a
///    plain tunnel request, one with another value another protocol);
/// 3. exactly one `Sec-WebSocket-Version: 13` (else
///    [`UnsupportedVersion`](HandshakeError::UnsupportedVersion), answered
///    over HTTP/2 with 400 by [`Response::reject_extended_connect`]).
///
/// There is no Host (the `:authority` replaces it), no
/// `Upgrade`/`Connection` (connection-specific fields do not exist in
/// HTTP/2) and no `Sec-WebSocket-Key` (RFC 8441 §5: the stream is already
/// the client's). `Origin`, subprotocols and extensions are checked as
/// over HTTP/1.1: [`check_origin`], [`select_subprotocol`],
/// [`Request::extensions`].
pub fn validate_extended_connect(
    req: &Request,
    protocol: Option<&str>,
) -> Result<(), HandshakeError> {
    if req.method != "CONNECT" {
        return Err(HandshakeError::MethodNotAllowed(req.method.clone()));
    }
    match protocol {
        Some(p) if p.eq_ignore_ascii_case(EXTENDED_CONNECT_PROTOCOL) => {}
        Some(other) => {
            return Err(HandshakeError::Malformed(format!(
                "extended CONNECT for :protocol {other:?}, not websocket"
            )))
        }
        None => {
            return Err(HandshakeError::Malformed(
                "a WebSocket over HTTP/2 is an extended CONNECT with :protocol websocket \
                 (RFC 8441), not a plain CONNECT"
                    .to_owned(),
            ))
        }
    }
    check_version(req)
}

/// Exactly one `Sec-WebSocket-Version`, equal to 13.
fn check_version(req: &Request) -> Result<(), HandshakeError> {
    let versions = || req.headers.get_all("Sec-WebSocket-Version").map(trim_ows);
    let mut found = versions();
    if (found.next(), found.next()) != (Some(WEBSOCKET_VERSION), None) {
        let got = versions().collect::<Vec<_>>();
        let got = (!got.is_empty()).then(|| got.join(", "));
        return Err(HandshakeError::UnsupportedVersion(got));
    }
    Ok(())
}

/// Origin policy: allowed empty → Ok. A request without Origin → Ok.
/// Otherwise Origin must equal one entry (ASCII case-insensitive) → else
/// Err([`OriginRefused`](HandshakeError::OriginRefused)) (403).
///
/// A request with several `Origin` headers is refused unless every one of
/// them is allowed. Note that browsers always send `Origin`; non-browser
/// clients may omit it, which is why its absence is accepted.
pub fn check_origin(req: &Request, allowed: &[String]) -> Result<(), HandshakeError> {
    if allowed.is_empty() {
        return Ok(());
    }
    for origin in req.headers.get_all("Origin").map(trim_ows) {
        if !allowed.iter().any(|a| a.eq_ignore_ascii_case(origin)) {
            return Err(HandshakeError::OriginRefused(origin.to_owned()));
        }
    }
    Ok(())
}

/// Server preference order: first of `supported` that the client offered
/// (exact match), None if none in common.
pub fn select_subprotocol(req: &Request, supported: &[String]) -> Option<String> {
    supported
        .iter()
        .find(|s| req.offered_protocols().any(|o| o == s.as_str()))
        .cloned()
}

/// An HTTP response head and body for the server to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// Status code, e.g. `101`.
    pub status: u16,
    /// Reason phrase, e.g. `Switching Protocols`.
    pub reason: String,
    /// Header fields, written in order.
    pub headers: Headers,
    /// Body bytes, written after the head (empty for `101`).
    pub body: Vec<u8>,
}

impl Response {
    /// 101 Switching Protocols with Upgrade: websocket, Connection: Upgrade,
    /// Sec-WebSocket-Accept; plus Sec-WebSocket-Protocol if protocol is Some,
    /// Sec-WebSocket-Extensions if extensions is Some (already formatted),
    /// then `extra` headers.
    ///
    /// Call it only for a request that passed [`validate_request`]; the
    /// accept value is computed from [`Request::key`].
    pub fn accept(
        req: &Request,
        protocol: Option<&str>,
        extensions: Option<&str>,
        extra: &Headers,
    ) -> Response {
        let mut key = [0; ACCEPT_KEY_LEN];
        let accept = accept_key_into(req.key().unwrap_or_default(), &mut key);
        let ours = [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", accept),
        ];
        let optional = [
            protocol.map(|p| ("Sec-WebSocket-Protocol", p)),
            extensions.map(|e| ("Sec-WebSocket-Extensions", e)),
        ];
        let fields = || {
            ours.iter()
                .copied()
                .chain(optional.iter().flatten().copied())
                .chain(extra.iter())
        };
        let text = fields().map(|(n, v)| n.len() + v.len()).sum();
        let mut headers = Headers::with_capacity(fields().count(), text);
        for (name, value) in fields() {
            headers.push_str(name, value);
        }
        Response {
            status: 101,
            reason: reason_phrase(101).to_owned(),
            headers,
            body: Vec::new(),
        }
    }

    /// 200 for an RFC 8441 extended CONNECT (a request that passed
    /// [`validate_extended_connect`]): `Sec-WebSocket-Protocol` if
    /// `protocol` is Some, `Sec-WebSocket-Extensions` if `extensions` is
    /// Some, then `extra`. No `Upgrade`, `Connection` or
    /// `Sec-WebSocket-Accept` (RFC 8441 §5).
    pub fn accept_extended_connect(
        protocol: Option<&str>,
        extensions: Option<&str>,
        extra: &Headers,
    ) -> Response {
        let mut headers = Headers::new();
        if let Some(p) = protocol {
            headers.push_str("Sec-WebSocket-Protocol", p);
        }
        if let Some(e) = extensions {
            headers.push_str("Sec-WebSocket-Extensions", e);
        }
        for (name, value) in extra.iter() {
            headers.push_str(name, value);
        }
        Response {
            status: 200,
            reason: reason_phrase(200).to_owned(),
            headers,
            body: Vec::new(),
        }
    }

    /// The refusal of an extended CONNECT for an error from
    /// [`validate_extended_connect`] or [`check_origin`]: as
    /// [`from_error`](Response::from_error), except that a version other
    /// than 13 is a 400 (with `Sec-WebSocket-Version: 13`: 426 asks for an
    /// `Upgrade`, which HTTP/2 does not have), a wrong method's `Allow` is
    /// `CONNECT`, and there is no `Connection` field (HTTP/2 forbids it;
    /// the stream ends with the answer, not the connection).
    pub fn reject_extended_connect(err: &HandshakeError) -> Response {
        let status = match err {
            HandshakeError::UnsupportedVersion(_) => 400,
            other => match other.status() {
                s @ 400..=599 => s,
                _ => 500,
            },
        };
        let generic = Response::reject(status, &err.to_string());
        let mut headers = Headers::new();
        for (name, value) in generic.headers.iter() {
            if name.eq_ignore_ascii_case("Connection") || name.eq_ignore_ascii_case("Allow") {
                continue;
            }
            headers.push_str(name, value);
        }
        match err {
            HandshakeError::UnsupportedVersion(_) => {
                headers.push_str("Sec-WebSocket-Version", WEBSOCKET_VERSION)
            }
            HandshakeError::MethodNotAllowed(_) => headers.push_str("Allow", "CONNECT"),
            _ => {}
        }
        Response { headers, ..generic }
    }

    /// Refusal: status + standard reason phrase,
    /// `Content-Type: text/plain; charset=utf-8`, `Content-Length`,
    /// `Connection: close`, body = text + "\n". 426 also carries
    /// `Sec-WebSocket-Version: 13`. 405 carries `Allow: GET`.
    pub fn reject(status: u16, text: &str) -> Response {
        let mut body = Vec::with_capacity(text.len() + 1);
        body.extend_from_slice(text.as_bytes());
        body.push(b'\n');
        let mut headers = Headers::new();
        headers.push("Content-Type", "text/plain; charset=utf-8");
        headers.push("Content-Length", body.len().to_string());
        headers.push("Connection", "close");
        match status {
            426 => headers.push("Sec-WebSocket-Version", WEBSOCKET_VERSION),
            405 => headers.push("Allow", "GET"),
            _ => {}
        }
        Response {
            status,
            reason: reason_phrase(status).to_owned(),
            headers,
            body,
        }
    }

    /// The refusal for an error from parse/validate/check_origin:
    /// `Response::reject(err.status(), &err.to_string())`.
    ///
    /// Client-side errors have no server status; should one be passed
    /// anyway, anything outside 400..=599 is answered as 500.
    pub fn from_error(err: &HandshakeError) -> Response {
        let status = match err.status() {
            s @ 400..=599 => s,
            _ => 500,
        };
        Response::reject(status, &err.to_string())
    }

    /// The bytes to send: `HTTP/1.1 <status> <reason>\r\n`, the header
    /// fields, a blank line, then the body.
    ///
    /// CR, LF and NUL in the reason phrase and header fields are written as
    /// spaces, so caller-supplied values cannot inject header lines.
    pub fn to_bytes(&self) -> Vec<u8> {
        // "HTTP/1.1 " + up to 5 digits + " " + reason + CRLF, then
        // "name: value" + CRLF per field, then CRLF and the body.
        let len = 15
            + 2
            + self.reason.len()
            + self.headers.text_len()
            + 4 * self.headers.len()
            + 2
            + self.body.len();
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(b"HTTP/1.1 ");
        push_status(&mut out, self.status);
        out.push(b' ');
        push_sanitized(&mut out, &self.reason);
        out.extend_from_slice(b"\r\n");
        for (name, value) in self.headers.iter() {
            push_header(&mut out, name, value);
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }
}

/// Appends `status` in decimal, zero-padded to three digits as a status
/// line needs (`{:03}` without going through `format!`).
fn push_status(out: &mut Vec<u8>, status: u16) {
    let mut digits = [b'0'; 5];
    let mut rest = status;
    let mut first = digits.len();
    while rest > 0 {
        first -= 1;
        digits[first] = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    out.extend_from_slice(&digits[first.min(digits.len() - 3)..]);
}

#[cfg(test)]
mod tests {
    use super::super::MAX_HEAD_SIZE_DEFAULT;
    use super::*;
    use proptest::prelude::*;

    const SAMPLE: &str = "GET /chat?x=1 HTTP/1.1\r\n\
        Host: server.example.com\r\n\
        Upgrade: websocket\r\n\
        Connection: Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Origin: http://example.com\r\n\
        Sec-WebSocket-Protocol: chat, superchat\r\n\
        Sec-WebSocket-Version: 13\r\n\
        \r\n";

    fn parse(s: &str) -> Request {
        parse_request(s.as_bytes(), MAX_HEAD_SIZE_DEFAULT)
            .expect("parses")
            .expect("complete")
            .0
    }

    fn sample() -> Request {
        parse(SAMPLE)
    }

    /// The sample request with `name` removed and `lines` added.
    fn variant(remove: &str, add: &[(&str, &str)]) -> Request {
        let mut req = sample();
        let mut headers: Headers = req
            .headers
            .iter()
            .filter(|(n, _)| !n.eq_ignore_ascii_case(remove))
            .collect();
        headers.extend(add.iter().copied());
        req.headers = headers;
        req
    }

    #[test]
    fn parses_the_rfc_sample() {
        let (req, used) = parse_request(SAMPLE.as_bytes(), MAX_HEAD_SIZE_DEFAULT)
            .unwrap()
            .unwrap();
        assert_eq!(used, SAMPLE.len());
        assert_eq!(req.method, "GET");
        assert_eq!(req.target, "/chat?x=1");
        assert_eq!(req.version_minor, 1);
        assert_eq!(req.headers.len(), 7);
        assert_eq!(req.path(), "/chat");
        assert_eq!(req.query(), Some("x=1"));
        assert_eq!(req.host(), Some("server.example.com"));
        assert_eq!(req.origin(), Some("http://example.com"));
        assert_eq!(req.key(), Some("dGhlIHNhbXBsZSBub25jZQ=="));
        assert_eq!(req.protocols(), ["chat", "superchat"]);
        assert!(req.offers_protocol("superchat"));
        assert!(!req.offers_protocol("Chat"), "subprotocols match exactly");
        assert!(!req.offers_protocol("chat, superchat"));
        assert_eq!(req.extensions().unwrap(), []);
        validate_request(&req).unwrap();
    }

    #[test]
    fn leaves_bytes_after_the_head() {
        let mut buf = SAMPLE.as_bytes().to_vec();
        buf.extend_from_slice(b"\x81\x85rest");
        let (_, used) = parse_request(&buf, MAX_HEAD_SIZE_DEFAULT).unwrap().unwrap();
        assert_eq!(&buf[used..], b"\x81\x85rest");
    }

    #[test]
    fn parses_incrementally_byte_by_byte() {
        let bytes = SAMPLE.as_bytes();
        for end in 0..bytes.len() {
            assert_eq!(
                parse_request(&bytes[..end], MAX_HEAD_SIZE_DEFAULT),
                Ok(None),
                "at {end}"
            );
        }
        let (req, used) = parse_request(bytes, MAX_HEAD_SIZE_DEFAULT)
            .unwrap()
            .unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(req, sample());
    }

    #[test]
    fn head_too_large_is_detected_before_the_head_completes() {
        let buf = b"GET / HTTP/1.1\r\nX-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        assert_eq!(parse_request(&buf[..32], 32), Ok(None));
        assert_eq!(
            parse_request(&buf[..33], 32),
            Err(HandshakeError::HeadTooLarge { limit: 32 })
        );
        let err = parse_request(buf, 32).unwrap_err();
        assert_eq!(err.status(), 431);
        // A complete head within the limit is fine even with more bytes after it.
        let mut buf = SAMPLE.as_bytes().to_vec();
        buf.extend_from_slice(&[0u8; 64]);
        assert!(parse_request(&buf, SAMPLE.len()).unwrap().is_some());
        assert_eq!(
            parse_request(&buf, SAMPLE.len() - 1),
            Err(HandshakeError::HeadTooLarge {
                limit: SAMPLE.len() - 1
            })
        );
    }

    #[test]
    fn too_many_headers_is_431() {
        let mut s = String::from("GET / HTTP/1.1\r\n");
        for i in 0..=MAX_HEADERS {
            s.push_str(&format!("X-{i}: v\r\n"));
        }
        s.push_str("\r\n");
        let err = parse_request(s.as_bytes(), MAX_HEAD_SIZE_DEFAULT).unwrap_err();
        assert_eq!(err, HandshakeError::TooManyHeaders { limit: MAX_HEADERS });
        assert_eq!(err.status(), 431);
    }

    #[test]
    fn garbage_is_malformed() {
        for bad in [
            &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"[..],
            b"GET / HTTP/2.0\r\n\r\n",
            b"GET / FOO\r\n\r\n",
            b"GET /a b HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n",
        ] {
            let err = parse_request(bad, MAX_HEAD_SIZE_DEFAULT).unwrap_err();
            assert!(
                matches!(err, HandshakeError::Malformed(_)),
                "{bad:?}: {err}"
            );
            assert_eq!(err.status(), 400);
        }
    }

    #[test]
    fn non_utf8_websocket_headers_are_malformed_others_lossy() {
        let bad = b"GET / HTTP/1.1\r\nSec-WebSocket-Key: \xff\xfe\r\n\r\n";
        let err = parse_request(bad, MAX_HEAD_SIZE_DEFAULT).unwrap_err();
        assert_eq!(
            err,
            HandshakeError::Malformed("the Sec-WebSocket-Key header is not valid UTF-8".into())
        );
        let bad = b"GET / HTTP/1.1\r\norigin: \xe9\r\n\r\n";
        assert!(parse_request(bad, MAX_HEAD_SIZE_DEFAULT).is_err());
        let ok = b"GET / HTTP/1.1\r\nUser-Agent: caf\xe9\r\n\r\n";
        let (req, _) = parse_request(ok, MAX_HEAD_SIZE_DEFAULT).unwrap().unwrap();
        assert_eq!(req.headers.get("user-agent"), Some("caf\u{fffd}"));
    }

    #[test]
    fn utf8_values_are_kept_and_one_bad_value_spoils_no_other() {
        let head = "GET / HTTP/1.1\r\nHost: h\r\nX-Name: caf\u{e9} \u{1f600}\r\n\
                    Origin: https://\u{e9}.example\r\n\r\n";
        let req = parse(head);
        assert_eq!(
            req.headers.iter().collect::<Vec<_>>(),
            [
                ("Host", "h"),
                ("X-Name", "caf\u{e9} \u{1f600}"),
                ("Origin", "https://\u{e9}.example"),
            ]
        );
        let mut bad = b"GET / HTTP/1.1\r\nHost: h\r\nX-Bad: \xc3\r\n".to_vec();
        bad.extend_from_slice("X-Good: caf\u{e9}\r\nUpgrade: websocket\r\n\r\n".as_bytes());
        let (req, _) = parse_request(&bad, MAX_HEAD_SIZE_DEFAULT).unwrap().unwrap();
        assert_eq!(
            req.headers.iter().collect::<Vec<_>>(),
            [
                ("Host", "h"),
                ("X-Bad", "\u{fffd}"),
                ("X-Good", "caf\u{e9}"),
                ("Upgrade", "websocket"),
            ]
        );
    }

    #[test]
    fn header_names_and_tokens_are_case_insensitive() {
        let req = parse(
            "GET / HTTP/1.1\r\nhost: a\r\nUPGRADE: WebSocket\r\nconnection: UPGRADE\r\n\
             sec-websocket-version: 13\r\nSEC-WEBSOCKET-KEY: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        );
        validate_request(&req).unwrap();
    }

    #[test]
    fn connection_token_list_is_accepted() {
        let req = variant("Connection", &[("Connection", "keep-alive, Upgrade")]);
        validate_request(&req).unwrap();
        let req = variant(
            "Connection",
            &[("Connection", "keep-alive"), ("Connection", "upgrade")],
        );
        validate_request(&req).unwrap();
        let req = variant("Upgrade", &[("Upgrade", "h2c, websocket")]);
        validate_request(&req).unwrap();
    }

    #[test]
    fn refuses_non_get() {
        let mut req = sample();
        req.method = "POST".into();
        let err = validate_request(&req).unwrap_err();
        assert_eq!(err, HandshakeError::MethodNotAllowed("POST".into()));
        assert_eq!(err.status(), 405);
        // Method names are case-sensitive in HTTP.
        req.method = "get".into();
        assert!(validate_request(&req).is_err());
    }

    #[test]
    fn refuses_http_1_0() {
        let req = parse(&SAMPLE.replacen("HTTP/1.1", "HTTP/1.0", 1));
        assert_eq!(
            validate_request(&req),
            Err(HandshakeError::UnsupportedHttpVersion)
        );
    }

    #[test]
    fn refuses_missing_or_repeated_host() {
        let err = validate_request(&variant("Host", &[])).unwrap_err();
        assert_eq!(err, HandshakeError::MissingHost);
        assert_eq!(err.status(), 400);
        let err = validate_request(&variant("Host", &[("Host", "a"), ("Host", "b")])).unwrap_err();
        assert!(matches!(err, HandshakeError::Malformed(_)));
    }

    #[test]
    fn refuses_missing_upgrade() {
        assert_eq!(
            validate_request(&variant("Upgrade", &[])),
            Err(HandshakeError::MissingUpgrade)
        );
        assert_eq!(
            validate_request(&variant("Upgrade", &[("Upgrade", "websocket2")])),
            Err(HandshakeError::MissingUpgrade)
        );
    }

    #[test]
    fn refuses_missing_connection_upgrade() {
        assert_eq!(
            validate_request(&variant("Connection", &[])),
            Err(HandshakeError::MissingConnectionUpgrade)
        );
        assert_eq!(
            validate_request(&variant("Connection", &[("Connection", "keep-alive")])),
            Err(HandshakeError::MissingConnectionUpgrade)
        );
    }

    #[test]
    fn refuses_other_websocket_versions_with_426() {
        let err = validate_request(&variant("Sec-WebSocket-Version", &[])).unwrap_err();
        assert_eq!(err, HandshakeError::UnsupportedVersion(None));
        assert_eq!(err.status(), 426);
        for bad in ["8", "13, 8", "14", ""] {
            let req = variant("Sec-WebSocket-Version", &[("Sec-WebSocket-Version", bad)]);
            assert_eq!(
                validate_request(&req),
                Err(HandshakeError::UnsupportedVersion(Some(bad.into())))
            );
        }
        let req = variant(
            "Sec-WebSocket-Version",
            &[
                ("Sec-WebSocket-Version", "13"),
                ("Sec-WebSocket-Version", "13"),
            ],
        );
        assert_eq!(
            validate_request(&req),
            Err(HandshakeError::UnsupportedVersion(Some("13, 13".into())))
        );
        let req = variant(
            "Sec-WebSocket-Version",
            &[("Sec-WebSocket-Version", " 13 ")],
        );
        validate_request(&req).unwrap();
    }

    #[test]
    fn refuses_bad_keys() {
        const K: &str = "Sec-WebSocket-Key";
        assert_eq!(
            validate_request(&variant(K, &[])),
            Err(HandshakeError::BadKey)
        );
        for bad in [
            "",
            "dGhlIHNhbXBsZSBub25jZQ",    // unpadded
            "dGhlIHNhbXBsZSBub25jZQ=",   // wrong padding
            "dGhlIHNhbXBsZSBub25jZR==",  // non-canonical trailing bits
            "dGhlIHNhbXBsZSBub25jZSE=",  // 17 bytes
            "dGhlIHNhbXBsZSBub25jZSEh",  // 18 bytes, 24 characters
            "dGhlIHNhbXBsZSBub25j",      // 15 bytes
            "dGhl!HNhbXBsZSBub25jZQ==",  // not base64
            "dGhlIHNhbXBsZSBub25jZQ==x", // trailing junk
        ] {
            assert_eq!(
                validate_request(&variant(K, &[(K, bad)])),
                Err(HandshakeError::BadKey),
                "{bad:?}"
            );
        }
        // Duplicate keys, even identical ones, are refused.
        let dup = [
            (K, "dGhlIHNhbXBsZSBub25jZQ=="),
            (K, "dGhlIHNhbXBsZSBub25jZQ=="),
        ];
        assert_eq!(
            validate_request(&variant(K, &dup)),
            Err(HandshakeError::BadKey)
        );
        assert_eq!(HandshakeError::BadKey.status(), 400);
    }

    #[test]
    fn checks_run_in_the_documented_order() {
        // Everything wrong: the method is reported first.
        let req = Request {
            method: "PUT".into(),
            target: "/".into(),
            version_minor: 0,
            headers: Headers::new(),
        };
        assert!(matches!(
            validate_request(&req),
            Err(HandshakeError::MethodNotAllowed(_))
        ));
        let req = Request {
            method: "GET".into(),
            ..req
        };
        assert_eq!(
            validate_request(&req),
            Err(HandshakeError::UnsupportedHttpVersion)
        );
        let req = Request {
            version_minor: 1,
            ..req
        };
        assert_eq!(validate_request(&req), Err(HandshakeError::MissingHost));
        let mut req = req;
        req.headers.push("Host", "h");
        assert_eq!(validate_request(&req), Err(HandshakeError::MissingUpgrade));
        req.headers.push("Upgrade", "websocket");
        assert_eq!(
            validate_request(&req),
            Err(HandshakeError::MissingConnectionUpgrade)
        );
        req.headers.push("Connection", "upgrade");
        assert_eq!(
            validate_request(&req),
            Err(HandshakeError::UnsupportedVersion(None))
        );
        req.headers.push("Sec-WebSocket-Version", "13");
        assert_eq!(validate_request(&req), Err(HandshakeError::BadKey));
        req.headers
            .push("Sec-WebSocket-Key", "AAAAAAAAAAAAAAAAAAAAAA==");
        assert_eq!(validate_request(&req), Ok(()));
    }

    #[test]
    fn origin_policy() {
        let req = sample();
        let allowed = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(check_origin(&req, &[]), Ok(()));
        assert_eq!(
            check_origin(&req, &allowed(&["http://example.com"])),
            Ok(())
        );
        assert_eq!(
            check_origin(&req, &allowed(&["https://x", "HTTP://EXAMPLE.COM"])),
            Ok(())
        );
        let err = check_origin(&req, &allowed(&["https://example.com"])).unwrap_err();
        assert_eq!(
            err,
            HandshakeError::OriginRefused("http://example.com".into())
        );
        assert_eq!(err.status(), 403);
        let no_origin = variant("Origin", &[]);
        assert_eq!(check_origin(&no_origin, &allowed(&["https://x"])), Ok(()));
        let two = variant(
            "Origin",
            &[("Origin", "https://x"), ("Origin", "https://evil")],
        );
        assert_eq!(
            check_origin(&two, &allowed(&["https://x"])),
            Err(HandshakeError::OriginRefused("https://evil".into()))
        );
    }

    #[test]
    fn subprotocol_selection_follows_server_preference() {
        let req = variant(
            "Sec-WebSocket-Protocol",
            &[
                ("Sec-WebSocket-Protocol", "a, b"),
                ("sec-websocket-protocol", " ,c"),
            ],
        );
        assert_eq!(req.protocols(), ["a", "b", "c"]);
        let s = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            select_subprotocol(&req, &s(&["c", "a"])).as_deref(),
            Some("c")
        );
        assert_eq!(
            select_subprotocol(&req, &s(&["x", "b"])).as_deref(),
            Some("b")
        );
        assert_eq!(select_subprotocol(&req, &s(&["A"])), None);
        assert_eq!(select_subprotocol(&req, &[]), None);
        assert_eq!(
            select_subprotocol(&variant("Sec-WebSocket-Protocol", &[]), &s(&["a"])),
            None
        );
    }

    #[test]
    fn request_extensions_are_parsed_or_refused() {
        let req = variant(
            "",
            &[
                (
                    "Sec-WebSocket-Extensions",
                    "permessage-deflate; client_max_window_bits",
                ),
                ("Sec-WebSocket-Extensions", "x-foo"),
            ],
        );
        let ext = req.extensions().unwrap();
        assert_eq!(ext.len(), 2);
        assert_eq!(ext[1].name, "x-foo");
        let bad = variant("", &[("Sec-WebSocket-Extensions", "a;;")]);
        assert!(matches!(
            bad.extensions(),
            Err(HandshakeError::Malformed(_))
        ));
    }

    #[test]
    fn target_path_and_query() {
        let mut req = sample();
        for (target, path, query) in [
            ("/", "/", None),
            ("/a/b", "/a/b", None),
            ("/a?", "/a", Some("")),
            ("/a?b=1?c", "/a", Some("b=1?c")),
            ("http://h:1/p?q", "/p", Some("q")),
            ("ws://h", "/", None),
            ("https://h?q", "/", Some("q")),
            ("*", "*", None),
        ] {
            req.target = target.into();
            assert_eq!(req.path(), path, "{target}");
            assert_eq!(req.query(), query, "{target}");
        }
    }

    #[test]
    fn accept_response_bytes() {
        let req = sample();
        let mut extra = Headers::new();
        extra.push("Server", "wsline");
        let resp = Response::accept(&req, Some("chat"), Some("permessage-deflate"), &extra);
        assert_eq!(resp.status, 101);
        assert_eq!(
            String::from_utf8(resp.to_bytes()).unwrap(),
            "HTTP/1.1 101 Switching Protocols\r\n\
             Upgrade: websocket\r\n\
             Connection: Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
             Sec-WebSocket-Protocol: chat\r\n\
             Sec-WebSocket-Extensions: permessage-deflate\r\n\
             Server: wsline\r\n\
             \r\n"
        );
        let plain = Response::accept(&req, None, None, &Headers::new());
        assert_eq!(plain.headers.len(), 3);
        assert!(plain.body.is_empty());
    }

    /// The 101 answer, byte for byte, for a browser-like request: pinned so
    /// that work on `accept`/`to_bytes` cannot change what goes on the wire.
    #[test]
    fn accept_response_bytes_are_pinned() {
        let req = parse(
            "GET /chat HTTP/1.1\r\n\
             Host: localhost:9001\r\n\
             Connection: Upgrade\r\n\
             User-Agent: Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0.0.0\r\n\
             Upgrade: websocket\r\n\
             Origin: http://localhost:9001\r\n\
             Sec-WebSocket-Version: 13\r\n\
             Accept-Encoding: gzip, deflate, br, zstd\r\n\
             Sec-WebSocket-Key: \t x3JJHMbDL1EzLkh9GBhXDw== \r\n\
             Sec-WebSocket-Protocol: chat, superchat\r\n\
             Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
             \r\n",
        );
        validate_request(&req).unwrap();
        let plain = Response::accept(&req, None, None, &Headers::new());
        assert_eq!(
            plain.to_bytes(),
            b"HTTP/1.1 101 Switching Protocols\r\n\
              Upgrade: websocket\r\n\
              Connection: Upgrade\r\n\
              Sec-WebSocket-Accept: HSmrc0sMlYUkAGmm5OPpG2HaGWk=\r\n\
              \r\n"
        );
        let mut extra = Headers::new();
        extra.push("Server", "wsline");
        extra.push("Set-Cookie", "a=1\r\nInjected: yes");
        extra.push("X-Empty", "");
        let full = Response::accept(
            &req,
            Some("chat"),
            Some("permessage-deflate; client_max_window_bits=15"),
            &extra,
        );
        assert_eq!(
            full.to_bytes(),
            b"HTTP/1.1 101 Switching Protocols\r\n\
              Upgrade: websocket\r\n\
              Connection: Upgrade\r\n\
              Sec-WebSocket-Accept: HSmrc0sMlYUkAGmm5OPpG2HaGWk=\r\n\
              Sec-WebSocket-Protocol: chat\r\n\
              Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=15\r\n\
              Server: wsline\r\n\
              Set-Cookie: a=1  Injected: yes\r\n\
              X-Empty: \r\n\
              \r\n"
        );
        assert_eq!(
            full.headers.iter().collect::<Vec<_>>(),
            [
                ("Upgrade", "websocket"),
                ("Connection", "Upgrade"),
                ("Sec-WebSocket-Accept", "HSmrc0sMlYUkAGmm5OPpG2HaGWk="),
                ("Sec-WebSocket-Protocol", "chat"),
                (
                    "Sec-WebSocket-Extensions",
                    "permessage-deflate; client_max_window_bits=15"
                ),
                ("Server", "wsline"),
                ("Set-Cookie", "a=1\r\nInjected: yes"),
                ("X-Empty", ""),
            ]
        );
        assert_eq!(full.reason, "Switching Protocols");
        assert!(full.body.is_empty());
    }

    #[test]
    fn status_line_pads_and_sanitizes() {
        let mut resp = Response::reject(400, "x");
        resp.headers = Headers::new();
        resp.body.clear();
        for (status, line) in [
            (0, "HTTP/1.1 000 r\r\n\r\n"),
            (7, "HTTP/1.1 007 r\r\n\r\n"),
            (42, "HTTP/1.1 042 r\r\n\r\n"),
            (101, "HTTP/1.1 101 r\r\n\r\n"),
            (1000, "HTTP/1.1 1000 r\r\n\r\n"),
            (65535, "HTTP/1.1 65535 r\r\n\r\n"),
        ] {
            resp.status = status;
            resp.reason = "r".into();
            assert_eq!(String::from_utf8(resp.to_bytes()).unwrap(), line);
        }
        resp.status = 200;
        resp.reason = "O\rK\n\0".into();
        assert_eq!(resp.to_bytes(), b"HTTP/1.1 200 O K  \r\n\r\n");
    }

    #[test]
    fn reject_response_bytes() {
        let resp = Response::reject(400, "bad");
        assert_eq!(
            String::from_utf8(resp.to_bytes()).unwrap(),
            "HTTP/1.1 400 Bad Request\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\
             Content-Length: 4\r\n\
             Connection: close\r\n\
             \r\n\
             bad\n"
        );
        let resp = Response::reject(426, "old");
        assert_eq!(resp.reason, "Upgrade Required");
        assert_eq!(resp.headers.get("sec-websocket-version"), Some("13"));
        assert_eq!(resp.headers.get("allow"), None);
        let resp = Response::reject(405, "no");
        assert_eq!(resp.headers.get("Allow"), Some("GET"));
        assert_eq!(resp.headers.get("Sec-WebSocket-Version"), None);
        let resp = Response::reject(599, "odd");
        assert!(resp.to_bytes().starts_with(b"HTTP/1.1 599 \r\n"));
    }

    #[test]
    fn from_error_uses_status_and_message() {
        let err = HandshakeError::UnsupportedVersion(Some("8".into()));
        let resp = Response::from_error(&err);
        assert_eq!(resp, Response::reject(426, &err.to_string()));
        assert_eq!(resp.headers.get("Sec-WebSocket-Version"), Some("13"));
        let resp = Response::from_error(&HandshakeError::MethodNotAllowed("POST".into()));
        assert_eq!(resp.status, 405);
        assert_eq!(resp.headers.get("Allow"), Some("GET"));
        let resp = Response::from_error(&HandshakeError::HeadTooLarge { limit: 10 });
        assert_eq!(resp.status, 431);
        assert_eq!(resp.reason, "Request Header Fields Too Large");
        assert_eq!(Response::from_error(&HandshakeError::BadAccept).status, 500);
    }

    proptest! {
        #[test]
        fn parse_request_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..512), max in 0usize..600) {
            let _ = parse_request(&buf, max);
        }

        #[test]
        fn parse_request_never_panics_on_near_valid_heads(
            prefix in 0usize..400,
            junk in proptest::collection::vec(any::<u8>(), 0..32),
            at in 0usize..400,
        ) {
            let mut buf = SAMPLE.as_bytes()[..prefix.min(SAMPLE.len())].to_vec();
            let at = at.min(buf.len());
            buf.splice(at..at, junk);
            buf.extend_from_slice(b"\r\n\r\n");
            if let Ok(Some((req, used))) = parse_request(&buf, MAX_HEAD_SIZE_DEFAULT) {
                prop_assert!(used <= buf.len());
                let _ = validate_request(&req);
                let _ = req.extensions();
                let _ = (req.path(), req.query(), req.protocols());
                let _ = Response::from_error(&HandshakeError::BadKey).to_bytes();
            }
        }
    }
}

/// RFC 8441: the server's side of a WebSocket over HTTP/2.
#[cfg(test)]
mod extended_connect {
    use super::*;

    fn h2_request(method: &str, fields: &[(&str, &str)]) -> Request {
        let mut headers = Headers::new();
        for (name, value) in fields {
            headers.push(*name, *value);
        }
        Request {
            method: method.to_owned(),
            target: "https://example.com/chat".to_owned(),
            version_minor: 0,
            headers,
        }
    }

    #[test]
    fn server_accepts_extended_connect_without_key_host_or_upgrade() {
        let req = h2_request("CONNECT", &[("sec-websocket-version", "13")]);
        assert_eq!(validate_extended_connect(&req, Some("websocket")), Ok(()));
        assert_eq!(validate_extended_connect(&req, Some("WebSocket")), Ok(()));
    }

    #[test]
    fn server_refuses_extended_connect_without_version_13_with_400() {
        for fields in [
            &[][..],
            &[("sec-websocket-version", "8")][..],
            &[
                ("sec-websocket-version", "13"),
                ("sec-websocket-version", "13"),
            ][..],
        ] {
            let req = h2_request("CONNECT", fields);
            let err = validate_extended_connect(&req, Some("websocket")).unwrap_err();
            assert!(matches!(err, HandshakeError::UnsupportedVersion(_)));
            let response = Response::reject_extended_connect(&err);
            assert_eq!(response.status, 400);
            assert_eq!(response.headers.get("Sec-WebSocket-Version"), Some("13"));
            assert!(!response.headers.contains("Connection"));
        }
    }

    #[test]
    fn server_refuses_plain_connect_and_other_protocols_with_400() {
        let req = h2_request("CONNECT", &[("sec-websocket-version", "13")]);
        for protocol in [None, Some("connect-udp")] {
            let err = validate_extended_connect(&req, protocol).unwrap_err();
            assert_eq!(Response::reject_extended_connect(&err).status, 400);
        }
    }

    #[test]
    fn server_refuses_get_over_http2_with_405_allowing_connect() {
        let req = h2_request("GET", &[("sec-websocket-version", "13")]);
        let err = validate_extended_connect(&req, None).unwrap_err();
        let response = Response::reject_extended_connect(&err);
        assert_eq!(response.status, 405);
        assert_eq!(response.headers.get("Allow"), Some("CONNECT"));
    }

    #[test]
    fn server_answers_extended_connect_with_200_and_no_accept() {
        let mut extra = Headers::new();
        extra.push("x-served-by", "a");
        let response = Response::accept_extended_connect(
            Some("chat"),
            Some("permessage-deflate; server_no_context_takeover"),
            &extra,
        );
        assert_eq!(response.status, 200);
        assert_eq!(response.headers.get("Sec-WebSocket-Protocol"), Some("chat"));
        assert_eq!(
            response.headers.get("Sec-WebSocket-Extensions"),
            Some("permessage-deflate; server_no_context_takeover")
        );
        assert_eq!(response.headers.get("x-served-by"), Some("a"));
        for absent in ["Sec-WebSocket-Accept", "Upgrade", "Connection"] {
            assert!(!response.headers.contains(absent), "{absent}");
        }
    }

    #[test]
    fn server_keeps_origin_policy_over_http2() {
        let req = h2_request(
            "CONNECT",
            &[
                ("sec-websocket-version", "13"),
                ("origin", "https://evil.example"),
            ],
        );
        let err = check_origin(&req, &["https://example.com".to_owned()]).unwrap_err();
        assert_eq!(Response::reject_extended_connect(&err).status, 403);
    }
}
