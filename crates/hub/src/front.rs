//! The front of every connection: which protocol it speaks, and who
//! serves it.
//!
//! Owns the first read. A plain TCP connection, or a TLS one whose ALPN
//! chose `http/1.1` (or nothing), is read by the hub's own head parser:
//! an HTTP/1.1 request to `/ws` goes the WebSocket path it always went
//! (wsline's parser and upgrade, no hyper in between: the fast path of
//! handshakes); any other request is handed, with the bytes read so far,
//! to hyper's HTTP/1.1 server with keep-alive; the HTTP/2 connection
//! preface (`PRI * HTTP/2.0`, cleartext HTTP/2 with prior knowledge) goes
//! to hyper's HTTP/2 server, as does a TLS connection whose ALPN chose
//! `h2`. hyper's HTTP/2 server announces SETTINGS_ENABLE_CONNECT_PROTOCOL,
//! so WebSockets over HTTP/2 (RFC 8441) arrive as requests
//! (`http::serve_request`).
//!
//! Does not own what is answered (`http.rs`), the session (`session.rs`)
//! or TLS configuration (`tls.rs`). The gate's handshake slot is held by a
//! connection until it becomes a WebSocket; a keep-alive HTTP/1.1
//! connection keeps it to its end (bounded by hyper's header read timeout,
//! `handshake_timeout`, between requests); an HTTP/2 connection, which a
//! browser keeps open as long as its WebSockets on it, trades it for an
//! open-connection permit once its preface is in (so that it never counts
//! as a stalled handshake of its address), and a dead peer is found by
//! HTTP/2 PINGs (`ping_interval`, `ping_timeout`). A drain's end shuts
//! these connections down gracefully.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use wsline::{Request, Response, WebSocket};
use wsline_proto::handshake::{parse_request, HandshakeError};

use crate::session::{self, Session};
use crate::{http, Hub};

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What the first bytes of a connection say it is.
enum Start {
    /// An HTTP/1.1 request to `/ws`, and the bytes after its head.
    WebSocket(Request, Vec<u8>),
    /// Another HTTP/1.x request: everything read so far, for hyper.
    Http1(Vec<u8>),
    /// The HTTP/2 preface: everything read so far, for hyper.
    Http2(Vec<u8>),
}

/// Serves a connection that speaks HTTP/1.x or cleartext HTTP/2: answers
/// it through hyper, or gives the session of its WebSocket.
pub(crate) async fn serve<S>(
    hub: Arc<Hub>,
    mut io: S,
    peer: SocketAddr,
    handshake: wsline::Handshake,
) -> Option<(Session, WebSocket<S>)>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let start = match read_start(&mut io, &hub.config.server).await {
        Ok(start) => start,
        Err(e) => {
            tracing::debug!(%peer, "bad request: {e}");
            return None;
        }
    };
    let (request, leftover) = match start {
        Start::WebSocket(request, leftover) => (request, leftover),
        Start::Http1(read) => {
            serve_http1(hub, Prefixed::new(read, io), peer).await;
            drop(handshake);
            return None;
        }
        Start::Http2(read) => {
            if let Some(_open) = http2_permit(&hub, peer, handshake) {
                serve_http2(hub, Prefixed::new(read, io), peer).await;
            }
            return None;
        }
    };
    if hub.is_stopping() {
        wsline::refuse(&mut io, &http::draining()).await;
        return None;
    }
    let open = match handshake.open() {
        Ok(permit) => permit,
        Err(refusal) => {
            hub.metrics.refused.fetch_add(1, Relaxed);
            wsline::refuse(&mut io, &refusal.response()).await;
            return None;
        }
    };
    session::open(hub, io, peer, request, leftover, open).await
}

/// Reads until the connection says what it is, within the handshake
/// timeout. A head that comes in one read is parsed where it lies; a bad
/// one is answered (400, 431) and closed, as `wsline::read_head` does.
async fn read_start<S>(io: &mut S, config: &wsline::ServerConfig) -> Result<Start, wsline::Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let timeout = config.handshake_timeout;
    match tokio::time::timeout(timeout, read_start_untimed(io, config.max_head_size)).await {
        Err(_) => Err(wsline::Error::HandshakeTimeout(timeout)),
        Ok(Err(wsline::Error::Handshake(e))) => {
            wsline::refuse(io, &Response::from_error(&e)).await;
            Err(wsline::Error::Handshake(e))
        }
        Ok(r) => r,
    }
}

async fn read_start_untimed<S>(io: &mut S, max_head: usize) -> Result<Start, wsline::Error>
where
    S: AsyncRead + Unpin,
{
    let mut buf = [0u8; 4096];
    // A start that arrived in pieces (empty while it comes in one read).
    let mut held: Vec<u8> = Vec::new();
    loop {
        let n = io.read(&mut buf).await?;
        if n == 0 {
            return Err(wsline::Error::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the client closed the connection before completing its request",
            )));
        }
        let whole: &[u8] = if held.is_empty() {
            &buf[..n]
        } else {
            held.extend_from_slice(&buf[..n]);
            &held
        };
        if whole.starts_with(PREFACE) {
            return Ok(Start::Http2(whole.to_vec()));
        }
        let partial = if PREFACE.starts_with(whole) {
            true
        } else {
            match parse_request(whole, max_head) {
                Ok(Some((request, used))) => {
                    return Ok(if request.path() == "/ws" {
                        Start::WebSocket(request, whole[used..].to_vec())
                    } else {
                        Start::Http1(whole.to_vec())
                    });
                }
                Ok(None) if whole.len() > max_head => {
                    return Err(HandshakeError::HeadTooLarge { limit: max_head }.into());
                }
                Ok(None) => true,
                Err(e) => return Err(e.into()),
            }
        };
        if partial && held.is_empty() {
            held.extend_from_slice(&buf[..n]);
        }
    }
}

/// Serves HTTP/1.1 with keep-alive on `io` until the client closes, the
/// header read timeout passes between requests, or a drain ends.
async fn serve_http1<S>(hub: Arc<Hub>, io: S, peer: SocketAddr)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut stop = hub.stopped();
    let service = {
        let hub = hub.clone();
        service_fn(move |request| {
            let hub = hub.clone();
            async move { Ok::<_, Infallible>(http::serve_request(hub, peer, request).await) }
        })
    };
    // A connection that arrives once a drain's grace is over still gets
    // its answer (`/healthz` 503, an upgrade's 503): one request, then
    // closed. A graceful shutdown would close it before it is read.
    let stopped_already = *stop.borrow_and_update();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .keep_alive(!stopped_already)
        .header_read_timeout(hub.config.server.handshake_timeout)
        .max_header_size(hub.config.server.max_head_size.max(1024));
    let conn = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    if stopped_already {
        let _ = conn.await;
        return;
    }
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = stop.wait_for(|stopped| *stopped) => conn.as_mut().graceful_shutdown(),
    }
    let _ = conn.await;
}

/// The open-connection permit an HTTP/2 connection holds instead of its
/// handshake slot, or `None` (counted, and the connection dropped) past
/// `max_connections`.
pub(crate) fn http2_permit(
    hub: &Hub,
    peer: SocketAddr,
    handshake: wsline::Handshake,
) -> Option<wsline::Connected> {
    match handshake.open() {
        Ok(open) => Some(open),
        Err(refusal) => {
            hub.metrics.refused.fetch_add(1, Relaxed);
            tracing::debug!(%peer, "HTTP/2 connection refused: {refusal}");
            None
        }
    }
}

/// Serves HTTP/2 on `io` (its WebSockets as extended CONNECT streams)
/// until the client goes away or a drain ends and its streams are over.
pub(crate) async fn serve_http2<S>(hub: Arc<Hub>, io: S, peer: SocketAddr)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut stop = hub.stopped();
    let service = {
        let hub = hub.clone();
        service_fn(move |request| {
            let hub = hub.clone();
            async move { Ok::<_, Infallible>(http::serve_request(hub, peer, request).await) }
        })
    };
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        // RFC 8441 §3: without it, clients send no extended CONNECT.
        .enable_connect_protocol()
        .keep_alive_interval(hub.config.server.protocol.ping_interval)
        .keep_alive_timeout(
            hub.config
                .server
                .protocol
                .ping_timeout
                .unwrap_or(std::time::Duration::from_secs(20)),
        )
        .max_header_list_size(hub.config.server.max_head_size.max(1024) as u32);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = stop.wait_for(|stopped| *stopped) => conn.as_mut().graceful_shutdown(),
    }
    let _ = conn.await;
}

/// A stream with bytes already read from it in front: what the first read
/// took, handed back to hyper.
pub(crate) struct Prefixed<S> {
    read: Vec<u8>,
    at: usize,
    io: S,
}

impl<S> Prefixed<S> {
    pub(crate) fn new(read: Vec<u8>, io: S) -> Self {
        Self { read, at: 0, io }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.at < this.read.len() {
            let n = (this.read.len() - this.at).min(buf.remaining());
            buf.put_slice(&this.read[this.at..this.at + n]);
            this.at += n;
            if this.at == this.read.len() {
                this.read = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn start_of(chunks: &[&[u8]]) -> Result<Start, wsline::Error> {
        let (mut client, mut server) = tokio::io::duplex(1 << 16);
        for chunk in chunks {
            tokio::io::AsyncWriteExt::write_all(&mut client, chunk)
                .await
                .unwrap();
        }
        drop(client);
        read_start_untimed(&mut server, 8192).await
    }

    #[tokio::test]
    async fn the_first_bytes_pick_the_protocol() {
        let ws = b"GET /ws HTTP/1.1\r\nHost: h\r\n\r\nextra";
        match start_of(&[ws]).await.unwrap() {
            Start::WebSocket(request, rest) => {
                assert_eq!(request.path(), "/ws");
                assert_eq!(rest, b"extra");
            }
            _ => panic!("not the WebSocket path"),
        }
        let api = b"POST /api/publish HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n{}";
        match start_of(&[api]).await.unwrap() {
            Start::Http1(read) => assert_eq!(read, api),
            _ => panic!("not HTTP/1.1"),
        }
        // The preface in pieces, as a client may write it.
        match start_of(&[b"PR", b"I * HTTP/2.0\r\n", b"\r\nSM\r\n\r\n\0\0"])
            .await
            .unwrap()
        {
            Start::Http2(read) => assert_eq!(read, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0"),
            _ => panic!("not HTTP/2"),
        }
        // A head in pieces keeps every byte.
        match start_of(&[b"GET /metr", b"ics HTTP/1.1\r\n\r\n"])
            .await
            .unwrap()
        {
            Start::Http1(read) => assert_eq!(read, b"GET /metrics HTTP/1.1\r\n\r\n"),
            _ => panic!("not HTTP/1.1"),
        }
        assert!(start_of(&[b"\x16\x03\x01garbage\r\n\r\n"]).await.is_err());
    }
}
