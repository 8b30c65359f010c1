//! The starting corpora: a few valid (and a few typically invalid) inputs
//! per target, made with the library itself where it can make them (real
//! handshakes, real compressed payloads). Deterministic: rerunning
//! [`write_all`] rewrites the same files.
//!
//! `WSLINE_FUZZ_WRITE_SEEDS=1 cargo test --manifest-path fuzz/Cargo.toml`
//! rewrites `fuzz/seeds/`; scripts/fuzz.sh `--write-seeds` does the same.

use std::path::Path;
use std::time::Instant;

use wsline_proto::deflate::{client_offer, negotiate_server};
use wsline_proto::handshake::{
    parse_extensions, parse_request, ClientRequest, HandshakeError, Headers, Response,
};
use wsline_proto::{Config, Connection, DeflateConfig, DeflateParams, Message, Role};

use crate::frames::{APP_CLOSE, DEFLATE, DEFLATE_PARAMS, DRAIN_EACH, READ_BUFFER, TIMEOUT};
use crate::handshake::client_request;
use crate::wire::{
    close_payload, decode_output, frame, frame_to, BINARY, CLOSE, CONT, KEY, PING, PONG, TEXT,
};

/// One seed: target, file name, bytes.
pub type Seed = (&'static str, String, Vec<u8>);

/// Every target's seeds.
pub fn all() -> Vec<Seed> {
    let mut out = Vec::new();
    for (target, role) in [
        ("frame_server", Role::Server),
        ("frame_client", Role::Client),
    ] {
        for (name, bytes) in frame_seeds(role) {
            out.push((target, name, bytes));
        }
    }
    for (name, bytes) in request_seeds() {
        out.push(("handshake_request", name, bytes));
    }
    for (name, bytes) in response_seeds() {
        out.push(("handshake_response", name, bytes));
    }
    for (name, bytes) in negotiation_seeds() {
        out.push(("deflate_negotiation", name, bytes));
    }
    for (name, bytes) in inflate_seeds() {
        out.push(("inflate", name, bytes));
    }
    for (name, bytes) in hub_seeds() {
        out.push(("hub_protocol", name, bytes));
    }
    out
}

/// Writes every seed under `dir/<target>/<name>`.
pub fn write_all(dir: &Path) -> std::io::Result<usize> {
    let seeds = all();
    for (target, name, bytes) in &seeds {
        let d = dir.join(target);
        std::fs::create_dir_all(&d)?;
        std::fs::write(d.join(name), bytes)?;
    }
    Ok(seeds.len())
}

fn s(name: &str, bytes: Vec<u8>) -> (String, Vec<u8>) {
    (name.to_owned(), bytes)
}

// ------------------------------------------------------------- frames ----

fn frame_seeds(to: Role) -> Vec<(String, Vec<u8>)> {
    let f = |fin, opcode, payload: &[u8]| frame_to(to, fin, 0, opcode, payload);
    let close = |code, reason| f(true, CLOSE, &close_payload(code, reason));
    let with = |ctl: [u8; 4], frames: Vec<Vec<u8>>| {
        let mut v = ctl.to_vec();
        v.extend(frames.concat());
        v
    };
    let big: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 251) as u8).collect();
    let wrong_mask = match to {
        Role::Server => frame(true, 0, TEXT, None, b"unmasked"),
        Role::Client => frame(true, 0, TEXT, Some(KEY), b"masked"),
    };
    let deflated = compressed(
        &DEFLATE_PARAMS,
        &[b"compressed, compressed, compressed", &big[..3000], b"x"],
    );
    vec![
        s(
            "deflate-fragmented-with-ping",
            with(
                [DEFLATE | DRAIN_EACH, 0, 0, 0],
                vec![
                    frame_to(to, true, 0b100, TEXT, &deflated[0]),
                    frame_to(to, false, 0b100, BINARY, &deflated[1][..100]),
                    f(true, PING, b"mid"),
                    f(false, CONT, &deflated[1][100..]),
                    f(true, CONT, b""),
                    frame_to(to, true, 0b100, BINARY, &deflated[2]),
                    frame_to(to, false, 0b100, TEXT, b"\xff"),
                    frame_to(to, true, 0b100, CONT, b"rsv1 on a continuation"),
                ],
            ),
        ),
        s(
            "timeout-after-app-close",
            with(
                [APP_CLOSE | TIMEOUT | DRAIN_EACH, 2, 0, 0],
                vec![f(true, TEXT, b"Hello"), f(true, PING, b"")],
            ),
        ),
        s(
            "text-close",
            with(
                [DRAIN_EACH, 0, 0, 0],
                vec![f(true, TEXT, b"Hello"), close(1000, "bye")],
            ),
        ),
        s(
            "fragmented-utf8-ping",
            with(
                [0, 1, 3, 9],
                vec![
                    f(false, TEXT, "h\u{e9}".as_bytes().split_at(2).0),
                    f(false, CONT, b"\xa9llo w\xc3"),
                    f(true, PING, b"ping"),
                    f(true, CONT, b"\xb6rld"),
                    close(1001, ""),
                ],
            ),
        ),
        s(
            "binary-sizes",
            with(
                [READ_BUFFER | DRAIN_EACH, 7, 130, 0],
                vec![f(true, BINARY, &big[..300]), f(true, BINARY, &big[..4096])],
            ),
        ),
        s(
            "frame-too-big",
            with([DRAIN_EACH, 200, 0, 0], vec![f(true, BINARY, &[1u8; 4097])]),
        ),
        s(
            "message-limit",
            with(
                [READ_BUFFER, 0, 129, 60],
                vec![
                    f(false, BINARY, &big[..4000]),
                    f(true, CONT, &big[..4000]),
                    f(false, TEXT, &[b'a'; 4000]),
                    f(false, CONT, &[b'b'; 4000]),
                    f(true, CONT, &[b'c'; 4000]),
                ],
            ),
        ),
        s(
            "control-frames",
            with(
                [DRAIN_EACH, 2, 0, 5],
                vec![
                    f(true, PING, b""),
                    f(true, PONG, b"unsolicited"),
                    f(true, PING, &[b'p'; 125]),
                    f(true, CLOSE, b""),
                ],
            ),
        ),
        s(
            "invalid-utf8",
            with(
                [0, 0, 0, 0],
                vec![f(true, TEXT, b"ok"), f(true, TEXT, b"\xff\xfe")],
            ),
        ),
        s(
            "close-1005-on-wire",
            with([DRAIN_EACH, 3, 3, 3], vec![close(1005, "")]),
        ),
        s(
            "app-close-then-peer",
            with(
                [APP_CLOSE | DRAIN_EACH, 6, 0, 0],
                vec![
                    f(true, TEXT, b"hi"),
                    f(true, BINARY, b"after"),
                    close(1000, "ok"),
                ],
            ),
        ),
        s(
            "wrong-masking",
            with([DRAIN_EACH, 0, 0, 0], vec![f(true, TEXT, b"a"), wrong_mask]),
        ),
        s(
            "reserved-bits-opcode",
            with(
                [0, 4, 4, 4],
                vec![frame_to(to, true, 0b010, TEXT, b"rsv"), f(true, 0x3, b"")],
            ),
        ),
        s(
            "64-bit-length",
            with(
                [DRAIN_EACH, 0, 0, 0],
                vec![{
                    let mut v = vec![0x82, 127, 0, 0, 0, 0, 0, 0, 0x10, 0];
                    if to == Role::Server {
                        v[1] |= 0x80;
                        v.extend_from_slice(&KEY);
                    }
                    v
                }],
            ),
        ),
    ]
}

// --------------------------------------------------------- handshakes ----

fn request_seeds() -> Vec<(String, Vec<u8>)> {
    let mut full = client_request();
    full.headers.push("Origin", "http://example.com");
    full.headers.push("User-Agent", "wsline-fuzz");
    let plain = ClientRequest::with_key("localhost:9001", "/", "AAAAAAAAAAAAAAAAAAAAAA==");
    let mut pipelined = plain.to_bytes();
    pipelined.extend(frame(true, 0, TEXT, Some(KEY), b"early"));
    let browser = "GET /ws?room=1 HTTP/1.1\r\nHost: example.com\r\nConnection: keep-alive, Upgrade\r\n\
        Pragma: no-cache\r\nUpgrade: websocket\r\nOrigin: https://example.com\r\n\
        Sec-WebSocket-Version: 13\r\nUser-Agent: Mozilla/5.0\r\nAccept-Encoding: gzip, deflate, br\r\n\
        Sec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==\r\n\
        Sec-WebSocket-Protocol: chat, superchat\r\n\
        Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n";
    let strict = {
        let mut c = DeflateConfig::client_default();
        c.server_no_context_takeover = true;
        c.client_no_context_takeover = true;
        c.server_max_window_bits = 10;
        c.client_max_window_bits = 9;
        let mut r = ClientRequest::with_key("[::1]:80", "http://h/p?q", "dGhlIHNhbXBsZSBub25jZQ==");
        r.extensions = Some(format!("x-foo; a=\"b\", {}", client_offer(&c)));
        r.to_bytes()
    };
    vec![
        s("full", full.to_bytes()),
        s("pipelined-frame", pipelined),
        s("browser", browser.as_bytes().to_vec()),
        s("strict-deflate-absolute-target", strict),
        s(
            "post-http10",
            b"POST /chat HTTP/1.0\r\nHost: a\r\nContent-Length: 0\r\n\r\n".to_vec(),
        ),
        s(
            "version-8-two-keys",
            b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\
              Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: a\r\nSec-WebSocket-Key: b\r\n\r\n"
                .to_vec(),
        ),
    ]
}

fn response_seeds() -> Vec<(String, Vec<u8>)> {
    let req = client_request();
    let (parsed, _) = parse_request(&req.to_bytes(), usize::MAX).unwrap().unwrap();
    let offers = parse_extensions([req.extensions.as_deref().unwrap()]).unwrap();
    let (_, answer) = negotiate_server(&offers, &DeflateConfig::server_default()).unwrap();
    let mut extra = Headers::new();
    extra.push("Server", "wsline");
    let accept =
        |protocol, ext: Option<&str>| Response::accept(&parsed, protocol, ext, &extra).to_bytes();
    let mut with_frame = accept(None, None);
    with_frame.extend(frame(true, 0, TEXT, None, b"hello"));
    vec![
        s("accept-chat-deflate", accept(Some("chat"), Some(&answer))),
        s("accept-plain-then-frame", with_frame),
        s(
            "accept-deflate-params",
            accept(
                Some("superchat"),
                Some("permessage-deflate; server_no_context_takeover; client_max_window_bits=10"),
            ),
        ),
        s(
            "reject-426",
            Response::from_error(&HandshakeError::UnsupportedVersion(Some("8".into()))).to_bytes(),
        ),
        s(
            "bad-accept",
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n"
                .to_vec(),
        ),
        s(
            "redirect",
            b"HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\r\n".to_vec(),
        ),
    ]
}

fn negotiation_seeds() -> Vec<(String, Vec<u8>)> {
    let mut strict = DeflateConfig::client_default();
    strict.server_no_context_takeover = true;
    strict.client_no_context_takeover = true;
    strict.server_max_window_bits = 8;
    strict.client_max_window_bits = 11;
    let text = |t: &str| t.as_bytes().to_vec();
    vec![
        s("client-default", text(&client_offer(&DeflateConfig::client_default()))),
        s("client-strict", text(&client_offer(&strict))),
        s("plain", text("permessage-deflate")),
        s(
            "fallbacks",
            text("x-webkit-deflate-frame, permessage-deflate; server_max_window_bits=16, PERMESSAGE-DEFLATE; Server_Max_Window_Bits=\"10\"; client_no_context_takeover"),
        ),
        s(
            "duplicate-param",
            text("permessage-deflate; client_max_window_bits; client_max_window_bits=9"),
        ),
        s("unknown-param", text("permessage-deflate; x=1, permessage-deflate")),
    ]
}

// ------------------------------------------------------------ inflate ----

/// The compressed payloads a server connection with `params` writes for
/// `messages` (its output is unmasked, so deterministic).
fn compressed(params: &DeflateParams, messages: &[&[u8]]) -> Vec<Vec<u8>> {
    let now = Instant::now();
    let mut conn = Connection::new(Role::Server, Config::default(), now);
    let mut config = DeflateConfig::server_default();
    config.min_message_size = 0;
    conn.enable_deflate(params, &config);
    for m in messages {
        conn.send(&Message::binary(m.to_vec())).unwrap();
    }
    decode_output(Role::Server, &conn.take_output())
        .into_iter()
        .map(|f| {
            assert_eq!(f.rsv, 0b100);
            f.payload
        })
        .collect()
}

fn inflate_seeds() -> Vec<(String, Vec<u8>)> {
    use crate::inflate::{F_CHUNKED, F_NO_TAKEOVER, F_RECOMPRESS, F_SMALL_WINDOW, F_SYNC, F_TEXT};
    let p15 = DeflateParams {
        server_max_window_bits: 15,
        client_max_window_bits: 15,
        server_no_context_takeover: false,
        client_no_context_takeover: false,
    };
    let p9 = DeflateParams {
        server_max_window_bits: 9,
        ..p15
    };
    let with = |ctl: [u8; 3], payload: &[u8]| {
        let mut v = ctl.to_vec();
        v.extend_from_slice(payload);
        v
    };
    let hello = b"Hello, permessage-deflate! Hello, permessage-deflate! Hello!".as_slice();
    let pattern: Vec<u8> = (0..3000u32).map(|i| (i % 17 + i / 500) as u8).collect();
    let bomb = vec![0u8; 100 * 1024];
    let c = compressed(&p15, &[hello, hello]);
    let two = [c[0].clone(), c[1].clone()].concat();
    // The byte that cuts `two` at the first message's end, if any.
    let cut = (1..=255u8).find(|b| two.len() * usize::from(*b) / 256 == c[0].len());
    let mut out = vec![
        s("text", with([F_TEXT, 0, 0], &c[0])),
        s(
            "binary-fragmented",
            with([F_CHUNKED, 100, 0], &compressed(&p15, &[&pattern])[0]),
        ),
        s("bomb", with([0, 0, 0], &compressed(&p15, &[&bomb])[0])),
        s(
            "small-window",
            with(
                [F_SMALL_WINDOW | F_NO_TAKEOVER, 7, 0],
                &compressed(&p9, &[&pattern])[0],
            ),
        ),
        s(
            "final-block",
            with(
                [F_TEXT, 0, 0],
                &miniz_oxide::deflate::compress_to_vec(hello, 6),
            ),
        ),
        s(
            "stored-invalid-utf8",
            with([F_TEXT, 0, 0], &[0x00, 0x02, 0x00, 0xfd, 0xff, 0xff, 0xfe]),
        ),
        s("garbage", with([0, 3, 0], b"\xff\xff\xff\xff not deflate")),
        s(
            "peer-sync-two-texts",
            with(
                [F_RECOMPRESS | F_SYNC | F_TEXT | (2 << 6), 0, 128],
                &[hello, hello].concat(),
            ),
        ),
        s(
            "peer-streams-fragmented",
            with([F_RECOMPRESS | F_CHUNKED | (3 << 6), 50, 100], &pattern),
        ),
        s(
            "peer-stored-no-takeover",
            with(
                [F_RECOMPRESS | F_SYNC | F_NO_TAKEOVER, 0, 64],
                &pattern[..600],
            ),
        ),
    ];
    if let Some(b) = cut {
        out.push(s("two-messages-context", with([F_TEXT, 0, b], &two)));
    }
    out
}

// ---------------------------------------------------------------- hub ----

fn hub_seeds() -> Vec<(String, Vec<u8>)> {
    let t = |x: &str| x.as_bytes().to_vec();
    vec![
        s(
            "subscribe",
            t(r#"{"op":"subscribe","channel":"chat:lobby","since":3,"epoch":"e1","id":7}"#),
        ),
        s(
            "unsubscribe",
            t(r#"{"op":"unsubscribe","channel":"a.b@c","id":"x"}"#),
        ),
        s(
            "publish",
            t(
                r#"{"op":"publish","channel":"news","data":{"text":"hi \"there\"","n":[1,2.5,null,true]},"id":null}"#,
            ),
        ),
        s("presence", t(r#"{"op":"presence","channel":"room-1"}"#)),
        s("ping", t(r#"{"op":"ping","id":{"nested":[1]}}"#)),
        s(
            "bad-channel",
            t(r#"{"op":"subscribe","channel":"bad name","id":1}"#),
        ),
        s("bad-op", t(r#"{"op":5,"id":2}"#)),
        s("not-object", t("[1,2,3]")),
        s("pattern", t("chat:*:vip*\nchat:lobby:vip-1")),
    ]
}
