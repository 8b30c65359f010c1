//! TLS (rustls): for `wss://` clients, trust roots, an extra CA file, an
//! explicit insecure mode for testing, or the caller's own
//! `rustls::ClientConfig` ([`TlsOptions::config`]: client certificates,
//! in-memory roots, ALPN), and [`MaybeTlsStream`], the stream type
//! `connect` returns (TCP, TLS, or with the `http2` feature one stream of
//! an HTTP/2 connection, which `h2.rs` owns); for servers,
//! [`server_config`] from PEM files.
//!
//! Servers terminate TLS themselves: wrap the accepted stream with a
//! `tokio_rustls::TlsAcceptor` (from [`server_config`] or a
//! `rustls::ServerConfig` of their own) and pass it to [`crate::accept`]:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::path::Path;
//! let tls = wsline::tls::server_config(Path::new("cert.pem"), Path::new("key.pem"))?;
//! let acceptor = tokio_rustls::TlsAcceptor::from(tls);
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:443").await?;
//! let (tcp, _) = listener.accept().await?;
//! let mut ws = wsline::accept(acceptor.accept(tcp).await?, &Default::default()).await?;
//! # Ok(()) }
//! ```

use std::io;
use std::path::PathBuf;
use std::pin::Pin;
#[cfg(feature = "tls")]
use std::sync::Arc;
use std::task::{Context, Poll};

#[cfg(feature = "tls")]
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
#[cfg(feature = "tls")]
use rustls::pki_types::pem::PemObject;
#[cfg(feature = "tls")]
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
#[cfg(feature = "tls")]
use rustls::{DigitallySignedStruct, SignatureScheme};
#[cfg(feature = "tls")]
use std::path::Path;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::Error;

/// How a client verifies servers over `wss://`.
#[derive(Clone, Debug, Default)]
pub struct TlsOptions {
    /// Extra trusted roots: a PEM file of CA certificates (or of the
    /// server's own self-signed certificate). Certificates for IP
    /// addresses work too.
    pub ca_file: Option<PathBuf>,
    /// Skip certificate verification entirely. For testing only: anyone on
    /// the path can read and change the traffic.
    pub insecure: bool,
    /// Do not load the platform's trust store (only the bundled Mozilla
    /// roots and `ca_file`).
    pub no_platform_roots: bool,
    /// A rustls configuration to use as it is, instead of one built from
    /// the options above (which are then ignored): client certificates
    /// (mTLS), roots held in memory, a verifier of your own. Its ALPN
    /// list is used as given with `HttpVersion::Http1` (leave it empty, or
    /// offer `http/1.1`); `Http2` and `Auto` replace it with `h2` (and
    /// `http/1.1`) on a copy.
    ///
    /// ```
    /// use std::sync::Arc;
    /// let mut roots = rustls::RootCertStore::empty();
    /// roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    /// let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
    ///     rustls::crypto::ring::default_provider(),
    /// ))
    /// .with_safe_default_protocol_versions()?
    /// .with_root_certificates(roots)
    /// .with_no_client_auth(); // or .with_client_auth_cert(chain, key)?
    /// let mut config = wsline::ClientConfig::default();
    /// config.tls.config = Some(Arc::new(tls));
    /// # Ok::<(), rustls::Error>(())
    /// ```
    #[cfg(feature = "tls")]
    pub config: Option<Arc<rustls::ClientConfig>>,
}

/// A TCP stream, with or without TLS, or (feature `http2`) a stream of
/// an HTTP/2 connection.
#[derive(Debug)]
#[non_exhaustive]
pub enum MaybeTlsStream {
    /// `ws://`
    Plain(TcpStream),
    /// `wss://`
    #[cfg(feature = "tls")]
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// A WebSocket over HTTP/2 (RFC 8441), `ws://` or `wss://`: one stream
    /// of an HTTP/2 connection that its own task drives.
    #[cfg(feature = "http2")]
    H2(crate::h2::H2Stream),
}

impl MaybeTlsStream {
    /// The TCP stream underneath, if this stream owns one (not a stream of
    /// an HTTP/2 connection, whose TCP connection its task holds).
    pub fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Self::Plain(s) => Some(s),
            #[cfg(feature = "tls")]
            Self::Tls(s) => Some(s.get_ref().0),
            #[cfg(feature = "http2")]
            Self::H2(_) => None,
        }
    }

    /// Whether TLS chose `h2` by ALPN.
    #[cfg(feature = "http2")]
    pub(crate) fn alpn_is_h2(&self) -> bool {
        match self {
            #[cfg(feature = "tls")]
            Self::Tls(s) => s.get_ref().1.alpn_protocol() == Some(b"h2"),
            _ => false,
        }
    }
}

impl AsyncRead for MaybeTlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            #[cfg(feature = "tls")]
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            #[cfg(feature = "http2")]
            Self::H2(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MaybeTlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            #[cfg(feature = "tls")]
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            #[cfg(feature = "http2")]
            Self::H2(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            #[cfg(feature = "tls")]
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            #[cfg(feature = "http2")]
            Self::H2(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            #[cfg(feature = "tls")]
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            #[cfg(feature = "http2")]
            Self::H2(s) => Pin::new(s).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            #[cfg(feature = "tls")]
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            #[cfg(feature = "http2")]
            Self::H2(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            #[cfg(feature = "tls")]
            Self::Tls(s) => s.is_write_vectored(),
            #[cfg(feature = "http2")]
            Self::H2(s) => s.is_write_vectored(),
        }
    }
}

#[cfg(feature = "tls")]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

#[cfg(feature = "tls")]
/// Loads PEM certificates from a file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
        .map_err(|e| Error::tls(format!("cannot read {}", path.display()), e))?
        .collect();
    let certs = certs.map_err(|e| Error::tls(format!("invalid PEM in {}", path.display()), e))?;
    if certs.is_empty() {
        return Err(Error::Tls {
            message: format!(
                "no certificates found in {}: expected PEM 'BEGIN CERTIFICATE' blocks",
                path.display()
            ),
            source: None,
        });
    }
    Ok(certs)
}

#[cfg(feature = "tls")]
/// A server's TLS configuration from PEM files: `cert_chain` (the
/// server's certificate first, then its intermediates) and `key` (PKCS#8,
/// PKCS#1 or SEC1). ALPN offers `http/1.1`; set `alpn_protocols` on the
/// result (through `Arc::get_mut` before sharing it) to offer `h2` too.
pub fn server_config(cert_chain: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, Error> {
    let certs = load_certs(cert_chain)?;
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(key)
        .map_err(|e| Error::tls(format!("no usable private key in {}", key.display()), e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::tls("unsupported TLS versions", e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            Error::tls(
                format!(
                    "the key in the key file does not fit the certificate in {}",
                    cert_chain.display()
                ),
                e,
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(feature = "tls")]
/// The client configuration for `options`: the caller's own, or one built
/// by [`client_config`].
pub(crate) fn config_for(options: &TlsOptions) -> Result<Arc<rustls::ClientConfig>, Error> {
    match &options.config {
        Some(config) => Ok(config.clone()),
        None => client_config(options).map(Arc::new),
    }
}

#[cfg(feature = "tls")]
/// [`config_for`], offering `alpn` by ALPN unless it is empty (the HTTP
/// version the client asks for: `h2` and/or `http/1.1`); a caller's own
/// configuration is copied to change its list.
pub(crate) fn config_with_alpn(
    options: &TlsOptions,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ClientConfig>, Error> {
    let config = config_for(options)?;
    if alpn.is_empty() {
        return Ok(config);
    }
    let mut config = Arc::unwrap_or_clone(config);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

#[cfg(feature = "tls")]
/// Builds the rustls client configuration for `options`.
pub fn client_config(options: &TlsOptions) -> Result<rustls::ClientConfig, Error> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::tls("unsupported TLS versions", e))?;
    let mut config = if options.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider())))
            .with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if !options.no_platform_roots {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
        if let Some(path) = &options.ca_file {
            for cert in load_certs(path)? {
                roots.add(cert).map_err(|e| {
                    Error::tls(format!("unusable certificate in {}", path.display()), e)
                })?;
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(feature = "tls")]
/// Opens TLS over `tcp` to `host` (a DNS name or an IP address).
pub(crate) async fn wrap(
    tcp: TcpStream,
    host: &str,
    config: Arc<rustls::ClientConfig>,
) -> Result<MaybeTlsStream, Error> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(host.to_owned())
        .map_err(|e| Error::tls(format!("invalid server name {host:?}"), e))?;
    let stream = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| Error::tls(handshake_failure(host, &e), e))?;
    Ok(MaybeTlsStream::Tls(Box::new(stream)))
}

#[cfg(feature = "tls")]
/// What a failed TLS handshake with `host` means to the user.
fn handshake_failure(host: &str, e: &io::Error) -> String {
    let tls = e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>());
    match tls {
        Some(rustls::Error::InvalidCertificate(why)) => format!(
            "the certificate of {host} was refused ({why:?}): trust its CA with a CA file \
             (`TlsOptions::ca_file`, `wsline connect --ca FILE`), or check the name in the URL"
        ),
        Some(why) => format!("handshake with {host} failed: {why}"),
        None => format!("handshake with {host} failed: {e}"),
    }
}

#[cfg(feature = "tls")]
/// Accepts any certificate (`--insecure`).
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

#[cfg(feature = "tls")]
impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Without the `tls` feature no client TLS configuration exists: a
/// `wss://` URL stops at [`config_for`].
#[cfg(not(feature = "tls"))]
pub(crate) enum NoTls {}

#[cfg(not(feature = "tls"))]
pub(crate) fn config_for(_: &TlsOptions) -> Result<NoTls, Error> {
    Err(Error::Tls {
        message: "wss:// needs the `tls` feature of wsline (on by default)".to_owned(),
        source: None,
    })
}

#[cfg(not(feature = "tls"))]
pub(crate) fn config_with_alpn(options: &TlsOptions, _: &[&[u8]]) -> Result<NoTls, Error> {
    config_for(options)
}

#[cfg(not(feature = "tls"))]
pub(crate) async fn wrap(_: TcpStream, _: &str, config: NoTls) -> Result<MaybeTlsStream, Error> {
    match config {}
}
