//! Who may connect to `/ws`: JWT (HS256) tokens, their `channels` claim
//! and expiry on an open connection, and the Origin allow-list.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

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
