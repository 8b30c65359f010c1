//! Client role of the opening handshake (RFC 6455 §4.1).
//!
//! This file owns writing the client's upgrade request ([`ClientRequest`]),
//! parsing the server's response head ([`parse_response`]) and the §4.1
//! checks on it ([`validate_response`]), which yield the negotiated
//! subprotocol and extensions ([`Accepted`]).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use super::{
    accept_key_into, convert_headers, map_httparse_error, parse_extensions, push_header, trim_ows,
    ExtensionOffer, HandshakeError, Headers, ACCEPT_KEY_LEN, MAX_HEADERS, WEBSOCKET_VERSION,
};

/// The `Host` header value for `host` and `port`: the port is included only
/// when it is not the scheme's default (80, or 443 when `secure`), and an
/// IPv6 address is put in brackets.
///
/// ```
/// use wsline_proto::handshake::host_header;
/// assert_eq!(host_header("example.com", 443, true), "example.com");
/// assert_eq!(host_header("example.com", 8080, false), "example.com:8080");
/// assert_eq!(host_header("::1", 9001, false), "[::1]:9001");
/// ```
pub fn host_header(host: &str, port: u16, secure: bool) -> String {
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    let default = if secure { 443 } else { 80 };
    if port == default {
        host
    } else {
        format!("{host}:{port}")
    }
}

/// A client's opening handshake request, ready to be written with
/// [`to_bytes`](ClientRequest::to_bytes).
///
/// Keep it after sending: [`validate_response`] checks the server's answer
/// against it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientRequest {
    /// The Host header value, with `:port` when not the default (see
    /// [`host_header`]).
    pub host: String,
    /// The request target: path and query; `/` if empty.
    pub target: String,
    /// The Sec-WebSocket-Key: base64 of 16 random bytes.
    pub key: String,
    /// Subprotocols to offer, in preference order.
    pub protocols: Vec<String>,
    /// The Sec-WebSocket-Extensions offer, already formatted (see
    /// [`format_extension`](super::format_extension)).
    pub extensions: Option<String>,
    /// Extra header fields (e.g. `Origin`, `Authorization`), written after
    /// the handshake's own.
    pub headers: Headers,
}

impl ClientRequest {
    /// A request for `target` on `host` with a fresh random 16-byte key
    /// (`rand::random`, base64), no subprotocols, no extensions and no extra
    /// headers. An empty target becomes `/`.
    pub fn new(host: impl Into<String>, target: impl Into<String>) -> Self {
        let key = STANDARD.encode(rand::random::<[u8; 16]>());
        Self::with_key(host, target, key)
    }

    /// Like [`new`](ClientRequest::new) but with a caller-chosen key, for
    /// tests and reproducible traces. Real clients must use a fresh random
    /// key per connection.
    pub fn with_key(
        host: impl Into<String>,
        target: impl Into<String>,
        key: impl Into<String>,
    ) -> Self {
        let mut target = target.into();
        if target.is_empty() {
            target.push('/');
        }
        ClientRequest {
            host: host.into(),
            target,
            key: key.into(),
            protocols: Vec::new(),
            extensions: None,
            headers: Headers::new(),
        }
    }

    /// The bytes to send: `GET target HTTP/1.1`, Host, Upgrade: websocket,
    /// Connection: Upgrade, Sec-WebSocket-Key, Sec-WebSocket-Version: 13,
    /// Sec-WebSocket-Protocol: a, b (if any), Sec-WebSocket-Extensions (if
    /// any and not blank), then the custom headers, then a blank line.
    ///
    /// CR, LF and NUL in header fields are written as spaces, and any byte of
    /// the target that is not visible ASCII is percent-encoded (a space
    /// becomes `%20`), so caller-supplied values cannot inject header lines.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(b"GET ");
        let target = if self.target.is_empty() {
            "/"
        } else {
            &self.target
        };
        for b in target.bytes() {
            if b.is_ascii_graphic() {
                out.push(b);
            } else {
                out.extend_from_slice(format!("%{b:02X}").as_bytes());
            }
        }
        out.extend_from_slice(b" HTTP/1.1\r\n");
        push_header(&mut out, "Host", &self.host);
        push_header(&mut out, "Upgrade", "websocket");
        push_header(&mut out, "Connection", "Upgrade");
        push_header(&mut out, "Sec-WebSocket-Key", &self.key);
        push_header(&mut out, "Sec-WebSocket-Version", WEBSOCKET_VERSION);
        if !self.protocols.is_empty() {
            push_header(
                &mut out,
                "Sec-WebSocket-Protocol",
                &self.protocols.join(", "),
            );
        }
        if let Some(ext) = self
            .extensions
            .as_deref()
            .filter(|e| !trim_ows(e).is_empty())
        {
            push_header(&mut out, "Sec-WebSocket-Extensions", ext);
        }
        for (name, value) in self.headers.iter() {
            push_header(&mut out, name, value);
        }
        out.extend_from_slice(b"\r\n");
        out
    }
}

/// A parsed HTTP/1.x response head, as received from a server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerResponse {
    /// The status code, e.g. `101`.
    pub status: u16,
    /// The reason phrase (empty when absent or not valid text).
    pub reason: String,
    /// The header fields in arrival order.
    pub headers: Headers,
}

/// Incremental like [`parse_request`](super::parse_request): `Ok(None)` =
/// head incomplete, read more; `Ok(Some((resp, consumed)))` = head complete,
/// `consumed` bytes used (anything after is body or WebSocket frames).
///
/// Errors: [`HeadTooLarge`](HandshakeError::HeadTooLarge) as soon as
/// `buf.len() > max_head` without a complete head;
/// [`TooManyHeaders`](HandshakeError::TooManyHeaders) past [`MAX_HEADERS`]
/// fields; [`Malformed`](HandshakeError::Malformed) for anything that is not
/// an HTTP/1.x response head, including non-UTF-8 values in `Upgrade`,
/// `Connection` or `Sec-WebSocket-*` fields.
pub fn parse_response(
    buf: &[u8],
    max_head: usize,
) -> Result<Option<(ServerResponse, usize)>, HandshakeError> {
    let window = &buf[..buf.len().min(max_head)];
    let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut raw);
    match resp.parse(window).map_err(map_httparse_error)? {
        httparse::Status::Partial => {
            if buf.len() > max_head {
                Err(HandshakeError::HeadTooLarge { limit: max_head })
            } else {
                Ok(None)
            }
        }
        httparse::Status::Complete(consumed) => {
            let response = ServerResponse {
                status: resp.code.ok_or_else(|| {
                    HandshakeError::Malformed("incomplete status line".to_owned())
                })?,
                reason: resp.reason.unwrap_or_default().to_owned(),
                headers: convert_headers(resp.headers)?,
            };
            Ok(Some((response, consumed)))
        }
    }
}

/// What the server agreed to in a valid `101` response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    /// The subprotocol the server selected, if any.
    pub protocol: Option<String>,
    /// The extensions the server accepted, with their parameters, in the
    /// order the server listed them. Checking those parameters is the
    /// extension's job.
    pub extensions: Vec<ExtensionOffer>,
}

/// RFC 6455 §4.1 checks on the server's response to `req`, in this order:
///
/// 1. status not 101 → [`Rejected`](HandshakeError::Rejected) with
///    `status`, `reason`, `headers` and an empty `body` (the caller reads
///    the body and fills it in);
/// 2. Upgrade has token `websocket` (else
///    [`MissingUpgradeResponse`](HandshakeError::MissingUpgradeResponse));
/// 3. Connection has token `upgrade` (else
///    [`MissingConnectionUpgradeResponse`](HandshakeError::MissingConnectionUpgradeResponse));
/// 4. exactly one Sec-WebSocket-Accept, equal to `accept_key(&req.key)`
///    (else [`BadAccept`](HandshakeError::BadAccept));
/// 5. Sec-WebSocket-Protocol absent, or exactly one value that was offered
///    (else [`ProtocolNotOffered`](HandshakeError::ProtocolNotOffered));
/// 6. every extension in Sec-WebSocket-Extensions parses and was offered in
///    `req.extensions`, names compared ASCII case-insensitively (else
///    [`Malformed`](HandshakeError::Malformed) or
///    [`ExtensionNotOffered`](HandshakeError::ExtensionNotOffered)).
pub fn validate_response(
    req: &ClientRequest,
    resp: &ServerResponse,
) -> Result<Accepted, HandshakeError> {
    if resp.status != 101 {
        return Err(HandshakeError::Rejected {
            status: resp.status,
            reason: resp.reason.clone(),
            headers: resp.headers.clone(),
            body: Vec::new(),
        });
    }
    if !resp.headers.has_token("Upgrade", "websocket") {
        return Err(HandshakeError::MissingUpgradeResponse);
    }
    if !resp.headers.has_token("Connection", "upgrade") {
        return Err(HandshakeError::MissingConnectionUpgradeResponse);
    }
    let mut accepts = resp.headers.get_all("Sec-WebSocket-Accept");
    match (accepts.next(), accepts.next()) {
        (Some(got), None)
            if trim_ows(got) == accept_key_into(trim_ows(&req.key), &mut [0; ACCEPT_KEY_LEN]) => {}
        _ => return Err(HandshakeError::BadAccept),
    }

    agreement(req, resp)
}

/// RFC 8441 checks on the server's response to an extended CONNECT that
/// offered `req`'s subprotocols and extensions (`req.key` and `req.host`
/// are not sent over HTTP/2 and not checked):
///
/// 1. status not 200 → [`Rejected`](HandshakeError::Rejected), as in
///    [`validate_response`];
/// 2. and 3. no `Upgrade`, `Connection` or `Sec-WebSocket-Accept` is
///    expected;
/// 5. and 6. Sec-WebSocket-Protocol and Sec-WebSocket-Extensions as in
///    [`validate_response`]: only what was offered.
pub fn validate_extended_connect_response(
    req: &ClientRequest,
    resp: &ServerResponse,
) -> Result<Accepted, HandshakeError> {
    if resp.status != 200 {
        return Err(HandshakeError::Rejected {
            status: resp.status,
            reason: resp.reason.clone(),
            headers: resp.headers.clone(),
            body: Vec::new(),
        });
    }
    agreement(req, resp)
}

/// The subprotocol and extensions of an accepting response: each must
/// have been offered (steps 5 and 6 of [`validate_response`]).
fn agreement(req: &ClientRequest, resp: &ServerResponse) -> Result<Accepted, HandshakeError> {
    let protocols: Vec<&str> = resp
        .headers
        .get_all("Sec-WebSocket-Protocol")
        .map(trim_ows)
        .collect();
    let protocol = match protocols.as_slice() {
        [] => None,
        [one] if req.protocols.iter().any(|p| p == one) => Some((*one).to_owned()),
        _ => return Err(HandshakeError::ProtocolNotOffered(protocols.join(", "))),
    };

    let extensions = parse_extensions(resp.headers.get_all("Sec-WebSocket-Extensions"))?;
    if !extensions.is_empty() {
        let offered = match req.extensions.as_deref() {
            Some(e) if !trim_ows(e).is_empty() => parse_extensions([e])?,
            _ => Vec::new(),
        };
        if let Some(ext) = extensions
            .iter()
            .find(|e| !offered.iter().any(|o| o.name.eq_ignore_ascii_case(&e.name)))
        {
            return Err(HandshakeError::ExtensionNotOffered(ext.name.clone()));
        }
    }
    Ok(Accepted {
        protocol,
        extensions,
    })
}

#[cfg(test)]
mod tests {
    use super::super::{accept_key, parse_request, validate_request, MAX_HEAD_SIZE_DEFAULT};
    use super::*;
    use proptest::prelude::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
    const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
    const OK_RESPONSE: &str = "HTTP/1.1 101 Switching Protocols\r\n\
        Upgrade: websocket\r\n\
        Connection: Upgrade\r\n\
        Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
        Sec-WebSocket-Protocol: chat\r\n\
        \r\n";

    fn request() -> ClientRequest {
        let mut req = ClientRequest::with_key("server.example.com", "/chat", KEY);
        req.protocols = vec!["chat".into(), "superchat".into()];
        req.extensions = Some("permessage-deflate; client_max_window_bits, x-foo".into());
        req
    }

    fn response(headers: &[(&str, &str)]) -> ServerResponse {
        ServerResponse {
            status: 101,
            reason: "Switching Protocols".into(),
            headers: headers.iter().copied().collect(),
        }
    }

    const BASE: [(&str, &str); 3] = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", ACCEPT),
    ];

    fn base_with(extra: &[(&str, &str)]) -> ServerResponse {
        let mut r = response(&BASE);
        r.headers.extend(extra.iter().copied());
        r
    }

    #[test]
    fn new_uses_a_fresh_16_byte_key() {
        let a = ClientRequest::new("h", "/");
        let b = ClientRequest::new("h", "/");
        assert_ne!(a.key, b.key);
        assert_eq!(STANDARD.decode(&a.key).unwrap().len(), 16);
        assert_eq!(ClientRequest::new("h", "").target, "/");
    }

    #[test]
    fn request_bytes_are_exact() {
        let mut req = request();
        req.headers.push("Origin", "http://example.com");
        assert_eq!(
            String::from_utf8(req.to_bytes()).unwrap(),
            "GET /chat HTTP/1.1\r\n\
             Host: server.example.com\r\n\
             Upgrade: websocket\r\n\
             Connection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Protocol: chat, superchat\r\n\
             Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits, x-foo\r\n\
             Origin: http://example.com\r\n\
             \r\n"
        );
        let plain = ClientRequest::with_key("h:81", "", KEY);
        assert_eq!(
            String::from_utf8(plain.to_bytes()).unwrap(),
            "GET / HTTP/1.1\r\nHost: h:81\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
    }

    #[test]
    fn request_bytes_cannot_be_injected() {
        let mut req = ClientRequest::with_key("h\r\nX-Evil: 1", "/a b\r\nX-Evil: 2", KEY);
        req.headers.push("X-Ok", "v\nX-Evil: 3");
        let bytes = req.to_bytes();
        let (parsed, _) = parse_request(&bytes, MAX_HEAD_SIZE_DEFAULT)
            .unwrap()
            .unwrap();
        assert_eq!(parsed.target, "/a%20b%0D%0AX-Evil:%202");
        assert!(!parsed.headers.contains("X-Evil"));
        validate_request(&parsed).unwrap();
    }

    #[test]
    fn request_is_accepted_by_our_server() {
        let bytes = request().to_bytes();
        let (parsed, used) = parse_request(&bytes, MAX_HEAD_SIZE_DEFAULT)
            .unwrap()
            .unwrap();
        assert_eq!(used, bytes.len());
        validate_request(&parsed).unwrap();
        assert_eq!(parsed.protocols(), ["chat", "superchat"]);
    }

    #[test]
    fn host_header_rules() {
        assert_eq!(host_header("a", 80, false), "a");
        assert_eq!(host_header("a", 443, false), "a:443");
        assert_eq!(host_header("a", 443, true), "a");
        assert_eq!(host_header("a", 80, true), "a:80");
        assert_eq!(host_header("::1", 80, false), "[::1]");
        assert_eq!(host_header("[::1]", 8080, false), "[::1]:8080");
    }

    #[test]
    fn parses_response_incrementally_byte_by_byte() {
        let bytes = OK_RESPONSE.as_bytes();
        for end in 0..bytes.len() {
            assert_eq!(
                parse_response(&bytes[..end], MAX_HEAD_SIZE_DEFAULT),
                Ok(None),
                "at {end}"
            );
        }
        let (resp, used) = parse_response(bytes, MAX_HEAD_SIZE_DEFAULT)
            .unwrap()
            .unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(resp.status, 101);
        assert_eq!(resp.reason, "Switching Protocols");
        assert_eq!(resp.headers.len(), 4);
        let accepted = validate_response(&request(), &resp).unwrap();
        assert_eq!(
            accepted,
            Accepted {
                protocol: Some("chat".into()),
                extensions: vec![]
            }
        );
    }

    #[test]
    fn response_head_too_large_while_incomplete() {
        let bytes = OK_RESPONSE.as_bytes();
        assert_eq!(parse_response(&bytes[..20], 20), Ok(None));
        assert_eq!(
            parse_response(&bytes[..21], 20),
            Err(HandshakeError::HeadTooLarge { limit: 20 })
        );
        assert!(parse_response(bytes, bytes.len()).unwrap().is_some());
    }

    #[test]
    fn response_garbage_and_bad_utf8_are_malformed() {
        for bad in [
            &b"SSH-2.0-OpenSSH\r\n\r\n"[..],
            b"HTTP/1.1 abc OK\r\n\r\n",
            b"HTTP/1.1 101 OK\r\nSec-WebSocket-Accept: \xff\r\n\r\n",
            b"HTTP/1.1 101 OK\r\nupgrade: \xc3\r\n\r\n",
        ] {
            let err = parse_response(bad, MAX_HEAD_SIZE_DEFAULT).unwrap_err();
            assert!(
                matches!(err, HandshakeError::Malformed(_)),
                "{bad:?}: {err}"
            );
        }
        let (resp, _) = parse_response(b"HTTP/1.1 101 OK\r\nServer: \xff\r\n\r\n", 1024)
            .unwrap()
            .unwrap();
        assert_eq!(resp.headers.get("server"), Some("\u{fffd}"));
    }

    #[test]
    fn non_101_is_rejected_with_details() {
        let resp = parse_response(
            b"HTTP/1.1 403 Forbidden\r\nContent-Length: 5\r\n\r\nnope!",
            MAX_HEAD_SIZE_DEFAULT,
        )
        .unwrap()
        .unwrap()
        .0;
        let err = validate_response(&request(), &resp).unwrap_err();
        let HandshakeError::Rejected {
            status,
            reason,
            headers,
            body,
        } = &err
        else {
            panic!("unexpected {err:?}");
        };
        assert_eq!((*status, reason.as_str()), (403, "Forbidden"));
        assert_eq!(headers.get("content-length"), Some("5"));
        assert!(body.is_empty());
        assert_eq!(err.status(), 403);
        assert_eq!(
            err.to_string(),
            "server refused the WebSocket upgrade: 403 Forbidden"
        );
        // Even a 200 with all the right headers is a refusal.
        let mut ok = response(&BASE);
        ok.status = 200;
        assert!(matches!(
            validate_response(&request(), &ok),
            Err(HandshakeError::Rejected { .. })
        ));
    }

    #[test]
    fn names_and_tokens_are_case_insensitive() {
        let resp = response(&[
            ("UPGRADE", "WebSocket"),
            ("connection", "keep-alive, UPGRADE"),
            ("sec-websocket-accept", ACCEPT),
        ]);
        validate_response(&request(), &resp).unwrap();
    }

    #[test]
    fn requires_upgrade_and_connection() {
        let resp = response(&[("Connection", "Upgrade"), ("Sec-WebSocket-Accept", ACCEPT)]);
        assert_eq!(
            validate_response(&request(), &resp),
            Err(HandshakeError::MissingUpgradeResponse)
        );
        let resp = response(&[("Upgrade", "websocket"), ("Sec-WebSocket-Accept", ACCEPT)]);
        assert_eq!(
            validate_response(&request(), &resp),
            Err(HandshakeError::MissingConnectionUpgradeResponse)
        );
    }

    #[test]
    fn requires_matching_accept() {
        let req = request();
        let missing = response(&BASE[..2]);
        assert_eq!(
            validate_response(&req, &missing),
            Err(HandshakeError::BadAccept)
        );
        let mut wrong = response(&BASE[..2]);
        wrong.headers.push(
            "Sec-WebSocket-Accept",
            accept_key("AAAAAAAAAAAAAAAAAAAAAA=="),
        );
        assert_eq!(
            validate_response(&req, &wrong),
            Err(HandshakeError::BadAccept)
        );
        let twice = base_with(&[("Sec-WebSocket-Accept", ACCEPT)]);
        assert_eq!(
            validate_response(&req, &twice),
            Err(HandshakeError::BadAccept)
        );
        let padded = response(&[
            BASE[0],
            BASE[1],
            ("Sec-WebSocket-Accept", " s3pPLMBiTxaQ9kYGzzhZRbK+xOo= "),
        ]);
        validate_response(&req, &padded).unwrap();
    }

    #[test]
    fn subprotocol_must_be_offered_and_single() {
        let req = request();
        assert_eq!(
            validate_response(&req, &base_with(&[])).unwrap().protocol,
            None
        );
        let ok = base_with(&[("Sec-WebSocket-Protocol", "superchat")]);
        assert_eq!(
            validate_response(&req, &ok).unwrap().protocol.as_deref(),
            Some("superchat")
        );
        for (headers, shown) in [
            (&[("Sec-WebSocket-Protocol", "other")][..], "other"),
            (&[("Sec-WebSocket-Protocol", "Chat")][..], "Chat"),
            (
                &[("Sec-WebSocket-Protocol", "chat, superchat")][..],
                "chat, superchat",
            ),
            (
                &[
                    ("Sec-WebSocket-Protocol", "chat"),
                    ("Sec-WebSocket-Protocol", "chat"),
                ][..],
                "chat, chat",
            ),
        ] {
            assert_eq!(
                validate_response(&req, &base_with(headers)),
                Err(HandshakeError::ProtocolNotOffered(shown.into()))
            );
        }
        let mut none_offered = request();
        none_offered.protocols.clear();
        assert_eq!(
            validate_response(&none_offered, &ok),
            Err(HandshakeError::ProtocolNotOffered("superchat".into()))
        );
    }

    #[test]
    fn extensions_must_be_offered() {
        let req = request();
        let ok = base_with(&[(
            "Sec-WebSocket-Extensions",
            "permessage-deflate; client_max_window_bits=10",
        )]);
        let accepted = validate_response(&req, &ok).unwrap();
        assert_eq!(accepted.extensions.len(), 1);
        assert_eq!(
            accepted.extensions[0].param("client_max_window_bits"),
            Some(Some("10"))
        );
        let two = base_with(&[
            ("Sec-WebSocket-Extensions", "x-foo"),
            ("Sec-WebSocket-Extensions", "Permessage-Deflate"),
        ]);
        assert_eq!(validate_response(&req, &two).unwrap().extensions.len(), 2);
        let unknown = base_with(&[("Sec-WebSocket-Extensions", "x-foo, x-bar")]);
        assert_eq!(
            validate_response(&req, &unknown),
            Err(HandshakeError::ExtensionNotOffered("x-bar".into()))
        );
        let mut none_offered = request();
        none_offered.extensions = None;
        assert_eq!(
            validate_response(&none_offered, &ok),
            Err(HandshakeError::ExtensionNotOffered(
                "permessage-deflate".into()
            ))
        );
        let garbage = base_with(&[("Sec-WebSocket-Extensions", "x-foo;;")]);
        assert!(matches!(
            validate_response(&req, &garbage),
            Err(HandshakeError::Malformed(_))
        ));
    }

    proptest! {
        #[test]
        fn parse_response_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..512), max in 0usize..600) {
            if let Ok(Some((resp, used))) = parse_response(&buf, max) {
                prop_assert!(used <= buf.len().min(max));
                let _ = validate_response(&request(), &resp);
            }
        }

        #[test]
        fn validate_response_never_panics_on_near_valid_heads(
            junk in proptest::collection::vec(any::<u8>(), 0..24),
            at in 0usize..200,
        ) {
            let mut buf = OK_RESPONSE.as_bytes()[..OK_RESPONSE.len() - 2].to_vec();
            let at = at.min(buf.len());
            buf.splice(at..at, junk);
            buf.extend_from_slice(b"\r\n\r\n");
            if let Ok(Some((resp, _))) = parse_response(&buf, MAX_HEAD_SIZE_DEFAULT) {
                let _ = validate_response(&request(), &resp);
            }
        }
    }
}

/// RFC 8441: the client's side of a WebSocket over HTTP/2.
#[cfg(test)]
mod extended_connect {
    use super::*;

    fn answer(status: u16, fields: &[(&str, &str)]) -> ServerResponse {
        let mut headers = Headers::new();
        for (name, value) in fields {
            headers.push(*name, *value);
        }
        ServerResponse {
            status,
            reason: String::new(),
            headers,
        }
    }

    fn offer() -> ClientRequest {
        let mut req = ClientRequest::new("example.com", "/chat");
        req.protocols = vec!["chat".to_owned()];
        req.extensions = Some("permessage-deflate; client_max_window_bits".to_owned());
        req
    }

    #[test]
    fn client_accepts_200_without_accept_key() {
        let accepted = validate_extended_connect_response(
            &offer(),
            &answer(
                200,
                &[
                    ("sec-websocket-protocol", "chat"),
                    ("sec-websocket-extensions", "permessage-deflate"),
                ],
            ),
        )
        .expect("accepted");
        assert_eq!(accepted.protocol.as_deref(), Some("chat"));
        assert_eq!(accepted.extensions[0].name, "permessage-deflate");
    }

    #[test]
    fn client_refuses_101_and_other_statuses_over_http2() {
        for status in [101, 204, 400, 403] {
            let err =
                validate_extended_connect_response(&offer(), &answer(status, &[])).unwrap_err();
            assert!(
                matches!(err, HandshakeError::Rejected { status: s, .. } if s == status),
                "{status}"
            );
        }
    }

    #[test]
    fn client_refuses_protocol_or_extension_not_offered_over_http2() {
        let err = validate_extended_connect_response(
            &offer(),
            &answer(200, &[("sec-websocket-protocol", "superchat")]),
        )
        .unwrap_err();
        assert!(matches!(err, HandshakeError::ProtocolNotOffered(_)));
        let err = validate_extended_connect_response(
            &offer(),
            &answer(
                200,
                &[("sec-websocket-extensions", "x-webkit-deflate-frame")],
            ),
        )
        .unwrap_err();
        assert!(matches!(err, HandshakeError::ExtensionNotOffered(_)));
    }
}
