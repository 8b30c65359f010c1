//! The error type of the tokio layer.
//!
//! Owns how handshake, TLS, I/O and closing failures reach the user, with
//! messages that say what to do. Protocol violations by the peer are not
//! errors of a call: they end the connection, reported as
//! [`Error::Closed`] with the [`Termination`].

use std::time::Duration;

use wsline_proto::handshake::HandshakeError;
use wsline_proto::{SendError, Termination};

use crate::proxy::ProxyError;

/// Anything that can go wrong opening, using or closing a connection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The transport failed.
    #[error("network error: {0}")]
    Io(#[from] std::io::Error),
    /// The opening handshake was refused or broke RFC 6455. For a refusal
    /// by the server, [`HandshakeError::Rejected`] carries the HTTP status,
    /// headers and body.
    #[error("opening handshake failed: {0}")]
    Handshake(#[from] HandshakeError),
    /// The opening handshake did not complete in time.
    #[error("opening handshake did not complete within {0:?}; the peer is too slow or not a WebSocket endpoint")]
    HandshakeTimeout(Duration),
    /// Output was waiting and the peer took none of it for this long (it
    /// stopped reading); the connection is abandoned.
    #[error("the peer took no data for {0:?} while output was waiting; the connection was dropped (raise the write timeout if peers are slow but alive)")]
    WriteTimeout(Duration),
    /// The URL cannot be used.
    #[error("invalid WebSocket URL {url:?}: {reason}")]
    Url {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The proxy did not give a tunnel to the server: unreachable, refused
    /// the credentials or the target, or did not answer in time.
    /// `proxy` is the proxy's URL with the password hidden.
    #[error("proxy {proxy}: {source}")]
    Proxy {
        /// The proxy, as `SCHEME://[USER:***@]HOST:PORT`.
        proxy: String,
        /// What went wrong, and what to do about it.
        #[source]
        source: ProxyError,
    },
    /// A proxy URL cannot be used (from the configuration, the command
    /// line, or the environment: the reason then names the variable).
    #[error("invalid proxy URL {url:?}: {reason}")]
    ProxyUrl {
        /// The URL as given, with the password hidden.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// TLS could not be set up or negotiated. `source` keeps the cause:
    /// a [`rustls::Error`] (certificate, protocol), an I/O error carrying
    /// one (a failed handshake), or a PEM error; [`Error::rustls_error`]
    /// finds the rustls error among them.
    #[error("TLS error: {message}")]
    Tls {
        /// What failed, and what to do about it.
        message: String,
        /// The underlying error, if there is one.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    },
    /// The connection ended other than with a normal close (1000, 1001 or
    /// an empty Close, 1005: [`Termination::is_normal`]);
    /// the termination says how: the peer's code and reason, 1006, a
    /// protocol violation or a timeout. (Boxed to keep `Error`, and every
    /// `Result` carrying it, small.)
    #[error("connection closed: {} {}", .0.code(), .0.reason())]
    Closed(Box<Termination>),
    /// A message could not be queued (the connection is closing or closed).
    #[error(transparent)]
    Send(#[from] SendError),
    /// hyper did not hand the connection over after the 101 of
    /// [`crate::upgrade`]: the client left first, or the server does not
    /// serve its connections `with_upgrades()`.
    #[cfg(feature = "hyper")]
    #[error("the HTTP upgrade did not complete: {0} (a hyper server must serve its connections with `.with_upgrades()`)")]
    Upgrade(#[source] hyper::Error),
    /// WebSocket over HTTP/2 (RFC 8441) was required but cannot be had
    /// from this server: it did not announce
    /// SETTINGS_ENABLE_CONNECT_PROTOCOL = 1, did not choose `h2` by ALPN,
    /// or wsline was built without its `http2` feature (`reason` says
    /// which). [`crate::HttpVersion::Auto`] falls back to HTTP/1.1 instead.
    #[error("no WebSocket over HTTP/2 with {authority}: {reason}")]
    Http2Unavailable {
        /// The server, as `host:port`.
        authority: String,
        /// Why, and what to do.
        reason: String,
    },
    /// The HTTP/2 connection or the WebSocket's stream failed at the
    /// HTTP/2 layer (a GOAWAY, a RST_STREAM, a protocol error, or the
    /// transport underneath).
    #[cfg(feature = "http2")]
    #[error("HTTP/2 error: {0}")]
    Http2(#[source] h2::Error),
}

impl Error {
    /// The HTTP status of a refused handshake, if that is what this is.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            Error::Handshake(HandshakeError::Rejected { status, .. }) => Some(*status),
            _ => None,
        }
    }

    /// Why the proxy gave no tunnel, if that is what this is.
    pub fn proxy_error(&self) -> Option<&ProxyError> {
        match self {
            Error::Proxy { source, .. } => Some(source),
            _ => None,
        }
    }

    /// The rustls error behind a TLS failure, if there is one (e.g.
    /// `rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)`
    /// for a server whose certificate is not trusted).
    #[cfg(feature = "tls")]
    pub fn rustls_error(&self) -> Option<&rustls::Error> {
        let Error::Tls {
            source: Some(source),
            ..
        } = self
        else {
            return None;
        };
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(source.as_ref());
        while let Some(e) = cause {
            if let Some(tls) = e.downcast_ref::<rustls::Error>() {
                return Some(tls);
            }
            // io::Error's `source()` skips the error it wraps: look inside.
            if let Some(inner) = e
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
            {
                if let Some(tls) = inner.downcast_ref::<rustls::Error>() {
                    return Some(tls);
                }
            }
            cause = e.source();
        }
        None
    }

    /// A TLS error with a message and its cause.
    #[cfg(feature = "tls")]
    pub(crate) fn tls(
        message: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        Error::Tls {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// The termination, if the connection ended.
    pub fn termination(&self) -> Option<&Termination> {
        match self {
            Error::Closed(t) => Some(&**t),
            _ => None,
        }
    }
}
