//! Client proxies: which proxy a `connect` goes through, and opening the
//! tunnel through it.
//!
//! Owns the proxy settings ([`Proxy`], parsed from a proxy URL;
//! [`NoProxy`], the hosts that go direct; [`ProxyChoice`], the setting on
//! [`ClientConfig`](crate::ClientConfig)), reading them from the
//! environment the way curl does (only when the application asks for it:
//! [`ProxyChoice::FromEnv`]), and the two tunnels: HTTP `CONNECT` (with
//! Basic credentials) and SOCKS5 (RFC 1928, with RFC 1929
//! username/password), each ending in a plain TCP stream to the target.
//! It does not own TLS (`wss://` runs TLS with the target's name over the
//! tunnel, in `client.rs`) nor the WebSocket handshake. The how-to, with
//! runnable examples, is in the crate's documentation (section *Proxies*)
//! and `docs/client.md`.

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::Error;

/// The port of a proxy URL without one: curl's default for every proxy
/// kind it shares with wsline (HTTP and SOCKS5).
pub const DEFAULT_PROXY_PORT: u16 = 1080;

/// The largest answer head an HTTP proxy may send to `CONNECT`.
const MAX_CONNECT_HEAD: usize = 16 * 1024;

/// The kind of proxy, from the proxy URL's scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProxyScheme {
    /// `http://`: an HTTP proxy, tunnelling with `CONNECT host:port`
    /// (the proxy resolves the name). TLS to the proxy itself
    /// (`https://` proxies) is not supported.
    Http,
    /// `socks5://`: SOCKS5, with the target's name resolved here (the
    /// proxy is given an IP address).
    Socks5,
    /// `socks5h://`: SOCKS5, with the name sent to the proxy, which
    /// resolves it.
    Socks5h,
}

impl ProxyScheme {
    /// The URL scheme: `http`, `socks5` or `socks5h`.
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyScheme::Http => "http",
            ProxyScheme::Socks5 => "socks5",
            ProxyScheme::Socks5h => "socks5h",
        }
    }

    fn is_socks(self) -> bool {
        matches!(self, ProxyScheme::Socks5 | ProxyScheme::Socks5h)
    }
}

/// A proxy: its kind, address and optional credentials.
///
/// Parsed from a URL as curl reads `-x`: `[SCHEME://][USER[:PASSWORD]@]HOST[:PORT][/]`
/// with SCHEME `http` (the default when there is none), `socks5` or
/// `socks5h`; the user and password are percent-decoded (`%40` for `@`,
/// `%3A` for `:`); the port defaults to [`DEFAULT_PROXY_PORT`] (1080), as
/// curl documents; an IPv6 host is written in brackets.
///
/// `Display` and `Debug` never show the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    scheme: ProxyScheme,
    host: String,
    port: u16,
    credentials: Option<(String, String)>,
}

impl Proxy {
    /// A proxy without credentials. `host` is a name or an IP address
    /// (IPv6 without brackets).
    pub fn new(scheme: ProxyScheme, host: impl Into<String>, port: u16) -> Self {
        let host = host.into();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .map(str::to_owned)
            .unwrap_or(host);
        Proxy {
            scheme,
            host,
            port,
            credentials: None,
        }
    }

    /// The same proxy with these credentials (HTTP Basic, or SOCKS5
    /// username/password).
    pub fn with_credentials(
        mut self,
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        self.credentials = Some((username.into(), password.into()));
        self
    }

    /// Parses a proxy URL (see the type's documentation for the syntax).
    pub fn parse(url: &str) -> Result<Self, Error> {
        parse_proxy_url(url).map_err(|reason| Error::ProxyUrl {
            url: redact(url),
            reason,
        })
    }

    /// The kind of proxy.
    pub fn scheme(&self) -> ProxyScheme {
        self.scheme
    }

    /// The proxy's host name or IP address (IPv6 without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The user name, if credentials are set.
    pub fn username(&self) -> Option<&str> {
        self.credentials.as_ref().map(|(u, _)| u.as_str())
    }

    /// The password, if credentials are set.
    pub fn password(&self) -> Option<&str> {
        self.credentials.as_ref().map(|(_, p)| p.as_str())
    }

    /// Checks what the protocol itself limits: SOCKS5 credentials are 1
    /// to 255 bytes each (RFC 1929).
    fn check(self) -> Result<Self, String> {
        if self.host.is_empty() {
            return Err("the proxy URL has no host".into());
        }
        if let (true, Some((user, pass))) = (self.scheme.is_socks(), &self.credentials) {
            if user.is_empty() || user.len() > 255 || pass.is_empty() || pass.len() > 255 {
                return Err(
                    "SOCKS5 credentials need a user name and a password of 1 to 255 bytes each (RFC 1929)"
                        .into(),
                );
            }
        }
        Ok(self)
    }
}

impl FromStr for Proxy {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Proxy::parse(s)
    }
}

impl fmt::Display for Proxy {
    /// `SCHEME://[USER:***@]HOST:PORT`: the password is never shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", self.scheme.as_str())?;
        if let Some((user, _)) = &self.credentials {
            write!(f, "{user}:***@")?;
        }
        write!(f, "{}", authority(&self.host, self.port))
    }
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("scheme", &self.scheme)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username())
            .field("password", &self.password().map(|_| "***"))
            .finish()
    }
}

/// `host:port`, with an IPv6 address in brackets.
fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn parse_proxy_url(raw: &str) -> Result<Proxy, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err("the proxy URL is empty".into());
    }
    let (scheme, rest) = match raw.split_once("://") {
        Some((s, rest)) => {
            let scheme = match s.to_ascii_lowercase().as_str() {
                "http" => ProxyScheme::Http,
                "socks5" => ProxyScheme::Socks5,
                "socks5h" => ProxyScheme::Socks5h,
                "https" => {
                    return Err(
                        "HTTPS proxies (TLS to the proxy) are not supported; use http://, socks5:// or socks5h://"
                            .into(),
                    )
                }
                other => {
                    return Err(format!(
                        "unsupported proxy scheme {other:?}; use http://, socks5:// or socks5h://"
                    ))
                }
            };
            (scheme, rest)
        }
        None => (ProxyScheme::Http, raw),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    if !tail.is_empty() && tail != "/" {
        return Err(format!(
            "a proxy URL has no path, query or fragment (found {tail:?})"
        ));
    }
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let credentials = match userinfo {
        None | Some("") => None,
        Some(info) => {
            let (user, pass) = info.split_once(':').unwrap_or((info, ""));
            Some((decode(user, "user name")?, decode(pass, "password")?))
        }
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (ip, after) = v6
            .split_once(']')
            .ok_or("an IPv6 proxy address needs its closing ']'")?;
        ip.parse::<std::net::Ipv6Addr>()
            .map_err(|_| format!("{ip:?} is not an IPv6 address"))?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or("expected ':PORT' after ']'")?),
        };
        (ip.to_owned(), port)
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (hostport.to_owned(), None),
        }
    };
    if host.is_empty() {
        return Err("the proxy URL has no host".into());
    }
    if host
        .bytes()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || b"@[]<>\\\"%".contains(&b))
    {
        return Err(format!("{host:?} is not a valid host name"));
    }
    let port = match port {
        None => DEFAULT_PROXY_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(port) if port != 0 => port,
            _ => return Err(format!("{p:?} is not a valid port (1 to 65535)")),
        },
    };
    Proxy {
        scheme,
        host: host.to_ascii_lowercase(),
        port,
        credentials,
    }
    .check()
}

fn decode(part: &str, what: &str) -> Result<String, String> {
    percent_encoding::percent_decode_str(part)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| format!("the proxy {what} is not valid UTF-8 once percent-decoded"))
}

/// A proxy URL as it may be shown: the password replaced by `***`.
fn redact(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    match url[start..end].rfind('@') {
        Some(at) => {
            let info = &url[start..start + at];
            match info.find(':') {
                Some(colon) => format!("{}:***{}", &url[..start + colon], &url[start + at..]),
                None => url.to_owned(),
            }
        }
        None => url.to_owned(),
    }
}

/// Hosts that never go through a proxy, in the syntax of curl's
/// `NO_PROXY` / `--noproxy`.
///
/// The rule, as curl implements it: the list is separated by commas (and
/// blanks); the whole value `*` matches every host; an empty list matches
/// none. For a host *name*, an entry matches the name itself or any name
/// under it on a label boundary (`example.com` and `.example.com` both
/// match `example.com` and `www.example.com`, never `notexample.com`);
/// comparison ignores case and one trailing dot on either side. For a host
/// that is an *IP address*, an entry matches when it is the same address,
/// or a network in CIDR notation that contains it (`10.0.0.0/8`,
/// `fd00::/8`); names never match addresses (no DNS is done). Entries are
/// without a port.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NoProxy {
    all: bool,
    entries: Vec<String>,
}

impl NoProxy {
    /// Parses a list such as `localhost,.internal.example,10.0.0.0/8`.
    /// Nothing in it is an error: an entry that cannot match is kept and
    /// never matches, as in curl.
    pub fn parse(list: &str) -> Self {
        let list = list.trim();
        NoProxy {
            all: list == "*",
            entries: list
                .split([',', ' ', '\t'])
                .filter(|e| !e.is_empty())
                .map(str::to_ascii_lowercase)
                .collect(),
        }
    }

    /// Whether `host` (a name, or an IP address with or without IPv6
    /// brackets) goes direct.
    pub fn matches(&self, host: &str) -> bool {
        if self.all {
            return true;
        }
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return self.entries.iter().any(|e| cidr_contains(e, ip));
        }
        let name = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
        self.entries.iter().any(|entry| {
            let entry = entry.strip_suffix('.').unwrap_or(entry);
            let entry = entry.strip_prefix('.').unwrap_or(entry);
            if entry.is_empty() {
                return false;
            }
            name == entry
                || (name.len() > entry.len()
                    && name.ends_with(entry)
                    && name.as_bytes()[name.len() - entry.len() - 1] == b'.')
        })
    }
}

/// Whether `entry` (`ADDRESS` or `ADDRESS/BITS`) contains `ip`.
fn cidr_contains(entry: &str, ip: IpAddr) -> bool {
    let (addr, bits) = match entry.split_once('/') {
        Some((a, b)) => match b.parse::<u32>() {
            Ok(bits) => (a, Some(bits)),
            Err(_) => return false,
        },
        None => (entry, None),
    };
    let Ok(net) = addr
        .strip_prefix('[')
        .and_then(|a| a.strip_suffix(']'))
        .unwrap_or(addr)
        .parse::<IpAddr>()
    else {
        return false;
    };
    let (ip, net, width) = match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            (u128::from(u32::from(ip)), u128::from(u32::from(net)), 32)
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => (u128::from(ip), u128::from(net), 128),
        _ => return false,
    };
    let bits = bits.unwrap_or(width);
    if bits > width {
        return false;
    }
    if bits == 0 {
        return true;
    }
    let shift = width - bits;
    (ip >> shift) == (net >> shift)
}

/// Which proxy a client goes through: the
/// [`proxy`](crate::ClientConfig::proxy) setting.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProxyChoice {
    /// No proxy (the default): the environment is not read.
    #[default]
    Direct,
    /// This proxy, for every URL whose host
    /// [`no_proxy`](crate::ClientConfig::no_proxy) does not match (the
    /// environment is not read).
    Use(Proxy),
    /// The proxy the environment names for the URL, read at each connect
    /// the way curl reads it:
    ///
    /// - `wss://`: `wss_proxy`, `WSS_PROXY`, `https_proxy`, `HTTPS_PROXY`;
    /// - `ws://`: `ws_proxy`, `WS_PROXY`, `http_proxy` (lowercase only: curl
    ///   ignores `HTTP_PROXY`, which a CGI server sets from a request's
    ///   `Proxy:` header);
    /// - then, for both, `all_proxy`, `ALL_PROXY`.
    ///
    /// The first one set to a non-empty value is used. Hosts matched by
    /// [`no_proxy`](crate::ClientConfig::no_proxy), or when that is
    /// `None` by `no_proxy` / `NO_PROXY` (the first set, see [`NoProxy`]),
    /// go direct. A value that is not a valid proxy URL is an error
    /// naming the variable, not a silent direct connection.
    FromEnv,
}

impl From<Proxy> for ProxyChoice {
    fn from(proxy: Proxy) -> Self {
        ProxyChoice::Use(proxy)
    }
}

impl ProxyChoice {
    /// The proxy to use for a `ws://` (`secure` false) or `wss://` URL to
    /// `host`, reading the process environment for
    /// [`ProxyChoice::FromEnv`]; `None` is a direct connection.
    pub fn proxy_for(
        &self,
        secure: bool,
        host: &str,
        no_proxy: Option<&NoProxy>,
    ) -> Result<Option<Proxy>, Error> {
        self.proxy_for_with(secure, host, no_proxy, |name| std::env::var(name).ok())
    }

    /// [`proxy_for`](Self::proxy_for) with the environment given as a
    /// lookup function (for tests, or an environment of one's own).
    pub fn proxy_for_with(
        &self,
        secure: bool,
        host: &str,
        no_proxy: Option<&NoProxy>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Proxy>, Error> {
        match self {
            ProxyChoice::Direct => Ok(None),
            ProxyChoice::Use(proxy) => {
                if no_proxy.is_some_and(|n| n.matches(host)) {
                    Ok(None)
                } else {
                    Ok(Some(proxy.clone()))
                }
            }
            ProxyChoice::FromEnv => {
                let names: &[&str] = if secure {
                    &["wss_proxy", "WSS_PROXY", "https_proxy", "HTTPS_PROXY"]
                } else {
                    &["ws_proxy", "WS_PROXY", "http_proxy"]
                };
                let first_set = |names: &[&'static str]| {
                    names.iter().find_map(|&name| {
                        env(name)
                            .filter(|v| !v.trim().is_empty())
                            .map(|v| (name, v))
                    })
                };
                let Some((name, value)) =
                    first_set(names).or_else(|| first_set(&["all_proxy", "ALL_PROXY"]))
                else {
                    return Ok(None);
                };
                let env_no_proxy;
                let no_proxy = match no_proxy {
                    Some(n) => n,
                    None => {
                        env_no_proxy = first_set(&["no_proxy", "NO_PROXY"])
                            .map(|(_, v)| NoProxy::parse(&v))
                            .unwrap_or_default();
                        &env_no_proxy
                    }
                };
                if no_proxy.matches(host) {
                    return Ok(None);
                }
                parse_proxy_url(&value)
                    .map(Some)
                    .map_err(|reason| Error::ProxyUrl {
                        url: redact(&value),
                        reason: format!("{reason} (from ${name})"),
                    })
            }
        }
    }
}

/// Why a proxy did not give a tunnel. Each says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// No TCP connection to the proxy.
    #[error("cannot connect to the proxy: {0}; check its host and port, and that it is running")]
    Unreachable(#[source] io::Error),
    /// The tunnel was not open within the client's handshake timeout.
    #[error("the proxy did not open the tunnel within {0:?}; check that the proxy URL's scheme matches the proxy (http:// or socks5://) and that it can reach the server")]
    Timeout(Duration),
    /// The connection to the proxy failed during its handshake.
    #[error("the connection to the proxy failed during its handshake: {0}")]
    Io(#[source] io::Error),
    /// HTTP 407 (or 401) to a `CONNECT` without credentials.
    #[error("the proxy requires credentials (HTTP {status} {reason}); give them in the proxy URL: http://USER:PASSWORD@HOST:PORT")]
    CredentialsRequired {
        /// 407, or 401 from proxies (tinyproxy) that answer so.
        status: u16,
        /// The reason phrase.
        reason: String,
    },
    /// HTTP 407 (or 401) to a `CONNECT` with credentials: they are wrong.
    #[error("the proxy refused the username/password (HTTP {status} {reason}); check them (percent-encode '@', ':' and '%' in the URL)")]
    CredentialsRejected {
        /// 407, or 401 from proxies (tinyproxy) that answer so.
        status: u16,
        /// The reason phrase.
        reason: String,
    },
    /// The HTTP proxy answered `CONNECT` with another status than 2xx.
    #[error("the proxy refused to open a tunnel to {target}: HTTP {status} {reason}{}", refused_hint(*.status))]
    Refused {
        /// `host:port` asked for.
        target: String,
        /// The HTTP status.
        status: u16,
        /// The reason phrase.
        reason: String,
    },
    /// The HTTP proxy's answer to `CONNECT` was not a valid HTTP response
    /// head, too large, or followed by unexpected bytes.
    #[error("the proxy's answer to CONNECT is not usable: {0}; check that the proxy URL points at an HTTP proxy")]
    InvalidResponse(String),
    /// The SOCKS5 proxy wants a username/password and none was given.
    #[error("the SOCKS5 proxy requires a username/password; give them in the proxy URL: socks5://USER:PASSWORD@HOST:PORT")]
    Socks5CredentialsRequired,
    /// The SOCKS5 proxy refused the username/password (RFC 1929).
    #[error("the SOCKS5 proxy refused the username/password; check them (percent-encode '@', ':' and '%' in the URL)")]
    Socks5CredentialsRejected,
    /// The SOCKS5 proxy accepts none of the authentication methods offered
    /// (none, and username/password when credentials are set).
    #[error(
        "the SOCKS5 proxy accepts no authentication method wsline offers (none, username/password)"
    )]
    Socks5NoAcceptableMethod,
    /// The SOCKS5 proxy could not connect to the target.
    #[error("the SOCKS5 proxy could not connect to {target}: {source}; check that the server is up and that the proxy may reach it")]
    Socks5Refused {
        /// `host:port` asked for.
        target: String,
        /// The proxy's reply, as `tokio-socks` reports it.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The SOCKS5 exchange went wrong in another way.
    #[error("the SOCKS5 handshake failed: {0}; check that the proxy URL points at a SOCKS5 proxy")]
    Socks5Protocol(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// `socks5://` resolves the server's name here, and that failed.
    #[error("cannot resolve {host}: {source}; with socks5h:// the proxy resolves names instead")]
    Resolve {
        /// The name.
        host: String,
        /// The resolver's error.
        #[source]
        source: io::Error,
    },
}

fn refused_hint(status: u16) -> &'static str {
    match status {
        403 => " (the proxy may not allow CONNECT to this host or port)",
        500 | 502..=504 => " (the proxy could not reach the server: check that it is up)",
        _ => "",
    }
}

/// Opens a TCP connection to `host:port` through `proxy`. The caller
/// bounds it in time.
pub(crate) async fn tunnel(proxy: &Proxy, host: &str, port: u16) -> Result<TcpStream, Error> {
    let wrap = |source| Error::Proxy {
        proxy: proxy.to_string(),
        source,
    };
    match proxy.scheme {
        ProxyScheme::Http => {
            let tcp = connect_proxy(proxy).await.map_err(wrap)?;
            http_connect(tcp, proxy, host, port).await.map_err(wrap)
        }
        ProxyScheme::Socks5 | ProxyScheme::Socks5h => {
            socks5_tunnel(proxy, host, port).await.map_err(wrap)
        }
    }
}

async fn connect_proxy(proxy: &Proxy) -> Result<TcpStream, ProxyError> {
    TcpStream::connect((proxy.host.as_str(), proxy.port))
        .await
        .map_err(ProxyError::Unreachable)
}

/// SOCKS5 to `host:port`: the name as is for `socks5h://` (or an IP
/// address); for `socks5://`, each of the name's addresses in turn (a
/// new connection to the proxy each) while the proxy cannot reach them,
/// as a direct connect tries each.
async fn socks5_tunnel(proxy: &Proxy, host: &str, port: u16) -> Result<TcpStream, ProxyError> {
    use tokio_socks::TargetAddr;

    if proxy.scheme == ProxyScheme::Socks5h || host.parse::<IpAddr>().is_ok() {
        let target = match host.parse::<IpAddr>() {
            Ok(ip) => TargetAddr::Ip((ip, port).into()),
            Err(_) => TargetAddr::Domain(host.into(), port),
        };
        return socks5_connect(connect_proxy(proxy).await?, proxy, target, host, port).await;
    }
    let resolve_error = |source| ProxyError::Resolve {
        host: host.to_owned(),
        source,
    };
    let addrs: Vec<_> = tokio::net::lookup_host((host, port))
        .await
        .map_err(resolve_error)?
        .collect();
    let mut last = resolve_error(io::Error::new(
        io::ErrorKind::NotFound,
        "the name has no address",
    ));
    for addr in addrs {
        let tcp = connect_proxy(proxy).await?;
        match socks5_connect(tcp, proxy, TargetAddr::Ip(addr), host, port).await {
            Err(e @ ProxyError::Socks5Refused { .. }) => last = e,
            other => return other,
        }
    }
    Err(last)
}

/// `CONNECT host:port HTTP/1.1`; any 2xx opens the tunnel.
async fn http_connect(
    mut tcp: TcpStream,
    proxy: &Proxy,
    host: &str,
    port: u16,
) -> Result<TcpStream, ProxyError> {
    let target = authority(host, port);
    let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some((user, pass)) = &proxy.credentials {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        request.push_str(&format!("Proxy-Authorization: Basic {token}\r\n"));
    }
    request.push_str("\r\n");
    tcp.write_all(request.as_bytes())
        .await
        .map_err(ProxyError::Io)?;

    let mut buf = Vec::with_capacity(1024);
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&buf) {
            Ok(httparse::Status::Complete(used)) => {
                let status = response.code.unwrap_or(0);
                let reason = response.reason.unwrap_or("").to_owned();
                return match status {
                    200..=299 if buf.len() > used => Err(ProxyError::InvalidResponse(format!(
                        "{} bytes followed its 2xx answer before the tunnel was used",
                        buf.len() - used
                    ))),
                    200..=299 => Ok(tcp),
                    // A 401 to CONNECT can only be about the proxy's own
                    // credentials (tinyproxy answers wrong ones so).
                    401 | 407 if proxy.credentials.is_some() => {
                        Err(ProxyError::CredentialsRejected { status, reason })
                    }
                    401 | 407 => Err(ProxyError::CredentialsRequired { status, reason }),
                    _ => Err(ProxyError::Refused {
                        target,
                        status,
                        reason,
                    }),
                };
            }
            Ok(httparse::Status::Partial) if buf.len() >= MAX_CONNECT_HEAD => {
                return Err(ProxyError::InvalidResponse(format!(
                    "its head is larger than {MAX_CONNECT_HEAD} bytes"
                )));
            }
            Ok(httparse::Status::Partial) => {}
            Err(e) => return Err(ProxyError::InvalidResponse(e.to_string())),
        }
        let want = (MAX_CONNECT_HEAD - buf.len()).min(4096);
        let mut chunk = [0u8; 4096];
        let n = tcp.read(&mut chunk[..want]).await.map_err(ProxyError::Io)?;
        if n == 0 {
            return Err(ProxyError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the proxy closed the connection before answering CONNECT",
            )));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// SOCKS5 `CONNECT` (RFC 1928), with username/password (RFC 1929) when
/// the proxy URL has credentials.
async fn socks5_connect(
    tcp: TcpStream,
    proxy: &Proxy,
    target: tokio_socks::TargetAddr<'_>,
    host: &str,
    port: u16,
) -> Result<TcpStream, ProxyError> {
    use tokio_socks::tcp::Socks5Stream;
    use tokio_socks::Error as SocksError;

    let result = match &proxy.credentials {
        Some((user, pass)) => {
            Socks5Stream::connect_with_password_and_socket(tcp, target, user, pass).await
        }
        None => Socks5Stream::connect_with_socket(tcp, target).await,
    };
    match result {
        Ok(stream) => Ok(stream.into_inner()),
        Err(e) => Err(match e {
            SocksError::Io(e) => ProxyError::Io(e),
            SocksError::PasswordAuthFailure(_) => ProxyError::Socks5CredentialsRejected,
            SocksError::AuthorizationRequired => ProxyError::Socks5CredentialsRequired,
            SocksError::NoAcceptableAuthMethods if proxy.credentials.is_none() => {
                ProxyError::Socks5CredentialsRequired
            }
            SocksError::NoAcceptableAuthMethods => ProxyError::Socks5NoAcceptableMethod,
            e @ (SocksError::GeneralSocksServerFailure
            | SocksError::ConnectionNotAllowedByRuleset
            | SocksError::NetworkUnreachable
            | SocksError::HostUnreachable
            | SocksError::ConnectionRefused
            | SocksError::TtlExpired) => ProxyError::Socks5Refused {
                target: authority(host, port),
                source: Box::new(e),
            },
            e => ProxyError::Socks5Protocol(Box::new(e)),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Proxy {
        Proxy::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    fn parse_err(url: &str) -> String {
        match Proxy::parse(url) {
            Ok(p) => panic!("{url} parsed as {p:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_proxy_url_with_credentials_is_percent_decoded() {
        let p = parse("http://al%40ice:p%3Ass%25w@Proxy.Example:3128/");
        assert_eq!(p.scheme(), ProxyScheme::Http);
        assert_eq!(p.host(), "proxy.example");
        assert_eq!(p.port(), 3128);
        assert_eq!(p.username(), Some("al@ice"));
        assert_eq!(p.password(), Some("p:ss%w"));
    }

    #[test]
    fn a_password_may_hold_an_at_sign_the_last_one_ends_the_userinfo() {
        let p = parse("socks5://bob:a@b@127.0.0.1:9050");
        assert_eq!((p.username(), p.password()), (Some("bob"), Some("a@b")));
        assert_eq!(p.host(), "127.0.0.1");
    }

    #[test]
    fn the_default_port_is_1080_as_in_curl_and_an_explicit_80_is_kept() {
        assert_eq!(parse("http://proxy").port(), 1080);
        assert_eq!(parse("socks5://proxy").port(), 1080);
        assert_eq!(parse("socks5h://proxy/").port(), 1080);
        // The url crate would drop an explicit default port: not here.
        assert_eq!(parse("http://proxy:80").port(), 80);
    }

    #[test]
    fn a_url_without_a_scheme_is_an_http_proxy() {
        let p = parse("proxy.example:8080");
        assert_eq!((p.scheme(), p.port()), (ProxyScheme::Http, 8080));
    }

    #[test]
    fn schemes_are_case_insensitive_and_socks5h_is_its_own_kind() {
        assert_eq!(parse("SOCKS5H://h:1").scheme(), ProxyScheme::Socks5h);
        assert_eq!(parse("Socks5://h:1").scheme(), ProxyScheme::Socks5);
    }

    #[test]
    fn an_ipv6_proxy_is_written_in_brackets() {
        let p = parse("http://[::1]:3128");
        assert_eq!((p.host(), p.port()), ("::1", 3128));
        assert_eq!(p.to_string(), "http://[::1]:3128");
        assert_eq!(parse("socks5://[fe80::1]").port(), 1080);
    }

    #[test]
    fn a_user_without_a_password_has_an_empty_password() {
        let p = parse("http://carol@h:1");
        assert_eq!((p.username(), p.password()), (Some("carol"), Some("")));
    }

    #[test]
    fn bad_proxy_urls_are_refused_with_the_reason() {
        assert!(parse_err("https://h:1").contains("HTTPS proxies"));
        assert!(parse_err("socks4://h:1").contains("unsupported proxy scheme"));
        assert!(parse_err("http://h:0").contains("not a valid port"));
        assert!(parse_err("http://h:99999").contains("not a valid port"));
        assert!(parse_err("http://h:x").contains("not a valid port"));
        assert!(parse_err("http://:3128").contains("no host"));
        assert!(parse_err("http://h:1/path").contains("no path"));
        assert!(parse_err("http://[::1:3128").contains("closing ']'"));
        assert!(parse_err("").contains("empty"));
        assert!(parse_err("http://u:%ff@h:1").contains("UTF-8"));
        // RFC 1929: 1 to 255 bytes each.
        assert!(parse_err("socks5://u@h:1").contains("RFC 1929"));
        let long = "x".repeat(256);
        assert!(parse_err(&format!("socks5://u:{long}@h:1")).contains("RFC 1929"));
    }

    #[test]
    fn passwords_never_show_in_messages() {
        let p = parse("http://u:topsecret@h:1");
        assert_eq!(p.to_string(), "http://u:***@h:1");
        assert!(!format!("{p:?}").contains("topsecret"));
        let e = parse_err("socks5://u:topsecret@h:0");
        assert!(!e.contains("topsecret"), "{e}");
        assert!(e.contains("u:***@h:0"), "{e}");
    }

    #[test]
    fn no_proxy_matches_names_on_label_boundaries() {
        let n = NoProxy::parse("example.com, .internal.test,LOCALHOST");
        assert!(n.matches("example.com"));
        assert!(n.matches("www.example.com"));
        assert!(n.matches("WWW.Example.COM."));
        assert!(!n.matches("notexample.com"));
        assert!(!n.matches("example.com.evil"));
        assert!(n.matches("internal.test"));
        assert!(n.matches("a.b.internal.test"));
        assert!(n.matches("localhost"));
        assert!(!n.matches("localhost2"));
    }

    #[test]
    fn no_proxy_star_alone_matches_everything_and_empty_matches_nothing() {
        assert!(NoProxy::parse("*").matches("anything.example"));
        assert!(NoProxy::parse(" * ").matches("10.1.2.3"));
        assert!(!NoProxy::parse("").matches("example.com"));
        assert!(!NoProxy::parse(", ,").matches("example.com"));
        // As in curl, `*` is a wildcard only as the whole value.
        assert!(!NoProxy::parse("*,example.com").matches("other.test"));
    }

    #[test]
    fn no_proxy_matches_ip_addresses_literally_or_by_cidr() {
        let n = NoProxy::parse("127.0.0.1,10.0.0.0/8,::1,fd00::/8,192.168.1.0/33");
        assert!(n.matches("127.0.0.1"));
        assert!(!n.matches("127.0.0.2"));
        assert!(n.matches("10.200.3.4"));
        assert!(!n.matches("11.0.0.1"));
        assert!(n.matches("::1"));
        assert!(n.matches("[::1]"));
        assert!(n.matches("fd12:3456::1"));
        assert!(!n.matches("fe80::1"));
        // An invalid prefix length never matches.
        assert!(!n.matches("192.168.1.1"));
        // Names never match addresses, and addresses never match names.
        assert!(!NoProxy::parse("localhost").matches("127.0.0.1"));
        assert!(!NoProxy::parse("127.0.0.1").matches("localhost"));
    }

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    fn from_env(secure: bool, host: &str, vars: &[(&str, &str)]) -> Option<String> {
        ProxyChoice::FromEnv
            .proxy_for_with(secure, host, None, env(vars))
            .expect("valid")
            .map(|p| p.to_string())
    }

    #[test]
    fn env_wss_reads_https_proxy_in_either_case_then_all_proxy() {
        let host = "server.example";
        assert_eq!(
            from_env(true, host, &[("HTTPS_PROXY", "http://a:1")]).as_deref(),
            Some("http://a:1")
        );
        assert_eq!(
            from_env(
                true,
                host,
                &[("https_proxy", "http://b:1"), ("HTTPS_PROXY", "http://a:1")]
            )
            .as_deref(),
            Some("http://b:1"),
            "lowercase first, as curl"
        );
        assert_eq!(
            from_env(
                true,
                host,
                &[("ALL_PROXY", "socks5h://c:1"), ("http_proxy", "http://d:1")]
            )
            .as_deref(),
            Some("socks5h://c:1"),
            "wss:// never reads http_proxy"
        );
        assert_eq!(
            from_env(
                true,
                host,
                &[("wss_proxy", "http://e:1"), ("https_proxy", "http://b:1")]
            )
            .as_deref(),
            Some("http://e:1"),
            "curl's wss_proxy comes first"
        );
    }

    #[test]
    fn env_ws_reads_http_proxy_lowercase_only_then_all_proxy() {
        let host = "server.example";
        assert_eq!(
            from_env(false, host, &[("http_proxy", "http://a:1")]).as_deref(),
            Some("http://a:1")
        );
        assert_eq!(from_env(false, host, &[("HTTP_PROXY", "http://a:1")]), None);
        assert_eq!(
            from_env(
                false,
                host,
                &[("HTTP_PROXY", "http://a:1"), ("all_proxy", "socks5://f:2")]
            )
            .as_deref(),
            Some("socks5://f:2")
        );
        assert_eq!(
            from_env(false, host, &[("HTTPS_PROXY", "http://a:1")]),
            None,
            "ws:// never reads https_proxy"
        );
        assert_eq!(
            from_env(
                false,
                host,
                &[("http_proxy", ""), ("ALL_PROXY", "http://g:3")]
            )
            .as_deref(),
            Some("http://g:3"),
            "an empty variable counts as unset"
        );
    }

    #[test]
    fn env_no_proxy_sends_matching_hosts_direct() {
        let vars = [
            ("https_proxy", "http://a:1"),
            ("NO_PROXY", ".example,127.0.0.1"),
        ];
        assert_eq!(from_env(true, "server.example", &vars), None);
        assert_eq!(from_env(true, "127.0.0.1", &vars), None);
        assert_eq!(
            from_env(true, "other.test", &vars).as_deref(),
            Some("http://a:1")
        );
        let star = [("https_proxy", "http://a:1"), ("no_proxy", "*")];
        assert_eq!(from_env(true, "anything", &star), None);
        // no_proxy wins over NO_PROXY.
        let both = [
            ("https_proxy", "http://a:1"),
            ("no_proxy", "x.test"),
            ("NO_PROXY", "*"),
        ];
        assert_eq!(
            from_env(true, "other.test", &both).as_deref(),
            Some("http://a:1")
        );
    }

    #[test]
    fn an_explicit_no_proxy_replaces_the_environments() {
        let vars = [("https_proxy", "http://a:1"), ("NO_PROXY", "*")];
        let list = NoProxy::parse("only.test");
        let chosen = ProxyChoice::FromEnv
            .proxy_for_with(true, "other.test", Some(&list), env(&vars))
            .expect("valid");
        assert!(chosen.is_some());
    }

    #[test]
    fn an_invalid_proxy_in_the_environment_is_an_error_naming_the_variable() {
        let err = ProxyChoice::FromEnv
            .proxy_for_with(true, "h", None, env(&[("HTTPS_PROXY", "ftp://u:pw@p:1")]))
            .expect_err("invalid");
        let text = err.to_string();
        assert!(text.contains("$HTTPS_PROXY"), "{text}");
        assert!(!text.contains("pw@"), "{text}");
    }

    #[test]
    fn direct_and_use_never_read_the_environment() {
        let panicking = |name: &str| -> Option<String> { panic!("read ${name}") };
        assert_eq!(
            ProxyChoice::Direct
                .proxy_for_with(true, "h", None, panicking)
                .expect("ok"),
            None
        );
        let p = parse("socks5://p:1");
        let choice = ProxyChoice::Use(p.clone());
        assert_eq!(
            choice
                .proxy_for_with(true, "h", None, panicking)
                .expect("ok"),
            Some(p)
        );
        let local = NoProxy::parse("h");
        assert_eq!(
            choice
                .proxy_for_with(true, "h", Some(&local), panicking)
                .expect("ok"),
            None
        );
    }
}
