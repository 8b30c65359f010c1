//! Plain HTTP on the hub's port: the `/api/*` endpoints and their access
//! rule, `/healthz`, `/metrics`.

mod common;

use common::{config, http, start, within, Client};
use serde_json::json;

// ------------------------------------------------------------------ API

#[tokio::test]
async fn api_publish_returns_the_offset_and_delivers_to_subscribers() {
    let hub = start(config()).await;
    let mut sub = hub.client().await;
    sub.subscribe("alerts").await;
    let body = r#"{"channel":"alerts","data":{"level":"high","tags":["a","b"]}}"#;
    let reply = http(hub.addr, "POST", "/api/publish", &[], Some(body)).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.header("Content-Type"), Some("application/json"));
    assert_eq!(reply.json(), json!({"offset": 1}));
    assert_eq!(
        sub.recv().await,
        json!({"op": "message", "channel": "alerts", "offset": 1,
               "data": {"level": "high", "tags": ["a", "b"]}, "from": null})
    );
    assert_eq!(hub.api_publish("alerts", json!(null)).await, 2);
    assert_eq!(sub.recv().await["offset"], 2);
}

#[tokio::test]
async fn api_channels_lists_channels_with_their_subscriber_counts() {
    let hub = start(config()).await;
    let empty = hub.get("/api/channels").await;
    assert_eq!(empty.status, 200);
    assert_eq!(empty.json(), json!({"channels": []}));
    let mut a = hub.client().await;
    let mut b = hub.client().await;
    a.subscribe("x:one").await;
    b.subscribe("x:one").await;
    b.subscribe("x:two").await;
    hub.api_publish("no-subscribers", json!(1)).await;
    let reply = hub.get("/api/channels").await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.json(),
        json!({"channels": [
            {"channel": "x:one", "subscribers": 2},
            {"channel": "x:two", "subscribers": 1},
        ]})
    );
}

#[tokio::test]
async fn api_presence_lists_the_members_of_a_channel() {
    let hub = start(config()).await;
    let mut a = hub.client().await;
    a.subscribe("room").await;
    let reply = hub.get("/api/presence/room").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(
        reply.json(),
        json!({"channel": "room", "members": [{"client": a.id, "user": null}]})
    );
    let empty = hub.get("/api/presence/nobody").await;
    assert_eq!(empty.json(), json!({"channel": "nobody", "members": []}));
    let bad = hub.get("/api/presence/bad%20name").await;
    assert_eq!(bad.status, 400);
    assert!(bad.json()["error"].is_string());
}

#[tokio::test]
async fn api_bad_body_is_400_with_an_error_text() {
    let hub = start(config()).await;
    let too_long = format!(r#"{{"channel":"{}","data":1}}"#, "x".repeat(256));
    for body in [
        "not json",
        "[]",
        r#"{"channel":"a"}"#,
        r#"{"data":1}"#,
        r#"{"channel":7,"data":1}"#,
        r#"{"channel":"has space","data":1}"#,
        r#"{"channel":"","data":1}"#,
        too_long.as_str(),
        r#"{"channel":"a","data":"#,
    ] {
        let reply = http(hub.addr, "POST", "/api/publish", &[], Some(body)).await;
        assert_eq!(reply.status, 400, "{body}: {reply:?}");
        let error = reply.json()["error"].clone();
        assert!(
            error.as_str().is_some_and(|e| !e.is_empty()),
            "{body}: {reply:?}"
        );
    }
    // Nothing was published.
    assert_eq!(hub.api_publish("a", json!(1)).await, 1);
}

#[tokio::test]
async fn api_unknown_paths_are_404_and_wrong_methods_405() {
    let hub = start(config()).await;
    assert_eq!(hub.get("/api/nope").await.status, 404);
    assert_eq!(hub.get("/nope").await.status, 404);
    assert_eq!(hub.get("/api/publish").await.status, 405);
    let post = http(hub.addr, "POST", "/api/channels", &[], Some("{}")).await;
    assert_eq!(post.status, 405);
    let missing_length = http(hub.addr, "POST", "/api/publish", &[], None).await;
    assert_eq!(missing_length.status, 411);
}

#[tokio::test]
async fn api_key_is_required_401_without_or_with_a_wrong_key_200_with_it() {
    let mut c = config();
    c.api_key = Some("s3cret".into());
    let hub = start(c).await;
    let body = r#"{"channel":"a","data":1}"#;
    for headers in [
        vec![],
        vec![("Authorization", "Bearer wrong")],
        vec![("Authorization", "s3cret")],
        vec![("Authorization", "Basic s3cret")],
    ] {
        for (method, path, body) in [
            ("POST", "/api/publish", Some(body)),
            ("GET", "/api/channels", None),
            ("GET", "/api/presence/a", None),
        ] {
            let reply = http(hub.addr, method, path, &headers, body).await;
            assert_eq!(reply.status, 401, "{method} {path} {headers:?}: {reply:?}");
            assert!(reply.json()["error"].is_string());
        }
    }
    let key = [("Authorization", "Bearer s3cret")];
    let reply = http(hub.addr, "POST", "/api/publish", &key, Some(body)).await;
    assert_eq!((reply.status, reply.json()), (200, json!({"offset": 1})));
    assert_eq!(
        http(hub.addr, "GET", "/api/channels", &key, None)
            .await
            .status,
        200
    );
    assert_eq!(
        http(hub.addr, "GET", "/api/presence/a", &key, None)
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn api_key_does_not_guard_ws_healthz_or_metrics() {
    let mut c = config();
    c.api_key = Some("s3cret".into());
    let hub = start(c).await;
    let mut client = hub.client().await;
    client.subscribe("a").await;
    assert_eq!(hub.get("/healthz").await.status, 200);
    assert_eq!(hub.get("/metrics").await.status, 200);
}

#[tokio::test]
async fn api_without_a_key_answers_loopback_clients() {
    // The refusal of non-loopback clients (403) is covered by the unit
    // test `http::tests::without_a_key_only_loopback_peers_pass`: this
    // machine has no non-loopback address a test may connect from.
    let hub = start(config()).await;
    assert_eq!(hub.get("/api/channels").await.status, 200);
    assert_eq!(hub.api_publish("a", json!(1)).await, 1);
}

#[tokio::test]
async fn api_without_a_key_answers_ipv4_loopback_clients_of_a_dual_stack_listener() {
    // `--listen [::]:PORT` accepts IPv4 clients as ::ffff:127.0.0.1.
    let Ok(listener) = tokio::net::TcpListener::bind("[::]:0").await else {
        eprintln!("skipped: no IPv6 on this machine");
        return;
    };
    let port = listener.local_addr().unwrap().port();
    let _hub = common::start_on(listener, config());
    let v4: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let reply = http(v4, "GET", "/api/channels", &[], None).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let v6: std::net::SocketAddr = (std::net::Ipv6Addr::LOCALHOST, port).into();
    assert_eq!(
        http(v6, "GET", "/api/channels", &[], None).await.status,
        200
    );
}

// --------------------------------------------------- healthz and metrics

#[tokio::test]
async fn healthz_is_200_status_ok() {
    let hub = start(config()).await;
    let reply = hub.get("/healthz").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json(), json!({"status": "ok"}));
}

#[tokio::test]
async fn metrics_has_every_series_and_counts() {
    let hub = start(common::with_join_leave(config(), "m")).await;
    let before = hub.metrics().await;
    for name in [
        "wsline_connections",
        "wsline_messages_received_total",
        "wsline_messages_sent_total",
        "wsline_bytes_received_total",
        "wsline_bytes_sent_total",
        "wsline_publishes_total",
        "wsline_deliveries_total",
        "wsline_slow_consumer_disconnects_total",
        "wsline_publish_delivery_seconds_count",
        "wsline_publish_delivery_seconds_sum",
        "wsline_publish_delivery_seconds_bucket{le=\"+Inf\"}",
    ] {
        assert_eq!(before.value(name), 0.0, "{name} starts at 0");
    }
    for kind in [
        "# TYPE wsline_connections gauge",
        "# TYPE wsline_closes_total counter",
        "# TYPE wsline_publish_delivery_seconds histogram",
        "# TYPE wsline_publishes_total counter",
    ] {
        assert!(before.0.contains(kind), "{kind} in\n{}", before.0);
    }

    let mut a = hub.client().await; // welcome
    let mut b = hub.client().await; // welcome
    a.subscribe("m").await; // 1 received, 1 sent
    b.subscribe("m").await; // 1 received, 1 sent + join to a
    assert_eq!(a.recv().await["op"], "join");
    a.publish("m", json!("ws")).await; // 1 received, published + 2 messages
    hub.api_publish("m", json!("http")).await; // 2 messages
    for c in [&mut a, &mut b] {
        assert_eq!(c.recv().await["data"], "ws");
        assert_eq!(c.recv().await["data"], "http");
    }
    let m = hub.metrics().await;
    assert_eq!(m.value("wsline_connections"), 2.0);
    assert_eq!(m.value("wsline_messages_received_total"), 3.0);
    assert_eq!(
        m.value("wsline_messages_sent_total"),
        2.0 + 2.0 + 1.0 + 1.0 + 4.0
    );
    assert!(m.value("wsline_bytes_received_total") > 50.0);
    assert!(m.value("wsline_bytes_sent_total") > 200.0);
    assert_eq!(m.value("wsline_publishes_total"), 2.0);
    assert_eq!(m.value("wsline_deliveries_total"), 4.0);
    assert_eq!(m.value("wsline_publish_delivery_seconds_count"), 4.0);
    assert_eq!(
        m.value("wsline_publish_delivery_seconds_bucket{le=\"+Inf\"}"),
        4.0
    );
    assert_eq!(
        m.value("wsline_publish_delivery_seconds_bucket{le=\"1\"}"),
        4.0,
        "deliveries on loopback take well under a second"
    );
    assert!(m.value("wsline_publish_delivery_seconds_sum") < 4.0);

    within("close", b.ws.close(wsline::CloseCode::NORMAL, ""))
        .await
        .expect("clean close");
    let m = hub
        .metrics_until(|m| m.value("wsline_connections") == 1.0)
        .await;
    assert_eq!(m.value("wsline_closes_total{code=\"1000\"}"), 1.0);
    drop(a);
}

#[tokio::test]
async fn metrics_and_healthz_and_ws_share_the_port_with_the_demo_page() {
    let hub = start(config()).await;
    let page = hub.get("/").await;
    assert_eq!(page.status, 200);
    assert!(page
        .header("Content-Type")
        .unwrap()
        .starts_with("text/html"));
    let metrics = hub.get("/metrics").await;
    assert!(metrics
        .header("Content-Type")
        .unwrap()
        .starts_with("text/plain"));
    Client::connect(&hub.url("")).await;
}
