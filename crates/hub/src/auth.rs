//! Client authentication: JWT (HS256) from `/ws?token=…`.
//!
//! Owns verifying the signature and times, and reading the claims the hub
//! uses: `sub` (the user) and `channels` (patterns the user may subscribe
//! and publish to). Other algorithms are refused.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

/// A verified token's claims.
#[derive(Clone, Debug, PartialEq)]
pub struct Claims {
    /// `sub`: the user.
    pub user: Option<String>,
    /// `channels`: patterns this user may use; `None` allows every channel.
    pub channels: Option<Vec<String>>,
    /// `exp`: seconds since the Unix epoch.
    pub expires: Option<u64>,
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// Not three base64url parts of JSON.
    #[error("malformed token")]
    Malformed,
    /// An algorithm other than HS256.
    #[error("unsupported token algorithm: only HS256 is accepted")]
    Algorithm,
    /// The signature does not match the secret.
    #[error("invalid token signature")]
    Signature,
    /// `exp` has passed.
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("token not yet valid")]
    NotYetValid,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
}

#[derive(Deserialize)]
struct RawClaims {
    sub: Option<String>,
    exp: Option<f64>,
    nbf: Option<f64>,
    channels: Option<Vec<String>>,
}

/// Verifies an HS256 token against `secret` at time `now` (Unix seconds).
pub fn verify(token: &str, secret: &[u8], now: u64) -> Result<Claims, TokenError> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let header: Header = decode_json(h)?;
    if header.alg != "HS256" {
        return Err(TokenError::Algorithm);
    }
    let signature = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| TokenError::Malformed)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| TokenError::Signature)?;
    mac.update(h.as_bytes());
    mac.update(b".");
    mac.update(p.as_bytes());
    mac.verify_slice(&signature)
        .map_err(|_| TokenError::Signature)?;
    let claims: RawClaims = decode_json(p)?;
    let now_f = now as f64;
    if claims.exp.is_some_and(|exp| now_f >= exp) {
        return Err(TokenError::Expired);
    }
    if claims.nbf.is_some_and(|nbf| now_f < nbf) {
        return Err(TokenError::NotYetValid);
    }
    Ok(Claims {
        user: claims.sub,
        channels: claims.channels,
        expires: claims.exp.map(|e| e.max(0.0) as u64),
    })
}

fn decode_json<T: for<'de> Deserialize<'de>>(part: &str) -> Result<T, TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)
}

/// Signs claims as an HS256 token (for tests and tools).
pub fn sign(claims: &serde_json::Value, secret: &[u8]) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(header.as_bytes());
    mac.update(b".");
    mac.update(payload.as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{header}.{payload}.{sig}")
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sign_then_verify() {
        let t = sign(
            &json!({"sub": "ann", "exp": 2000, "channels": ["chat:*"]}),
            b"k",
        );
        let c = verify(&t, b"k", 1000).unwrap();
        assert_eq!(c.user.as_deref(), Some("ann"));
        assert_eq!(c.channels, Some(vec!["chat:*".to_owned()]));
        assert_eq!(c.expires, Some(2000));
    }

    #[test]
    fn refusals() {
        let t = sign(&json!({"sub": "ann", "exp": 2000}), b"k");
        assert_eq!(verify(&t, b"other", 1000), Err(TokenError::Signature));
        assert_eq!(verify(&t, b"k", 2000), Err(TokenError::Expired));
        assert_eq!(verify("a.b", b"k", 0), Err(TokenError::Malformed));
        let none_alg = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(br#"{"sub":"x"}"#)
        );
        assert_eq!(verify(&none_alg, b"k", 0), Err(TokenError::Algorithm));
    }
}
