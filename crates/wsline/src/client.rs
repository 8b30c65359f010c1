//! The client side: URL, TCP, TLS and the opening handshake.
//!
//! Owns turning a `ws://` / `wss://` URL into an open [`WebSocket`]:
//! connecting (directly, or through the tunnel `proxy.rs` opens), TLS with
//! the server's name, sending the request (subprotocol offers, custom
//! headers), validating the response against RFC 6455 §4.1, and reporting
//! a refusal with its status, headers and body.
//!
//! It also chooses the HTTP version ([`HttpVersion`]): with the `http2`
//! feature, a WebSocket can be a stream of an HTTP/2 connection
//! (RFC 8441), opened by `h2.rs`, which owns that protocol; this file only
//! picks it (explicitly, or by ALPN on `wss://`) and falls back to
//! HTTP/1.1 when the server does not take it.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use wsline_proto::deflate::{client_offer, negotiate_client};
use wsline_proto::handshake::{
    host_header, parse_response, validate_response, Accepted, ClientRequest, HandshakeError,
    Headers, ServerResponse, MAX_HEAD_SIZE_DEFAULT,
};
use wsline_proto::{Config, Connection, DeflateConfig, Role};

use crate::proxy::{NoProxy, ProxyChoice, ProxyError};
use crate::tls::{MaybeTlsStream, TlsOptions};
use crate::{Error, WebSocket};

/// The most of a refusal's body that is kept.
pub(crate) const MAX_REFUSAL_BODY: usize = 64 * 1024;

/// Client settings.
///
/// ```
/// let mut config = wsline::ClientConfig::default();
/// config.protocols = vec!["chat".into()];
/// config.headers.push("Authorization", "Bearer t0ken");
/// config.tls.insecure = false;
/// // Through a proxy (see `Proxy` for the URL syntax), or
/// // `ProxyChoice::FromEnv` to read HTTPS_PROXY and friends as curl does.
/// config.proxy = "socks5h://127.0.0.1:1080".parse::<wsline::Proxy>()?.into();
/// # Ok::<(), wsline::Error>(())
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClientConfig {
    /// Limits and timers of the connection once open.
    pub protocol: Config,
    /// Subprotocols to offer, in preference order.
    pub protocols: Vec<String>,
    /// Extra request headers (e.g. `Authorization`, `Origin`).
    pub headers: Headers,
    /// TLS settings for `wss://`.
    pub tls: TlsOptions,
    /// Connecting, TLS and the opening handshake must finish within this
    /// time (default 10 s).
    pub handshake_timeout: Duration,
    /// The largest response head accepted (default 64 KiB).
    pub max_head_size: usize,
    /// permessage-deflate (RFC 7692) to offer; `None` offers nothing.
    /// Default: [`DeflateConfig::client_default`].
    pub deflate: Option<DeflateConfig>,
    /// Fail the connection when output waits and the server takes none of
    /// it for this long (default 30 s; `None`: wait forever). See
    /// [`WebSocket::set_write_timeout`].
    pub write_timeout: Option<Duration>,
    /// The proxy to go through (default [`ProxyChoice::Direct`]: none, and
    /// the environment is not read). The tunnel is part of the
    /// handshake: `handshake_timeout` bounds it too.
    pub proxy: ProxyChoice,
    /// Hosts that go direct even with a proxy (curl's `--noproxy`). `None`:
    /// none for [`ProxyChoice::Use`], and `NO_PROXY`/`no_proxy` for
    /// [`ProxyChoice::FromEnv`].
    pub no_proxy: Option<NoProxy>,
    /// HTTP/1.1 (the default), HTTP/2 (RFC 8441) or whichever the server
    /// takes: see [`HttpVersion`]. HTTP/2 needs the `http2` feature.
    pub http_version: HttpVersion,
}

/// Which HTTP carries the opening handshake of [`connect_with`].
///
/// - [`Http1`](HttpVersion::Http1) (default): an HTTP/1.1 upgrade (101).
/// - [`Http2`](HttpVersion::Http2): an RFC 8441 extended CONNECT on a new
///   HTTP/2 connection: `wss://` by TLS with ALPN `h2` only, `ws://` by
///   cleartext HTTP/2 with prior knowledge. A server that does not
///   announce SETTINGS_ENABLE_CONNECT_PROTOCOL (or does not choose `h2`)
///   gives [`Error::Http2Unavailable`]. Needs the `http2` feature.
/// - [`Auto`](HttpVersion::Auto): for `wss://`, ALPN offers `h2` and
///   `http/1.1`; HTTP/2 is used when the server chooses `h2` and
///   announces the setting, and otherwise HTTP/1.1 (on a new connection
///   if the server chose `h2` without the setting). `ws://` has no ALPN:
///   `Auto` is HTTP/1.1 there (take `Http2` for cleartext HTTP/2). Without
///   the `http2` feature, `Auto` is HTTP/1.1.
///
/// To open several WebSockets on one HTTP/2 connection, use
/// `wsline::h2::Connection` (feature `http2`).
///
/// ```no_run
/// # async fn demo() -> Result<(), wsline::Error> {
/// let mut config = wsline::ClientConfig::default();
/// config.http_version = wsline::HttpVersion::Auto; // or Http2 to require it
/// let (mut ws, handshake) = wsline::connect_with("wss://chat.example/ws", &config).await?;
/// // 200 over HTTP/2 (RFC 8441), 101 over HTTP/1.1.
/// println!("{}", handshake.response.status);
/// ws.send("hi".into()).await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum HttpVersion {
    /// HTTP/1.1 upgrade (RFC 6455 §4).
    #[default]
    Http1,
    /// HTTP/2 extended CONNECT (RFC 8441), required.
    Http2,
    /// HTTP/2 where the server takes it (ALPN and the setting), else
    /// HTTP/1.1.
    Auto,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            protocol: Config::default(),
            protocols: Vec::new(),
            headers: Headers::new(),
            tls: TlsOptions::default(),
            handshake_timeout: Duration::from_secs(10),
            max_head_size: MAX_HEAD_SIZE_DEFAULT,
            deflate: Some(DeflateConfig::client_default()),
            write_timeout: Some(Duration::from_secs(30)),
            proxy: ProxyChoice::Direct,
            no_proxy: None,
            http_version: HttpVersion::Http1,
        }
    }
}

/// The server's answer to a successful handshake.
#[derive(Clone, Debug)]
pub struct HandshakeResponse {
    /// The response as received: the 101, or the 200 of an HTTP/2
    /// extended CONNECT (its reason phrase the standard one).
    pub response: ServerResponse,
    /// The subprotocol the server chose, if any.
    pub protocol: Option<String>,
    /// The permessage-deflate parameters agreed, if compression is on.
    pub deflate: Option<wsline_proto::DeflateParams>,
}

/// Connects to a `ws://` or `wss://` URL with default settings.
///
/// ```no_run
/// # async fn demo() -> Result<(), wsline::Error> {
/// let (mut ws, _) = wsline::connect("ws://127.0.0.1:9001/chat").await?;
/// ws.send("hi".into()).await?;
/// # Ok(()) }
/// ```
pub async fn connect(url: &str) -> Result<(WebSocket<MaybeTlsStream>, HandshakeResponse), Error> {
    connect_with(url, &ClientConfig::default()).await
}

/// Connects to a `ws://` or `wss://` URL, through the proxy
/// `config.proxy` chooses for it, if any (`wss://` then runs TLS with the
/// server's name inside the tunnel).
///
/// `config.http_version` chooses HTTP/1.1 (default) or, with the `http2`
/// feature, a WebSocket over HTTP/2 (RFC 8441): the returned stream is
/// then [`MaybeTlsStream::H2`], one stream of an HTTP/2 connection of its
/// own (`wsline::h2::Connection` opens several on one connection).
pub async fn connect_with(
    url: &str,
    config: &ClientConfig,
) -> Result<(WebSocket<MaybeTlsStream>, HandshakeResponse), Error> {
    let target = Target::parse(url)?;
    let timeout = config.handshake_timeout;
    let deadline = tokio::time::Instant::now() + timeout;
    match tokio::time::timeout_at(deadline, open(&target, config, deadline)).await {
        Err(_) => Err(Error::HandshakeTimeout(timeout)),
        Ok(r) => r,
    }
}

/// [`connect_with`] within its deadline: by the HTTP version chosen.
async fn open(
    target: &Target,
    config: &ClientConfig,
    deadline: tokio::time::Instant,
) -> Result<(WebSocket<MaybeTlsStream>, HandshakeResponse), Error> {
    let host = host_header(&target.host, target.port, target.secure);
    match config.http_version {
        HttpVersion::Http1 => {
            let io = transport(target, config, deadline, Alpn::None).await?;
            handshake(io, &host, &target.path, config).await
        }
        #[cfg(feature = "http2")]
        HttpVersion::Http2 => {
            let io = transport(target, config, deadline, Alpn::H2).await?;
            if target.secure && !io.alpn_is_h2() {
                return Err(Error::Http2Unavailable {
                    authority: host,
                    reason: "the server did not choose h2 by ALPN; use HttpVersion::Auto to fall back to HTTP/1.1".to_owned(),
                });
            }
            let conn = crate::h2::Connection::handshake(io, target.secure, &host, config).await?;
            let (stream, accepted, response) = conn.extended_connect(&target.path, config).await?;
            opened(MaybeTlsStream::H2(stream), &[], accepted, response, config)
        }
        #[cfg(feature = "http2")]
        HttpVersion::Auto if target.secure => {
            let io = transport(target, config, deadline, Alpn::H2OrHttp1).await?;
            if !io.alpn_is_h2() {
                return handshake(io, &host, &target.path, config).await;
            }
            let conn = crate::h2::Connection::handshake(io, target.secure, &host, config).await?;
            if conn.takes_websockets() {
                let (stream, accepted, response) =
                    conn.extended_connect(&target.path, config).await?;
                return opened(MaybeTlsStream::H2(stream), &[], accepted, response, config);
            }
            // h2 without SETTINGS_ENABLE_CONNECT_PROTOCOL: that connection
            // cannot carry a WebSocket; HTTP/1.1 on a new one.
            drop(conn);
            tracing::debug!(%host, "no extended CONNECT over h2: falling back to HTTP/1.1");
            let io = transport(target, config, deadline, Alpn::Http1).await?;
            handshake(io, &host, &target.path, config).await
        }
        #[cfg(feature = "http2")]
        HttpVersion::Auto => {
            let io = transport(target, config, deadline, Alpn::None).await?;
            handshake(io, &host, &target.path, config).await
        }
        #[cfg(not(feature = "http2"))]
        HttpVersion::Http2 => Err(Error::Http2Unavailable {
            authority: host,
            reason: "wsline was built without its `http2` feature".to_owned(),
        }),
        #[cfg(not(feature = "http2"))]
        HttpVersion::Auto => {
            let io = transport(target, config, deadline, Alpn::None).await?;
            handshake(io, &host, &target.path, config).await
        }
    }
}

/// The ALPN protocols a `wss://` connection offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Alpn {
    /// Those of the TLS configuration (none, unless the caller's own
    /// `TlsOptions::config` sets some): HTTP/1.1.
    None,
    /// `http/1.1` only (after an `h2` connection could not be used).
    #[cfg_attr(not(feature = "http2"), allow(dead_code))]
    Http1,
    /// `h2` only.
    #[cfg_attr(not(feature = "http2"), allow(dead_code))]
    H2,
    /// `h2`, then `http/1.1`.
    #[cfg_attr(not(feature = "http2"), allow(dead_code))]
    H2OrHttp1,
}

impl Alpn {
    /// The protocols to offer; empty: leave the configuration's.
    fn protocols(self) -> &'static [&'static [u8]] {
        match self {
            Alpn::None => &[],
            Alpn::Http1 => &[b"http/1.1"],
            Alpn::H2 => &[b"h2"],
            Alpn::H2OrHttp1 => &[b"h2", b"http/1.1"],
        }
    }
}

/// [`transport`] offering only `h2` by ALPN (`wsline::h2::Connection`).
#[cfg(feature = "http2")]
pub(crate) async fn transport_h2(
    target: &Target,
    config: &ClientConfig,
    deadline: tokio::time::Instant,
) -> Result<MaybeTlsStream, Error> {
    transport(target, config, deadline, Alpn::H2).await
}

/// TCP to the server (directly, or through the proxy `config.proxy`
/// chooses), then TLS with the server's name for `wss://`, offering
/// `alpn`.
async fn transport(
    target: &Target,
    config: &ClientConfig,
    deadline: tokio::time::Instant,
    alpn: Alpn,
) -> Result<MaybeTlsStream, Error> {
    let proxy = config
        .proxy
        .proxy_for(target.secure, &target.host, config.no_proxy.as_ref())?;
    let tls = if target.secure {
        Some(crate::tls::config_with_alpn(&config.tls, alpn.protocols())?)
    } else {
        None
    };
    let tcp = match &proxy {
        None => TcpStream::connect((target.host.as_str(), target.port)).await?,
        Some(proxy) => {
            let tunnel = crate::proxy::tunnel(proxy, &target.host, target.port);
            match tokio::time::timeout_at(deadline, tunnel).await {
                Ok(tcp) => tcp?,
                Err(_) => {
                    return Err(Error::Proxy {
                        proxy: proxy.to_string(),
                        source: ProxyError::Timeout(config.handshake_timeout),
                    })
                }
            }
        }
    };
    let _ = tcp.set_nodelay(true);
    match tls {
        Some(tls) => crate::tls::wrap(tcp, &target.host, tls).await,
        None => Ok(MaybeTlsStream::Plain(tcp)),
    }
}

/// Runs the client handshake over an already open stream, for custom
/// transports. `host` is the `Host` header value, `target` the path and
/// query.
pub async fn handshake<S>(
    mut io: S,
    host: &str,
    target: &str,
    config: &ClientConfig,
) -> Result<(WebSocket<S>, HandshakeResponse), Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut request = ClientRequest::new(host, target);
    request.protocols = config.protocols.clone();
    request.headers = config.headers.clone();
    request.extensions = config.deflate.as_ref().map(client_offer);
    io.write_all(&request.to_bytes()).await?;
    io.flush().await?;

    let mut buf = BytesMut::with_capacity(1024);
    let (response, used) = loop {
        if let Some(parsed) = parse_response(&buf, config.max_head_size)? {
            break parsed;
        }
        if io.read_buf(&mut buf).await? == 0 {
            return Err(Error::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the server closed the connection before answering the handshake",
            )));
        }
    };
    let _ = buf.split_to(used);
    let accepted = match validate_response(&request, &response) {
        Ok(a) => a,
        Err(HandshakeError::Rejected {
            status,
            reason,
            headers,
            ..
        }) => {
            let body = read_body(&mut io, &headers, buf).await;
            return Err(Error::Handshake(HandshakeError::Rejected {
                status,
                reason,
                headers,
                body,
            }));
        }
        Err(e) => return Err(e.into()),
    };
    opened(io, &buf, accepted, response, config)
}

/// The client's WebSocket once the server accepted (over either HTTP):
/// the core with the agreed permessage-deflate (an answer the offer does
/// not allow fails the handshake), the write timeout, what was agreed.
pub(crate) fn opened<S>(
    io: S,
    leftover: &[u8],
    accepted: Accepted,
    response: ServerResponse,
    config: &ClientConfig,
) -> Result<(WebSocket<S>, HandshakeResponse), Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut conn = Connection::new(
        Role::Client,
        config.protocol.clone(),
        tokio::time::Instant::now().into_std(),
    );
    let mut deflate = None;
    if let Some(cfg) = &config.deflate {
        deflate = negotiate_client(&accepted.extensions, cfg)
            .map_err(HandshakeError::InvalidExtensionAnswer)?;
        if let Some(params) = &deflate {
            conn.enable_deflate(params, cfg);
        }
    }
    let mut ws = WebSocket::from_parts(io, conn, leftover, accepted.protocol.clone());
    ws.set_write_timeout(config.write_timeout);
    Ok((
        ws,
        HandshakeResponse {
            response,
            protocol: accepted.protocol,
            deflate,
        },
    ))
}

/// Reads a refusal's body: Content-Length bytes, or until EOF, bounded in
/// size and time.
async fn read_body<S: AsyncRead + Unpin>(
    io: &mut S,
    headers: &Headers,
    mut buf: BytesMut,
) -> Vec<u8> {
    let want = headers
        .get("content-length")
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(MAX_REFUSAL_BODY)
        .min(MAX_REFUSAL_BODY);
    let read = async {
        while buf.len() < want {
            match io.read_buf(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), read).await;
    buf.truncate(want);
    buf.to_vec()
}

/// The parts of a WebSocket URL.
pub(crate) struct Target {
    pub(crate) secure: bool,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) path: String,
}

impl Target {
    pub(crate) fn parse(raw: &str) -> Result<Self, Error> {
        let bad = |reason: &str| Error::Url {
            url: raw.to_owned(),
            reason: reason.to_owned(),
        };
        let url = url::Url::parse(raw).map_err(|e| bad(&e.to_string()))?;
        let secure = match url.scheme() {
            "ws" => false,
            "wss" => true,
            _ => return Err(bad("the scheme must be ws:// or wss://")),
        };
        if url.fragment().is_some() {
            return Err(bad("a WebSocket URL cannot have a #fragment"));
        }
        let host = match url.host() {
            Some(url::Host::Domain(d)) => d.to_owned(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            None => return Err(bad("the URL has no host")),
        };
        let port = url.port().unwrap_or(if secure { 443 } else { 80 });
        let mut path = url.path().to_owned();
        if path.is_empty() {
            path.push('/');
        }
        if let Some(q) = url.query() {
            path.push('?');
            path.push_str(q);
        }
        Ok(Self {
            secure,
            host,
            port,
            path,
        })
    }
}
