//! The client side: URL, TCP, TLS and the opening handshake.
//!
//! Owns turning a `ws://` / `wss://` URL into an open [`WebSocket`]:
//! connecting (directly, or through the tunnel `proxy.rs` opens), TLS with
//! the server's name, sending the request (subprotocol offers, custom
//! headers), validating the response against RFC 6455 §4.1, and reporting
//! a refusal with its status, headers and body.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use wsline_proto::deflate::{client_offer, negotiate_client};
use wsline_proto::handshake::{
    host_header, parse_response, validate_response, ClientRequest, HandshakeError, Headers,
    ServerResponse, MAX_HEAD_SIZE_DEFAULT,
};
use wsline_proto::{Config, Connection, DeflateConfig, Role};

use crate::proxy::{NoProxy, ProxyChoice, ProxyError};
use crate::tls::{MaybeTlsStream, TlsOptions};
use crate::{Error, WebSocket};

/// The most of a refusal's body that is kept.
const MAX_REFUSAL_BODY: usize = 64 * 1024;

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
        }
    }
}

/// The server's answer to a successful handshake.
#[derive(Clone, Debug)]
pub struct HandshakeResponse {
    /// The 101 response as received.
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
pub async fn connect_with(
    url: &str,
    config: &ClientConfig,
) -> Result<(WebSocket<MaybeTlsStream>, HandshakeResponse), Error> {
    let target = Target::parse(url)?;
    let proxy = config
        .proxy
        .proxy_for(target.secure, &target.host, config.no_proxy.as_ref())?;
    let tls = if target.secure {
        Some(crate::tls::config_for(&config.tls)?)
    } else {
        None
    };
    let timeout = config.handshake_timeout;
    let deadline = tokio::time::Instant::now() + timeout;
    let open = async {
        let tcp = match &proxy {
            None => TcpStream::connect((target.host.as_str(), target.port)).await?,
            Some(proxy) => {
                let tunnel = crate::proxy::tunnel(proxy, &target.host, target.port);
                match tokio::time::timeout_at(deadline, tunnel).await {
                    Ok(tcp) => tcp?,
                    Err(_) => {
                        return Err(Error::Proxy {
                            proxy: proxy.to_string(),
                            source: ProxyError::Timeout(timeout),
                        })
                    }
                }
            }
        };
        let _ = tcp.set_nodelay(true);
        let io = match tls {
            Some(tls) => crate::tls::wrap(tcp, &target.host, tls).await?,
            None => MaybeTlsStream::Plain(tcp),
        };
        let host = host_header(&target.host, target.port, target.secure);
        handshake(io, &host, &target.path, config).await
    };
    match tokio::time::timeout_at(deadline, open).await {
        Err(_) => Err(Error::HandshakeTimeout(timeout)),
        Ok(r) => r,
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
    let mut ws = WebSocket::from_parts(io, conn, &buf, accepted.protocol.clone());
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
struct Target {
    secure: bool,
    host: String,
    port: u16,
    path: String,
}

impl Target {
    fn parse(raw: &str) -> Result<Self, Error> {
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
