//! Client authentication: JWTs from `/ws?token=…`.
//!
//! Owns verifying a token (HS256 with the shared secret; RS256, ES256 and
//! EdDSA with public keys from PEM files or a JWKS), its times, the
//! optional `iss` and `aud` checks, and reading the claims the hub uses:
//! `sub` (the user) and `channels` (patterns the user may subscribe and
//! publish to). Owns turning PEM files and JWKs into [`PublicKey`]s. Every
//! other algorithm (`none` included) is refused, and a key is only ever
//! used for the algorithm of its type: a token claiming HS256 is never
//! checked against a public key. Fetching and caching the JWKS is
//! [`crate::jwks`]'s.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde::Deserialize;
use sha2::Sha256;

use crate::jwks::Jwks;
use crate::HubConfig;

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
    /// An algorithm this hub has no key for, or one it never accepts
    /// (`none`, anything but HS256, RS256, ES256 and EdDSA).
    #[error("unsupported token algorithm: this hub accepts HS256 with jwt_secret, RS256, ES256 and EdDSA with jwt_public_key or jwks_url")]
    Algorithm,
    /// No key of the token's type (and `kid`, if it names one).
    #[error("no key for this token: unknown kid or key type")]
    UnknownKey,
    /// The signature does not match the secret or any key.
    #[error("invalid token signature")]
    Signature,
    /// `exp` has passed.
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("token not yet valid")]
    NotYetValid,
    /// `iss` is not the configured issuer.
    #[error("wrong token issuer (iss)")]
    Issuer,
    /// `aud` does not hold the configured audience.
    #[error("wrong token audience (aud)")]
    Audience,
}

/// Why the hub's token settings cannot be used (at start).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A `jwt_public_key` file cannot be read.
    #[error("cannot read jwt_public_key {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A `jwt_public_key` file holds no usable key.
    #[error("unusable jwt_public_key {}: {reason}; expected a PEM `PUBLIC KEY` (RSA, EC P-256 or Ed25519), e.g. from `openssl pkey -in key.pem -pubout`", path.display())]
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// `jwks_url` cannot be used.
    #[error("unusable jwks_url {url:?}: {reason}")]
    JwksUrl {
        /// The URL.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// The algorithms the hub accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Alg {
    Hs256,
    Rs256,
    Es256,
    EdDsa,
}

impl Alg {
    fn from_header(alg: &str) -> Option<Self> {
        match alg {
            "HS256" => Some(Self::Hs256),
            "RS256" => Some(Self::Rs256),
            "ES256" => Some(Self::Es256),
            "EdDSA" => Some(Self::EdDsa),
            _ => None,
        }
    }
}

/// A public key that verifies one algorithm: RS256 (RSA), ES256 (EC
/// P-256) or EdDSA (Ed25519).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    /// The JWK's `kid` (PEM keys have none).
    pub(crate) kid: Option<String>,
    kind: KeyKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum KeyKind {
    /// DER `RSAPublicKey` (PKCS#1), from a PEM file.
    RsaDer(Vec<u8>),
    /// Modulus and exponent, big-endian, from a JWK.
    RsaParts { n: Vec<u8>, e: Vec<u8> },
    /// The uncompressed point (`04 || x || y`).
    EcP256(Vec<u8>),
    /// The 32-byte key.
    Ed25519(Vec<u8>),
}

impl PublicKey {
    fn alg(&self) -> Alg {
        match self.kind {
            KeyKind::RsaDer(_) | KeyKind::RsaParts { .. } => Alg::Rs256,
            KeyKind::EcP256(_) => Alg::Es256,
            KeyKind::Ed25519(_) => Alg::EdDsa,
        }
    }

    /// Whether `signature` signs `message` with this key under `alg`;
    /// false for any algorithm but this key's.
    fn verifies(&self, alg: Alg, message: &[u8], sig: &[u8]) -> bool {
        if alg != self.alg() {
            return false;
        }
        let rsa = &signature::RSA_PKCS1_2048_8192_SHA256;
        match &self.kind {
            KeyKind::RsaDer(der) => UnparsedPublicKey::new(rsa, der).verify(message, sig),
            KeyKind::RsaParts { n, e } => RsaPublicKeyComponents { n, e }.verify(rsa, message, sig),
            KeyKind::EcP256(point) => {
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(message, sig)
            }
            KeyKind::Ed25519(key) => {
                UnparsedPublicKey::new(&signature::ED25519, key).verify(message, sig)
            }
        }
        .is_ok()
    }

    /// The key in a PEM file's text: a `PUBLIC KEY` (SubjectPublicKeyInfo)
    /// or an `RSA PUBLIC KEY` (PKCS#1).
    pub fn from_pem(pem: &str) -> Result<Self, String> {
        let (label, der) = pem_block(pem)?;
        let kind = match label {
            "PUBLIC KEY" => spki_key(&der)?,
            "RSA PUBLIC KEY" => KeyKind::RsaDer(der),
            other => return Err(format!("a PEM `{other}`, not a public key")),
        };
        Ok(PublicKey { kid: None, kind })
    }

    /// Reads [`PublicKey::from_pem`] from a file.
    pub fn from_pem_file(path: &Path) -> Result<Self, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_pem(&text).map_err(|reason| AuthError::Key {
            path: path.to_owned(),
            reason,
        })
    }
}

/// The first PEM block's label and bytes.
fn pem_block(pem: &str) -> Result<(&str, Vec<u8>), String> {
    let begin = pem.find("-----BEGIN ").ok_or("no PEM `-----BEGIN` line")?;
    let rest = &pem[begin + 11..];
    let label_end = rest.find("-----").ok_or("a broken PEM `BEGIN` line")?;
    let label = &rest[..label_end];
    let body = &rest[label_end + 5..];
    let end = body
        .find(&format!("-----END {label}-----"))
        .ok_or("no PEM `-----END` line")?;
    let b64: String = body[..end].chars().filter(|c| !c.is_whitespace()).collect();
    let der = STANDARD
        .decode(b64)
        .map_err(|e| format!("bad base64 in the PEM block: {e}"))?;
    Ok((label, der))
}

/// One DER element: its tag, its contents, and what follows it.
fn der_next(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_EC: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];

/// The key in a DER SubjectPublicKeyInfo.
fn spki_key(der: &[u8]) -> Result<KeyKind, String> {
    let bad = || "not a DER SubjectPublicKeyInfo".to_owned();
    let (0x30, spki, _) = der_next(der).ok_or_else(bad)? else {
        return Err(bad());
    };
    let (0x30, algorithm, rest) = der_next(spki).ok_or_else(bad)? else {
        return Err(bad());
    };
    let (0x06, oid, params) = der_next(algorithm).ok_or_else(bad)? else {
        return Err(bad());
    };
    let (0x03, bits, _) = der_next(rest).ok_or_else(bad)? else {
        return Err(bad());
    };
    let Some((0, key)) = bits.split_first() else {
        return Err(bad());
    };
    let key = key.to_vec();
    match oid {
        OID_RSA => Ok(KeyKind::RsaDer(key)),
        OID_EC => match der_next(params) {
            Some((0x06, OID_P256, _)) if key.len() == 65 && key[0] == 4 => Ok(KeyKind::EcP256(key)),
            Some((0x06, OID_P256, _)) => {
                Err("an EC P-256 key that is not an uncompressed point".into())
            }
            _ => Err("an EC key on a curve other than P-256".into()),
        },
        OID_ED25519 if key.len() == 32 => Ok(KeyKind::Ed25519(key)),
        _ => Err("a key type other than RSA, EC P-256 and Ed25519".into()),
    }
}

/// A JSON Web Key Set, as far as the hub reads it.
#[derive(Deserialize)]
struct JwkSet {
    keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct Jwk {
    kty: String,
    kid: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    alg: Option<String>,
    crv: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

/// The signing keys of a JWKS document. Keys the hub cannot use (other
/// types or curves, `use` other than `sig`, an `alg` that does not fit the
/// key) are skipped, so one exotic key does not hide the others.
pub fn parse_jwks(json: &[u8]) -> Result<Vec<PublicKey>, serde_json::Error> {
    let set: JwkSet = serde_json::from_slice(json)?;
    Ok(set.keys.into_iter().filter_map(jwk_key).collect())
}

fn jwk_key(jwk: Jwk) -> Option<PublicKey> {
    if jwk.use_.as_deref().is_some_and(|u| u != "sig") {
        return None;
    }
    let b64 = |v: &Option<String>| v.as_deref().and_then(|v| URL_SAFE_NO_PAD.decode(v).ok());
    let kind = match (jwk.kty.as_str(), jwk.crv.as_deref()) {
        // Some sets pad `n` with a zero byte; ring wants none.
        ("RSA", _) => KeyKind::RsaParts {
            n: without_leading_zeros(b64(&jwk.n)?),
            e: without_leading_zeros(b64(&jwk.e)?),
        },
        ("EC", Some("P-256")) => {
            let (x, y) = (b64(&jwk.x)?, b64(&jwk.y)?);
            if x.len() != 32 || y.len() != 32 {
                return None;
            }
            KeyKind::EcP256([&[4u8][..], &x, &y].concat())
        }
        ("OKP", Some("Ed25519")) => KeyKind::Ed25519(b64(&jwk.x).filter(|x| x.len() == 32)?),
        _ => return None,
    };
    let key = PublicKey { kid: jwk.kid, kind };
    if let Some(alg) = jwk.alg.as_deref() {
        if Alg::from_header(alg) != Some(key.alg()) {
            return None;
        }
    }
    Some(key)
}

fn without_leading_zeros(mut bytes: Vec<u8>) -> Vec<u8> {
    let zeros = bytes.iter().take_while(|&&b| b == 0).count();
    bytes.drain(..zeros);
    bytes
}

/// The hub's token verifier, built at start from the configuration:
/// the HS256 secret and/or public keys (PEM files, a JWKS), and the
/// `iss`/`aud` the tokens must carry.
pub struct Auth {
    secret: Option<Vec<u8>>,
    keys: Vec<PublicKey>,
    jwks: Option<Arc<Jwks>>,
    issuer: Option<String>,
    audience: Option<String>,
}

impl Auth {
    /// Reads the PEM files and prepares the JWKS (fetched later, by
    /// [`crate::serve`]).
    pub fn from_config(config: &HubConfig) -> Result<Self, AuthError> {
        let keys = config
            .jwt_public_key
            .iter()
            .map(|path| PublicKey::from_pem_file(Path::new(path)))
            .collect::<Result<_, _>>()?;
        let jwks = config.jwks_url.as_deref().map(Jwks::new).transpose()?;
        Ok(Auth {
            secret: config.jwt_secret.as_ref().map(|s| s.as_bytes().to_vec()),
            keys,
            jwks: jwks.map(Arc::new),
            issuer: config.jwt_issuer.clone(),
            audience: config.jwt_audience.clone(),
        })
    }

    /// Whether `/ws` clients need a token.
    pub fn is_on(&self) -> bool {
        self.secret.is_some() || !self.keys.is_empty() || self.jwks.is_some()
    }

    /// The JWKS, when `jwks_url` is set.
    pub(crate) fn jwks(&self) -> Option<&Arc<Jwks>> {
        self.jwks.as_ref()
    }

    /// Verifies `token` at `now` (Unix seconds). With a JWKS, a token whose
    /// key the cached set lacks may wait for one refetch (rate-limited and
    /// bounded by the fetch timeout, see [`crate::jwks`]).
    pub async fn verify(&self, token: &str, now: u64) -> Result<Claims, TokenError> {
        let Parts {
            signed,
            header,
            payload,
            signature: sig,
        } = split(token)?;
        let header: Header = decode_json(header)?;
        let alg = Alg::from_header(&header.alg).ok_or(TokenError::Algorithm)?;
        if alg == Alg::Hs256 {
            let secret = self.secret.as_deref().ok_or(TokenError::Algorithm)?;
            check_hmac(secret, signed, &sig)?;
        } else {
            if self.keys.is_empty() && self.jwks.is_none() {
                return Err(TokenError::Algorithm);
            }
            self.check_public(alg, header.kid.as_deref(), signed, &sig)
                .await?;
        }
        let claims: RawClaims = decode_json(payload)?;
        claims.check(now, self.issuer.as_deref(), self.audience.as_deref())
    }

    async fn check_public(
        &self,
        alg: Alg,
        kid: Option<&str>,
        signed: &[u8],
        sig: &[u8],
    ) -> Result<(), TokenError> {
        let fits = |k: &&PublicKey| {
            k.alg() == alg && (kid.is_none() || k.kid.is_none() || k.kid.as_deref() == kid)
        };
        let mut tried = false;
        for key in self.keys.iter().filter(fits) {
            tried = true;
            if key.verifies(alg, signed, sig) {
                return Ok(());
            }
        }
        if let Some(jwks) = &self.jwks {
            let jwks_fits =
                |k: &&PublicKey| k.alg() == alg && (kid.is_none() || k.kid.as_deref() == kid);
            let mut set = jwks.keys();
            if !set.iter().any(|k| jwks_fits(&k)) {
                set = jwks.refetch_for_unknown_key().await;
            }
            for key in set.iter().filter(jwks_fits) {
                tried = true;
                if key.verifies(alg, signed, sig) {
                    return Ok(());
                }
            }
        }
        Err(if tried {
            TokenError::Signature
        } else {
            TokenError::UnknownKey
        })
    }
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
}

/// `aud`: one string or a list.
#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct RawClaims {
    sub: Option<String>,
    exp: Option<f64>,
    nbf: Option<f64>,
    channels: Option<Vec<String>>,
    iss: Option<String>,
    aud: Option<Audience>,
}

impl RawClaims {
    fn check(
        self,
        now: u64,
        issuer: Option<&str>,
        audience: Option<&str>,
    ) -> Result<Claims, TokenError> {
        let now_f = now as f64;
        if self.exp.is_some_and(|exp| now_f >= exp) {
            return Err(TokenError::Expired);
        }
        if self.nbf.is_some_and(|nbf| now_f < nbf) {
            return Err(TokenError::NotYetValid);
        }
        if let Some(issuer) = issuer {
            if self.iss.as_deref() != Some(issuer) {
                return Err(TokenError::Issuer);
            }
        }
        if let Some(audience) = audience {
            let holds = match &self.aud {
                Some(Audience::One(a)) => a == audience,
                Some(Audience::Many(list)) => list.iter().any(|a| a == audience),
                None => false,
            };
            if !holds {
                return Err(TokenError::Audience);
            }
        }
        Ok(Claims {
            user: self.sub,
            channels: self.channels,
            expires: self.exp.map(|e| e.max(0.0) as u64),
        })
    }
}

/// A token cut at its dots.
struct Parts<'a> {
    /// `header.payload`, what the signature signs.
    signed: &'a [u8],
    header: &'a str,
    payload: &'a str,
    /// Decoded.
    signature: Vec<u8>,
}

/// A token's [`Parts`].
fn split(token: &str) -> Result<Parts<'_>, TokenError> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let signature = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| TokenError::Malformed)?;
    Ok(Parts {
        signed: &token.as_bytes()[..h.len() + 1 + p.len()],
        header: h,
        payload: p,
        signature,
    })
}

fn check_hmac(secret: &[u8], signed: &[u8], sig: &[u8]) -> Result<(), TokenError> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| TokenError::Signature)?;
    mac.update(signed);
    mac.verify_slice(sig).map_err(|_| TokenError::Signature)
}

/// Verifies an HS256 token against `secret` at time `now` (Unix seconds).
pub fn verify(token: &str, secret: &[u8], now: u64) -> Result<Claims, TokenError> {
    let parts = split(token)?;
    let header: Header = decode_json(parts.header)?;
    if header.alg != "HS256" {
        return Err(TokenError::Algorithm);
    }
    check_hmac(secret, parts.signed, &parts.signature)?;
    let claims: RawClaims = decode_json(parts.payload)?;
    claims.check(now, None, None)
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

    fn fixture(name: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/keys")
            .join(name);
        std::fs::read_to_string(path).unwrap()
    }

    #[test]
    fn pem_public_keys_of_each_type_are_read() {
        for (name, alg) in [
            ("rsa1.pub", Alg::Rs256),
            ("ec.pub", Alg::Es256),
            ("ed.pub", Alg::EdDsa),
        ] {
            let key = PublicKey::from_pem(&fixture(name)).unwrap();
            assert_eq!((key.alg(), key.kid.clone()), (alg, None), "{name}");
        }
        let err = PublicKey::from_pem(&fixture("ec.key")).unwrap_err();
        assert!(err.contains("PRIVATE KEY"), "{err}");
        assert!(PublicKey::from_pem("no pem here").is_err());
        assert!(PublicKey::from_pem(
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
        )
        .is_err());
        // Truncated DER never panics.
        let der = STANDARD
            .decode(
                fixture("rsa1.pub")
                    .lines()
                    .filter(|l| !l.starts_with("-----"))
                    .collect::<String>(),
            )
            .unwrap();
        for len in 0..der.len() {
            assert!(spki_key(&der[..len]).is_err(), "{len}");
        }
    }

    #[test]
    fn jwks_keep_usable_signing_keys_only() {
        let keys = parse_jwks(
            br#"{"keys":[
                {"kty":"RSA","kid":"r","n":"AQAB","e":"AQAB"},
                {"kty":"RSA","kid":"enc","use":"enc","n":"AQAB","e":"AQAB"},
                {"kty":"RSA","kid":"mismatch","alg":"ES256","n":"AQAB","e":"AQAB"},
                {"kty":"EC","kid":"p384","crv":"P-384","x":"AA","y":"AA"},
                {"kty":"EC","kid":"short","crv":"P-256","x":"AA","y":"AA"},
                {"kty":"oct","kid":"hmac","k":"c2VjcmV0"},
                {"kty":"OKP","kid":"d","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
            ]}"#,
        )
        .unwrap();
        let kids: Vec<_> = keys.iter().map(|k| k.kid.as_deref().unwrap()).collect();
        assert_eq!(kids, ["r", "d"]);
        assert!(parse_jwks(b"{}").is_err());
        assert!(parse_jwks(b"[1]").is_err());
    }

    #[tokio::test]
    async fn a_public_key_is_never_an_hmac_secret() {
        let pem = fixture("rsa1.pub");
        let auth = Auth {
            secret: None,
            keys: vec![PublicKey::from_pem(&pem).unwrap()],
            jwks: None,
            issuer: None,
            audience: None,
        };
        assert!(auth.is_on());
        let forged = sign(&serde_json::json!({"sub": "x"}), pem.as_bytes());
        assert_eq!(auth.verify(&forged, 0).await, Err(TokenError::Algorithm));
        let parts: Vec<&str> = forged.split('.').collect();
        let as_rs256 = format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256"}"#),
            parts[1],
            parts[2]
        );
        assert_eq!(auth.verify(&as_rs256, 0).await, Err(TokenError::Signature));
    }
}
