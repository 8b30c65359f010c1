//! The long-gap recovery scenario against a running `wsline serve`, shared
//! by the in-memory engine's test (`tests/recovery.rs`) and the Redis
//! engine's (`tests/redis.rs`): a client recovering 1,000 messages of
//! 64 KiB (64 MiB, 64 times the default `--max-queue`) gets all of them in
//! order, then the live ones published during its replay, nothing twice,
//! and is never closed as a slow consumer; clients that stop reading live
//! traffic still are (4008).
#![allow(dead_code)]

use std::net::SocketAddr;

use serde_json::{json, Value};

use crate::common::{http, within, Client, Metrics};

/// Messages missed by the recovering client.
pub const MISSED: u64 = 1000;
/// Messages published while it replays them.
pub const LIVE: u64 = 20;
/// Bytes of padding per message.
pub const PAYLOAD: usize = 64 * 1024;
/// Publishes sent before their replies are read.
const BATCH: u64 = 25;
/// The flood that must cut off clients that stop reading: far beyond the
/// default `--max-queue` plus socket buffers.
const FLOOD_MAX: u64 = 1000;

/// `wsline serve` flags the scenario needs (the queue stays the default
/// 1 MiB): history for every missed message, room for 64 KiB payloads,
/// no publish rate limit in the way.
pub const SERVE_ARGS: &[&str] = &[
    "--history-size",
    "1000",
    "--max-message-size",
    "131072",
    "--publish-rate",
    "100000",
];

const CHANNEL: &str = "room:long-gap";

fn data(i: u64) -> Value {
    json!({"i": i, "pad": "x".repeat(PAYLOAD)})
}

/// Publishes `count` messages from `publisher`, expecting offsets from
/// `first` on.
async fn publish(publisher: &mut Client, first: u64, count: u64) {
    let mut next = first;
    while next < first + count {
        let n = BATCH.min(first + count - next);
        for i in next..next + n {
            publisher
                .send(json!({"op": "publish", "channel": CHANNEL, "data": data(i)}))
                .await;
        }
        for i in next..next + n {
            let reply = publisher.recv().await;
            assert_eq!(
                (&reply["op"], reply["offset"].as_u64()),
                (&json!("published"), Some(i)),
                "{reply}"
            );
        }
        next += n;
    }
}

async fn metrics(addr: SocketAddr) -> Metrics {
    let reply = http(addr, "GET", "/metrics", &[], None).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    Metrics(reply.body)
}

/// The next publication, which must be the one at `offset` (presence
/// events are skipped: the idle subscriber's `leave` when it is cut off).
async fn expect(client: &mut Client, offset: u64) {
    let mut m = client.recv().await;
    while m["op"] == "leave" || m["op"] == "join" {
        m = client.recv().await;
    }
    let pad = m["data"]["pad"].as_str().map_or(0, str::len);
    assert_eq!(
        (&m["op"], m["offset"].as_u64(), m["data"]["i"].as_u64(), pad),
        (&json!("message"), Some(offset), Some(offset), PAYLOAD),
        "expected the message at offset {offset}, got op {} offset {}",
        m["op"],
        m["offset"]
    );
}

/// Runs the scenario: publishers and the probe on `publish_url`, the
/// recovering client on `recover_url` (another node with Redis), whose
/// `/metrics` is at `recover_addr`.
pub async fn run(publish_url: &str, recover_url: &str, recover_addr: SocketAddr) {
    let mut publisher = Client::connect(publish_url).await;
    publish(&mut publisher, 1, MISSED).await;

    // The channel's epoch, as the client would have kept it.
    let mut probe = Client::connect(publish_url).await;
    let s = probe.subscribe(CHANNEL).await;
    assert_eq!(s["offset"], MISSED, "{s}");
    let epoch = s["epoch"].as_str().expect("epoch").to_owned();
    // Gone before the others come (its `leave` is no news to them).
    let bye = probe
        .request(json!({"op": "unsubscribe", "channel": CHANNEL}))
        .await;
    assert_eq!(bye["op"], "unsubscribed", "{bye}");
    drop(probe);

    // A subscriber that never reads, there before the live traffic.
    let mut idle = Client::connect(recover_url).await;
    idle.subscribe(CHANNEL).await;

    // Since 0: everything after offset 0, that is all 1,000.
    let mut reader = Client::connect(recover_url).await;
    let s = reader
        .request(
            json!({"op": "subscribe", "channel": CHANNEL, "since": 0, "epoch": epoch, "id": 1}),
        )
        .await;
    assert_eq!(
        (&s["op"], &s["recovered"], &s["offset"], &s["epoch"]),
        (
            &json!("subscribed"),
            &json!(true),
            &json!(MISSED),
            &json!(epoch)
        ),
        "{s}"
    );
    for offset in 1..=100 {
        expect(&mut reader, offset).await;
    }
    // Live messages from another connection while the reader goes on
    // with its replay; all published before it reads past 200, when the
    // hub can be no more than its queue and the socket buffers (a few
    // MiB, not the 50 MiB left) ahead of it.
    let live = tokio::spawn(async move {
        publish(&mut publisher, MISSED + 1, LIVE).await;
        publisher
    });
    for offset in 101..=200 {
        expect(&mut reader, offset).await;
    }
    let mut publisher = within("the live publishes", live)
        .await
        .expect("the publisher task");
    for offset in 201..=MISSED + LIVE {
        expect(&mut reader, offset).await;
    }
    // Nothing twice, nothing else queued, and still open: never cut off.
    // (The idle subscriber may already be: 20 live messages of 64 KiB
    // are more than its queue, if not always more than its socket holds.)
    reader.expect_nothing_pending().await;
    let m = metrics(recover_addr).await;
    assert!(m.value("wsline_slow_consumer_disconnects_total") <= 1.0);
    assert_eq!(m.value("wsline_replay_gaps_total"), 0.0);

    // Now the reader stops reading too, and live traffic floods both: the
    // slow-consumer rule still closes them with 4008.
    let mut published = MISSED + LIVE;
    while published < MISSED + LIVE + FLOOD_MAX {
        publish(&mut publisher, published + 1, BATCH).await;
        published += BATCH;
        let cut = metrics(recover_addr)
            .await
            .value("wsline_slow_consumer_disconnects_total");
        if cut >= 2.0 {
            break;
        }
    }
    for (name, client, after) in [
        ("idle", &mut idle, MISSED),
        ("reader", &mut reader, MISSED + LIVE),
    ] {
        let (code, _, messages) = client.closed_after_messages().await;
        assert_eq!(code, 4008, "{name} was closed as a slow consumer");
        // What came before the close: a prefix of the live messages, in
        // order (the rest was dropped with the queue).
        let offsets: Vec<u64> = messages
            .iter()
            .filter(|m| m["op"] == "message")
            .filter_map(|m| m["offset"].as_u64())
            .collect();
        let prefix: Vec<u64> = (after + 1..=after + offsets.len() as u64).collect();
        assert_eq!(offsets, prefix, "{name}: in order, no gap before the cut");
        assert!(after + (offsets.len() as u64) < published, "{name}");
    }
    eprintln!(
        "replayed {MISSED} + {LIVE} live; the flood cut both readers after {} messages",
        published - MISSED - LIVE
    );
}
