//! The client protocol over `/ws`: every op, every error code, the close
//! codes a client can cause (1008, 1009), presence events and shutdown.

mod common;

use std::time::Duration;

use common::{config, start, with_join_leave, Client};
use serde_json::{json, Value};
use wsline_hub::config::ChannelOptions;

// ------------------------------------------------------------------- ops

#[tokio::test]
async fn welcome_names_the_client_and_a_null_user_without_auth() {
    let hub = start(config()).await;
    let a = hub.client().await;
    let b = hub.client().await;
    assert_eq!(a.welcome["user"], Value::Null, "{}", a.welcome);
    assert_eq!(a.welcome.as_object().unwrap().len(), 3, "{}", a.welcome);
    assert!(!a.id.is_empty());
    assert_ne!(a.id, b.id, "client IDs are unique");
}

#[tokio::test]
async fn subscribe_to_an_empty_channel_replies_offset_0_with_an_epoch_and_the_id() {
    let hub = start(config()).await;
    let mut c = hub.client().await;
    let reply = c
        .request(json!({"op": "subscribe", "channel": "news", "id": 1}))
        .await;
    let epoch = reply["epoch"].as_str().expect("epoch is a string");
    assert!(!epoch.is_empty());
    assert_eq!(
        reply,
        json!({"op": "subscribed", "channel": "news", "offset": 0,
               "epoch": epoch, "recovered": false, "id": 1})
    );
}

#[tokio::test]
async fn publish_replies_published_and_every_subscriber_gets_the_message_publisher_included() {
    let hub = start(config()).await;
    let mut a = hub.client().await;
    let mut b = hub.client().await;
    let mut outsider = hub.client().await;
    a.subscribe("room").await;
    b.subscribe("room").await;
    outsider.subscribe("other").await;

    let data = json!({"text": "hi", "n": [1, 2.5, null, true], "s": "q\"uote"});
    let reply = a
        .request(json!({"op": "publish", "channel": "room", "data": data, "id": "p1"}))
        .await;
    assert_eq!(
        reply,
        json!({"op": "published", "channel": "room", "offset": 1, "id": "p1"}),
        "the reply comes before the publisher's own copy"
    );
    let message =
        json!({"op": "message", "channel": "room", "offset": 1, "data": data, "from": a.id});
    assert_eq!(a.recv().await, message);
    assert_eq!(b.recv().await, message);

    // Offsets count from 1 per channel.
    assert_eq!(b.publish("room", json!(2)).await, 2);
    assert_eq!(b.recv().await["offset"], 2);
    assert_eq!(a.recv().await["from"], b.id.as_str());
    assert_eq!(outsider.publish("other", json!("x")).await, 1);
    assert_eq!(outsider.recv().await["offset"], 1);
    outsider.expect_nothing_pending().await;
}

#[tokio::test]
async fn publish_data_null_is_published_and_delivered_as_null_over_ws_and_http() {
    let hub = start(config()).await;
    let mut c = hub.client().await;
    c.subscribe("n").await;
    let reply = c
        .request(json!({"op": "publish", "channel": "n", "data": null, "id": 1}))
        .await;
    assert_eq!(
        reply,
        json!({"op": "published", "channel": "n", "offset": 1, "id": 1})
    );
    assert_eq!(
        c.recv().await,
        json!({"op": "message", "channel": "n", "offset": 1, "data": null, "from": c.id})
    );
    assert_eq!(hub.api_publish("n", json!(null)).await, 2);
    assert_eq!(
        c.recv().await,
        json!({"op": "message", "channel": "n", "offset": 2, "data": null, "from": null})
    );
    // Recovery replays it as null too.
    let mut late = hub.client().await;
    let reply = late
        .request(json!({"op": "subscribe", "channel": "n", "since": 0}))
        .await;
    assert_eq!(reply["recovered"], true, "{reply}");
    for offset in [1, 2] {
        let m = late.recv().await;
        assert_eq!(
            (m["offset"].as_u64(), m.get("data")),
            (Some(offset), Some(&Value::Null)),
            "{m}"
        );
    }
    // No `data` key at all is still a bad request.
    let reply = late
        .request(json!({"op": "publish", "channel": "n", "id": 3}))
        .await;
    assert_eq!(reply["op"], "error", "{reply}");
    assert_eq!(reply["code"], "bad_request", "{reply}");
}

#[tokio::test]
async fn unsubscribe_replies_unsubscribed_and_stops_delivery() {
    let hub = start(config()).await;
    let mut sub = hub.client().await;
    let mut publisher = hub.client().await;
    sub.subscribe("room").await;
    publisher.publish("room", json!(1)).await;
    assert_eq!(sub.recv().await["data"], 1);
    let reply = sub
        .request(json!({"op": "unsubscribe", "channel": "room", "id": 9}))
        .await;
    assert_eq!(
        reply,
        json!({"op": "unsubscribed", "channel": "room", "id": 9})
    );
    publisher.publish("room", json!(2)).await;
    sub.expect_nothing_pending().await;
}

#[tokio::test]
async fn ping_replies_pong_with_the_id() {
    let hub = start(config()).await;
    let mut c = hub.client().await;
    assert_eq!(
        c.request(json!({"op": "ping"})).await,
        json!({"op": "pong"})
    );
    assert_eq!(
        c.request(json!({"op": "ping", "id": {"any": "json"}}))
            .await,
        json!({"op": "pong", "id": {"any": "json"}})
    );
}

#[tokio::test]
async fn http_publish_reaches_subscribers_with_from_null() {
    let hub = start(config()).await;
    let mut c = hub.client().await;
    c.subscribe("feed").await;
    assert_eq!(hub.api_publish("feed", json!({"k": "v"})).await, 1);
    assert_eq!(
        c.recv().await,
        json!({"op": "message", "channel": "feed", "offset": 1, "data": {"k": "v"}, "from": null})
    );
}

// -------------------------------------------------------------- presence

#[tokio::test]
async fn presence_lists_the_members_of_a_channel() {
    let hub = start(config()).await;
    let mut a = hub.client().await;
    let mut b = hub.client().await;
    let mut asker = hub.client().await;
    a.subscribe("room").await;
    b.subscribe("room").await;
    let reply = asker
        .request(json!({"op": "presence", "channel": "room", "id": 3}))
        .await;
    assert_eq!(reply["op"], "presence");
    assert_eq!(reply["channel"], "room");
    assert_eq!(reply["id"], 3);
    let mut members = reply["members"].as_array().expect("members").clone();
    members.sort_by_key(|m| m["client"].as_str().unwrap().to_owned());
    let mut want = vec![
        json!({"client": a.id, "user": null}),
        json!({"client": b.id, "user": null}),
    ];
    want.sort_by_key(|m| m["client"].as_str().unwrap().to_owned());
    assert_eq!(members, want);
    let empty = asker
        .request(json!({"op": "presence", "channel": "nobody"}))
        .await;
    assert_eq!(
        empty,
        json!({"op": "presence", "channel": "nobody", "members": []})
    );
}

#[tokio::test]
async fn join_and_leave_go_to_other_subscribers_on_subscribe_and_unsubscribe() {
    let hub = start(with_join_leave(config(), "room")).await;
    let mut a = hub.client().await;
    let mut b = hub.client().await;
    a.subscribe("room").await;
    b.subscribe("room").await;
    let member_b = json!({"client": b.id, "user": null});
    assert_eq!(
        a.recv().await,
        json!({"op": "join", "channel": "room", "member": member_b})
    );
    b.expect_nothing_pending().await; // no join about itself
    let reply = b
        .request(json!({"op": "unsubscribe", "channel": "room"}))
        .await;
    assert_eq!(reply["op"], "unsubscribed");
    assert_eq!(
        a.recv().await,
        json!({"op": "leave", "channel": "room", "member": member_b})
    );
    b.expect_nothing_pending().await;
}

#[tokio::test]
async fn leave_goes_to_other_subscribers_when_a_member_disconnects() {
    let hub = start(with_join_leave(config(), "room")).await;
    let mut a = hub.client().await;
    let mut b = hub.client().await;
    a.subscribe("room").await;
    b.subscribe("room").await;
    assert_eq!(a.recv().await["op"], "join");
    let b_id = b.id.clone();
    common::within("close", b.ws.close(wsline::CloseCode::NORMAL, "bye"))
        .await
        .expect("clean close");
    assert_eq!(
        a.recv().await,
        json!({"op": "leave", "channel": "room", "member": {"client": b_id, "user": null}})
    );
    let reply = a
        .request(json!({"op": "presence", "channel": "room"}))
        .await;
    assert_eq!(reply["members"], json!([{"client": a.id, "user": null}]));
}

#[tokio::test]
async fn leave_goes_out_when_the_hub_closes_a_member_without_waiting_for_its_close_handshake() {
    let mut c = with_join_leave(config(), "room");
    c.publish_rate = 1;
    c.server.protocol.close_timeout = Duration::from_secs(4);
    let hub = start(c).await;
    let mut watcher = hub.client().await;
    let mut abuser = hub.client().await;
    watcher.subscribe("room").await;
    abuser.subscribe("room").await;
    assert_eq!(watcher.recv().await["op"], "join");
    // 13 publishes get the abuser closed with 1008; it never reads, so it
    // never answers the Close.
    for i in 0..13 {
        abuser
            .send(json!({"op": "publish", "channel": "room", "data": i}))
            .await;
    }
    let started = std::time::Instant::now();
    for _ in 0..2 {
        assert_eq!(watcher.recv().await["op"], "message");
    }
    let leave = watcher.recv().await;
    assert_eq!(
        leave,
        json!({"op": "leave", "channel": "room", "member": {"client": abuser.id, "user": null}})
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the leave waited for the close handshake: {:?}",
        started.elapsed()
    );
    let presence = watcher
        .request(json!({"op": "presence", "channel": "room"}))
        .await;
    assert_eq!(
        presence["members"],
        json!([{"client": watcher.id, "user": null}])
    );
    drop(abuser);
}

#[tokio::test]
async fn presence_off_by_pattern_sends_no_join_or_leave_and_refuses_presence() {
    let mut c = with_join_leave(config(), "*");
    // join_leave needs presence: off here despite the key.
    c.channels.insert(
        "quiet:*".into(),
        ChannelOptions {
            presence: Some(false),
            join_leave: Some(true),
            ..Default::default()
        },
    );
    let hub = start(c).await;
    let mut a = hub.client().await;
    let mut b = hub.client().await;
    a.subscribe("quiet:room").await;
    b.subscribe("quiet:room").await;
    b.request(json!({"op": "unsubscribe", "channel": "quiet:room"}))
        .await;
    a.expect_nothing_pending().await;
    let reply = a
        .request(json!({"op": "presence", "channel": "quiet:room", "id": 1}))
        .await;
    assert_eq!(reply["op"], "error");
    assert_eq!(reply["code"], "forbidden");
    assert_eq!(reply["id"], 1);
    // Other channels keep presence (and here join/leave events).
    a.subscribe("loud").await;
    b.subscribe("loud").await;
    assert_eq!(a.recv().await["op"], "join");
}

#[tokio::test]
async fn join_leave_is_off_by_default_yet_presence_still_lists_the_members() {
    let hub = start(config()).await;
    let mut a = hub.client().await;
    let mut b = hub.client().await;
    let mut asker = hub.client().await;
    a.subscribe("room").await;
    b.subscribe("room").await;
    // No join about b, no leave when b goes.
    a.expect_nothing_pending().await;
    let reply = asker
        .request(json!({"op": "presence", "channel": "room"}))
        .await;
    let mut members: Vec<String> = reply["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| m["client"].as_str().expect("client").to_owned())
        .collect();
    members.sort();
    let mut want = vec![a.id.clone(), b.id.clone()];
    want.sort();
    assert_eq!(members, want, "{reply}");
    let api = hub.get("/api/presence/room").await;
    assert_eq!(api.status, 200);
    assert_eq!(api.json()["members"].as_array().map(Vec::len), Some(2));
    b.request(json!({"op": "unsubscribe", "channel": "room"}))
        .await;
    let gone = a
        .request(json!({"op": "presence", "channel": "room"}))
        .await;
    assert_eq!(gone["members"], json!([{"client": a.id, "user": null}]));
    common::within("close", b.ws.close(wsline::CloseCode::NORMAL, "bye"))
        .await
        .expect("clean close");
    a.expect_nothing_pending().await;
}

#[tokio::test]
async fn join_leave_by_pattern_sends_events_there_and_nowhere_else() {
    let hub = start(with_join_leave(config(), "live:*")).await;
    let mut a = hub.client().await;
    let mut b = hub.client().await;
    common::join_leave_only_on(&mut a, &mut b, "live:room", "plain").await;
}

// ------------------------------------------------------------- recovery

/// Publishes `n` messages `0..n` on `channel` over HTTP.
async fn publish_n(hub: &common::Hub, channel: &str, n: u64) {
    for i in 0..n {
        hub.api_publish(channel, json!(i)).await;
    }
}

#[tokio::test]
async fn subscribe_since_replays_what_was_missed_in_order_then_live_and_recovered_true() {
    let hub = start(config()).await;
    let mut c = hub.client().await;
    let first = c.subscribe("log").await;
    let epoch = first["epoch"].as_str().unwrap().to_owned();
    publish_n(&hub, "log", 2).await;
    assert_eq!(c.recv().await["offset"], 1);
    assert_eq!(c.recv().await["offset"], 2);
    drop(c);

    // Missed 3..=5 while away.
    publish_n(&hub, "log", 3).await;
    let mut back = hub.client().await;
    let reply = back
        .request(json!({"op": "subscribe", "channel": "log", "since": 2, "epoch": epoch, "id": 1}))
        .await;
    assert_eq!(
        reply,
        json!({"op": "subscribed", "channel": "log", "offset": 5, "epoch": epoch, "recovered": true, "id": 1})
    );
    for offset in 3..=5 {
        let m = back.recv().await;
        assert_eq!(m["op"], "message");
        assert_eq!(m["offset"], offset, "{m}");
        assert_eq!(m["data"], offset - 3, "{m}");
    }
    hub.api_publish("log", json!("live")).await;
    let live = back.recv().await;
    assert_eq!(
        (live["offset"].clone(), live["data"].clone()),
        (json!(6), json!("live"))
    );
    back.expect_nothing_pending().await;

    // Since the latest offset: recovered, nothing to replay.
    let mut current = hub.client().await;
    let reply = current
        .request(json!({"op": "subscribe", "channel": "log", "since": 6}))
        .await;
    assert_eq!(reply["recovered"], true);
    current.expect_nothing_pending().await;
}

#[tokio::test]
async fn subscribe_since_while_publishing_loses_and_doubles_nothing() {
    let mut c = config();
    c.history_size = 10_000;
    c.publish_rate = 100_000;
    let hub = start(c).await;
    let url = hub.url("");
    const TOTAL: u64 = 300;
    let publisher = tokio::spawn(async move {
        let mut p = Client::connect(&url).await;
        for i in 1..=TOTAL {
            assert_eq!(p.publish("race", json!(i)).await, i);
        }
    });
    // Subscribe from the start while publications keep coming.
    let mut sub = hub.client().await;
    let reply = sub
        .request(json!({"op": "subscribe", "channel": "race", "since": 0}))
        .await;
    assert_eq!(reply["op"], "subscribed");
    assert_eq!(reply["recovered"], true, "{reply}");
    for want in 1..=TOTAL {
        let m = sub.recv().await;
        assert_eq!(m["offset"], want, "{m}");
        assert_eq!(m["data"], want, "{m}");
    }
    common::within("publisher", publisher).await.unwrap();
    sub.expect_nothing_pending().await;
}

#[tokio::test]
async fn subscribe_since_beyond_the_history_size_replays_what_is_left_with_recovered_false() {
    let mut c = config();
    c.history_size = 3;
    let hub = start(c).await;
    publish_n(&hub, "short", 6).await; // history keeps 4, 5, 6
    let mut client = hub.client().await;
    let reply = client
        .request(json!({"op": "subscribe", "channel": "short", "since": 1}))
        .await;
    assert_eq!(reply["offset"], 6);
    assert_eq!(reply["recovered"], false, "2 and 3 are gone: {reply}");
    for offset in 4..=6 {
        assert_eq!(client.recv().await["offset"], offset);
    }
    client.expect_nothing_pending().await;
    // Still within reach: since 3 recovers 4..=6.
    let mut other = hub.client().await;
    let reply = other
        .request(json!({"op": "subscribe", "channel": "short", "since": 3}))
        .await;
    assert_eq!(reply["recovered"], true, "{reply}");
    for offset in 4..=6 {
        assert_eq!(other.recv().await["offset"], offset);
    }
}

#[tokio::test]
async fn subscribe_since_with_a_wrong_epoch_replays_nothing_and_recovered_false() {
    let hub = start(config()).await;
    publish_n(&hub, "log", 3).await;
    let mut c = hub.client().await;
    let reply = c
        .request(json!({"op": "subscribe", "channel": "log", "since": 1, "epoch": "not-this-one"}))
        .await;
    assert_eq!(reply["op"], "subscribed");
    assert_eq!(reply["offset"], 3);
    assert_eq!(reply["recovered"], false);
    assert_ne!(reply["epoch"], "not-this-one");
    c.expect_nothing_pending().await;
}

#[tokio::test]
async fn history_ttl_expiry_means_recovered_false() {
    let mut c = config();
    c.history_ttl = Duration::from_millis(1);
    let hub = start(c).await;
    // A subscriber keeps the channel (and its epoch) from being forgotten.
    let mut keeper = hub.client().await;
    keeper.subscribe("brief").await;
    publish_n(&hub, "brief", 2).await;
    assert_eq!(keeper.recv().await["offset"], 1);
    assert_eq!(keeper.recv().await["offset"], 2);
    // The TTL is 1 ms: this waits for the time itself to pass, not for an
    // event.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut client = hub.client().await;
    let reply = client
        .request(json!({"op": "subscribe", "channel": "brief", "since": 0}))
        .await;
    assert_eq!(reply["offset"], 2);
    assert_eq!(reply["recovered"], false, "{reply}");
    client.expect_nothing_pending().await;
}

// ---------------------------------------------------------- error codes

/// Sends `text`, expects an error with `code` (and `id` when given), and
/// checks the connection still serves.
async fn expect_error(c: &mut Client, text: &str, code: &str, id: Option<Value>) -> Value {
    c.send_text(text).await;
    let reply = c.recv().await;
    assert_eq!(reply["op"], "error", "{text}: {reply}");
    assert_eq!(reply["code"], code, "{text}: {reply}");
    assert!(
        reply["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{reply}"
    );
    match id {
        Some(id) => assert_eq!(reply["id"], id, "{reply}"),
        None => assert!(reply.get("id").is_none(), "{reply}"),
    }
    c.expect_nothing_pending().await; // the connection stays open
    reply
}

#[tokio::test]
async fn bad_request_for_malformed_json() {
    let hub = start(config()).await;
    let mut c = hub.client().await;
    for text in ["nope", "{\"op\":", "[1,2]", "42", ""] {
        expect_error(&mut c, text, "bad_request", None).await;
    }
}

#[tokio::test]
async fn bad_request_for_a_binary_message() {
    let hub = start(config()).await;
    let mut c = hub.client().await;
    common::within(
        "send",
        c.ws.send(wsline::Message::Binary(b"{}".to_vec().into())),
    )
    .await
    .unwrap();
    let reply = c.recv().await;
    assert_eq!(
        (reply["op"].clone(), reply["code"].clone()),
        (json!("error"), json!("bad_request"))
    );
    c.expect_nothing_pending().await;
}

#[tokio::test]
async fn bad_request_for_an_unknown_op() {
    let hub = start(config()).await;
    let mut c = hub.client().await;
    expect_error(
        &mut c,
        r#"{"op":"dance","id":5}"#,
        "bad_request",
        Some(json!(5)),
    )
    .await;
    expect_error(&mut c, r#"{"op":7,"id":6}"#, "bad_request", Some(json!(6))).await;
    expect_error(&mut c, r#"{"id":"x"}"#, "bad_request", Some(json!("x"))).await;
}

#[tokio::test]
async fn bad_request_for_a_missing_field() {
    let hub = start(config()).await;
    let mut c = hub.client().await;
    for (text, field) in [
        (r#"{"op":"subscribe","id":1}"#, "channel"),
        (r#"{"op":"unsubscribe","id":1}"#, "channel"),
        (r#"{"op":"presence","id":1}"#, "channel"),
        (r#"{"op":"publish","channel":"a","id":1}"#, "data"),
        (r#"{"op":"publish","data":1,"id":1}"#, "channel"),
    ] {
        let reply = expect_error(&mut c, text, "bad_request", Some(json!(1))).await;
        assert!(
            reply["message"].as_str().unwrap().contains(field),
            "{text}: {reply}"
        );
    }
}

#[tokio::test]
async fn bad_request_for_an_invalid_channel_name() {
    let hub = start(config()).await;
    let mut c = hub.client().await;
    let too_long = "x".repeat(256);
    for channel in [
        json!(""),
        json!("has space"),
        json!("slash/es"),
        json!("ünïcode"),
        json!(too_long),
        json!(42),
        json!(null),
    ] {
        let text = json!({"op": "subscribe", "channel": channel, "id": 2}).to_string();
        expect_error(&mut c, &text, "bad_request", Some(json!(2))).await;
    }
    // Every allowed character, and the longest name, are fine.
    c.subscribe("Az09_-:.@").await;
    c.subscribe(&"y".repeat(255)).await;
}

#[tokio::test]
async fn forbidden_when_the_channel_pattern_has_client_publish_false() {
    let mut c = config();
    c.channels.insert(
        "announce:*".into(),
        ChannelOptions {
            client_publish: Some(false),
            ..Default::default()
        },
    );
    let hub = start(c).await;
    let mut client = hub.client().await;
    client.subscribe("announce:all").await;
    let text = r#"{"op":"publish","channel":"announce:all","data":1,"id":4}"#;
    expect_error(&mut client, text, "forbidden", Some(json!(4))).await;
    // The HTTP API still may publish there, and subscribers get it.
    assert_eq!(hub.api_publish("announce:all", json!("news")).await, 1);
    assert_eq!(client.recv().await["data"], "news");
    // Other channels are not affected.
    client.publish("chat", json!(1)).await;
}

#[tokio::test]
async fn not_found_when_unsubscribing_from_a_channel_not_subscribed() {
    let hub = start(config()).await;
    let mut c = hub.client().await;
    let text = r#"{"op":"unsubscribe","channel":"never","id":8}"#;
    expect_error(&mut c, text, "not_found", Some(json!(8))).await;
    c.subscribe("once").await;
    c.request(json!({"op": "unsubscribe", "channel": "once"}))
        .await;
    let text = r#"{"op":"unsubscribe","channel":"once","id":9}"#;
    expect_error(&mut c, text, "not_found", Some(json!(9))).await;
}

#[tokio::test]
async fn limit_exceeded_past_max_subscriptions() {
    let mut c = config();
    c.max_subscriptions = 2;
    let hub = start(c).await;
    let mut client = hub.client().await;
    client.subscribe("a").await;
    client.subscribe("b").await;
    client.subscribe("a").await; // again: not a new subscription
    let text = r#"{"op":"subscribe","channel":"c","id":1}"#;
    expect_error(&mut client, text, "limit_exceeded", Some(json!(1))).await;
    client
        .request(json!({"op": "unsubscribe", "channel": "a"}))
        .await;
    client.subscribe("c").await;
}

#[tokio::test]
async fn rate_limited_past_the_burst_then_1008_on_the_11th_within_10_s() {
    let mut c = config();
    c.publish_rate = 1; // a bucket of 2, full at the start
    let hub = start(c).await;
    let mut client = hub.client().await;
    // Send all 13 at once: 2 pass, 10 are refused, the 11th refusal closes.
    for i in 0..13 {
        client
            .send(json!({"op": "publish", "channel": "spam", "data": i, "id": i}))
            .await;
    }
    let (code, reason, replies) = client.closed_after_messages().await;
    assert_eq!(replies.len(), 12, "{replies:?}");
    for (i, reply) in replies.iter().enumerate() {
        if i < 2 {
            assert_eq!(reply["op"], "published", "{reply}");
        } else {
            assert_eq!(reply["op"], "error", "{reply}");
            assert_eq!(reply["code"], "rate_limited", "{reply}");
        }
        assert_eq!(reply["id"], i, "{reply}");
    }
    assert_eq!(code, 1008, "{reason}");
    let metrics = hub
        .metrics_until(|m| m.get("wsline_closes_total{code=\"1008\"}") == Some(1.0))
        .await;
    assert_eq!(metrics.value("wsline_connections"), 0.0);
}

#[tokio::test]
async fn ten_rate_limited_errors_keep_the_connection_open() {
    let mut c = config();
    c.publish_rate = 1;
    let hub = start(c).await;
    let mut client = hub.client().await;
    for i in 0..12 {
        client
            .send(json!({"op": "publish", "channel": "spam", "data": i}))
            .await;
    }
    let mut codes = Vec::new();
    for _ in 0..12 {
        let r = client.recv().await;
        codes.push(r["code"].as_str().unwrap_or("ok").to_owned());
    }
    assert_eq!(codes.iter().filter(|c| *c == "rate_limited").count(), 10);
    client.expect_nothing_pending().await;
}

// ----------------------------------------------------------- close codes

#[tokio::test]
async fn close_1009_for_a_message_over_max_message_size() {
    let mut c = config();
    c.server.protocol.max_message_size = 1024;
    c.server.protocol.max_frame_size = 1024;
    let hub = start(c).await;
    let mut client = hub.client().await;
    // Exactly the limit is fine.
    let pad = "x".repeat(1024 - r#"{"op":"ping","pad":""}"#.len());
    let fits = json!({"op": "ping", "pad": pad}).to_string();
    assert_eq!(fits.len(), 1024);
    client.send_text(&fits).await;
    assert_eq!(client.recv().await, json!({"op": "pong"}));
    let over = json!({"op": "ping", "pad": format!("{pad}y")}).to_string();
    client.send_text(&over).await;
    let (code, _) = client.closed().await;
    assert_eq!(code, 1009);
    // The limit is on the message, not its compressed size on the wire.
    let mut compressing = common::client_config();
    compressing.deflate = wsline::ClientConfig::default().deflate;
    let mut zipped = Client::connect_with(&hub.url(""), &compressing).await;
    zipped.send_text(&over).await;
    assert_eq!(zipped.closed().await.0, 1009);
    let metrics = hub
        .metrics_until(|m| m.get("wsline_closes_total{code=\"1009\"}") == Some(2.0))
        .await;
    assert_eq!(metrics.value("wsline_connections"), 0.0);
}

/// With the default drain (no grace, 200 closes a second), two clients are
/// closed at once in effect; tests/drain.rs has the paced closes.
#[tokio::test]
async fn close_1001_for_every_client_when_serve_shuts_down() {
    let hub_config = config();
    let close_timeout = hub_config.server.protocol.close_timeout;
    let mut hub = start(hub_config).await;
    let mut a = hub.client().await;
    let mut b = hub.client().await;
    a.subscribe("room").await;
    let started = std::time::Instant::now();
    hub.stop();
    assert_eq!(a.closed().await.0, 1001);
    assert_eq!(b.closed().await.0, 1001);
    hub.finished().await.expect("serve returns Ok");
    assert!(
        started.elapsed() < close_timeout,
        "clients that answer the close let serve return at once: {:?}",
        started.elapsed()
    );
    // The listener is gone.
    assert!(tokio::net::TcpStream::connect(hub.addr).await.is_err());
}

#[tokio::test]
async fn serve_returns_after_the_close_timeout_when_a_client_never_answers() {
    let mut c = config();
    c.server.protocol.close_timeout = Duration::from_millis(300);
    let mut hub = start(c).await;
    // A client that completes the handshake and then never reads.
    let mut silent = tokio::net::TcpStream::connect(hub.addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    silent
        .write_all(
            format!(
                "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                hub.addr
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut head = [0u8; 12];
    common::within("101", silent.read_exact(&mut head))
        .await
        .unwrap();
    assert_eq!(&head, b"HTTP/1.1 101");
    let started = std::time::Instant::now();
    hub.stop();
    hub.finished().await.expect("serve returns Ok");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(5),
        "serve waits for the close timeout (0.3 s) plus its grace, no longer: {took:?}"
    );
}

#[tokio::test]
async fn max_connections_refuses_more_with_503() {
    let mut c = config();
    c.server.limits.max_connections = 1;
    let hub = start(c).await;
    let mut first = hub.client().await;
    let refused = common::within(
        "connect",
        wsline::connect_with(&hub.url(""), &common::client_config()),
    )
    .await
    .expect_err("a second connection is refused");
    assert_eq!(refused.http_status(), Some(503), "{refused}");
    first.expect_nothing_pending().await;
}
