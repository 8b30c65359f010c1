//! Who may connect to `/ws`: JWT tokens (HS256 with a secret; RS256,
//! ES256 and EdDSA with PEM keys or a JWKS served by an in-test HTTP
//! server), `iss`/`aud`, algorithm confusion, their `channels` claim and
//! expiry on an open connection, and the Origin allow-list.

mod common;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{client_config, config, start, within, Client};
use serde_json::{json, Value};
use wsline::proto::handshake::HandshakeError;
use wsline_hub::auth::{sign, unix_now};

const SECRET: &[u8] = b"test-secret";

async fn jwt_hub() -> common::Hub {
    let mut c = common::with_join_leave(config(), "room");
    c.jwt_secret = Some(String::from_utf8(SECRET.to_vec()).unwrap());
    start(c).await
}

/// The HTTP status and body of a refused `/ws` handshake to `url`.
async fn refused_status(url: &str) -> (u16, String) {
    let err = within("connect", wsline::connect_with(url, &client_config()))
        .await
        .expect_err("the handshake is refused");
    match err {
        wsline::Error::Handshake(HandshakeError::Rejected { status, body, .. }) => {
            (status, String::from_utf8_lossy(&body).into_owned())
        }
        other => panic!("not an HTTP refusal: {other}"),
    }
}

#[tokio::test]
async fn jwt_valid_token_is_accepted_and_its_sub_is_the_user() {
    let hub = jwt_hub().await;
    let token = sign(&json!({"sub": "ann", "exp": unix_now() + 3600}), SECRET);
    let mut ann = Client::connect(&hub.url(&format!("?token={token}"))).await;
    assert_eq!(ann.welcome["user"], "ann");
    let no_exp = sign(&json!({"sub": "bob"}), SECRET);
    let mut bob = Client::connect(&hub.url(&format!("?other=1&token={no_exp}"))).await;
    assert_eq!(bob.welcome["user"], "bob");

    ann.subscribe("room").await;
    bob.subscribe("room").await;
    assert_eq!(
        ann.recv().await,
        json!({"op": "join", "channel": "room", "member": {"client": bob.id, "user": "bob"}})
    );
    bob.publish("room", json!("hi")).await;
    let message = ann.recv().await;
    assert_eq!(
        message["from"], "bob",
        "FROM is the user when authenticated"
    );
    assert_eq!(bob.recv().await, message);
    let presence = ann
        .request(json!({"op": "presence", "channel": "room"}))
        .await;
    let users: Vec<&Value> = presence["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["user"])
        .collect();
    assert_eq!(users.len(), 2);
    assert!(users.contains(&&json!("ann")) && users.contains(&&json!("bob")));
}

#[tokio::test]
async fn jwt_missing_token_is_refused_with_401() {
    let hub = jwt_hub().await;
    assert_eq!(refused_status(&hub.url("")).await.0, 401);
    assert_eq!(refused_status(&hub.url("?token=")).await.0, 401);
}

#[tokio::test]
async fn jwt_bad_signature_is_refused_with_401() {
    let hub = jwt_hub().await;
    let forged = sign(&json!({"sub": "ann"}), b"another-secret");
    let (status, text) = refused_status(&hub.url(&format!("?token={forged}"))).await;
    assert_eq!(status, 401);
    assert!(text.contains("signature"), "{text}");
    assert_eq!(refused_status(&hub.url("?token=not.a.jwt")).await.0, 401);
}

#[tokio::test]
async fn jwt_expired_token_is_refused_with_401() {
    let hub = jwt_hub().await;
    let expired = sign(&json!({"sub": "ann", "exp": unix_now() - 1}), SECRET);
    let (status, text) = refused_status(&hub.url(&format!("?token={expired}"))).await;
    assert_eq!(status, 401);
    assert!(text.contains("expired"), "{text}");
}

#[tokio::test]
async fn jwt_expiry_closes_an_open_connection_with_4001() {
    let hub = jwt_hub().await;
    let exp = unix_now() + 2;
    let token = sign(&json!({"sub": "ann", "exp": exp}), SECRET);
    let mut ann = Client::connect(&hub.url(&format!("?token={token}"))).await;
    ann.subscribe("room").await;
    let (code, reason) = ann.closed().await;
    let at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert_eq!(code, 4001, "{reason}");
    let exp = exp as f64;
    assert!(
        at >= exp - 0.05 && at <= exp + 1.0,
        "closed at {at}, the token expired at {exp}: within a second of exp"
    );
    let metrics = hub
        .metrics_until(|m| m.get("wsline_closes_total{code=\"4001\"}") == Some(1.0))
        .await;
    assert_eq!(metrics.value("wsline_connections"), 0.0);
}

#[tokio::test]
async fn jwt_channels_claim_makes_other_channels_forbidden() {
    let hub = jwt_hub().await;
    let token = sign(
        &json!({"sub": "ann", "channels": ["chat:*", "inbox:ann"]}),
        SECRET,
    );
    let mut ann = Client::connect(&hub.url(&format!("?token={token}"))).await;
    ann.subscribe("chat:lobby").await;
    ann.subscribe("inbox:ann").await;
    ann.publish("chat:lobby", json!(1)).await;
    assert_eq!(ann.recv().await["op"], "message");
    for (i, request) in [
        json!({"op": "subscribe", "channel": "inbox:bob"}),
        json!({"op": "subscribe", "channel": "news"}),
        json!({"op": "publish", "channel": "news", "data": 1}),
        json!({"op": "presence", "channel": "inbox:bob"}),
    ]
    .into_iter()
    .enumerate()
    {
        let mut request = request;
        request["id"] = json!(i);
        let reply = ann.request(request.clone()).await;
        assert_eq!(reply["op"], "error", "{request}: {reply}");
        assert_eq!(reply["code"], "forbidden", "{request}: {reply}");
        assert_eq!(reply["id"], i);
    }
    ann.expect_nothing_pending().await;
}

#[tokio::test]
async fn origin_not_in_allow_origin_is_refused_with_403() {
    let mut c = config();
    c.server.allowed_origins = vec!["https://good.example".into(), "https://also.example".into()];
    let hub = start(c).await;
    let with_origin = |origin: &str| {
        let mut config = client_config();
        config.headers.push("Origin", origin);
        config
    };
    let err = within(
        "connect",
        wsline::connect_with(&hub.url(""), &with_origin("https://evil.example")),
    )
    .await
    .expect_err("refused");
    assert_eq!(err.http_status(), Some(403), "{err}");
    Client::connect_with(&hub.url(""), &with_origin("https://good.example")).await;
    Client::connect_with(&hub.url(""), &with_origin("https://also.example")).await;
    // No Origin at all: not a browser, allowed.
    hub.client().await;
}

#[tokio::test]
async fn jwt_exp_too_far_ahead_to_represent_is_accepted_and_never_closes() {
    let hub = jwt_hub().await;
    let mut open = Vec::new();
    for exp in [json!(253402300799u64), json!(1e30), json!(u64::MAX)] {
        let token = sign(&json!({"sub": "ann", "exp": exp}), SECRET);
        let mut ann = Client::connect(&hub.url(&format!("?token={token}"))).await;
        ann.subscribe("room").await;
        ann.expect_nothing_pending().await;
        open.push(ann);
    }
    let metrics = hub.metrics().await;
    assert_eq!(metrics.value("wsline_connections"), 3.0);
}

// ---- Public keys: PEM files and a JWKS ----

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{self as sig, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

/// A fixture under `tests/keys/` (generated once with openssl: `rsa1`,
/// `rsa2` RSA 2048, `ec` P-256, `ed` Ed25519; `.key` PKCS#8, `.pub` SPKI).
fn key_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/keys")
        .join(name)
}

fn pem_der(name: &str) -> Vec<u8> {
    let text = std::fs::read_to_string(key_path(name)).unwrap();
    let b64: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    STANDARD.decode(b64).unwrap()
}

/// A private key that signs test tokens.
enum Signer {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
}

impl Signer {
    fn load(name: &str) -> Signer {
        let der = pem_der(&format!("{name}.key"));
        match name {
            "ec" => Signer::Ec(
                EcdsaKeyPair::from_pkcs8(
                    &sig::ECDSA_P256_SHA256_FIXED_SIGNING,
                    &der,
                    &SystemRandom::new(),
                )
                .unwrap(),
            ),
            "ed" => Signer::Ed(Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).unwrap()),
            _ => Signer::Rsa(RsaKeyPair::from_pkcs8(&der).unwrap()),
        }
    }

    fn alg(&self) -> &'static str {
        match self {
            Signer::Rsa(_) => "RS256",
            Signer::Ec(_) => "ES256",
            Signer::Ed(_) => "EdDSA",
        }
    }

    fn sign_bytes(&self, message: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match self {
            Signer::Rsa(k) => {
                let mut out = vec![0; k.public().modulus_len()];
                k.sign(&sig::RSA_PKCS1_SHA256, &rng, message, &mut out)
                    .unwrap();
                out
            }
            Signer::Ec(k) => k.sign(&rng, message).unwrap().as_ref().to_vec(),
            Signer::Ed(k) => k.sign(message).as_ref().to_vec(),
        }
    }

    /// A token over `claims` with this key's algorithm and `kid`.
    fn token(&self, kid: Option<&str>, claims: &Value) -> String {
        self.token_as(self.alg(), kid, claims)
    }

    /// A token signed by this key whose header claims `alg`.
    fn token_as(&self, alg: &str, kid: Option<&str>, claims: &Value) -> String {
        let mut header = json!({"alg": alg, "typ": "JWT"});
        if let Some(kid) = kid {
            header["kid"] = json!(kid);
        }
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = URL_SAFE_NO_PAD.encode(self.sign_bytes(signed.as_bytes()));
        format!("{signed}.{signature}")
    }

    /// This key's public JWK.
    fn jwk(&self, kid: &str) -> Value {
        let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
        match self {
            Signer::Rsa(k) => {
                let c: sig::RsaPublicKeyComponents<Vec<u8>> = k.public().into();
                json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": b64(&c.n), "e": b64(&c.e)})
            }
            Signer::Ec(k) => {
                let point = k.public_key().as_ref();
                json!({"kty": "EC", "kid": kid, "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..])})
            }
            Signer::Ed(k) => {
                json!({"kty": "OKP", "kid": kid, "crv": "Ed25519", "x": b64(k.public_key().as_ref())})
            }
        }
    }
}

fn claims(sub: &str) -> Value {
    json!({"sub": sub, "exp": unix_now() + 3600})
}

/// `?token=…`
fn q(token: &str) -> String {
    format!("?token={token}")
}

/// A hub that verifies with the PEM public keys `names` (and `edit`).
async fn pem_hub(names: &[&str], edit: impl FnOnce(&mut wsline_hub::HubConfig)) -> common::Hub {
    let mut c = config();
    c.jwt_public_key = names
        .iter()
        .map(|n| key_path(&format!("{n}.pub")).display().to_string())
        .collect();
    edit(&mut c);
    start(c).await
}

/// A JWKS over HTTP on 127.0.0.1: answers any `GET /jwks.json` with the
/// answer set last (keys, 503 for none, or raw bytes), one request per
/// connection, and counts requests.
struct JwksServer {
    url: String,
    answer: Arc<Mutex<Vec<u8>>>,
    requests: watch::Receiver<usize>,
}

impl JwksServer {
    async fn start(keys: &[Value]) -> JwksServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
        let answer = Arc::new(Mutex::new(Vec::new()));
        let (count, requests) = watch::channel(0usize);
        let served = answer.clone();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match tcp.read(&mut byte).await {
                        Ok(1) => head.push(byte[0]),
                        _ => break,
                    }
                }
                assert!(head.starts_with(b"GET /jwks.json HTTP/1.1\r\n"));
                count.send_modify(|n| *n += 1);
                let answer = served.lock().unwrap().clone();
                let _ = tcp.write_all(&answer).await;
            }
        });
        let server = JwksServer {
            url,
            answer,
            requests,
        };
        server.serve(keys);
        server
    }

    /// Serves these keys from now on (none: 503).
    fn serve(&self, keys: &[Value]) {
        self.serve_raw(if keys.is_empty() {
            "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n".into()
        } else {
            let body = json!({ "keys": keys }).to_string();
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes()
        });
    }

    /// Answers with these bytes from now on.
    fn serve_raw(&self, answer: Vec<u8>) {
        *self.answer.lock().unwrap() = answer;
    }

    fn requests(&self) -> usize {
        *self.requests.borrow()
    }

    /// Waits until the server has answered `n` requests in all.
    async fn until_requests(&self, n: usize) {
        let mut rx = self.requests.clone();
        within("JWKS requests", rx.wait_for(|&r| r >= n))
            .await
            .unwrap();
    }
}

async fn jwks_hub(
    server: &JwksServer,
    edit: impl FnOnce(&mut wsline_hub::HubConfig),
) -> common::Hub {
    let mut c = config();
    c.jwks_url = Some(server.url.clone());
    edit(&mut c);
    start(c).await
}

#[tokio::test]
async fn pem_keys_accept_rs256_es256_and_eddsa_tokens() {
    let hub = pem_hub(&["rsa1", "ec", "ed"], |_| {}).await;
    for name in ["rsa1", "ec", "ed"] {
        let token = Signer::load(name).token(None, &claims(name));
        let client = Client::connect(&hub.url(&q(&token))).await;
        assert_eq!(client.welcome["user"], name);
    }
    // A kid in the header does not matter to PEM keys.
    let token = Signer::load("ed").token(Some("any"), &claims("ann"));
    Client::connect(&hub.url(&q(&token))).await;
}

#[tokio::test]
async fn pem_keys_refuse_another_key_expired_tokens_and_algorithm_confusion() {
    let hub = pem_hub(&["rsa1", "ed"], |_| {}).await;
    let refused = |token: String| {
        let url = hub.url(&q(&token));
        async move {
            let (status, text) = refused_status(&url).await;
            assert_eq!(status, 401, "{text}");
            text
        }
    };
    let rsa1 = Signer::load("rsa1");
    let text = refused(Signer::load("rsa2").token(None, &claims("x"))).await;
    assert!(text.contains("signature"), "{text}");
    // A P-256 key the hub was not given: no key of that type.
    let text = refused(Signer::load("ec").token(None, &claims("x"))).await;
    assert!(text.contains("no key"), "{text}");
    let text = refused(rsa1.token(None, &json!({"sub": "x", "exp": unix_now() - 1}))).await;
    assert!(text.contains("expired"), "{text}");
    // An RSA signature under another algorithm's name.
    refused(rsa1.token_as("ES256", None, &claims("x"))).await;
    refused(rsa1.token_as("RS384", None, &claims("x"))).await;
    refused(Signer::load("ed").token_as("RS256", None, &claims("x"))).await;
    // alg none with no signature.
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
        URL_SAFE_NO_PAD.encode(claims("x").to_string())
    );
    let text = refused(none).await;
    assert!(text.contains("algorithm"), "{text}");
    // The classic confusion: HS256 with the RSA public key (the PEM file's
    // bytes) as the HMAC secret.
    let public_pem = std::fs::read(key_path("rsa1.pub")).unwrap();
    let text = refused(sign(&claims("x"), &public_pem)).await;
    assert!(text.contains("algorithm"), "{text}");
}

#[tokio::test]
async fn hs256_with_a_public_key_as_secret_is_refused_when_both_are_configured() {
    let hub = pem_hub(&["rsa1"], |c| {
        c.jwt_secret = Some(String::from_utf8(SECRET.to_vec()).unwrap());
    })
    .await;
    let public_pem = std::fs::read(key_path("rsa1.pub")).unwrap();
    let (status, text) = refused_status(&hub.url(&q(&sign(&claims("x"), &public_pem)))).await;
    assert_eq!(status, 401);
    assert!(text.contains("signature"), "{text}");
    // Both kinds still work.
    Client::connect(&hub.url(&q(&sign(&claims("ann"), SECRET)))).await;
    Client::connect(&hub.url(&q(&Signer::load("rsa1").token(None, &claims("bob"))))).await;
}

#[tokio::test]
async fn wrong_iss_or_aud_is_refused_with_401() {
    let hub = pem_hub(&["ec"], |c| {
        c.jwt_issuer = Some("https://idp.example".into());
        c.jwt_audience = Some("hub".into());
    })
    .await;
    let ec = Signer::load("ec");
    let with = |extra: Value| {
        let mut c = claims("ann");
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        ec.token(None, &c)
    };
    Client::connect(&hub.url(&q(&with(
        json!({"iss": "https://idp.example", "aud": "hub"}),
    ))))
    .await;
    Client::connect(&hub.url(&q(&with(
        json!({"iss": "https://idp.example", "aud": ["other", "hub"]}),
    ))))
    .await;
    for (extra, word) in [
        (
            json!({"iss": "https://evil.example", "aud": "hub"}),
            "issuer",
        ),
        (json!({"aud": "hub"}), "issuer"),
        (
            json!({"iss": "https://idp.example", "aud": "other"}),
            "audience",
        ),
        (
            json!({"iss": "https://idp.example", "aud": ["a", "b"]}),
            "audience",
        ),
        (json!({"iss": "https://idp.example"}), "audience"),
    ] {
        let (status, text) = refused_status(&hub.url(&q(&with(extra.clone())))).await;
        assert_eq!(status, 401, "{extra}: {text}");
        assert!(text.contains(word), "{extra}: {text}");
    }
}

#[tokio::test]
async fn a_missing_pem_key_file_stops_the_hub_at_start() {
    let mut c = config();
    c.jwt_public_key = vec![key_path("nowhere.pub").display().to_string()];
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = within(
        "serve",
        wsline_hub::serve(listener, c, std::future::pending()),
    )
    .await
    .expect_err("the hub refuses to start");
    assert!(err.to_string().contains("nowhere.pub"), "{err}");
    let mut c = config();
    c.jwt_public_key = vec![key_path("ec.key").display().to_string()];
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = within(
        "serve",
        wsline_hub::serve(listener, c, std::future::pending()),
    )
    .await
    .expect_err("a private key is not a public key");
    assert!(err.to_string().contains("PUBLIC KEY"), "{err}");
}

#[tokio::test]
async fn jwks_keys_verify_tokens_by_kid() {
    let (rsa, ec, ed) = (Signer::load("rsa1"), Signer::load("ec"), Signer::load("ed"));
    // Some sets pad the modulus with a zero byte.
    let mut padded = rsa.jwk("r0");
    let n = URL_SAFE_NO_PAD
        .decode(padded["n"].as_str().unwrap())
        .unwrap();
    padded["n"] = json!(URL_SAFE_NO_PAD.encode([&[0u8][..], &n].concat()));
    let server = JwksServer::start(&[rsa.jwk("r"), ec.jwk("e"), ed.jwk("d"), padded]).await;
    let hub = jwks_hub(&server, |_| {}).await;
    for (signer, kid) in [(&rsa, "r"), (&ec, "e"), (&ed, "d"), (&rsa, "r0")] {
        let client = Client::connect(&hub.url(&q(&signer.token(Some(kid), &claims(kid))))).await;
        assert_eq!(client.welcome["user"], kid);
    }
    // No kid: every key of the token's type is tried.
    Client::connect(&hub.url(&q(&ec.token(None, &claims("x"))))).await;
    assert_eq!(server.requests(), 1, "fetched once, at start");
    // A key the set holds under another kid does not verify.
    let (status, _) = refused_status(&hub.url(&q(&ec.token(Some("r"), &claims("x"))))).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn jwks_unknown_kid_refetches_once_and_a_rotated_key_works_without_restart() {
    let (old, new) = (Signer::load("rsa1"), Signer::load("rsa2"));
    let server = JwksServer::start(&[old.jwk("old")]).await;
    let hub = jwks_hub(&server, |_| {}).await;
    Client::connect(&hub.url(&q(&old.token(Some("old"), &claims("ann"))))).await;
    assert_eq!(server.requests(), 1);

    // The identity provider rotates: only the new key is served.
    server.serve(&[new.jwk("new")]);
    let client = Client::connect(&hub.url(&q(&new.token(Some("new"), &claims("bob"))))).await;
    assert_eq!(client.welcome["user"], "bob");
    assert_eq!(server.requests(), 2, "one refetch for the unknown kid");

    // The old key is gone from the set; another unknown kid so soon after
    // that refetch fetches nothing and is refused.
    let (status, text) = refused_status(&hub.url(&q(&old.token(Some("old"), &claims("x"))))).await;
    assert_eq!(status, 401);
    assert!(text.contains("no key"), "{text}");
    let (status, _) = refused_status(&hub.url(&q(&new.token(Some("other"), &claims("x"))))).await;
    assert_eq!(status, 401);
    assert_eq!(server.requests(), 2, "at most one refetch per interval");
    Client::connect(&hub.url(&q(&new.token(Some("new"), &claims("bob"))))).await;
}

#[tokio::test]
async fn jwks_is_refreshed_periodically() {
    let (old, new) = (Signer::load("ec"), Signer::load("ed"));
    let server = JwksServer::start(&[old.jwk("old")]).await;
    let hub = jwks_hub(&server, |c| c.jwks_refresh = Duration::from_millis(100)).await;
    Client::connect(&hub.url(&q(&old.token(Some("old"), &claims("ann"))))).await;
    // An unknown kid spends the refetch it may cause: for the next 10 s
    // only the periodic refresh can bring a new key.
    let (status, _) = refused_status(&hub.url(&q(&old.token(Some("nope"), &claims("x"))))).await;
    assert_eq!(status, 401);
    server.serve(&[new.jwk("new")]);
    // Two more fetches: the second one began after the change.
    let seen = server.requests();
    server.until_requests(seen + 2).await;
    Client::connect(&hub.url(&q(&new.token(Some("new"), &claims("bob"))))).await;
    let (status, _) = refused_status(&hub.url(&q(&old.token(Some("old"), &claims("x"))))).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn jwks_down_at_start_the_hub_starts_refusing_then_recovers() {
    let ed = Signer::load("ed");
    let server = JwksServer::start(&[]).await;
    let hub = jwks_hub(&server, |c| c.jwks_refresh = Duration::from_millis(100)).await;
    let token = ed.token(Some("k"), &claims("ann"));
    let (status, text) = refused_status(&hub.url(&q(&token))).await;
    assert_eq!(status, 401);
    assert!(text.contains("no key"), "{text}");
    // The server comes back; the next periodic refresh loads the set.
    server.serve(&[ed.jwk("k")]);
    let seen = server.requests();
    server.until_requests(seen + 2).await;
    Client::connect(&hub.url(&q(&token))).await;
    // And a failing refresh keeps the last good set.
    server.serve(&[]);
    let seen = server.requests();
    server.until_requests(seen + 2).await;
    Client::connect(&hub.url(&q(&token))).await;
}

#[tokio::test]
async fn jwks_wrong_aud_or_algorithm_is_refused_with_401() {
    let rsa = Signer::load("rsa1");
    let server = JwksServer::start(&[rsa.jwk("r")]).await;
    let hub = jwks_hub(&server, |c| c.jwt_audience = Some("hub".into())).await;
    let mut good = claims("ann");
    good["aud"] = json!("hub");
    Client::connect(&hub.url(&q(&rsa.token(Some("r"), &good)))).await;
    let mut wrong = claims("ann");
    wrong["aud"] = json!("else");
    let (status, text) = refused_status(&hub.url(&q(&rsa.token(Some("r"), &wrong)))).await;
    assert_eq!((status, text.contains("audience")), (401, true), "{text}");
    let (status, _) = refused_status(&hub.url(&q(&rsa.token_as("ES256", Some("r"), &good)))).await;
    assert_eq!(status, 401);
    let (status, _) = refused_status(&hub.url(&q(&sign(&good, SECRET)))).await;
    assert_eq!(status, 401, "HS256 without a secret");
}

#[tokio::test]
async fn jwks_chunked_answers_are_read_and_oversized_ones_keep_the_last_good_set() {
    let (ec, ed) = (Signer::load("ec"), Signer::load("ed"));
    let server = JwksServer::start(&[]).await;
    let body = json!({"keys": [ec.jwk("e")]}).to_string();
    let (first, second) = body.split_at(body.len() / 2);
    server.serve_raw(
        format!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{first}\r\n{:x}\r\n{second}\r\n0\r\n\r\n",
            first.len(),
            second.len()
        )
        .into_bytes(),
    );
    let hub = jwks_hub(&server, |c| c.jwks_refresh = Duration::from_millis(100)).await;
    Client::connect(&hub.url(&q(&ec.token(Some("e"), &claims("ann"))))).await;
    // More than 1 MiB, without a length: read to the limit, then dropped;
    // so is a body that is not a key set. The last good set stays.
    let huge = json!({"keys": [ed.jwk("d")], "pad": "x".repeat(1 << 20)}).to_string();
    for answer in [
        format!("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{huge}"),
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n[]".to_owned(),
    ] {
        server.serve_raw(answer.into_bytes());
        let seen = server.requests();
        server.until_requests(seen + 2).await;
        Client::connect(&hub.url(&q(&ec.token(Some("e"), &claims("ann"))))).await;
    }
    let (status, _) = refused_status(&hub.url(&q(&ed.token(Some("d"), &claims("x"))))).await;
    assert_eq!(status, 401);
}
