//! Draining (`serve`'s shutdown future, `POST /api/drain`): `/healthz`
//! answers 503 before any client is closed, upgrades are served during
//! the grace and refused after it, the closes (1001) are spread over the
//! window, and `serve` returns once the last client has gone.
//!
//! Timing is measured, not assumed: every client records when its close
//! arrived, and the assertions leave generous margins for a loaded
//! machine (a late timer bunches closes together at the end; it never
//! spreads them wider than the window by more than the delay).

mod common;

use std::time::{Duration, Instant};

use common::{config, http, start, within, Client};
use serde_json::json;
use tokio::task::JoinSet;
use wsline_hub::HubConfig;

/// `config()` with a drain of `grace`, then closes over the whole of
/// `window` (a rate of 1 a second is slower than any test's client count
/// over its window, so the window sets the pace).
fn draining(grace: Duration, window: Duration) -> HubConfig {
    let mut c = config();
    c.drain_grace = grace;
    c.drain_window = window;
    c.drain_rate = 1;
    c
}

/// Each client waits for its close in a task; (code, when it arrived).
fn await_closes(clients: Vec<Client>) -> JoinSet<(u16, Instant)> {
    clients
        .into_iter()
        .map(|mut c| async move {
            let (code, _) = c.closed().await;
            (code, Instant::now())
        })
        .collect()
}

/// Polls `/healthz` until it answers 503 `draining`; when it first did.
async fn health_says_draining(hub: &common::Hub) -> Instant {
    within("/healthz to say draining", async {
        loop {
            let reply = hub.get("/healthz").await;
            if reply.status == 503 {
                assert_eq!(reply.json(), json!({"status": "draining"}));
                return Instant::now();
            }
            assert_eq!(reply.status, 200, "{reply:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
}

/// A WebSocket upgrade request; the hub answers it with a 503 (and
/// closes) once a drain's grace is over.
async fn upgrade(addr: std::net::SocketAddr) -> common::HttpReply {
    http(
        addr,
        "GET",
        "/ws",
        &[
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Version", "13"),
        ],
        None,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_flips_health_first_serves_the_grace_then_spreads_the_closes_over_the_window() {
    const CLIENTS: usize = 60;
    let grace = Duration::from_millis(1500);
    let window = Duration::from_secs(2);
    let mut hub = start(draining(grace, window)).await;
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let mut c = hub.client().await;
        c.subscribe(&format!("room{}", i % 7)).await;
        clients.push(c);
    }
    let mut closes = await_closes(clients);
    let asked = Instant::now();
    hub.stop();
    let flipped = health_says_draining(&hub).await;
    let metrics = hub.metrics().await;
    assert_eq!(metrics.value("wsline_draining"), 1.0);

    // During the grace a new client is still served (the balancer has not
    // noticed yet); it is one of those the drain closes. If this machine
    // was too slow to get here within the grace, there is nothing to see.
    if asked.elapsed() < grace / 3 {
        let mut late = hub.client().await;
        closes.spawn(async move {
            let (code, _) = late.closed().await;
            (code, Instant::now())
        });
    }

    let mut got: Vec<(u16, Instant)> = within("every client's close", closes.join_all()).await;
    assert!(got.iter().all(|(code, _)| *code == 1001), "{got:?}");
    got.sort_by_key(|(_, at)| *at);
    let first = got[0].1;
    let last = got[got.len() - 1].1;
    assert!(
        flipped < first,
        "/healthz said draining {:?} after the drain began, the first close came {:?} after",
        flipped - asked,
        first - asked
    );
    assert!(
        first - asked >= grace - Duration::from_millis(50),
        "no close before the grace is over: the first came {:?} after the drain began",
        first - asked
    );
    // The spread: ideally the whole window (slots of 2 s / 60, one close
    // at a random moment of each).
    let spread = last - first;
    let middle = got[got.len() * 3 / 4].1 - got[got.len() / 4].1;
    eprintln!(
        "{} closes: first {:?} after the drain began, spread {spread:?} over a window of {window:?}, \
         middle half {middle:?}",
        got.len(),
        first - asked
    );
    assert!(
        spread >= window / 2,
        "closes spread over {spread:?}, not the window"
    );
    assert!(
        spread <= window + Duration::from_millis(1500),
        "closes spread over {spread:?}, longer than the window"
    );
    assert!(
        middle >= window / 5,
        "the middle half of the closes came within {middle:?}: bunched, not paced"
    );

    hub.finished().await.expect("serve returns Ok");
}

#[tokio::test]
async fn upgrades_after_the_grace_get_503_while_the_closes_are_paced() {
    // Three clients over 3 s: one close a second, which leaves time to
    // try an upgrade between the first and the last, while the hub still
    // listens.
    let mut hub = start(draining(Duration::ZERO, Duration::from_secs(3))).await;
    let clients = vec![hub.client().await, hub.client().await, hub.client().await];
    let mut closes = await_closes(clients);
    hub.stop();
    health_says_draining(&hub).await;
    // Once the first client is closed, the grace is over for sure.
    let (code, _) = within("the first close", closes.join_next())
        .await
        .expect("a client")
        .expect("no panic");
    assert_eq!(code, 1001);
    let refused = upgrade(hub.addr).await;
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(refused.header("Retry-After"), Some("1"));
    assert!(refused.json()["error"]
        .as_str()
        .unwrap()
        .contains("draining"));
    // HTTP is still answered.
    assert_eq!(hub.get("/healthz").await.status, 503);
    for _ in 0..2 {
        let (code, _) = within("the other closes", closes.join_next())
            .await
            .expect("a client")
            .expect("no panic");
        assert_eq!(code, 1001);
    }
    hub.finished().await.expect("serve returns Ok");
}

#[tokio::test]
async fn post_api_drain_needs_the_key_flips_health_at_once_and_ends_serve() {
    // A grace, so that the hub still listens for the requests below.
    let mut c = draining(Duration::from_secs(2), Duration::from_millis(300));
    c.api_key = Some("k".into());
    let mut hub = start(c).await;
    let a = hub.client().await;
    let closes = await_closes(vec![a]);
    for headers in [&[][..], &[("Authorization", "Bearer wrong")][..]] {
        let refused = http(hub.addr, "POST", "/api/drain", headers, Some("")).await;
        assert_eq!(refused.status, 401, "{refused:?}");
    }
    assert_eq!(hub.get("/healthz").await.status, 200, "no drain yet");
    let key = [("Authorization", "Bearer k")];
    let wrong_method = http(hub.addr, "GET", "/api/drain", &key, None).await;
    assert_eq!(wrong_method.status, 405);

    let reply = http(hub.addr, "POST", "/api/drain", &key, Some("")).await;
    assert_eq!(reply.status, 202, "{reply:?}");
    assert_eq!(
        reply.json(),
        json!({"status": "draining", "started": true, "connections": 1})
    );
    // Flipped before the answer was sent: no waiting.
    let health = hub.get("/healthz").await;
    assert_eq!(
        (health.status, health.json()),
        (503, json!({"status": "draining"}))
    );
    // A second request changes nothing.
    let again = http(hub.addr, "POST", "/api/drain", &key, None).await;
    assert_eq!(again.status, 202, "{again:?}");
    assert_eq!(again.json()["started"], json!(false));

    let got = within("the close", closes.join_all()).await;
    assert_eq!(got[0].0, 1001);
    // `serve` returns on its own: its shutdown future never completed.
    hub.finished().await.expect("serve returns Ok");
}

#[tokio::test]
async fn a_drain_with_no_client_ends_after_the_grace() {
    let mut hub = start(draining(
        Duration::from_millis(300),
        Duration::from_secs(30),
    ))
    .await;
    let started = Instant::now();
    hub.stop();
    hub.finished().await.expect("serve returns Ok");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(5),
        "the grace, then nothing to wait for: {took:?}"
    );
}
