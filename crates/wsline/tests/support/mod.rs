//! Raw-protocol helpers shared by the integration tests of `wsline` and of
//! the `wsline` binary (included from `crates/cli/tests` with `#[path]`).
//!
//! Everything on the wire is built by hand here (HTTP heads, frame headers,
//! masking) so that the library is tested against an independent peer, not
//! against its own encoder. Every wait is bounded by [`WAIT`].
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The bound on any single wait: generous, so a slow machine passes, but a
/// hang fails the test instead of stalling the suite.
pub const WAIT: Duration = Duration::from_secs(5);

/// Awaits `fut`, failing the test if it takes longer than [`WAIT`].
pub async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(WAIT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

/// The RFC 6455 §1.3 sample key and its accept value.
pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
pub const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// The mask key raw clients use.
pub const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

pub const CONTINUATION: u8 = 0x0;
pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xA;

/// Message lengths around the frame length encodings (125/126, 65,535/
/// 65,536) and the large-message fast paths (16 KiB), up to 1 MiB.
pub const MESSAGE_SIZES: [usize; 11] = [
    0,
    1,
    125,
    126,
    16 * 1024 - 1,
    16 * 1024,
    20_000,
    65_535,
    65_536,
    100_000,
    1 << 20,
];

/// For each of [`MESSAGE_SIZES`], a binary message of varied bytes and a
/// text message of two-byte characters (half the length).
pub fn sample_messages() -> Vec<wsline::Message> {
    let mut out = Vec::new();
    for (i, len) in MESSAGE_SIZES.into_iter().enumerate() {
        let bytes: Vec<u8> = (0..len).map(|j| (i * 31 + j * 7) as u8).collect();
        out.push(wsline::Message::binary(bytes));
        out.push(wsline::Message::text("é".repeat(len / 2)));
    }
    out
}

/// A listener on 127.0.0.1 with a free port.
pub async fn listen() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local_addr");
    (listener, addr)
}

/// An HTTP head made of `lines`, each without its CRLF, plus the blank line.
pub fn head(lines: &[&str]) -> String {
    let mut s = String::new();
    for line in lines {
        s.push_str(line);
        s.push_str("\r\n");
    }
    s.push_str("\r\n");
    s
}

/// A valid upgrade request for `/chat` on `host`, with `extra` header lines.
pub fn upgrade_request(host: &str, extra: &[&str]) -> String {
    let host = format!("Host: {host}");
    let key = format!("Sec-WebSocket-Key: {KEY}");
    let mut lines = vec![
        "GET /chat HTTP/1.1",
        host.as_str(),
        "Upgrade: websocket",
        "Connection: Upgrade",
        key.as_str(),
        "Sec-WebSocket-Version: 13",
    ];
    lines.extend_from_slice(extra);
    head(&lines)
}

/// The header of a frame: FIN, opcode, length, and the mask key if any.
pub fn frame_header(fin: bool, opcode: u8, len: u64, mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    if len < 126 {
        out.push(mask_bit | len as u8);
    } else if len <= u64::from(u16::MAX) {
        out.push(mask_bit | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&len.to_be_bytes());
    }
    if let Some(key) = mask {
        out.extend_from_slice(&key);
    }
    out
}

/// A whole frame, masked with `mask` if given.
pub fn frame(fin: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = frame_header(fin, opcode, payload.len() as u64, mask);
    match mask {
        Some(key) => out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4])),
        None => out.extend_from_slice(payload),
    }
    out
}

/// A frame as a client sends it (masked with [`MASK`]).
pub fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    frame(fin, opcode, payload, Some(MASK))
}

/// A frame as a server sends it (unmasked).
pub fn server_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    frame(fin, opcode, payload, None)
}

/// A Close payload: the code, then the reason.
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason.as_bytes());
    p
}

/// A frame as received (payload unmasked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: u8,
    pub masked: bool,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The status code of a Close frame.
    pub fn close_code(&self) -> Option<u16> {
        assert_eq!(self.opcode, CLOSE, "not a Close frame: {self:?}");
        (self.payload.len() >= 2).then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }

    /// The reason of a Close frame.
    pub fn close_reason(&self) -> String {
        assert_eq!(self.opcode, CLOSE, "not a Close frame: {self:?}");
        String::from_utf8(self.payload.get(2..).unwrap_or_default().to_vec()).expect("UTF-8")
    }
}

/// An HTTP response head and its body (read per `Content-Length`).
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub head: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One end of a TCP connection driven by hand: a buffered reader of HTTP
/// heads and frames, and a writer of raw bytes.
pub struct Raw {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    pub fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = within("TCP connect", TcpStream::connect(addr))
            .await
            .expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Self::new(stream)
    }

    /// Connects, sends a valid upgrade request with `extra` header lines,
    /// and checks the 101 answer.
    pub async fn handshake(addr: SocketAddr, extra: &[&str]) -> (Self, HttpResponse) {
        let mut raw = Self::connect(addr).await;
        raw.send(upgrade_request(&addr.to_string(), extra).as_bytes())
            .await;
        let response = raw.read_response().await;
        assert_eq!(response.status, 101, "expected 101, got {}", response.head);
        assert_eq!(response.header("Sec-WebSocket-Accept"), Some(ACCEPT));
        assert!(response.body.is_empty(), "a 101 has no body");
        (raw, response)
    }

    /// Accepts one connection on `listener`.
    pub async fn accept(listener: &TcpListener) -> Self {
        let (stream, _) = within("TCP accept", listener.accept())
            .await
            .expect("accept");
        stream.set_nodelay(true).expect("nodelay");
        Self::new(stream)
    }

    /// As a server: reads the client's request head, answers 101 with the
    /// right accept value, and returns the request head.
    pub async fn serve_handshake(&mut self) -> String {
        let request = self.read_head().await;
        let key = request
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("sec-websocket-key")
                    .then(|| value.trim().to_owned())
            })
            .expect("the request has a Sec-WebSocket-Key");
        let accept = wsline::proto::handshake::accept_key(&key);
        let response = head(&[
            "HTTP/1.1 101 Switching Protocols",
            "Upgrade: websocket",
            "Connection: Upgrade",
            &format!("Sec-WebSocket-Accept: {accept}"),
        ]);
        self.send(response.as_bytes()).await;
        request
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        within("write", async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        })
        .await
        .expect("write");
    }

    /// Reads more bytes into the buffer; the count read (0 at EOF).
    async fn fill(&mut self, what: &str) -> std::io::Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        let n = within(what, self.stream.read(&mut chunk)).await?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Reads up to and including the blank line ending an HTTP head.
    pub async fn read_head(&mut self) -> String {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head: Vec<u8> = self.buf.drain(..end + 4).collect();
                return String::from_utf8(head).expect("the head is UTF-8");
            }
            let n = self.fill("an HTTP head").await.expect("read");
            assert!(
                n > 0,
                "EOF before a complete HTTP head; got {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        }
    }

    /// Reads a response head and its `Content-Length` body.
    pub async fn read_response(&mut self) -> HttpResponse {
        let head = self.read_head().await;
        let mut lines = head.lines();
        let status_line = lines.next().expect("status line");
        let mut parts = status_line.splitn(3, ' ');
        assert_eq!(
            parts.next(),
            Some("HTTP/1.1"),
            "status line {status_line:?}"
        );
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let headers: Vec<(String, String)> = lines
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (n, v) = l.split_once(':').expect("header line");
                (n.trim().to_owned(), v.trim().to_owned())
            })
            .collect();
        let len = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map_or(0, |(_, v)| v.parse::<usize>().expect("Content-Length"));
        while self.buf.len() < len {
            let n = self.fill("a response body").await.expect("read");
            assert!(n > 0, "EOF inside the response body");
        }
        let body = self.buf.drain(..len).collect();
        HttpResponse {
            status,
            head,
            headers,
            body,
        }
    }

    /// Reads one frame (unmasking it if masked).
    pub async fn read_frame(&mut self) -> Frame {
        loop {
            if let Some((frame, used)) = parse_frame(&self.buf) {
                self.buf.drain(..used);
                return frame;
            }
            let n = self.fill("a frame").await.expect("read");
            assert!(
                n > 0,
                "EOF while waiting for a frame ({} bytes buffered)",
                self.buf.len()
            );
        }
    }

    /// Reads one frame and checks it is a Close; returns its code.
    pub async fn read_close(&mut self) -> (u16, String) {
        let frame = self.read_frame().await;
        assert_eq!(frame.opcode, CLOSE, "expected a Close frame, got {frame:?}");
        let code = frame.close_code().expect("the Close frame has a code");
        (code, frame.close_reason())
    }

    /// Asserts that nothing more arrives and the peer closed TCP (a read
    /// returns end of stream).
    pub async fn expect_eof(&mut self) {
        assert!(
            self.buf.is_empty(),
            "unexpected bytes before EOF: {:?}",
            self.buf
        );
        let n = self.fill("the peer to close TCP").await.expect("read");
        assert_eq!(
            n,
            0,
            "expected EOF, got more bytes: {:?}",
            &self.buf[..n.min(64)]
        );
    }

    /// Asserts that the peer closed the connection: end of stream, or a
    /// reset (a peer that closes with our unread bytes in its buffer
    /// resets the connection after its FIN).
    pub async fn expect_closed(&mut self) {
        assert!(
            self.buf.is_empty(),
            "unexpected bytes before the close: {:?}",
            self.buf
        );
        match self.fill("the peer to close TCP").await {
            Ok(0) => {}
            Ok(n) => panic!("expected the close, got more bytes: {:?}", &self.buf[..n]),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        }
    }
}

/// Parses one frame at the start of `buf`: the frame and the bytes used.
pub fn parse_frame(buf: &[u8]) -> Option<(Frame, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let fin = buf[0] & 0x80 != 0;
    assert_eq!(buf[0] & 0x70, 0, "RSV bits set: {:#x}", buf[0]);
    let opcode = buf[0] & 0x0f;
    let masked = buf[1] & 0x80 != 0;
    let (len, mut at) = match buf[1] & 0x7f {
        126 => {
            if buf.len() < 4 {
                return None;
            }
            (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4)
        }
        127 => {
            if buf.len() < 10 {
                return None;
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(b), 10)
        }
        n => (u64::from(n), 2),
    };
    let mut key = None;
    if masked {
        if buf.len() < at + 4 {
            return None;
        }
        key = Some([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
        at += 4;
    }
    let len = usize::try_from(len).expect("frame length fits in memory");
    if buf.len() < at + len {
        return None;
    }
    let mut payload = buf[at..at + len].to_vec();
    if let Some(k) = key {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= k[i % 4];
        }
    }
    Some((
        Frame {
            fin,
            opcode,
            masked,
            payload,
        },
        at + len,
    ))
}

/// A TLS acceptor with a fresh self-signed certificate for `hosts`, and
/// the certificate as PEM (for a client to trust).
pub fn self_signed(hosts: &[&str]) -> (tokio_rustls::TlsAcceptor, String) {
    use std::sync::Arc;
    let names = hosts.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>();
    let certified = rcgen::generate_simple_self_signed(names).expect("certificate");
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_no_client_auth()
    .with_single_cert(vec![certified.cert.der().clone()], key.into())
    .expect("server certificate");
    (
        tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        certified.cert.pem(),
    )
}
