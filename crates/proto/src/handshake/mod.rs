//! The RFC 6455 §4 opening handshake: the HTTP/1.1 upgrade, for both roles.
//!
//! This module owns everything that happens before the first WebSocket frame:
//! parsing and validating the client's upgrade request and writing the
//! server's answer ([`parse_request`], [`validate_request`], [`Response`]),
//! writing the client's request and checking the server's answer
//! ([`ClientRequest`], [`parse_response`], [`validate_response`]), and the
//! generic `Sec-WebSocket-Extensions` syntax ([`parse_extensions`],
//! [`format_extension`]) that negotiated extensions such as
//! permessage-deflate (RFC 7692) build on.
//!
//! Like the rest of the crate it is sans-IO: functions take the bytes
//! received so far and return parsed heads or bytes to send. Parsing is
//! incremental (`Ok(None)` means "read more") and bounded by a caller-chosen
//! head size limit ([`MAX_HEAD_SIZE_DEFAULT`] is a sensible default). Every
//! input is treated as hostile: nothing here panics on any bytes.
//!
//! Shared types live in this file: [`Headers`], [`HandshakeError`],
//! [`accept_key`] and [`reason_phrase`].

mod client;
mod extensions;
mod server;

pub use client::{
    host_header, parse_response, validate_extended_connect_response, validate_response, Accepted,
    ClientRequest, ServerResponse,
};
pub use extensions::{format_extension, parse_extensions, ExtensionOffer};
pub use server::{
    check_origin, parse_request, select_subprotocol, validate_extended_connect, validate_request,
    Request, Response, EXTENDED_CONNECT_PROTOCOL,
};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha1::{Digest, Sha1};

/// Default upper bound, in bytes, on an HTTP head (request or status line
/// plus header fields plus the blank line) accepted by [`parse_request`] and
/// [`parse_response`].
pub const MAX_HEAD_SIZE_DEFAULT: usize = 64 * 1024;

/// Most header fields accepted in one HTTP head; more is refused with
/// [`HandshakeError::TooManyHeaders`] (431).
pub const MAX_HEADERS: usize = 128;

/// The only WebSocket protocol version this crate speaks
/// (`Sec-WebSocket-Version: 13`).
pub const WEBSOCKET_VERSION: &str = "13";

/// The GUID RFC 6455 §1.3 appends to the client's key before hashing.
pub const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Header list in arrival order; names compared case-insensitively.
///
/// Names and values are stored as given; lookups ignore ASCII case in the
/// name. Repeated fields are kept as separate entries, so
/// [`get_all`](Headers::get_all) sees every one of them.
// All names and values live back to back in one string, so that a parsed
// request costs two allocations however many fields it has. Two lists are
// equal when they hold the same fields: `text` is exactly the fields'
// concatenation, so the derived comparison is the field-by-field one.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Headers {
    /// Every field's name then value, in order, with nothing between.
    text: String,
    /// One entry per field, in order.
    fields: Vec<Field>,
}

/// Where one field sits in [`Headers::text`]: the name is
/// `text[start..value]`, the value `text[value..end]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Field {
    start: usize,
    value: usize,
    end: usize,
}

impl Headers {
    /// An empty header list.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty list with room for `fields` fields holding `text` bytes of
    /// names and values in all.
    fn with_capacity(fields: usize, text: usize) -> Self {
        Headers {
            text: String::with_capacity(text),
            fields: Vec::with_capacity(fields),
        }
    }

    /// Appends a field after all existing ones (existing fields with the same
    /// name are kept).
    pub fn push(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.push_str(&name.into(), &value.into());
    }

    /// Appends a field as a server received it, with the rule of
    /// [`parse_request`]: a value that is not UTF-8 is refused
    /// ([`HandshakeError::Malformed`], 400) in the fields the handshake
    /// interprets (`Host`, `Upgrade`, `Connection`, `Origin`,
    /// `Sec-WebSocket-*`) and kept lossily in the others. For servers that
    /// parse requests elsewhere (hyper) and hand the fields over.
    pub fn push_received(&mut self, name: &str, value: &[u8]) -> Result<(), HandshakeError> {
        match std::str::from_utf8(value) {
            Ok(value) => self.push_str(name, value),
            Err(_) if is_websocket_header(name) => {
                return Err(HandshakeError::Malformed(format!(
                    "the {name} header is not valid UTF-8"
                )))
            }
            Err(_) => self.push_str(name, &String::from_utf8_lossy(value)),
        }
        Ok(())
    }

    /// [`push`](Headers::push) without the conversions.
    pub(crate) fn push_str(&mut self, name: &str, value: &str) {
        let start = self.text.len();
        self.text.push_str(name);
        let value_at = self.text.len();
        self.text.push_str(value);
        self.fields.push(Field {
            start,
            value: value_at,
            end: self.text.len(),
        });
    }

    /// Total bytes of all names and values.
    fn text_len(&self) -> usize {
        self.text.len()
    }

    fn name_of(&self, f: &Field) -> &str {
        &self.text[f.start..f.value]
    }

    /// Whether `f` is named `name`, ignoring ASCII case. Lengths first: most
    /// fields are ruled out without reading the text.
    fn is_named(&self, f: &Field, name: &str) -> bool {
        f.value - f.start == name.len()
            && self.text.as_bytes()[f.start..f.value].eq_ignore_ascii_case(name.as_bytes())
    }

    fn value_of(&self, f: &Field) -> &str {
        &self.text[f.value..f.end]
    }

    /// The value of the first field named `name` (ASCII case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|f| self.is_named(f, name))
            .map(|f| self.value_of(f))
    }

    /// The values of every field named `name` (ASCII case-insensitive), in
    /// arrival order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.fields
            .iter()
            .filter(move |f| self.is_named(f, name))
            .map(|f| self.value_of(f))
    }

    /// Whether at least one field is named `name` (ASCII case-insensitive).
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Every `(name, value)` pair in arrival order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.fields
            .iter()
            .map(|f| (self.name_of(f), self.value_of(f)))
    }

    /// Number of fields (repeated names count once per field).
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether there are no fields at all.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// true when any comma-separated token in any header `name` equals
    /// `token` (ASCII case-insensitive, whitespace trimmed).
    ///
    /// This is how list-valued fields such as `Connection: keep-alive, Upgrade`
    /// are matched.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.get_all(name)
            .flat_map(|v| v.split(','))
            .any(|t| trim_ows(t).eq_ignore_ascii_case(token))
    }
}

/// Same output as the derived `Debug` of the former `Vec<(String, String)>`
/// layout: `Headers { entries: [("Host", "a")] }`.
impl std::fmt::Debug for Headers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Headers")
            .field("entries", &self.iter().collect::<Vec<_>>())
            .finish()
    }
}

impl<N: Into<String>, V: Into<String>> FromIterator<(N, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        let mut headers = Headers::new();
        headers.extend(iter);
        headers
    }
}

impl<N: Into<String>, V: Into<String>> Extend<(N, V)> for Headers {
    fn extend<I: IntoIterator<Item = (N, V)>>(&mut self, iter: I) {
        for (n, v) in iter {
            self.push(n, v);
        }
    }
}

/// Sec-WebSocket-Accept for a key: base64(sha1(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")).
///
/// `key` is used exactly as given; pass the trimmed header value.
pub fn accept_key(key: &str) -> String {
    accept_key_into(key, &mut [0; ACCEPT_KEY_LEN]).to_owned()
}

/// Length of a Sec-WebSocket-Accept value: the base64 of a SHA-1 digest.
const ACCEPT_KEY_LEN: usize = 28;

/// [`accept_key`] written into `buf` rather than a new `String`.
fn accept_key_into<'a>(key: &str, buf: &'a mut [u8; ACCEPT_KEY_LEN]) -> &'a str {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(WEBSOCKET_GUID.as_bytes());
    let len = STANDARD
        .encode_slice(sha.finalize(), buf)
        .expect("28 bytes hold the base64 of 20");
    std::str::from_utf8(&buf[..len]).expect("base64 is ASCII")
}

/// The standard reason phrase for an HTTP status code, or `""` for codes
/// this crate does not know (an empty reason phrase is valid HTTP/1.1).
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        413 => "Content Too Large",
        414 => "URI Too Long",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// Everything that can go wrong during the opening handshake.
///
/// Server-side variants map to the HTTP status a server should answer with
/// ([`status`](HandshakeError::status)); [`Response::from_error`] builds
/// that answer. Client-side variants describe why a server's response was
/// not accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The bytes are not a well-formed HTTP/1.x head, or a header field the
    /// handshake depends on is syntactically invalid (400).
    #[error("malformed HTTP handshake: {0}")]
    Malformed(String),

    /// No complete head arrived within `limit` bytes (431).
    #[error("HTTP head is larger than the limit of {limit} bytes")]
    HeadTooLarge {
        /// The head size limit that was exceeded, in bytes.
        limit: usize,
    },

    /// The head has more header fields than accepted (431).
    #[error("too many HTTP header fields: at most {limit} are accepted")]
    TooManyHeaders {
        /// The most header fields accepted.
        limit: usize,
    },

    /// The request method is not GET (405). Holds the method received.
    #[error("method {0} is not allowed: a WebSocket handshake must use GET")]
    MethodNotAllowed(String),

    /// The request is older than HTTP/1.1 (400).
    #[error("unsupported HTTP version: a WebSocket handshake needs HTTP/1.1 or later")]
    UnsupportedHttpVersion,

    /// The request has no Host header (400).
    #[error("missing Host header")]
    MissingHost,

    /// The request's Upgrade header is missing or lacks `websocket` (400).
    #[error("missing Upgrade: websocket header")]
    MissingUpgrade,

    /// The request's Connection header is missing or lacks `Upgrade` (400).
    #[error("missing Connection: Upgrade header")]
    MissingConnectionUpgrade,

    /// Sec-WebSocket-Version is missing or not `13` (426). Holds the value
    /// received, if any.
    #[error("unsupported Sec-WebSocket-Version: expected 13, got {}", describe_version(.0))]
    UnsupportedVersion(Option<String>),

    /// Sec-WebSocket-Key is missing, repeated, or not the base64 of 16 bytes
    /// (400).
    #[error("missing or invalid Sec-WebSocket-Key: it must be one header holding the base64 of 16 bytes")]
    BadKey,

    /// The request's Origin is not in the allowed list (403). Holds the
    /// origin received.
    #[error("origin {0:?} is not allowed")]
    OriginRefused(String),

    /// Client side: the server answered with something other than
    /// `101 Switching Protocols`.
    #[error("server refused the WebSocket upgrade: {status} {reason}")]
    Rejected {
        /// The response status code.
        status: u16,
        /// The response reason phrase.
        reason: String,
        /// The response header fields.
        headers: Headers,
        /// The response body; [`validate_response`] leaves it empty for the
        /// caller, who owns the connection, to read and fill in.
        body: Vec<u8>,
    },

    /// Client side: the 101 response lacks `Upgrade: websocket`.
    #[error("server response lacks an Upgrade: websocket header")]
    MissingUpgradeResponse,

    /// Client side: the 101 response lacks `Connection: Upgrade`.
    #[error("server response lacks a Connection: Upgrade header")]
    MissingConnectionUpgradeResponse,

    /// Client side: Sec-WebSocket-Accept is missing, repeated, or does not
    /// match the key that was sent.
    #[error("server's Sec-WebSocket-Accept is missing or does not match the key sent")]
    BadAccept,

    /// Client side: the server chose a subprotocol that was not offered, or
    /// more than one. Holds what the server sent.
    #[error("server selected subprotocol {0:?}, which was not offered")]
    ProtocolNotOffered(String),

    /// Client side: the server accepted an extension that was not offered.
    /// Holds the extension name.
    #[error("server accepted extension {0:?}, which was not offered")]
    ExtensionNotOffered(String),

    /// Client side: the server's extension parameters contradict the offer
    /// (RFC 7692 §7.1). Holds what is wrong.
    #[error("server's extension answer is invalid: {0}")]
    InvalidExtensionAnswer(String),
}

impl HandshakeError {
    /// The HTTP status a server answers this error with.
    ///
    /// For client-side errors this is the response status for
    /// [`Rejected`](HandshakeError::Rejected) and `0` for the others, which
    /// are not answered with HTTP at all.
    pub fn status(&self) -> u16 {
        match self {
            HandshakeError::Malformed(_)
            | HandshakeError::UnsupportedHttpVersion
            | HandshakeError::MissingHost
            | HandshakeError::MissingUpgrade
            | HandshakeError::MissingConnectionUpgrade
            | HandshakeError::BadKey => 400,
            HandshakeError::HeadTooLarge { .. } | HandshakeError::TooManyHeaders { .. } => 431,
            HandshakeError::MethodNotAllowed(_) => 405,
            HandshakeError::UnsupportedVersion(_) => 426,
            HandshakeError::OriginRefused(_) => 403,
            HandshakeError::Rejected { status, .. } => *status,
            HandshakeError::MissingUpgradeResponse
            | HandshakeError::MissingConnectionUpgradeResponse
            | HandshakeError::BadAccept
            | HandshakeError::ProtocolNotOffered(_)
            | HandshakeError::ExtensionNotOffered(_)
            | HandshakeError::InvalidExtensionAnswer(_) => 0,
        }
    }
}

fn describe_version(v: &Option<String>) -> String {
    match v {
        Some(v) => format!("{v:?}"),
        None => "none".to_owned(),
    }
}

/// Trims RFC 7230 optional whitespace (SP and HTAB) from both ends.
pub(crate) fn trim_ows(s: &str) -> &str {
    s.trim_matches([' ', '\t'])
}

/// Whether a header field's value must be valid UTF-8 because the handshake
/// interprets it; other fields are kept lossily.
fn is_websocket_header(name: &str) -> bool {
    const EXACT: [&str; 4] = ["host", "upgrade", "connection", "origin"];
    const PREFIX: &str = "sec-websocket-";
    EXACT.iter().any(|h| name.eq_ignore_ascii_case(h))
        || name
            .get(..PREFIX.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(PREFIX))
}

/// Converts httparse's header fields into [`Headers`], refusing values that
/// are not UTF-8 in the fields the handshake interprets.
pub(crate) fn convert_headers(raw: &[httparse::Header<'_>]) -> Result<Headers, HandshakeError> {
    // Usually every value is UTF-8: copy all the fields, then check the
    // text in one pass. Names are non-empty ASCII tokens (httparse checks),
    // so when the whole text is UTF-8 each value is too.
    let len = raw.iter().map(|h| h.name.len() + h.value.len()).sum();
    let mut text = Vec::with_capacity(len);
    let mut fields = Vec::with_capacity(raw.len());
    for h in raw {
        let start = text.len();
        text.extend_from_slice(h.name.as_bytes());
        let value = text.len();
        text.extend_from_slice(h.value);
        fields.push(Field {
            start,
            value,
            end: text.len(),
        });
    }
    if let Ok(text) = String::from_utf8(text) {
        return Ok(Headers { text, fields });
    }
    let mut headers = Headers::with_capacity(raw.len(), len);
    for h in raw {
        headers.push_received(h.name, h.value)?;
    }
    Ok(headers)
}

/// Maps an httparse error to the handshake error a server answers with.
pub(crate) fn map_httparse_error(err: httparse::Error) -> HandshakeError {
    match err {
        httparse::Error::TooManyHeaders => HandshakeError::TooManyHeaders { limit: MAX_HEADERS },
        other => HandshakeError::Malformed(other.to_string()),
    }
}

/// Appends `s` to `out` with CR, LF and NUL replaced by spaces, so that
/// caller-supplied text can never inject header lines.
pub(crate) fn push_sanitized(out: &mut Vec<u8>, s: &str) {
    let start = out.len();
    out.extend_from_slice(s.as_bytes());
    // Every byte is stored, changed or not, so the loop vectorizes.
    for b in &mut out[start..] {
        *b = match *b {
            b'\r' | b'\n' | 0 => b' ',
            b => b,
        };
    }
}

/// Appends `name: value\r\n`, sanitized.
pub(crate) fn push_header(out: &mut Vec<u8>, name: &str, value: &str) {
    push_sanitized(out, name);
    out.extend_from_slice(b": ");
    push_sanitized(out, value);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_matches_rfc_sample() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn headers_lookup_is_case_insensitive_and_ordered() {
        let mut h = Headers::new();
        assert!(h.is_empty());
        h.push("X-One", "1");
        h.push("x-one", "2");
        h.push("Other", "3");
        assert_eq!(h.len(), 3);
        assert!(!h.is_empty());
        assert_eq!(h.get("X-ONE"), Some("1"));
        assert_eq!(h.get_all("x-One").collect::<Vec<_>>(), ["1", "2"]);
        assert_eq!(h.get("missing"), None);
        assert!(h.contains("OTHER"));
        assert_eq!(
            h.iter().collect::<Vec<_>>(),
            [("X-One", "1"), ("x-one", "2"), ("Other", "3")]
        );
    }

    #[test]
    fn headers_compare_clone_and_debug_by_their_fields() {
        let mut a = Headers::new();
        a.push("Host", "a");
        a.push(String::from("X-Ünïcode"), String::from("vàlue"));
        a.push("", "");
        let b: Headers = a.iter().collect();
        assert_eq!(a, b);
        assert_eq!(a.clone(), a);
        assert_eq!(a.get("x-Ünïcode"), Some("vàlue"));
        assert_eq!(a.get(""), Some(""));
        // Same bytes, split differently between name and value.
        let c: Headers = [("Hos", "ta"), ("X-Ünïcode", "vàlue"), ("", "")]
            .into_iter()
            .collect();
        assert_ne!(a, c);
        assert_ne!(a, Headers::new());
        assert_eq!(Headers::default(), Headers::new());
        assert_eq!(
            format!("{a:?}"),
            r#"Headers { entries: [("Host", "a"), ("X-Ünïcode", "vàlue"), ("", "")] }"#
        );
        assert_eq!(format!("{:?}", Headers::new()), "Headers { entries: [] }");
    }

    #[test]
    fn has_token_splits_trims_and_ignores_case() {
        let h: Headers = [
            ("Connection", "keep-alive, \tUpgrade "),
            ("connection", "close"),
        ]
        .into_iter()
        .collect();
        assert!(h.has_token("CONNECTION", "upgrade"));
        assert!(h.has_token("connection", "Keep-Alive"));
        assert!(h.has_token("connection", "close"));
        assert!(!h.has_token("connection", "upgrad"));
        assert!(!h.has_token("upgrade", "upgrade"));
    }

    #[test]
    fn every_error_has_the_documented_status() {
        use HandshakeError as E;
        let cases = [
            (E::Malformed("x".into()), 400),
            (E::HeadTooLarge { limit: 1 }, 431),
            (E::TooManyHeaders { limit: 1 }, 431),
            (E::MethodNotAllowed("POST".into()), 405),
            (E::UnsupportedHttpVersion, 400),
            (E::MissingHost, 400),
            (E::MissingUpgrade, 400),
            (E::MissingConnectionUpgrade, 400),
            (E::UnsupportedVersion(None), 426),
            (E::BadKey, 400),
            (E::OriginRefused("o".into()), 403),
            (
                E::Rejected {
                    status: 404,
                    reason: "Not Found".into(),
                    headers: Headers::new(),
                    body: Vec::new(),
                },
                404,
            ),
            (E::MissingUpgradeResponse, 0),
            (E::MissingConnectionUpgradeResponse, 0),
            (E::BadAccept, 0),
            (E::ProtocolNotOffered("p".into()), 0),
            (E::ExtensionNotOffered("e".into()), 0),
        ];
        for (err, status) in cases {
            assert_eq!(err.status(), status, "{err}");
            assert!(!err.to_string().is_empty());
        }
    }

    #[test]
    fn error_messages_say_what_is_wrong() {
        assert_eq!(
            HandshakeError::UnsupportedVersion(Some("8".into())).to_string(),
            "unsupported Sec-WebSocket-Version: expected 13, got \"8\""
        );
        assert_eq!(
            HandshakeError::UnsupportedVersion(None).to_string(),
            "unsupported Sec-WebSocket-Version: expected 13, got none"
        );
        assert!(HandshakeError::BadKey
            .to_string()
            .contains("base64 of 16 bytes"));
    }

    #[test]
    fn reason_phrases() {
        assert_eq!(reason_phrase(101), "Switching Protocols");
        assert_eq!(reason_phrase(426), "Upgrade Required");
        assert_eq!(reason_phrase(799), "");
    }

    #[test]
    fn sanitizing_strips_line_breaks() {
        let mut out = Vec::new();
        push_header(&mut out, "X-A\r\n", "v\r\nInjected: 1\0");
        assert_eq!(out, b"X-A  : v  Injected: 1 \r\n");
    }

    #[test]
    fn full_handshake_round_trip() {
        let mut req = ClientRequest::new("example.com:8080", "/chat?room=1");
        req.protocols = vec!["chat.v2".into(), "chat.v1".into()];
        req.extensions = Some("permessage-deflate; client_max_window_bits".into());
        req.headers.push("Origin", "https://example.com");
        let wire = req.to_bytes();

        let (parsed, used) = parse_request(&wire, MAX_HEAD_SIZE_DEFAULT)
            .unwrap()
            .unwrap();
        assert_eq!(used, wire.len());
        validate_request(&parsed).unwrap();
        check_origin(&parsed, &["https://EXAMPLE.com".into()]).unwrap();
        assert_eq!(parsed.path(), "/chat");
        assert_eq!(parsed.query(), Some("room=1"));
        let proto = select_subprotocol(&parsed, &["chat.v1".into(), "chat.v2".into()]);
        assert_eq!(proto.as_deref(), Some("chat.v1"));
        let offers = parsed.extensions().unwrap();
        assert_eq!(offers[0].name, "permessage-deflate");

        let resp = Response::accept(
            &parsed,
            proto.as_deref(),
            Some("permessage-deflate"),
            &Headers::new(),
        );
        let mut resp_wire = resp.to_bytes();
        resp_wire.extend_from_slice(b"\x81\x00"); // a frame right after the head
        let (sresp, used) = parse_response(&resp_wire, MAX_HEAD_SIZE_DEFAULT)
            .unwrap()
            .unwrap();
        assert_eq!(used, resp_wire.len() - 2);
        let accepted = validate_response(&req, &sresp).unwrap();
        assert_eq!(accepted.protocol.as_deref(), Some("chat.v1"));
        assert_eq!(accepted.extensions.len(), 1);
        assert_eq!(accepted.extensions[0].name, "permessage-deflate");
    }
}
