//! The JSON Web Key Set behind `jwks_url`: fetching it, caching the last
//! good set, and when to fetch again.
//!
//! Owns the rules: one fetch at start (a failure is logged and the hub
//! starts with no keys), one every `jwks_refresh` (a background task that
//! [`crate::serve`] runs), and one when a token names a key the set lacks,
//! at most once per [`UNKNOWN_KEY_INTERVAL`]; a failed fetch keeps the
//! last good set. Each fetch is bounded: [`FETCH_TIMEOUT`] in all and
//! [`MAX_BODY`] bytes. The HTTP client is a small HTTP/1.1 GET (one
//! request per connection, `Content-Length`, chunked or read to the end),
//! over TLS for `https://` with the trust roots `wsline` clients use.
//! Reading keys out of the document is [`crate::auth`]'s.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use crate::auth::{parse_jwks, AuthError, PublicKey};

/// The longest one fetch may take, connection and TLS included.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest JWKS body read.
pub const MAX_BODY: usize = 1 << 20;
/// The largest response head read.
const MAX_HEAD: usize = 16 << 10;
/// The shortest time between two fetches caused by unknown keys.
pub const UNKNOWN_KEY_INTERVAL: Duration = Duration::from_secs(10);

/// Why a JWKS fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// Connecting, writing or reading failed.
    #[error("cannot fetch the JWKS: {0}; check jwks_url and that its server is up")]
    Io(#[from] std::io::Error),
    /// The TLS configuration or handshake failed.
    #[error("TLS to the JWKS server failed: {0}")]
    Tls(String),
    /// No complete answer within [`FETCH_TIMEOUT`].
    #[error("no answer from the JWKS server within {} s", FETCH_TIMEOUT.as_secs())]
    Timeout,
    /// An HTTP status other than 200.
    #[error("the JWKS URL answered HTTP {0}, not 200")]
    Status(u16),
    /// Head or body past the limits.
    #[error("the JWKS answer is larger than {} KiB", MAX_BODY >> 10)]
    TooLarge,
    /// Not an HTTP/1.1 answer the client can read.
    #[error("malformed HTTP answer from the JWKS server: {0}")]
    Http(&'static str),
    /// The body is not a JSON Web Key Set.
    #[error("the JWKS URL did not serve a JSON Web Key Set: {0}")]
    Json(#[from] serde_json::Error),
}

/// The JWKS at one URL and its cached keys.
pub struct Jwks {
    url: String,
    host: String,
    port: u16,
    /// Path and query of the request line.
    target: String,
    tls: Option<tokio_rustls::TlsConnector>,
    keys: RwLock<Arc<Vec<PublicKey>>>,
    /// When the last fetch for an unknown key started; held while it runs,
    /// so tokens waiting for the same key share one fetch.
    unknown_key_fetch: Mutex<Option<Instant>>,
}

impl Jwks {
    /// Checks `url` and prepares TLS for `https://`; fetches nothing.
    pub fn new(url: &str) -> Result<Self, AuthError> {
        let bad = |reason: String| AuthError::JwksUrl {
            url: url.to_owned(),
            reason,
        };
        let parsed = url::Url::parse(url).map_err(|e| bad(e.to_string()))?;
        let tls = match parsed.scheme() {
            "http" => None,
            "https" => {
                let config = wsline::tls::client_config(&wsline::TlsOptions::default())
                    .map_err(|e| bad(e.to_string()))?;
                Some(tokio_rustls::TlsConnector::from(Arc::new(config)))
            }
            other => return Err(bad(format!("{other}:// is not http:// or https://"))),
        };
        let host = parsed
            .host_str()
            .ok_or_else(|| bad("no host".into()))?
            .to_owned();
        let port = parsed
            .port_or_known_default()
            .ok_or_else(|| bad("no port".into()))?;
        let mut target = parsed.path().to_owned();
        if let Some(query) = parsed.query() {
            target.push('?');
            target.push_str(query);
        }
        Ok(Jwks {
            url: url.to_owned(),
            host,
            port,
            target,
            tls,
            keys: RwLock::default(),
            unknown_key_fetch: Mutex::new(None),
        })
    }

    /// The cached keys.
    pub fn keys(&self) -> Arc<Vec<PublicKey>> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Fetches the set now and caches it; on failure keeps the last good
    /// set and logs why. Returns the number of usable keys fetched.
    pub async fn refresh(&self) -> Result<usize, JwksError> {
        let result = match tokio::time::timeout(FETCH_TIMEOUT, self.fetch()).await {
            Ok(result) => result,
            Err(_) => Err(JwksError::Timeout),
        };
        match result {
            Ok(keys) => {
                let n = keys.len();
                tracing::debug!(url = %self.url, keys = n, "JWKS fetched");
                *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
                Ok(n)
            }
            Err(e) => {
                tracing::warn!(url = %self.url, "JWKS fetch failed, keeping the last good set: {e}");
                Err(e)
            }
        }
    }

    /// The keys after one fetch for a token whose key the set lacks, unless
    /// such a fetch started less than [`UNKNOWN_KEY_INTERVAL`] ago (then
    /// the cached keys, after waiting for that fetch if it still runs).
    pub(crate) async fn refetch_for_unknown_key(&self) -> Arc<Vec<PublicKey>> {
        let mut last = self.unknown_key_fetch.lock().await;
        if last.is_some_and(|t| t.elapsed() < UNKNOWN_KEY_INTERVAL) {
            return self.keys();
        }
        *last = Some(Instant::now());
        let _ = self.refresh().await;
        self.keys()
    }

    /// Refreshes every `every`, forever (the caller aborts the task).
    pub(crate) async fn refresh_every(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let _ = self.refresh().await;
        }
    }

    async fn fetch(&self) -> Result<Vec<PublicKey>, JwksError> {
        // An IPv6 literal is bracketed in the URL and the Host header only.
        let bare_host = self.host.trim_start_matches('[').trim_end_matches(']');
        let tcp = TcpStream::connect((bare_host, self.port)).await?;
        let host_header = match (self.tls.is_some(), self.port) {
            (false, 80) | (true, 443) => self.host.clone(),
            (_, port) => format!("{}:{port}", self.host),
        };
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {host_header}\r\nAccept: application/json\r\nUser-Agent: wsline-hub\r\nConnection: close\r\n\r\n",
            self.target
        );
        let body = match &self.tls {
            None => exchange(tcp, request.as_bytes()).await?,
            Some(connector) => {
                let name = rustls::pki_types::ServerName::try_from(
                    self.host
                        .trim_start_matches('[')
                        .trim_end_matches(']')
                        .to_owned(),
                )
                .map_err(|e| JwksError::Tls(e.to_string()))?;
                let tls = connector
                    .connect(name, tcp)
                    .await
                    .map_err(|e| JwksError::Tls(e.to_string()))?;
                exchange(tls, request.as_bytes()).await?
            }
        };
        Ok(parse_jwks(&body)?)
    }
}

/// How the body of an answer ends.
enum Framing {
    Length(usize),
    Chunked,
    Eof,
}

/// The head's length, status and framing, once the head is complete.
fn parse_head(buf: &[u8]) -> Result<Option<(usize, u16, Framing)>, JwksError> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return Err(JwksError::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(JwksError::Http("not an HTTP/1.1 response head")),
    };
    let status = response.code.unwrap_or(0);
    let mut framing = Framing::Eof;
    for h in response.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if String::from_utf8_lossy(h.value)
                .to_ascii_lowercase()
                .contains("chunked")
            {
                framing = Framing::Chunked;
            }
        } else if h.name.eq_ignore_ascii_case("content-length")
            && !matches!(framing, Framing::Chunked)
        {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or(JwksError::Http("a bad Content-Length"))?;
            if n > MAX_BODY {
                return Err(JwksError::TooLarge);
            }
            framing = Framing::Length(n);
        }
    }
    Ok(Some((len, status, framing)))
}

/// Writes `request`, reads the answer, and returns its 200 body.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    request: &[u8],
) -> Result<Vec<u8>, JwksError> {
    stream.write_all(request).await?;
    stream.flush().await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some((head, _, Framing::Length(n))) = parse_head(&buf)? {
            if buf.len() >= head + n {
                break;
            }
        }
        let n = match stream.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => n,
            // A TLS server that closes without close_notify: what came is
            // checked below like any answer read to its end.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !buf.is_empty() => break,
            Err(e) => return Err(e.into()),
        };
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_HEAD + MAX_BODY {
            return Err(JwksError::TooLarge);
        }
    }
    let (head, status, framing) = parse_head(&buf)?.ok_or(JwksError::Http(
        "the connection closed before the head ended",
    ))?;
    if status != 200 {
        return Err(JwksError::Status(status));
    }
    let body = &buf[head..];
    match framing {
        Framing::Length(n) => body.get(..n).map(<[u8]>::to_vec).ok_or(JwksError::Http(
            "the connection closed before the body ended",
        )),
        Framing::Chunked => dechunk(body),
        Framing::Eof if body.len() > MAX_BODY => Err(JwksError::TooLarge),
        Framing::Eof => Ok(body.to_vec()),
    }
}

/// The body of a chunked transfer coding.
fn dechunk(mut input: &[u8]) -> Result<Vec<u8>, JwksError> {
    let mut out = Vec::new();
    loop {
        let line_end = input
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or(JwksError::Http("a bad chunked body"))?;
        let line = std::str::from_utf8(&input[..line_end])
            .map_err(|_| JwksError::Http("a bad chunked body"))?;
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| JwksError::Http("a bad chunked body"))?;
        input = &input[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if size > MAX_BODY - out.len().min(MAX_BODY) {
            return Err(JwksError::TooLarge);
        }
        let data = input
            .get(..size)
            .ok_or(JwksError::Http("a bad chunked body"))?;
        out.extend_from_slice(data);
        input = input
            .get(size..)
            .and_then(|r| r.strip_prefix(b"\r\n"))
            .ok_or(JwksError::Http("a bad chunked body"))?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_are_joined_and_bounded() {
        assert_eq!(
            dechunk(b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n").unwrap(),
            b"abcde"
        );
        assert!(dechunk(b"3\r\nab").is_err());
        assert!(dechunk(b"zz\r\n").is_err());
        assert!(matches!(
            dechunk(b"fffffffff\r\n"),
            Err(JwksError::TooLarge)
        ));
    }

    #[test]
    fn urls_other_than_http_and_https_are_refused() {
        assert!(Jwks::new("ftp://example.com/jwks").is_err());
        assert!(Jwks::new("not a url").is_err());
        let j = Jwks::new("http://127.0.0.1:9/a/jwks.json?x=1").unwrap();
        assert_eq!((j.port, j.target.as_str()), (9, "/a/jwks.json?x=1"));
    }
}
