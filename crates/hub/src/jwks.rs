//! The JSON Web Key Set behind `jwks_url`: fetching it, caching the last
//! good set, and when to fetch again.
//!
//! Owns the rules: one fetch at start (a failure is logged and the hub
//! starts with no keys), one every `jwks_refresh` (a background task that
//! [`crate::serve`] runs), and one when a token names a key the set lacks,
//! at most once per [`UNKNOWN_KEY_INTERVAL`]; a failed fetch keeps the
//! last good set. Each fetch is bounded: [`FETCH_TIMEOUT`] in all and
//! [`MAX_BODY`] bytes. The HTTP client is the crate's `http_client` (one
//! GET per connection, over TLS for `https://`). Reading keys out of the
//! document is [`crate::auth`]'s.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use crate::auth::{parse_jwks, AuthError, PublicKey};
use crate::http_client::{Endpoint, HttpError};

/// The longest one fetch may take, connection and TLS included.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest JWKS body read.
pub const MAX_BODY: usize = 1 << 20;
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
    endpoint: Endpoint,
    keys: RwLock<Arc<Vec<PublicKey>>>,
    /// When the last fetch for an unknown key started; held while it runs,
    /// so tokens waiting for the same key share one fetch.
    unknown_key_fetch: Mutex<Option<Instant>>,
}

impl Jwks {
    /// Checks `url` and prepares TLS for `https://`; fetches nothing.
    pub fn new(url: &str) -> Result<Self, AuthError> {
        let endpoint = Endpoint::new(url).map_err(|reason| AuthError::JwksUrl {
            url: url.to_owned(),
            reason,
        })?;
        Ok(Jwks {
            url: url.to_owned(),
            endpoint,
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
        let (status, body) = self
            .endpoint
            .send("GET", "Accept: application/json\r\n", b"", MAX_BODY)
            .await?;
        if status != 200 {
            return Err(JwksError::Status(status));
        }
        Ok(parse_jwks(&body)?)
    }
}

impl From<HttpError> for JwksError {
    fn from(e: HttpError) -> Self {
        match e {
            HttpError::Io(e) => JwksError::Io(e),
            HttpError::Tls(e) => JwksError::Tls(e),
            HttpError::TooLarge => JwksError::TooLarge,
            HttpError::Http(why) => JwksError::Http(why),
        }
    }
}
