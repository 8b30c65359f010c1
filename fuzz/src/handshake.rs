//! `handshake_request` and `handshake_response`: the opening handshake's
//! parsers and checks on arbitrary bytes.
//!
//! `handshake_request` ([`run_request`]): `parse_request` with a small
//! `max_head`, then `validate_request`. Invariants:
//! - `consumed` ≤ the input and ≤ `max_head`; parsing again the head alone
//!   gives the same request, and a strict prefix of it asks for more;
//! - the request exposes path/query/host/key/protocols/extensions without
//!   panicking;
//! - an error's refusal (`Response::from_error(..).to_bytes()`) is an HTTP
//!   response our own client parses back, with the error's status, a
//!   `Content-Length` equal to the body, and the body after the head;
//! - a request that passes `validate_request` gets `Response::accept` (with
//!   a subprotocol and the permessage-deflate answer, as the server picks
//!   them), and our client, holding the same key, offer and protocols,
//!   accepts that answer and agrees on the subprotocol and on the
//!   compression parameters.
//!
//! `handshake_response` ([`run_response`]): `parse_response` with a small
//! `max_head` and `validate_response` against a fixed [`ClientRequest`]
//! offering `chat`, `superchat` and the default permessage-deflate offer.
//! Invariants: the same `consumed`/prefix rules; a non-101 status is
//! `Rejected` with that status; an accepted answer names an offered
//! subprotocol and only offered extensions; when `negotiate_client` then
//! agrees on compression parameters they are in range, and a client and a
//! server using them exchange messages intact.

use wsline_proto::deflate::{client_offer, negotiate_client, negotiate_server};
use wsline_proto::handshake::{
    accept_key, parse_request, parse_response, select_subprotocol, validate_request,
    validate_response, ClientRequest, HandshakeError, Headers, Response,
};
use wsline_proto::DeflateConfig;

use crate::deflate::round_trip;

/// The head size limit of the request and response targets.
pub const MAX_HEAD: usize = 2048;

/// The subprotocols the harness server supports, in preference order.
pub const SERVER_PROTOCOLS: [&str; 2] = ["superchat", "chat"];

/// The key of the fixed client request (RFC 6455's sample).
pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// The fixed request `handshake_response` checks answers against.
pub fn client_request() -> ClientRequest {
    let mut req = ClientRequest::with_key("server.example.com", "/chat", KEY);
    req.protocols = vec!["chat".into(), "superchat".into()];
    req.extensions = Some(client_offer(&DeflateConfig::client_default()));
    req
}

/// The `handshake_request` target.
pub fn run_request(data: &[u8]) {
    let parsed = parse_request(data, MAX_HEAD);
    let (req, consumed) = match parsed {
        Ok(None) => {
            assert!(data.len() <= MAX_HEAD, "incomplete past max_head");
            return;
        }
        Err(e) => {
            if let HandshakeError::HeadTooLarge { limit } = e {
                assert_eq!(limit, MAX_HEAD);
                assert!(data.len() > MAX_HEAD);
            }
            check_refusal(&e);
            return;
        }
        Ok(Some(r)) => r,
    };
    assert!(
        consumed <= data.len() && consumed <= MAX_HEAD,
        "consumed {consumed}"
    );
    // The head alone parses to the same thing; a strict prefix asks for more.
    assert_eq!(
        parse_request(&data[..consumed], MAX_HEAD),
        Ok(Some((req.clone(), consumed)))
    );
    for cut in [consumed - 1, consumed / 2] {
        assert_eq!(
            parse_request(&data[..cut], MAX_HEAD),
            Ok(None),
            "a prefix of {cut} of a {consumed}-byte head"
        );
    }
    let _ = (req.path(), req.query(), req.host(), req.origin());
    let offers = req.extensions();
    if let Err(e) = validate_request(&req) {
        check_refusal(&e);
        return;
    }
    let key = req.key().expect("a valid request has a key");
    let supported: Vec<String> = SERVER_PROTOCOLS.iter().map(|s| s.to_string()).collect();
    let protocol = select_subprotocol(&req, &supported);
    let server_deflate = DeflateConfig::server_default();
    let (agreed, answer) = match &offers {
        Ok(offers) => match negotiate_server(offers, &server_deflate) {
            Some((params, answer)) => (Some(params), Some(answer)),
            None => (None, None),
        },
        Err(e) => {
            check_refusal(e);
            (None, None)
        }
    };
    let mut extra = Headers::new();
    extra.push("Server", "wsline-fuzz");
    let resp = Response::accept(&req, protocol.as_deref(), answer.as_deref(), &extra);
    let bytes = resp.to_bytes();
    let (parsed, used) = parse_response(&bytes, usize::MAX)
        .expect("our 101 parses")
        .expect("our 101 is complete");
    assert_eq!(used, bytes.len());
    assert_eq!(parsed.status, 101);
    assert_eq!(
        parsed.headers.get("Sec-WebSocket-Accept"),
        Some(accept_key(key).as_str())
    );

    // Our client, having sent this request, accepts this answer.
    let mut client = ClientRequest::with_key(req.host().unwrap_or("h"), req.target.clone(), key);
    client.protocols = req.protocols();
    if offers.is_ok() {
        let values: Vec<&str> = req.headers.get_all("Sec-WebSocket-Extensions").collect();
        if !values.is_empty() {
            client.extensions = Some(values.join(", "));
        }
    }
    let accepted = validate_response(&client, &parsed)
        .unwrap_or_else(|e| panic!("our client refuses our server's answer: {e}\n{resp:?}"));
    assert_eq!(accepted.protocol, protocol);
    if let Some(server_params) = agreed {
        // The client's view, from the offer it would have made: the
        // parameters it asked for, everything else at the maximum.
        let offer = offers
            .as_ref()
            .expect("offers parsed")
            .iter()
            .find(|o| crate::deflate::server_would_pick(o))
            .expect("the offer the server picked");
        let client_config = crate::deflate::client_config_for(offer);
        let client_params = negotiate_client(&accepted.extensions, &client_config)
            .unwrap_or_else(|e| panic!("client refuses the server's deflate answer: {e}"))
            .expect("the client sees compression on");
        assert_eq!(client_params, server_params);
    } else {
        assert!(accepted.extensions.is_empty());
    }
}

/// A refusal for `e` is a well-formed response our client parses back.
fn check_refusal(e: &HandshakeError) {
    let resp = Response::from_error(e);
    assert!((400..=599).contains(&resp.status));
    if (400..=599).contains(&e.status()) {
        assert_eq!(resp.status, e.status());
    }
    let bytes = resp.to_bytes();
    let (parsed, head) = parse_response(&bytes, usize::MAX)
        .unwrap_or_else(|err| panic!("our refusal does not parse ({err}): {bytes:?}"))
        .expect("our refusal is complete");
    assert_eq!(parsed.status, resp.status);
    let body = &bytes[head..];
    assert_eq!(body, &resp.body[..]);
    assert_eq!(
        parsed.headers.get("Content-Length"),
        Some(body.len().to_string().as_str())
    );
}

/// The `handshake_response` target.
pub fn run_response(data: &[u8]) {
    let (resp, consumed) = match parse_response(data, MAX_HEAD) {
        Ok(None) => {
            assert!(data.len() <= MAX_HEAD, "incomplete past max_head");
            return;
        }
        Err(e) => {
            if let HandshakeError::HeadTooLarge { limit } = e {
                assert_eq!(limit, MAX_HEAD);
                assert!(data.len() > MAX_HEAD);
            }
            return;
        }
        Ok(Some(r)) => r,
    };
    assert!(
        consumed <= data.len() && consumed <= MAX_HEAD,
        "consumed {consumed}"
    );
    assert_eq!(
        parse_response(&data[..consumed], MAX_HEAD),
        Ok(Some((resp.clone(), consumed)))
    );
    for cut in [consumed - 1, consumed / 2] {
        assert_eq!(
            parse_response(&data[..cut], MAX_HEAD),
            Ok(None),
            "prefix {cut}"
        );
    }
    let req = client_request();
    let accepted = match validate_response(&req, &resp) {
        Ok(a) => a,
        Err(HandshakeError::Rejected { status, .. }) => {
            assert_ne!(resp.status, 101);
            assert_eq!(status, resp.status);
            return;
        }
        Err(_) => {
            assert_eq!(resp.status, 101);
            return;
        }
    };
    assert_eq!(resp.status, 101);
    if let Some(p) = &accepted.protocol {
        assert!(req.protocols.contains(p), "not offered: {p}");
    }
    for e in &accepted.extensions {
        assert!(
            e.name.eq_ignore_ascii_case("permessage-deflate"),
            "not offered: {}",
            e.name
        );
    }
    let client_config = DeflateConfig::client_default();
    if let Ok(Some(params)) = negotiate_client(&accepted.extensions, &client_config) {
        for bits in [params.server_max_window_bits, params.client_max_window_bits] {
            assert!((8..=15).contains(&bits), "window bits {bits}");
        }
        round_trip(
            &params,
            &DeflateConfig::server_default(),
            &client_config,
            data,
        );
    }
}
