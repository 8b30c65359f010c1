//! The hub on several event loops (tokio's multi-threaded runtime, as
//! `wsline serve --threads N` runs it): publications from concurrent
//! publishers reach every subscriber in offset order, none lost or
//! doubled; presence join/leave and recovery work whatever loop a client
//! is on; shutdown closes every client with 1001.

mod common;

use common::{config, start, with_join_leave, Client};
use serde_json::{json, Value};
use tokio::task::JoinSet;

const SUBSCRIBERS: usize = 24;
const PUBLISHERS: usize = 4;
const EACH: u64 = 150;

/// Reads `n` messages on `channel`, skipping presence events; their data.
async fn messages(client: &mut Client, channel: &str, n: u64) -> Vec<Value> {
    let mut got = Vec::new();
    while (got.len() as u64) < n {
        let m = client.recv().await;
        if m["op"] == "message" {
            assert_eq!(m["channel"], channel, "{m}");
            got.push(m);
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishers_on_several_loops_reach_every_subscriber_in_offset_order() {
    let mut c = config();
    c.publish_rate = 1_000_000;
    let hub = start(c).await;
    let mut subscribers = Vec::new();
    for _ in 0..SUBSCRIBERS {
        let mut c = hub.client().await;
        c.subscribe("fan").await;
        subscribers.push(c);
    }
    let readers: JoinSet<_> = subscribers
        .into_iter()
        .map(|mut c| async move { messages(&mut c, "fan", PUBLISHERS as u64 * EACH).await })
        .collect();
    let mut publishers = JoinSet::new();
    for p in 0..PUBLISHERS {
        let mut c = hub.client().await;
        publishers.spawn(async move {
            for i in 0..EACH {
                c.publish("fan", json!({"p": p, "i": i})).await;
            }
        });
    }
    while let Some(done) = publishers.join_next().await {
        done.expect("publisher");
    }
    let all = readers.join_all().await;
    let first = &all[0];
    for got in &all {
        let offsets: Vec<u64> = got.iter().map(|m| m["offset"].as_u64().unwrap()).collect();
        let want: Vec<u64> = (1..=PUBLISHERS as u64 * EACH).collect();
        assert_eq!(offsets, want, "every offset once, in order");
        assert_eq!(got, first, "every subscriber got the same messages");
    }
    // Each publisher's own messages in the order it sent them.
    for p in 0..PUBLISHERS {
        let seq: Vec<u64> = first
            .iter()
            .filter(|m| m["data"]["p"] == p)
            .map(|m| m["data"]["i"].as_u64().unwrap())
            .collect();
        assert_eq!(seq, (0..EACH).collect::<Vec<_>>());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_and_recovery_across_loops() {
    let hub = start(with_join_leave(config(), "room")).await;
    let mut watcher = hub.client().await;
    watcher.subscribe("room").await;
    let mut members = Vec::new();
    for _ in 0..8 {
        let mut c = hub.client().await;
        c.subscribe("room").await;
        members.push(c);
    }
    let ids: Vec<String> = members.iter().map(|c| c.id.clone()).collect();
    let mut joined = Vec::new();
    while joined.len() < ids.len() {
        let e = watcher.recv().await;
        assert_eq!(e["op"], "join", "{e}");
        joined.push(e["member"]["client"].as_str().unwrap().to_owned());
    }
    assert_eq!(joined, ids, "joins in the order the members subscribed");
    let presence = watcher
        .request(json!({"op": "presence", "channel": "room", "id": 1}))
        .await;
    assert_eq!(
        presence["members"].as_array().map(Vec::len),
        Some(9),
        "{presence}"
    );

    // A member leaves; messages are published meanwhile; it comes back with
    // `since` and gets exactly what it missed.
    let gone = members.pop().unwrap();
    let gone_id = gone.id.clone();
    drop(gone);
    let left = watcher.recv().await;
    assert_eq!(
        (left["op"].as_str(), left["member"]["client"].as_str()),
        (Some("leave"), Some(gone_id.as_str()))
    );
    let epoch = presence_epoch(&mut watcher).await;
    let mut publisher = hub.client().await;
    for i in 0..20 {
        publisher.publish("room", json!(i)).await;
    }
    let mut back = hub.client().await;
    let reply = back
        .request(json!({"op": "subscribe", "channel": "room", "since": 0, "epoch": epoch}))
        .await;
    assert_eq!(reply["recovered"], true, "{reply}");
    let got = messages(&mut back, "room", 20).await;
    let data: Vec<Value> = got.iter().map(|m| m["data"].clone()).collect();
    assert_eq!(data, (0..20).map(|i| json!(i)).collect::<Vec<_>>());
    back.expect_nothing_pending().await;
}

/// The channel's epoch, from a fresh subscription's reply.
async fn presence_epoch(client: &mut Client) -> String {
    let reply = client
        .request(json!({"op": "subscribe", "channel": "room", "id": "e"}))
        .await;
    reply["epoch"].as_str().expect("epoch").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_every_client_on_every_loop_with_1001() {
    let mut hub = start(config()).await;
    let mut clients = Vec::new();
    for _ in 0..16 {
        let mut c = hub.client().await;
        c.subscribe("any").await;
        clients.push(c);
    }
    hub.stop();
    let closes: JoinSet<_> = clients
        .into_iter()
        .map(|mut c| async move { c.closed().await.0 })
        .collect();
    assert!(closes.join_all().await.iter().all(|&code| code == 1001));
    hub.finished().await.expect("the hub returns Ok");
}
