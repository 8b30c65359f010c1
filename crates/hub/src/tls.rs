//! TLS on the hub's port (`tls_cert` and `tls_key`): the server
//! configuration in use, read from the PEM files at start and again on
//! [`TlsReloader::reload`] (SIGHUP in `wsline serve`).
//!
//! Owns loading (through `wsline::tls::server_config`, which checks that
//! the key fits the certificate), the ALPN list (`h2`, then `http/1.1`)
//! and swapping the configuration. A connection takes the configuration
//! current when it is accepted and keeps it: a reload changes what new
//! handshakes see and drops no open connection. A reload that fails
//! (a missing file, a key that does not fit) keeps the configuration in
//! use. It does not own the TLS handshake itself (`front.rs`) nor what is
//! served over it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// The ALPN protocols the hub offers, in its order of preference.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// A certificate chain and key that could not be loaded: which files, and
/// why (the source keeps rustls' or the PEM reader's error).
#[derive(Debug, thiserror::Error)]
#[error("cannot use tls_cert {cert} with tls_key {key}: {why}")]
pub struct TlsError {
    cert: String,
    key: String,
    /// The source and its causes in one line (a program that prints only
    /// this error still says what is wrong with which file).
    why: String,
    #[source]
    source: Box<wsline::Error>,
}

/// The hub's TLS configuration, swapped on reload. Cloning shares it.
#[derive(Clone)]
pub struct TlsReloader {
    inner: Arc<Inner>,
}

struct Inner {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<rustls::ServerConfig>>,
}

impl std::fmt::Debug for TlsReloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsReloader")
            .field("cert", &self.inner.cert)
            .field("key", &self.inner.key)
            .finish_non_exhaustive()
    }
}

impl TlsReloader {
    /// Loads `cert` (PEM chain, the server's certificate first) and `key`
    /// (PEM, PKCS#8, PKCS#1 or SEC1).
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let config = load(cert, key)?;
        Ok(Self {
            inner: Arc::new(Inner {
                cert: cert.to_owned(),
                key: key.to_owned(),
                current: RwLock::new(config),
            }),
        })
    }

    /// Reads the files again; on success new handshakes use them, on
    /// failure the configuration in use stays (the error says why).
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = load(&self.inner.cert, &self.inner.key)?;
        *self
            .inner
            .current
            .write()
            .unwrap_or_else(|e| e.into_inner()) = config;
        Ok(())
    }

    /// An acceptor with the configuration in use now.
    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let config = self
            .inner
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        tokio_rustls::TlsAcceptor::from(config)
    }
}

fn load(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let config = wsline::tls::server_config(cert, key).map_err(|source| {
        let mut why = source.to_string();
        let mut cause = std::error::Error::source(&source);
        while let Some(e) = cause {
            why.push_str(": ");
            why.push_str(&e.to_string());
            cause = e.source();
        }
        TlsError {
            cert: cert.display().to_string(),
            key: key.display().to_string(),
            why,
            source: Box::new(source),
        }
    })?;
    let mut config = Arc::unwrap_or_clone(config);
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}
