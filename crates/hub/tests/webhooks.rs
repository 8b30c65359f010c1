//! Webhooks (docs/hooks.md#webhooks) with the memory engine, over real
//! sockets: the hub on 127.0.0.1 and a real HTTP receiver on another
//! socket of this process. Every event in the order it happened, in
//! batches, signed; a 500 retried with the same body (same ids) until a
//! 200; only the configured events; a full queue dropping and counting.
//! The cluster-wide exactness (Redis engine, three nodes, SIGKILL) is in
//! crates/cli/tests/redis.rs.

mod common;

use common::receiver::{Answer, Receiver};
use common::{config, start, within, Client};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use wsline_hub::auth::sign;
use wsline_hub::HubConfig;

const SECRET: &str = "webhook secret";

fn webhooks_config(url: &str) -> HubConfig {
    let mut c = config();
    c.webhooks.url = Some(url.to_owned());
    c.webhooks.secret = Some(SECRET.to_owned());
    c
}

/// What the receiver checks: `sha256=` and the hex HMAC-SHA256 of the
/// raw body under the shared secret, compared in constant time.
fn verify(signature: Option<&str>, body: &[u8]) -> bool {
    let Some(hex) = signature.and_then(|s| s.strip_prefix("sha256=")) else {
        return false;
    };
    let Some(bytes) = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()
    else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    mac.verify_slice(&bytes).is_ok()
}

/// (name, channel, client) of each event.
fn summary(events: &[Value]) -> Vec<(String, Value, Value)> {
    events
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_owned(),
                e["channel"].clone(),
                e["client"].clone(),
            )
        })
        .collect()
}

fn names(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["name"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn events_arrive_signed_in_batches_in_the_order_they_happened() {
    let mut receiver = Receiver::start().await;
    let mut c = webhooks_config(&receiver.url);
    c.jwt_secret = Some("jwt".into());
    // Long enough that what one client does at once shares a POST.
    c.webhooks.batch_delay = 0.3;
    let hub = start(c).await;
    let token = sign(&json!({"sub": "ann"}), b"jwt");
    let mut ann = Client::connect(&hub.url(&format!("?token={token}"))).await;
    ann.subscribe("room").await;
    let reply = ann
        .request(json!({"op": "unsubscribe", "channel": "room"}))
        .await;
    assert_eq!(reply["op"], "unsubscribed", "{reply}");
    within("close", ann.ws.close(wsline::CloseCode::NORMAL, "bye"))
        .await
        .unwrap();

    let (posts, events) = receiver.until(|e| e.len() >= 6).await;
    let id = json!(ann.id);
    let room = json!("room");
    assert_eq!(
        summary(&events),
        [
            ("client_connected".into(), Value::Null, id.clone()),
            ("channel_occupied".into(), room.clone(), Value::Null),
            ("member_added".into(), room.clone(), id.clone()),
            ("member_removed".into(), room.clone(), id.clone()),
            ("channel_vacated".into(), room.clone(), Value::Null),
            ("client_disconnected".into(), Value::Null, id.clone()),
        ]
    );
    assert!(
        posts.len() < events.len(),
        "{} events came in {} POSTs: not batched",
        events.len(),
        posts.len()
    );
    for post in &posts {
        assert!(
            verify(post.signature.as_deref(), &post.body),
            "the signature {:?} does not verify",
            post.signature
        );
        assert!(!verify(post.signature.as_deref(), b"{}"), "signs the body");
        let body = post.json();
        assert!(body["time_ms"].as_u64().unwrap() > 1_600_000_000_000);
        assert_eq!(body.as_object().unwrap().len(), 2, "{body}");
    }
    for e in &events {
        // Exactly these keys; the user where there is one.
        assert_eq!(e.as_object().unwrap().len(), 5, "{e}");
        let user = if e["client"].is_null() {
            Value::Null
        } else {
            json!("ann")
        };
        assert_eq!(e["user"], user, "{e}");
    }
    let mut ids: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 6, "every event has its own id");
    let m = hub
        .metrics_until(|m| m.value("wsline_webhook_requests_total{result=\"ok\"}") >= 1.0)
        .await;
    assert_eq!(
        m.value("wsline_webhook_events_total{name=\"member_added\"}"),
        1.0
    );
}

#[tokio::test]
async fn a_500_is_retried_with_the_same_ids_and_nothing_is_lost() {
    let mut receiver = Receiver::start().await;
    // The first two requests fail, then every one succeeds.
    receiver.answer(|n| Answer::Status(if n < 2 { 500 } else { 200 }));
    let mut c = webhooks_config(&receiver.url);
    c.webhooks.batch_delay = 0.0;
    let hub = start(c).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut client = hub.client().await;
        client.subscribe("busy").await;
        clients.push(client);
    }
    let first = receiver.post().await;
    assert_eq!(first.answered, 500);
    let second = receiver.post().await;
    assert_eq!(second.answered, 500);
    assert_eq!(second.body, first.body, "a retry sends the same bytes");
    let third = receiver.post().await;
    assert_eq!(third.answered, 200);
    assert_eq!(third.body, first.body, "a retry sends the same bytes");
    assert!(verify(third.signature.as_deref(), &third.body));

    // The rest follows; every event exactly once once repeats are dropped
    // by id, as a receiver does.
    let (_, rest) = receiver
        .until(|e| {
            e.iter().filter(|e| e["name"] == "member_added").count() >= 3 - first_added(&third)
        })
        .await;
    let mut all = third.events();
    all.extend(rest);
    let mut seen = std::collections::HashSet::new();
    all.retain(|e| seen.insert(e["id"].as_str().unwrap().to_owned()));
    let mut got = names(&all);
    got.sort();
    assert_eq!(
        got,
        [
            "channel_occupied",
            "client_connected",
            "client_connected",
            "client_connected",
            "member_added",
            "member_added",
            "member_added",
        ]
    );
    let m = hub
        .metrics_until(|m| m.value("wsline_webhook_requests_total{result=\"ok\"}") >= 1.0)
        .await;
    assert_eq!(
        m.value("wsline_webhook_requests_total{result=\"error\"}"),
        2.0
    );
    assert_eq!(
        m.value("wsline_webhook_events_dropped_total{reason=\"retries\"}"),
        0.0
    );
    drop(clients);
}

fn first_added(post: &common::receiver::Post) -> usize {
    post.events()
        .iter()
        .filter(|e| e["name"] == "member_added")
        .count()
}

#[tokio::test]
async fn only_the_configured_events_are_sent() {
    let mut receiver = Receiver::start().await;
    let mut c = webhooks_config(&receiver.url);
    c.webhooks.events = vec!["channel_occupied".into(), "channel_vacated".into()];
    c.webhooks.batch_delay = 0.0;
    let hub = start(c).await;
    let mut a = hub.client().await;
    let mut b = hub.client().await;
    a.subscribe("x").await;
    b.subscribe("x").await;
    a.request(json!({"op": "unsubscribe", "channel": "x"}))
        .await;
    b.request(json!({"op": "unsubscribe", "channel": "x"}))
        .await;
    a.subscribe("y").await;
    let (_, events) = receiver.until(|e| e.len() >= 3).await;
    assert_eq!(
        summary(&events),
        [
            ("channel_occupied".into(), json!("x"), Value::Null),
            ("channel_vacated".into(), json!("x"), Value::Null),
            ("channel_occupied".into(), json!("y"), Value::Null),
        ]
    );
}

#[tokio::test]
async fn a_full_queue_drops_and_counts() {
    let mut receiver = Receiver::start().await;
    // The first POST is never answered: the queue behind it fills.
    receiver.answer(|n| {
        if n == 0 {
            Answer::Hang
        } else {
            Answer::Status(200)
        }
    });
    let mut c = webhooks_config(&receiver.url);
    c.webhooks.batch_delay = 0.0;
    c.webhooks.batch_size = 1;
    c.webhooks.queue_size = 2;
    // Long enough for the eight clients to connect while it hangs, on a
    // slow machine too; short enough to deliver the rest within a wait.
    c.webhooks.timeout = 3.0;
    c.webhooks.events = vec!["client_connected".into()];
    let hub = start(c).await;
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(hub.client().await);
    }
    // One in flight, two queued, so at least five dropped (the first may
    // still have been queued when later ones came).
    let m = hub
        .metrics_until(|m| {
            m.value("wsline_webhook_events_dropped_total{reason=\"overflow\"}") >= 5.0
        })
        .await;
    let dropped = m.value("wsline_webhook_events_dropped_total{reason=\"overflow\"}");
    let queued = m.value("wsline_webhook_events_total{name=\"client_connected\"}");
    assert_eq!(dropped + queued, 8.0, "{}", m.0);
    // The hung POST times out and is retried; the queued ones follow.
    let (_, events) = receiver.until(|e| e.len() as f64 >= queued).await;
    assert_eq!(events.len() as f64, queued);
}

/// The Python receiver of docs/hooks.md, behind a hub configured with its
/// secret: it verifies and prints what the hub sends, and refuses a body
/// whose signature does not match. Skipped (with a note) without python3.
#[tokio::test]
async fn the_example_receiver_of_the_docs_verifies_the_signature() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let docs = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/hooks.md"),
    )
    .expect("docs/hooks.md");
    let script = docs
        .split_once("# Webhooks\n")
        .and_then(|(_, rest)| rest.split_once("```python\n"))
        .and_then(|(_, rest)| rest.split_once("```"))
        .expect("docs/hooks.md has a Python webhook receiver")
        .0;
    let secret = script
        .split_once("SECRET = b\"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .expect("the example's SECRET")
        .0;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let child = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(port.to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn();
    let Ok(mut child) = child else {
        eprintln!("python3 not found: the example receiver is not tested");
        return;
    };
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    within("the example receiver to listen", async {
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    let forged = common::http(
        ([127, 0, 0, 1], port).into(),
        "POST",
        "/",
        &[("X-Wsline-Signature", "sha256=00")],
        Some(r#"{"time_ms":1,"events":[]}"#),
    )
    .await;
    assert_eq!(forged.status, 401, "a forged signature is refused");

    let mut c = config();
    c.webhooks.url = Some(format!("http://127.0.0.1:{port}/wsline/webhooks"));
    c.webhooks.secret = Some(secret.to_owned());
    let hub = start(c).await;
    let mut ann = hub.client().await;
    ann.subscribe("room:42").await;
    let mut printed = Vec::new();
    while printed.len() < 3 {
        let line = within("the receiver's output", lines.next_line())
            .await
            .unwrap()
            .expect("the receiver runs");
        printed.push(line);
    }
    assert_eq!(
        printed,
        [
            format!("client_connected None {} None", ann.id),
            "channel_occupied room:42 None None".to_owned(),
            format!("member_added room:42 {} None", ann.id),
        ]
    );
}

/// A hub that stops (a drain) sends what its last clients did before
/// `serve` returns, so a process that exits then loses none of it.
#[tokio::test]
async fn a_stopping_hub_sends_its_last_events_before_serve_returns() {
    let mut receiver = Receiver::start().await;
    let mut c = webhooks_config(&receiver.url);
    // Longer than the drain takes: without the flush, serve would return
    // with these events still waiting for their batch.
    c.webhooks.batch_delay = 0.3;
    let mut hub = start(c).await;
    let mut ann = hub.client().await;
    ann.subscribe("last").await;
    hub.stop();
    let (code, _) = ann.closed().await;
    assert_eq!(code, 1001);
    hub.finished().await.unwrap();
    let events = receiver.events_now();
    assert_eq!(
        names(&events),
        [
            "client_connected",
            "channel_occupied",
            "member_added",
            "member_removed",
            "channel_vacated",
            "client_disconnected",
        ]
    );
}
