//! The server side of the opening handshake over a tokio stream: the
//! [`crate::driver`]'s head and decision, pumped with tokio I/O.
//!
//! Owns [`ServerConfig`], the public `accept*` calls and writing the 101 or
//! the refusal in bounded time. The rules (head size, RFC 6455 §4.2
//! checks, Origin, subprotocols, extensions) live in the driver. It does
//! not own listening or TLS: hand it any accepted stream.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use wsline_proto::handshake::{Headers, Request, Response, MAX_HEAD_SIZE_DEFAULT};
use wsline_proto::{Config, Connection, DeflateConfig};

use crate::driver::{answer_request, Accepted, HeadProgress, Refused, RequestHead};
use crate::{Error, Limits, WebSocket};

/// Server settings: protocol limits and timers, the handshake's limits,
/// the Origin allow-list and the supported subprotocols.
///
/// ```
/// let mut config = wsline::ServerConfig::default();
/// config.allowed_origins = vec!["https://example.com".into()];
/// config.subprotocols = vec!["chat.v2".into(), "chat.v1".into()];
/// config.protocol.max_message_size = 1 << 20;
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Limits and timers of the connection once open.
    pub protocol: Config,
    /// The largest request head accepted (default 64 KiB); larger → 431.
    pub max_head_size: usize,
    /// The whole request head must arrive within this time (default 10 s).
    pub handshake_timeout: Duration,
    /// If not empty, a request whose `Origin` is not listed gets 403. A
    /// request without `Origin` (not from a browser) is allowed.
    pub allowed_origins: Vec<String>,
    /// Supported subprotocols in preference order: the first one the
    /// client offered is chosen; none in common → no header.
    pub subprotocols: Vec<String>,
    /// permessage-deflate (RFC 7692), accepted when a client offers it;
    /// `None` never compresses. Default: [`DeflateConfig::server_default`].
    pub deflate: Option<DeflateConfig>,
    /// Fail a connection whose output waits while the client takes none of
    /// it for this long (default 30 s; `None`: wait forever): a client that
    /// stops reading cannot hold a writer. See
    /// [`WebSocket::set_write_timeout`].
    pub write_timeout: Option<Duration>,
    /// Close with 1001 a connection that sends no message for this long
    /// (default `None`: never; keepalive already drops dead peers). See
    /// [`WebSocket::set_idle_timeout`].
    pub idle_timeout: Option<Duration>,
    /// Caps on open connections and handshakes in progress, for the
    /// [`crate::Gate`] of an accept loop (`Gate::new(config.limits)`);
    /// `accept` itself does not count connections.
    pub limits: Limits,
    /// `protocol` behind the `Arc` every connection shares (made at the
    /// first connection; see [`ServerConfig::shared_protocol`]).
    pub(crate) shared_protocol: std::sync::OnceLock<std::sync::Arc<Config>>,
}

impl ServerConfig {
    /// `protocol`, shared: the same `Arc` for every connection while
    /// `protocol` is unchanged (a connection then spends 8 bytes on its
    /// configuration, not 64, and no allocation); a fresh one if
    /// `protocol` was changed after the first connection.
    pub(crate) fn shared_protocol(&self) -> std::sync::Arc<Config> {
        let shared = self
            .shared_protocol
            .get_or_init(|| std::sync::Arc::new(self.protocol.clone()));
        if **shared == self.protocol {
            shared.clone()
        } else {
            std::sync::Arc::new(self.protocol.clone())
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            protocol: Config::default(),
            max_head_size: MAX_HEAD_SIZE_DEFAULT,
            handshake_timeout: Duration::from_secs(10),
            allowed_origins: Vec::new(),
            subprotocols: Vec::new(),
            deflate: Some(DeflateConfig::server_default()),
            write_timeout: Some(Duration::from_secs(30)),
            idle_timeout: None,
            limits: Limits::default(),
            shared_protocol: std::sync::OnceLock::new(),
        }
    }
}

/// What the application decides about a request that passed the checks.
#[derive(Clone, Debug, Default)]
pub struct Acceptance {
    /// The subprotocol to answer with; `None` keeps the one chosen from
    /// [`ServerConfig::subprotocols`]. It must be one the client offered.
    pub protocol: Option<String>,
    /// Extra response headers.
    pub headers: Headers,
}

/// Accepts a WebSocket connection on `io` with the checks and defaults of
/// `config`.
///
/// ```no_run
/// use wsline::{accept, Message, ServerConfig};
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:9001").await?;
/// let config = ServerConfig::default();
/// loop {
///     let (tcp, _) = listener.accept().await?;
///     let config = config.clone();
///     tokio::spawn(async move {
///         let Ok(mut ws) = accept(tcp, &config).await else { return };
///         while let Some(Ok(msg)) = ws.recv().await {
///             if ws.send(msg).await.is_err() { break }
///         }
///     });
/// }
/// # }
/// ```
pub async fn accept<S>(io: S, config: &ServerConfig) -> Result<WebSocket<S>, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    accept_with(io, config, |_| Ok(Acceptance::default())).await
}

/// Accepts a connection, letting `decide` look at the request (path,
/// query, headers, Origin) after the RFC checks and either accept it
/// (choosing a subprotocol, adding headers) or refuse it with a response,
/// e.g. `Response::reject(401, "token required")`.
pub async fn accept_with<S, F>(
    mut io: S,
    config: &ServerConfig,
    decide: F,
) -> Result<WebSocket<S>, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnOnce(&Request) -> Result<Acceptance, Response>,
{
    let (request, leftover) = read_head(&mut io, config).await?;
    accept_request(io, request, &leftover, config, decide).await
}

/// Reads an HTTP request head, bounded by the configuration's head size
/// (431 at once past it) and handshake timeout, answering malformed heads
/// with 400. Returns the request and any bytes read past its head. For
/// servers that answer plain HTTP on the same port: read the head, then
/// route to [`accept_request`] or answer it yourself.
pub async fn read_head<S>(io: &mut S, config: &ServerConfig) -> Result<(Request, Vec<u8>), Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let timeout = config.handshake_timeout;
    let read = tokio::time::timeout(timeout, read_request(io, config)).await;
    match read {
        Err(_) => Err(Error::HandshakeTimeout(timeout)),
        Ok(Err(Error::Handshake(e))) => {
            refuse(io, &Response::from_error(&e)).await;
            Err(Error::Handshake(e))
        }
        Ok(Err(e)) => Err(e),
        Ok(Ok((request, leftover))) => Ok((request, leftover)),
    }
}

/// Completes the upgrade for a request read with [`read_head`]: the RFC
/// checks, the Origin policy, `decide`, extension negotiation, then 101.
pub async fn accept_request<S, F>(
    mut io: S,
    request: Request,
    leftover: &[u8],
    config: &ServerConfig,
    decide: F,
) -> Result<WebSocket<S>, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnOnce(&Request) -> Result<Acceptance, Response>,
{
    let timeout = config.handshake_timeout;
    let now = tokio::time::Instant::now().into_std();
    let Accepted {
        response,
        conn,
        protocol,
    } = match answer_request(&request, config, decide, now) {
        Ok(accepted) => accepted,
        Err(Refused { response, error }) => {
            refuse(&mut io, &response).await;
            return Err(Error::Handshake(error));
        }
    };
    let write = async {
        io.write_all(&response.to_bytes()).await?;
        io.flush().await
    };
    match tokio::time::timeout(timeout, write).await {
        Err(_) => return Err(Error::HandshakeTimeout(timeout)),
        Ok(r) => r?,
    }
    Ok(Opening::new(config).open(io, conn, leftover, protocol))
}

/// What an open server connection's pump takes from a [`ServerConfig`]
/// (the core's own settings, `config.protocol`, are in its `Connection`
/// already, from [`answer_request`]): the one place every tokio server
/// path, [`accept_request`] and the hyper upgrade, sets them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Opening {
    write_timeout: Option<Duration>,
    idle_timeout: Option<Duration>,
}

impl Opening {
    pub(crate) fn new(config: &ServerConfig) -> Self {
        Self {
            write_timeout: config.write_timeout,
            idle_timeout: config.idle_timeout,
        }
    }

    /// The WebSocket over `io`, once the 101 is written.
    pub(crate) fn open<S>(
        self,
        io: S,
        conn: Connection,
        leftover: &[u8],
        protocol: Option<String>,
    ) -> WebSocket<S>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut ws = WebSocket::from_parts(io, conn, leftover, protocol);
        ws.set_write_timeout(self.write_timeout);
        ws.set_idle_timeout(self.idle_timeout);
        ws
    }
}

/// Reads until a complete request head ([`RequestHead`]); refuses an
/// oversized one as soon as the limit is passed.
async fn read_request<S: AsyncRead + Unpin>(
    io: &mut S,
    config: &ServerConfig,
) -> Result<(Request, Vec<u8>), Error> {
    let mut head = RequestHead::new(config, tokio::time::Instant::now().into_std());
    let mut buf = [0u8; 4096];
    loop {
        let n = io.read(&mut buf).await?;
        if n == 0 {
            return Err(Error::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the client closed the connection before completing its request",
            )));
        }
        match head.receive(&buf[..n]) {
            HeadProgress::Complete(request, rest) => return Ok((request, rest)),
            HeadProgress::Partial => {}
            HeadProgress::Refuse(e) => return Err(e.into()),
        }
    }
}

/// Writes an HTTP response (a refusal, or any plain answer) and closes the
/// stream, best effort and bounded in time.
pub async fn refuse<S: AsyncWrite + Unpin>(io: &mut S, response: &Response) {
    let write = async {
        io.write_all(&response.to_bytes()).await?;
        io.flush().await?;
        io.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), write).await;
}
