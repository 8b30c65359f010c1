//! The hub's connection-level defences over real sockets: the handshake
//! cap and the per-IP CONNECTING cap at accept time (503 at once, other
//! clients served), the write-stall timeout for a subscriber that stops
//! reading, and the `wsline_tasks` gauge coming back down.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{config, start, within};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Half a request: holds a handshake slot.
async fn stalled(addr: SocketAddr) -> TcpStream {
    let mut tcp = within("connect", TcpStream::connect(addr)).await.unwrap();
    tcp.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgr")
        .await
        .unwrap();
    tcp
}

/// Connects and, without sending anything, reads the whole answer.
async fn answer_without_request(addr: SocketAddr) -> String {
    let mut tcp = within("connect", TcpStream::connect(addr)).await.unwrap();
    let mut buf = Vec::new();
    within("the answer and EOF", tcp.read_to_end(&mut buf))
        .await
        .expect("read");
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test]
async fn handshake_cap_refuses_with_503_at_once_and_the_hub_serves_again_when_a_slot_frees() {
    let mut c = config();
    c.server.limits.max_handshakes = 2;
    // One address may hold half the pool unless the per-address rules are
    // off; here every connection comes from 127.0.0.1.
    c.server.limits.max_connecting_per_ip = 0;
    let hub = start(c).await;
    let mut open = hub.client().await; // open: no longer a handshake
    let first = stalled(hub.addr).await;
    let _second = stalled(hub.addr).await;
    // The stalled ones are admitted in accept order before the next one:
    // the next TCP connection finds the cap reached.
    let started = Instant::now();
    let answer = answer_without_request(hub.addr).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("too many handshakes"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(2));
    open.subscribe("still:served").await;

    drop(first);
    // Its task ends on EOF and frees the slot; then a new client gets in.
    let m = hub
        .metrics_until(|m| m.get("wsline_refused_total") >= Some(1.0))
        .await;
    assert_eq!(m.value("wsline_refused_total"), 1.0);
    let mut again = within("a slot to free", async {
        loop {
            match wsline::connect_with(&hub.url(""), &common::client_config()).await {
                Ok((ws, _)) => return ws,
                Err(e) => assert_eq!(e.http_status(), Some(503), "{e}"),
            }
        }
    })
    .await;
    let welcome = within("welcome", again.recv()).await;
    assert!(matches!(welcome, Some(Ok(_))), "{welcome:?}");
}

#[tokio::test]
async fn per_ip_connecting_cap_refuses_a_second_stalled_handshake_from_one_address() {
    let mut c = config();
    c.server.limits.max_connecting_per_ip = 1;
    let hub = start(c).await;
    let _stalled = stalled(hub.addr).await;
    // A handshake counts as stalled after 3 s in progress (the wait
    // is the condition under test).
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let answer = answer_without_request(hub.addr).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("RFC 6455"), "{answer}");
    // From another loopback address the hub still answers.
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut other = within("connect", socket.connect(hub.addr)).await.unwrap();
    other
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    within("healthz", other.read_to_end(&mut buf))
        .await
        .unwrap();
    assert!(
        buf.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buf)
    );
}

/// A subscriber that stops reading while its queue is far from full: the
/// write stall drops it after `write_timeout`, not after `max_queue`.
#[tokio::test]
async fn a_subscriber_that_stops_reading_is_dropped_after_the_write_timeout() {
    let mut c = config();
    c.server.write_timeout = Some(Duration::from_millis(300));
    c.max_queue = 256 << 20; // the slow-consumer limit is not what acts
    c.server.protocol.max_message_size = 1 << 20;
    c.server.protocol.max_frame_size = 1 << 20;
    let hub = start(c).await;
    let tasks_before = hub.metrics().await.value("wsline_tasks");

    let (hog, _watcher) = hog_and_watcher(hub.addr).await;
    // The hog reads nothing from here on. Publish until its connection is
    // gone (counted as 1006 once the hub dropped it).
    let started = Instant::now();
    let big = "x".repeat(32 * 1024);
    within("the hog to be dropped", async {
        loop {
            hub.api_publish("firehose", json!({ "pad": big })).await;
            let m = hub.metrics().await;
            if m.get("wsline_closes_total{code=\"1006\"}") >= Some(1.0) {
                return;
            }
        }
    })
    .await;
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(300), "dropped after {took:?}");
    let m = hub.metrics().await;
    assert_eq!(
        m.value("wsline_slow_consumer_disconnects_total"),
        0.0,
        "dropped by the write stall, not as a slow consumer"
    );
    assert_eq!(m.value("wsline_connections"), 1.0, "the watcher stays");
    // The hog's task is gone: only the watcher's session remains besides
    // what there was before.
    let m = hub
        .metrics_until(|m| m.get("wsline_tasks") <= Some(tasks_before + 1.0))
        .await;
    assert_eq!(m.value("wsline_tasks"), tasks_before + 1.0);
    drop(hog);
}

/// Regression: a subscriber whose socket is blocked with some output
/// buffered, and a queued frame larger than the room left under the write
/// limit, made the session loop spin without yielding, freezing the whole
/// (single-threaded) hub. No write timeout here: the hub must stay
/// responsive on its own. The hub runs on its own thread and runtime, so
/// that with the bug back this test fails by its timeouts instead of
/// hanging with it.
#[tokio::test]
async fn a_blocked_subscriber_with_a_frame_larger_than_the_room_left_does_not_spin_the_hub() {
    let mut c = config();
    c.server.write_timeout = None;
    c.max_queue = 256 << 20;
    c.server.protocol.max_message_size = 1 << 20;
    c.server.protocol.max_frame_size = 1 << 20;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    // The thread ends with the test process.
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let _ = wsline_hub::serve(listener, c, std::future::pending()).await;
        });
    });
    let (_hog, mut watcher) = hog_and_watcher(addr).await;
    let big = "x".repeat(40 * 1024);
    let body = json!({"channel": "firehose", "data": { "pad": big }}).to_string();
    // Enough to fill the hog's socket and leave frames queued behind it.
    for _ in 0..100 {
        let reply = common::http(addr, "POST", "/api/publish", &[], Some(&body)).await;
        assert_eq!(reply.status, 200, "{reply:?}");
    }
    let metrics = common::http(addr, "GET", "/metrics", &[], None).await;
    let text = metrics.body;
    assert!(text.contains("\nwsline_connections 2\n"), "{text}");
    let first = within("a publication", watcher.recv()).await;
    assert_eq!(first["channel"], "firehose", "{first}");
}

/// A raw subscriber of `firehose` with a tiny receive buffer that never
/// reads, and a normal subscriber of the same channel.
async fn hog_and_watcher(addr: SocketAddr) -> (TcpStream, common::Client) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut hog = within("connect", socket.connect(addr)).await.unwrap();
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    hog.write_all(request.as_bytes()).await.unwrap();
    let subscribe = br#"{"op":"subscribe","channel":"firehose","id":1}"#;
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![0x81, 0x80 | subscribe.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(subscribe.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    hog.write_all(&frame).await.unwrap();
    // The hog reads its welcome and the subscription's answer, then stops.
    let mut got = Vec::new();
    while !got.windows(12).any(|w| w == b"\"subscribed\"") {
        let mut chunk = [0u8; 1024];
        let n = within("the subscription", hog.read(&mut chunk))
            .await
            .unwrap();
        assert!(n > 0, "EOF before the subscription");
        got.extend_from_slice(&chunk[..n]);
    }
    let mut watcher = common::Client::connect(&format!("ws://{addr}/ws")).await;
    watcher.subscribe("firehose").await;
    (hog, watcher)
}
