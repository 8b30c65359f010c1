//! The hub's small HTTP/1.1 client: one request per connection over TCP,
//! or TLS for `https://` with the trust roots `wsline` clients use.
//!
//! Owns the URL's parts ([`Endpoint`]), writing one request and reading
//! its answer (`Content-Length`, chunked, or read to the end), bounded in
//! size. Owns no timeout: each caller bounds the whole exchange with its
//! own. Used by [`crate::jwks`] (GET of the key set) and [`crate::hooks`]
//! (POST of an event).

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// The largest response head read.
const MAX_HEAD: usize = 16 << 10;

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HttpError {
    /// Connecting, writing or reading failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The TLS configuration or handshake failed.
    #[error("TLS failed: {0}")]
    Tls(String),
    /// Head or body past the limits.
    #[error("the answer is too large")]
    TooLarge,
    /// Not an HTTP/1.1 answer this client can read.
    #[error("malformed HTTP answer: {0}")]
    Http(&'static str),
}

/// An `http://` or `https://` URL, ready to send requests to.
pub(crate) struct Endpoint {
    host: String,
    port: u16,
    /// Path and query of the request line.
    target: String,
    tls: Option<tokio_rustls::TlsConnector>,
}

impl Endpoint {
    /// Checks `url` and prepares TLS for `https://`; connects nowhere.
    pub(crate) fn new(url: &str) -> Result<Self, String> {
        let parsed = url::Url::parse(url).map_err(|e| e.to_string())?;
        let tls = match parsed.scheme() {
            "http" => None,
            "https" => {
                let config = wsline::tls::client_config(&wsline::TlsOptions::default())
                    .map_err(|e| e.to_string())?;
                Some(tokio_rustls::TlsConnector::from(Arc::new(config)))
            }
            other => return Err(format!("{other}:// is not http:// or https://")),
        };
        let host = parsed.host_str().ok_or("no host")?.to_owned();
        let port = parsed.port_or_known_default().ok_or("no port")?;
        let mut target = parsed.path().to_owned();
        if let Some(query) = parsed.query() {
            target.push('?');
            target.push_str(query);
        }
        Ok(Endpoint {
            host,
            port,
            target,
            tls,
        })
    }

    /// The port requests go to.
    #[cfg(test)]
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// The path and query of the request line.
    #[cfg(test)]
    pub(crate) fn target(&self) -> &str {
        &self.target
    }

    /// Sends `method` with `headers` (each `Name: value\r\n`, besides the
    /// Host, User-Agent, Connection and, with a body, Content-Length this
    /// writes) and `body`; returns the answer's status and body, at most
    /// `max_body` bytes.
    pub(crate) async fn send(
        &self,
        method: &str,
        headers: &str,
        body: &[u8],
        max_body: usize,
    ) -> Result<(u16, Vec<u8>), HttpError> {
        // An IPv6 literal is bracketed in the URL and the Host header only.
        let bare_host = self.host.trim_start_matches('[').trim_end_matches(']');
        let tcp = TcpStream::connect((bare_host, self.port)).await?;
        tcp.set_nodelay(true)?;
        let host_header = match (self.tls.is_some(), self.port) {
            (false, 80) | (true, 443) => self.host.clone(),
            (_, port) => format!("{}:{port}", self.host),
        };
        let mut request = format!(
            "{method} {} HTTP/1.1\r\nHost: {host_header}\r\n{headers}User-Agent: wsline-hub\r\nConnection: close\r\n",
            self.target
        );
        if !body.is_empty() || method == "POST" {
            request.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        request.push_str("\r\n");
        let mut request = request.into_bytes();
        request.extend_from_slice(body);
        match &self.tls {
            None => exchange(tcp, &request, max_body).await,
            Some(connector) => {
                let name = rustls::pki_types::ServerName::try_from(bare_host.to_owned())
                    .map_err(|e| HttpError::Tls(e.to_string()))?;
                let tls = connector
                    .connect(name, tcp)
                    .await
                    .map_err(|e| HttpError::Tls(e.to_string()))?;
                exchange(tls, &request, max_body).await
            }
        }
    }
}

/// How the body of an answer ends.
enum Framing {
    Length(usize),
    Chunked,
    Eof,
}

/// The head's length, status and framing, once the head is complete.
fn parse_head(buf: &[u8], max_body: usize) -> Result<Option<(usize, u16, Framing)>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return Err(HttpError::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(HttpError::Http("not an HTTP/1.1 response head")),
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
                .ok_or(HttpError::Http("a bad Content-Length"))?;
            if n > max_body {
                return Err(HttpError::TooLarge);
            }
            framing = Framing::Length(n);
        }
    }
    Ok(Some((len, status, framing)))
}

/// Writes `request`, reads the answer, and returns its status and body.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    request: &[u8],
    max_body: usize,
) -> Result<(u16, Vec<u8>), HttpError> {
    stream.write_all(request).await?;
    stream.flush().await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some((head, _, Framing::Length(n))) = parse_head(&buf, max_body)? {
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
        if buf.len() > MAX_HEAD + max_body {
            return Err(HttpError::TooLarge);
        }
    }
    let (head, status, framing) = parse_head(&buf, max_body)?.ok_or(HttpError::Http(
        "the connection closed before the head ended",
    ))?;
    let body = &buf[head..];
    let body = match framing {
        Framing::Length(n) => body.get(..n).map(<[u8]>::to_vec).ok_or(HttpError::Http(
            "the connection closed before the body ended",
        ))?,
        Framing::Chunked => dechunk(body, max_body)?,
        Framing::Eof if body.len() > max_body => return Err(HttpError::TooLarge),
        Framing::Eof => body.to_vec(),
    };
    Ok((status, body))
}

/// The body of a chunked transfer coding, at most `max_body` bytes.
fn dechunk(mut input: &[u8], max_body: usize) -> Result<Vec<u8>, HttpError> {
    let mut out = Vec::new();
    loop {
        let line_end = input
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or(HttpError::Http("a bad chunked body"))?;
        let line = std::str::from_utf8(&input[..line_end])
            .map_err(|_| HttpError::Http("a bad chunked body"))?;
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| HttpError::Http("a bad chunked body"))?;
        input = &input[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if size > max_body - out.len().min(max_body) {
            return Err(HttpError::TooLarge);
        }
        let data = input
            .get(..size)
            .ok_or(HttpError::Http("a bad chunked body"))?;
        out.extend_from_slice(data);
        input = input
            .get(size..)
            .and_then(|r| r.strip_prefix(b"\r\n"))
            .ok_or(HttpError::Http("a bad chunked body"))?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_are_joined_and_bounded() {
        const MAX: usize = 1 << 20;
        assert_eq!(
            dechunk(b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n", MAX).unwrap(),
            b"abcde"
        );
        assert!(dechunk(b"3\r\nab", MAX).is_err());
        assert!(dechunk(b"zz\r\n", MAX).is_err());
        assert!(matches!(
            dechunk(b"fffffffff\r\n", MAX),
            Err(HttpError::TooLarge)
        ));
    }

    #[test]
    fn urls_other_than_http_and_https_are_refused() {
        assert!(Endpoint::new("ftp://example.com/jwks").is_err());
        assert!(Endpoint::new("not a url").is_err());
        let e = Endpoint::new("http://127.0.0.1:9/a/jwks.json?x=1").unwrap();
        assert_eq!((e.port(), e.target()), (9, "/a/jwks.json?x=1"));
    }
}
