//! WebSocket over HTTP/2 (RFC 8441), client side (feature `http2`).
//!
//! Owns the HTTP/2 connection a client opens WebSockets on
//! ([`Connection`]: h2's client, waiting for the server's SETTINGS before
//! any extended CONNECT, as RFC 8441 §3 requires), the extended CONNECT
//! request and its 200, and [`H2Stream`], one HTTP/2 stream as the byte
//! stream a [`WebSocket`] runs on (flow control given back as the
//! WebSocket reads; its shutdown is END_STREAM, its drop a RST_STREAM).
//! It does not own the handshake's rules (the core's
//! `validate_extended_connect_response`: 200, subprotocol and extensions
//! offered), the WebSocket itself, TCP, TLS or proxies (`client.rs`,
//! `tls.rs`, `proxy.rs`), nor the server side (`upgrade.rs`: hyper serves
//! HTTP/2 there).
//!
//! Several WebSockets on one connection:
//!
//! ```no_run
//! # async fn demo() -> Result<(), wsline::Error> {
//! use wsline::ClientConfig;
//!
//! let config = ClientConfig::default();
//! // TLS with ALPN h2 for wss://, HTTP/2 with prior knowledge for ws://.
//! let h2 = wsline::h2::Connection::connect("wss://chat.example", &config).await?;
//! let (mut news, _) = h2.websocket("/news", &config).await?;
//! let (mut chat, _) = h2.websocket("/chat?room=1", &config).await?;
//! chat.send("hi".into()).await?;
//! while let Some(message) = news.recv().await {
//!     println!("{:?}", message?);
//! }
//! # Ok(()) }
//! ```
//!
//! `wsline::connect_with` with [`crate::HttpVersion::Http2`] or
//! [`crate::HttpVersion::Auto`] opens one WebSocket on a connection of its
//! own.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use h2::{Reason, RecvStream, SendStream};
use http::header::{HeaderName, HeaderValue};
use http::{Method, Uri};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use wsline_proto::deflate::client_offer;
use wsline_proto::handshake::{
    host_header, reason_phrase, validate_extended_connect_response, Accepted, ClientRequest,
    HandshakeError, Headers, ServerResponse, EXTENDED_CONNECT_PROTOCOL,
};

use crate::client::{opened, Target, MAX_REFUSAL_BODY};
use crate::{ClientConfig, Error, HandshakeResponse, WebSocket};

/// The receive window of each WebSocket stream and of the connection:
/// larger than HTTP/2's 64 KiB default, so that one round trip carries
/// more than one large message's worth.
const STREAM_WINDOW: u32 = 1 << 20;
const CONNECTION_WINDOW: u32 = 4 << 20;

/// Fields of HTTP/1.1 connections, which HTTP/2 forbids (RFC 9113
/// §8.2.2), and `host` (the `:authority` says it): left out of
/// `ClientConfig::headers` on an HTTP/2 request.
const NOT_IN_HTTP2: [&str; 6] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "host",
];

/// An HTTP/2 connection to one server, on which WebSockets open as
/// streams (RFC 8441 extended CONNECT). Cheap to clone: clones share the
/// connection, whose task runs until the last clone and the last
/// WebSocket on it are gone.
#[derive(Clone)]
pub struct Connection {
    send: h2::client::SendRequest<Bytes>,
    /// `https` for `wss://`, `http` for `ws://` (the `:scheme`).
    scheme: &'static str,
    /// `host[:port]`, the `:authority`.
    authority: String,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("scheme", &self.scheme)
            .field("authority", &self.authority)
            .field("takes_websockets", &self.takes_websockets())
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Opens an HTTP/2 connection to the server of `url` (its path is not
    /// used): `wss://` by TLS with ALPN `h2`, `ws://` by cleartext HTTP/2
    /// with prior knowledge, through `config.proxy` if it says so, all
    /// within `config.handshake_timeout`. Fails with
    /// [`Error::Http2Unavailable`] if the server does not choose `h2` or
    /// does not announce SETTINGS_ENABLE_CONNECT_PROTOCOL.
    pub async fn connect(url: &str, config: &ClientConfig) -> Result<Self, Error> {
        let target = Target::parse(url)?;
        let timeout = config.handshake_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let open = async {
            let io = crate::client::transport_h2(&target, config, deadline).await?;
            let host = host_header(&target.host, target.port, target.secure);
            if target.secure && !io.alpn_is_h2() {
                return Err(Error::Http2Unavailable {
                    authority: host,
                    reason: "the server did not choose h2 by ALPN".to_owned(),
                });
            }
            let conn = Self::handshake(io, target.secure, &host, config).await?;
            if !conn.takes_websockets() {
                return Err(conn.unavailable());
            }
            Ok(conn)
        };
        match tokio::time::timeout_at(deadline, open).await {
            Err(_) => Err(Error::HandshakeTimeout(timeout)),
            Ok(r) => r,
        }
    }

    /// Runs HTTP/2 (prior knowledge, or after TLS chose `h2`) over an open
    /// stream to `authority` (`host[:port]`), and waits for the server's
    /// SETTINGS. Does not check that it takes WebSockets
    /// ([`takes_websockets`](Self::takes_websockets)).
    pub(crate) async fn handshake<S>(
        io: S,
        secure: bool,
        authority: &str,
        config: &ClientConfig,
    ) -> Result<Self, Error>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let max_head = u32::try_from(config.max_head_size).unwrap_or(u32::MAX);
        let (send, mut connection) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_header_list_size(max_head)
            .enable_push(false)
            .handshake::<_, Bytes>(io)
            .await
            .map_err(Error::Http2)?;
        let ping = connection.ping_pong();
        let task_authority = authority.to_owned();
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(authority = %task_authority, %error, "HTTP/2 connection ended");
            }
        });
        // The server's connection preface is its SETTINGS (RFC 9113 §3.4),
        // before its answer to any PING: once the PONG is in, h2 has
        // applied them, and whether SETTINGS_ENABLE_CONNECT_PROTOCOL is 1
        // is known (RFC 8441 §3: no extended CONNECT before that).
        if let Some(mut ping) = ping {
            ping.ping(h2::Ping::opaque()).await.map_err(Error::Http2)?;
        }
        Ok(Self {
            send,
            scheme: if secure { "https" } else { "http" },
            authority: authority.to_owned(),
        })
    }

    /// Whether the server announced SETTINGS_ENABLE_CONNECT_PROTOCOL = 1,
    /// so that WebSockets can open on this connection.
    pub fn takes_websockets(&self) -> bool {
        self.send.is_extended_connect_protocol_enabled()
    }

    /// The server, as `host[:port]`.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    fn unavailable(&self) -> Error {
        Error::Http2Unavailable {
            authority: self.authority.clone(),
            reason: "the server did not announce SETTINGS_ENABLE_CONNECT_PROTOCOL \
                     (RFC 8441); use HTTP/1.1, or HttpVersion::Auto to fall back"
                .to_owned(),
        }
    }

    /// Opens a WebSocket as a new stream of this connection: an extended
    /// CONNECT to `target` (a path and query such as `/chat?room=1`, or a
    /// `ws://`/`wss://` URL of this server) with `config`'s subprotocols,
    /// headers and permessage-deflate offer, within
    /// `config.handshake_timeout`. The answer is checked as over HTTP/1.1
    /// (200 required, a subprotocol or extension not offered fails it); a
    /// refusal is [`Error::Handshake`] with the status, headers and body.
    /// `config`'s TLS, proxy and HTTP version settings are the
    /// connection's, not used here.
    pub async fn websocket(
        &self,
        target: &str,
        config: &ClientConfig,
    ) -> Result<(WebSocket<H2Stream>, HandshakeResponse), Error> {
        let (stream, accepted, response) = self.extended_connect(target, config).await?;
        opened(stream, &[], accepted, response, config)
    }

    /// The extended CONNECT of [`websocket`](Self::websocket), up to the
    /// checked answer.
    pub(crate) async fn extended_connect(
        &self,
        target: &str,
        config: &ClientConfig,
    ) -> Result<(H2Stream, Accepted, ServerResponse), Error> {
        let timeout = config.handshake_timeout;
        match tokio::time::timeout(timeout, self.open_stream(target, config)).await {
            Err(_) => Err(Error::HandshakeTimeout(timeout)),
            Ok(r) => r,
        }
    }

    async fn open_stream(
        &self,
        target: &str,
        config: &ClientConfig,
    ) -> Result<(H2Stream, Accepted, ServerResponse), Error> {
        let path = self.path_of(target)?;
        if !self.takes_websockets() {
            return Err(self.unavailable());
        }
        let mut offer = ClientRequest::new(self.authority.clone(), path.clone());
        offer.protocols = config.protocols.clone();
        offer.headers = config.headers.clone();
        offer.extensions = config.deflate.as_ref().map(client_offer);
        let request = self.request(&offer, &path)?;

        let mut send = self.send.clone().ready().await.map_err(Error::Http2)?;
        let (answer, stream) = send.send_request(request, false).map_err(Error::Http2)?;
        let answer = answer.await.map_err(Error::Http2)?;
        let (head, mut body) = answer.into_parts();
        let response = server_response(&head)?;
        match validate_extended_connect_response(&offer, &response) {
            Ok(accepted) => Ok((H2Stream::new(stream, body), accepted, response)),
            Err(HandshakeError::Rejected {
                status,
                reason,
                headers,
                ..
            }) => {
                let body = read_body(&mut body).await;
                Err(Error::Handshake(HandshakeError::Rejected {
                    status,
                    reason,
                    headers,
                    body,
                }))
            }
            Err(error) => {
                // An answer we cannot use: the stream is given up.
                let mut stream = stream;
                stream.send_reset(Reason::CANCEL);
                Err(error.into())
            }
        }
    }

    /// The path and query of `target`: itself if it starts with `/`, the
    /// URL's if it is a `ws://`/`wss://` URL of this connection's server.
    fn path_of(&self, target: &str) -> Result<String, Error> {
        if target.starts_with('/') {
            return Ok(target.to_owned());
        }
        let parsed = Target::parse(target)?;
        let authority = host_header(&parsed.host, parsed.port, parsed.secure);
        let scheme = if parsed.secure { "https" } else { "http" };
        if authority != self.authority || scheme != self.scheme {
            return Err(Error::Url {
                url: target.to_owned(),
                reason: format!(
                    "this HTTP/2 connection is to {}://{}: open another for another server",
                    self.scheme, self.authority
                ),
            });
        }
        Ok(parsed.path)
    }

    /// The extended CONNECT (RFC 8441 §4): `:method CONNECT`,
    /// `:protocol websocket`, `:scheme`, `:authority`, `:path`, then
    /// `sec-websocket-version: 13`, the offers and the configured fields.
    fn request(&self, offer: &ClientRequest, path: &str) -> Result<http::Request<()>, Error> {
        let uri = format!("{}://{}{}", self.scheme, self.authority, path);
        let uri: Uri = uri.parse().map_err(|e: http::uri::InvalidUri| Error::Url {
            url: uri.clone(),
            reason: e.to_string(),
        })?;
        let mut request = http::Request::new(());
        *request.method_mut() = Method::CONNECT;
        *request.uri_mut() = uri;
        *request.version_mut() = http::Version::HTTP_2;
        let fields = request.headers_mut();
        fields.insert(
            "sec-websocket-version",
            HeaderValue::from_static(wsline_proto::handshake::WEBSOCKET_VERSION),
        );
        if !offer.protocols.is_empty() {
            fields.insert(
                "sec-websocket-protocol",
                field_value("Sec-WebSocket-Protocol", &offer.protocols.join(", "))?,
            );
        }
        if let Some(extensions) = &offer.extensions {
            fields.insert(
                "sec-websocket-extensions",
                field_value("Sec-WebSocket-Extensions", extensions)?,
            );
        }
        for (name, value) in offer.headers.iter() {
            let lower = name.to_ascii_lowercase();
            if NOT_IN_HTTP2.contains(&lower.as_str()) {
                continue;
            }
            let name = HeaderName::from_bytes(lower.as_bytes())
                .map_err(|_| HandshakeError::Malformed(format!("invalid header name {name:?}")))?;
            let value = field_value(name.as_str(), value)?;
            fields.append(name, value);
        }
        request
            .extensions_mut()
            .insert(h2::ext::Protocol::from_static(EXTENDED_CONNECT_PROTOCOL));
        Ok(request)
    }
}

fn field_value(name: &str, value: &str) -> Result<HeaderValue, Error> {
    HeaderValue::from_str(value).map_err(|_| {
        Error::Handshake(HandshakeError::Malformed(format!(
            "invalid value for header {name}: {value:?}"
        )))
    })
}

/// The answer's head in wsline's terms (a non-UTF-8 value in a field the
/// handshake reads fails it, as over HTTP/1.1).
fn server_response(head: &http::response::Parts) -> Result<ServerResponse, Error> {
    let mut headers = Headers::new();
    for (name, value) in &head.headers {
        headers.push_received(name.as_str(), value.as_bytes())?;
    }
    Ok(ServerResponse {
        status: head.status.as_u16(),
        reason: reason_phrase(head.status.as_u16()).to_owned(),
        headers,
    })
}

/// A refusal's body, bounded in size and time.
async fn read_body(body: &mut RecvStream) -> Vec<u8> {
    let mut out = Vec::new();
    let read = async {
        while out.len() < MAX_REFUSAL_BODY {
            match body.data().await {
                Some(Ok(chunk)) => {
                    let _ = body.flow_control().release_capacity(chunk.len());
                    out.extend_from_slice(&chunk);
                }
                Some(Err(_)) | None => break,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), read).await;
    out.truncate(MAX_REFUSAL_BODY);
    out
}

/// One HTTP/2 stream as a byte stream: what a WebSocket over HTTP/2 runs
/// on (RFC 8441 §5). Reads take the stream's DATA (giving the flow-control
/// window back as they do), writes send DATA within the window the peer
/// grants, `poll_shutdown` ends the stream (END_STREAM, the counterpart of
/// a TCP FIN), and dropping it before then resets the stream
/// (RST_STREAM CANCEL, the counterpart of a TCP RST). The TCP connection
/// belongs to the HTTP/2 connection, never to one stream.
pub struct H2Stream {
    send: SendStream<Bytes>,
    recv: RecvStream,
    /// Received DATA not yet read.
    pending: Bytes,
    /// END_STREAM received: reads give EOF.
    read_ended: bool,
    /// END_STREAM sent.
    write_ended: bool,
}

impl fmt::Debug for H2Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("H2Stream")
            .field("stream_id", &u32::from(self.send.stream_id()))
            .field("read_ended", &self.read_ended)
            .field("write_ended", &self.write_ended)
            .finish_non_exhaustive()
    }
}

impl H2Stream {
    fn new(send: SendStream<Bytes>, recv: RecvStream) -> Self {
        Self {
            send,
            recv,
            pending: Bytes::new(),
            read_ended: false,
            write_ended: false,
        }
    }

    /// The error for a write on a stream the peer reset or that is over.
    fn poll_write_error(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        Poll::Ready(match ready!(self.send.poll_reset(cx)) {
            Ok(Reason::NO_ERROR) | Ok(Reason::CANCEL) | Ok(Reason::STREAM_CLOSED) => {
                io::ErrorKind::BrokenPipe.into()
            }
            Ok(reason) => h2_io_error(reason.into()),
            Err(error) => h2_io_error(error),
        })
    }
}

/// An h2 error as an I/O error: the transport's own when it is one.
fn h2_io_error(error: h2::Error) -> io::Error {
    if error.is_io() {
        match error.into_io() {
            Some(io) => io,
            None => io::Error::other("HTTP/2 transport error"),
        }
    } else {
        io::Error::other(error)
    }
}

impl AsyncRead for H2Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.pending.is_empty() {
                let n = this.pending.len().min(buf.remaining());
                buf.put_slice(&this.pending[..n]);
                this.pending.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.read_ended {
                return Poll::Ready(Ok(()));
            }
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    // The window is given back as soon as the DATA is ours:
                    // what the WebSocket has not read yet is bounded by
                    // `pending`, one frame's worth.
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    this.pending = data;
                }
                // The peer reset the stream with NO_ERROR after ending its
                // side: an orderly end, as RFC 9113 §8.1 allows.
                Some(Err(error)) if error.reason() == Some(Reason::NO_ERROR) => {
                    this.read_ended = true;
                }
                Some(Err(error)) => return Poll::Ready(Err(h2_io_error(error))),
                None => this.read_ended = true,
            }
        }
    }
}

impl AsyncWrite for H2Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.write_ended {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        this.send.reserve_capacity(buf.len());
        let sent = match ready!(this.send.poll_capacity(cx)) {
            Some(Ok(0)) | None => None,
            Some(Ok(n)) => {
                let n = n.min(buf.len());
                this.send
                    .send_data(Bytes::copy_from_slice(&buf[..n]), false)
                    .ok()
                    .map(|()| n)
            }
            Some(Err(_)) => None,
        };
        match sent {
            Some(n) => Poll::Ready(Ok(n)),
            None => this.poll_write_error(cx).map(Err),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The connection's task writes what the stream queued.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.write_ended {
            return Poll::Ready(Ok(()));
        }
        if this.send.send_data(Bytes::new(), true).is_ok() {
            this.write_ended = true;
            return Poll::Ready(Ok(()));
        }
        match ready!(this.send.poll_reset(cx)) {
            // The peer is done with the stream: nothing left to end.
            Ok(Reason::NO_ERROR) => Poll::Ready(Ok(())),
            Ok(Reason::CANCEL) | Ok(Reason::STREAM_CLOSED) => {
                Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()))
            }
            Ok(reason) => Poll::Ready(Err(h2_io_error(reason.into()))),
            Err(error) => Poll::Ready(Err(h2_io_error(error))),
        }
    }
}
