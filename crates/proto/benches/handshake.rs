//! Server-side opening handshake: what a server does with one browser
//! upgrade request, from the bytes received to the bytes of its 101 answer.
//!
//! `cargo bench -p wsline-proto --bench handshake` runs it under criterion.
//! Wall-clock time is noisy on a shared machine; instructions are not. With
//! `WSLINE_HANDSHAKES=N` set, the binary instead runs N handshakes and exits,
//! for `valgrind --tool=callgrind`:
//!
//! ```text
//! cargo bench -p wsline-proto --bench handshake --no-run
//! WSLINE_HANDSHAKES=1000 valgrind --tool=callgrind target/release/deps/handshake-<hash>
//! callgrind_annotate --inclusive=yes callgrind.out.<pid> | grep handshake::
//! ```
//!
//! Each step sits in its own `#[inline(never)]` function (`parse`,
//! `validate`, `negotiate`, `answer`, `drop_all`) so that callgrind reports
//! its inclusive cost per call.

use std::hint::black_box;

use criterion::{criterion_group, Criterion};
use wsline_proto::handshake::{
    check_origin, parse_request, select_subprotocol, validate_request, ExtensionOffer, Headers,
    Request, Response, MAX_HEAD_SIZE_DEFAULT,
};

/// What Chrome sends to open a WebSocket (key from RFC 6455 §1.3).
const BROWSER_REQUEST: &[u8] = b"GET /chat HTTP/1.1\r\n\
    Host: localhost:9001\r\n\
    Connection: Upgrade\r\n\
    Pragma: no-cache\r\n\
    Cache-Control: no-cache\r\n\
    User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36\r\n\
    Upgrade: websocket\r\n\
    Origin: http://localhost:9001\r\n\
    Sec-WebSocket-Version: 13\r\n\
    Accept-Encoding: gzip, deflate, br, zstd\r\n\
    Accept-Language: en-US,en;q=0.9\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
    \r\n";

#[inline(never)]
fn parse(buf: &[u8]) -> Request {
    let (req, used) = parse_request(buf, MAX_HEAD_SIZE_DEFAULT)
        .expect("valid request")
        .expect("complete head");
    assert_eq!(used, buf.len());
    req
}

/// The RFC checks and the Origin policy, as `wsline`'s server runs them.
#[inline(never)]
fn validate(req: &Request, allowed_origins: &[String]) {
    validate_request(req).expect("valid upgrade");
    check_origin(req, allowed_origins).expect("origin allowed");
}

/// Subprotocol selection and the extension offers.
#[inline(never)]
fn negotiate(req: &Request, subprotocols: &[String]) -> (Option<String>, Vec<ExtensionOffer>) {
    let protocol = select_subprotocol(req, subprotocols);
    let offers = req.extensions().expect("valid extensions");
    (protocol, offers)
}

/// `Response::accept` then `to_bytes`.
#[inline(never)]
fn answer(req: &Request, protocol: Option<&str>, extensions: Option<&str>) -> Vec<u8> {
    Response::accept(req, protocol, extensions, &Headers::new()).to_bytes()
}

#[inline(never)]
fn drop_all(req: Request, offers: Vec<ExtensionOffer>, bytes: Vec<u8>) {
    drop(black_box(req));
    drop(black_box(offers));
    drop(black_box(bytes));
}

/// One server handshake, from request bytes to response bytes.
fn handshake(buf: &[u8]) -> usize {
    let req = parse(buf);
    validate(&req, &[]);
    let (protocol, offers) = negotiate(&req, &[]);
    let extensions = (!offers.is_empty()).then_some("permessage-deflate");
    let bytes = answer(&req, protocol.as_deref(), extensions);
    let len = bytes.len();
    drop_all(req, offers, bytes);
    len
}

fn bench(c: &mut Criterion) {
    c.bench_function("server_handshake/browser", |b| {
        b.iter(|| handshake(black_box(BROWSER_REQUEST)))
    });
}

criterion_group!(benches, bench);

fn main() {
    match std::env::var("WSLINE_HANDSHAKES") {
        Ok(n) => {
            let n: usize = n.parse().expect("WSLINE_HANDSHAKES is a number");
            let mut total = 0;
            for _ in 0..n {
                total += handshake(black_box(BROWSER_REQUEST));
            }
            black_box(total);
        }
        Err(_) => {
            benches();
            Criterion::default().configure_from_args().final_summary();
        }
    }
}
