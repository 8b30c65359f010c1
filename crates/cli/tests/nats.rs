//! `wsline serve` with `[[bridge.nats]]` against a real `nats-server`
//! (JetStream on): subject → channel to a WebSocket subscriber, channel →
//! subject to a NATS subscriber, no echo when a channel is both, order per
//! subject under a burst, NATS down at start and killed later (the hub
//! serves, the bridge reconnects), a JetStream stream that appears after
//! the hub started, and a JetStream stream read through a durable
//! consumer while the hub is SIGKILLed and restarted on its `--data-dir`
//! (and read again from its start by a new consumer): every message in
//! the channel's history exactly once.
//!
//! Each test starts its own `nats-server` on free loopback ports (its
//! JetStream store in a fresh directory), killed when the test ends, and
//! its own `wsline serve` children. They need `nats-server` on the PATH,
//! so they are ignored by plain `cargo test`: `./scripts/test.sh --only
//! nats` installs Debian's nats-server when missing and runs them.

#![cfg(feature = "nats")]

mod child;
#[path = "../../hub/tests/common/mod.rs"]
mod common;
#[path = "../../wsline/tests/support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use common::{http, Client};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

/// The bound on waits for something that takes a connection, a
/// redelivery or a burst.
const SLOW: Duration = Duration::from_secs(30);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A fresh directory for one test.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "wsline-nats-{name}-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a temp dir");
    dir
}

/// Polls `check` every 20 ms until it gives a value; fails after `SLOW`
/// saying it waited for `what`.
async fn until<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + SLOW;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "waited {SLOW:?} for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A `nats-server -js` child on 127.0.0.1, killed on drop.
struct Nats {
    port: u16,
    monitor: SocketAddr,
    _child: Child,
    _store: PathBuf,
}

impl Nats {
    async fn start() -> Nats {
        Nats::start_on(free_port()).await
    }

    /// A server on `port` (again, after [`Nats::kill`]).
    async fn start_on(port: u16) -> Nats {
        let monitor_port = free_port();
        let store = temp_dir("js");
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .args(["-m", &monitor_port.to_string(), "-js", "-sd"])
            .arg(&store)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn nats-server (install it: apt-get install nats-server)");
        let nats = Nats {
            port,
            monitor: SocketAddr::from(([127, 0, 0, 1], monitor_port)),
            _child: child,
            _store: store,
        };
        until("nats-server to answer", || async {
            async_nats::connect(nats.url()).await.ok()
        })
        .await;
        nats
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// SIGKILL, and waits for the process to end.
    async fn kill(mut self) {
        self._child.kill().await.expect("kill nats-server");
    }

    async fn client(&self) -> async_nats::Client {
        async_nats::connect(self.url())
            .await
            .expect("connect to nats-server")
    }

    /// One of the monitoring endpoint's JSON documents (asked in
    /// HTTP/1.0: the whole body, not chunked, then the end of stream).
    async fn monitor(&self, path: &str) -> Value {
        let raw = support::within(&format!("GET {path}"), async {
            let mut tcp = tokio::net::TcpStream::connect(self.monitor).await?;
            tcp.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
                .await?;
            let mut out = Vec::new();
            tcp.read_to_end(&mut out).await?;
            Ok::<_, std::io::Error>(out)
        })
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
        assert!(
            head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
            "{head}"
        );
        serde_json::from_str(body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    /// Waits until a client subscribes to `subject` (the hub's bridge is
    /// then listening).
    async fn wait_subscribed(&self, subject: &str) {
        until(&format!("a subscription to {subject}"), || async {
            let subs = self.monitor("/subsz?subs=1").await;
            subs["subscriptions_list"]
                .as_array()?
                .iter()
                .any(|s| s["subject"] == subject)
                .then_some(())
        })
        .await;
    }

    /// Waits until a client named `name` is connected.
    async fn wait_connection(&self, name: &str) {
        until(&format!("a connection named {name}"), || async {
            let conns = self.monitor("/connz").await;
            conns["connections"]
                .as_array()?
                .iter()
                .any(|c| c["name"] == name)
                .then_some(())
        })
        .await;
    }
}

/// Writes `text` to a config file; its path.
fn config_file(name: &str, text: &str) -> String {
    let path = temp_dir(name).join("wsline.toml");
    std::fs::write(&path, text).expect("write the config file");
    path.to_str().expect("utf-8 path").to_owned()
}

async fn serve(config: &str, extra: &[&str]) -> child::Server {
    let args = [&["--config", config, "--close-timeout", "1"], extra].concat();
    child::spawn_serve(&args).await
}

async fn client(server: &child::Server) -> Client {
    Client::connect(&format!("ws://{}/ws", server.addr)).await
}

/// `wsline_bridge_messages_total{bridge,direction,result}` of `server`.
async fn bridged(server: &child::Server, bridge: &str, direction: &str, result: &str) -> f64 {
    let text = http(server.addr, "GET", "/metrics", &[], None).await.body;
    let series = format!(
        "wsline_bridge_messages_total{{bridge=\"{bridge}\",direction=\"{direction}\",result=\"{result}\"}} "
    );
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .map_or(0.0, |v| v.parse().expect("a number"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server: ./scripts/test.sh --only nats"]
async fn subject_to_channel_reaches_a_websocket_subscriber() {
    let nats = Nats::start().await;
    let config = config_file(
        "in",
        &format!(
            "[[bridge.nats]]\nname = \"news\"\nservers = [\"{}\"]\nsubjects = [\"news.>\"]\nchannel = \"news:{{2}}\"\n",
            nats.url()
        ),
    );
    let hub = serve(&config, &[]).await;
    let mut sub = client(&hub).await;
    sub.subscribe("news:eu").await;
    nats.wait_subscribed("news.>").await;

    let publisher = nats.client().await;
    publisher
        .publish("news.eu.sport", r#"{"score":[1,0]}"#.into())
        .await
        .unwrap();
    publisher
        .publish("news.eu", "plain text".into())
        .await
        .unwrap();
    publisher.flush().await.unwrap();

    let m = sub.recv().await;
    assert_eq!(m["op"], "message", "{m}");
    assert_eq!(m["channel"], "news:eu");
    assert_eq!(
        m["data"],
        json!({"score": [1, 0]}),
        "JSON payloads as they are"
    );
    assert_eq!(m["from"], "bridge:nats:news");
    let m = sub.recv().await;
    assert_eq!(m["data"], "plain text", "other text as a JSON string");
    assert_eq!(m["offset"], 2);
    sub.expect_nothing_pending().await;
    assert_eq!(bridged(&hub, "news", "in", "published").await, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server: ./scripts/test.sh --only nats"]
async fn channel_to_subject_reaches_a_nats_subscriber_and_nothing_echoes() {
    let nats = Nats::start().await;
    // One entry both ways on the same names: what the hub mirrors out
    // comes back to its own subscription, what NATS sends in is
    // published in the channel; neither may loop.
    let config = config_file(
        "out",
        &format!(
            "[[bridge.nats]]\nname = \"loop\"\nservers = [\"{}\"]\n\
             subjects = [\"room.>\"]\nchannel = \"{{subject}}\"\n\
             channels = [\"room.*\"]\nsubject = \"{{channel}}\"\n",
            nats.url()
        ),
    );
    let hub = serve(&config, &[]).await;
    let listener = nats.client().await;
    let mut seen = listener.subscribe("room.>").await.unwrap();
    listener.flush().await.unwrap();
    nats.wait_subscribed("room.>").await;
    nats.wait_connection("wsline loop").await;
    let mut sub = client(&hub).await;
    sub.subscribe("room.a").await;

    // Hub → NATS: a client's publication, with its channel and offset.
    let mut publisher = client(&hub).await;
    publisher.publish("room.a", json!({"hello": "nats"})).await;
    let m = support::within("the mirrored publication", seen.next())
        .await
        .expect("a message");
    assert_eq!(m.subject.as_str(), "room.a");
    assert_eq!(&m.payload[..], br#"{"hello":"nats"}"#);
    let headers = m.headers.expect("headers");
    assert_eq!(headers.get("Wsline-Channel").unwrap().as_str(), "room.a");
    assert_eq!(headers.get("Wsline-Offset").unwrap().as_str(), "1");
    let m = sub.recv().await;
    assert_eq!(
        (m["offset"].clone(), m["data"].clone()),
        (json!(1), json!({"hello": "nats"}))
    );

    // NATS → hub: published in the channel, not mirrored back out.
    listener
        .publish("room.a", "from nats".into())
        .await
        .unwrap();
    listener.flush().await.unwrap();
    let m = sub.recv().await;
    assert_eq!(
        (m["offset"].clone(), m["data"].clone()),
        (json!(2), json!("from nats"))
    );
    let m = support::within("the outside publication itself", seen.next())
        .await
        .expect("a message");
    assert_eq!(&m.payload[..], b"from nats");

    // A marker behind both: had either echoed, it would come first.
    publisher.publish("room.a", json!("marker")).await;
    let m = sub.recv().await;
    assert_eq!(
        (m["offset"].clone(), m["data"].clone()),
        (json!(3), json!("marker"))
    );
    let m = support::within("the marker", seen.next())
        .await
        .expect("a message");
    assert_eq!(&m.payload[..], br#""marker""#);
    sub.expect_nothing_pending().await;
    until("the echo counters", || async {
        (bridged(&hub, "loop", "in", "echo").await == 2.0
            && bridged(&hub, "loop", "out", "echo").await == 1.0)
            .then_some(())
    })
    .await;
    assert_eq!(bridged(&hub, "loop", "out", "published").await, 2.0);
    assert_eq!(bridged(&hub, "loop", "in", "published").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server: ./scripts/test.sh --only nats"]
async fn nats_down_at_start_and_later_the_hub_serves_and_the_bridge_reconnects() {
    let port = free_port();
    let config = config_file(
        "down",
        &format!(
            "[[bridge.nats]]\nname = \"late\"\nservers = [\"nats://127.0.0.1:{port}\"]\n\
             subjects = [\"late.>\"]\nchannel = \"{{subject}}\"\n"
        ),
    );
    // Nothing listens yet: the hub starts and serves all the same.
    let hub = serve(&config, &[]).await;
    let mut sub = client(&hub).await;
    sub.subscribe("late.x").await;
    let mut other = client(&hub).await;
    assert_eq!(other.publish("late.x", json!("local")).await, 1);
    assert_eq!(sub.recv().await["data"], "local");

    for round in 0..2 {
        let nats = Nats::start_on(port).await;
        nats.wait_subscribed("late.>").await;
        let publisher = nats.client().await;
        publisher
            .publish("late.x", format!("round {round}").into())
            .await
            .unwrap();
        publisher.flush().await.unwrap();
        let m = sub.recv().await;
        assert_eq!(m["data"], format!("round {round}"), "{m}");
        // Down again: the hub goes on serving its clients.
        nats.kill().await;
        assert!(other.publish("late.x", json!("still")).await > 1);
        assert_eq!(sub.recv().await["data"], "still");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server: ./scripts/test.sh --only nats"]
async fn order_per_subject_is_kept_under_a_burst() {
    const N: u64 = 2000;
    let nats = Nats::start().await;
    let config = config_file(
        "burst",
        &format!(
            "[[bridge.nats]]\nname = \"burst\"\nservers = [\"{}\"]\nsubjects = [\"burst.*\"]\n\
             channel = \"{{subject}}\"\nmax_pending = 10000\n",
            nats.url()
        ),
    );
    let hub = serve(&config, &["--history-size", "0"]).await;
    let mut sub = client(&hub).await;
    sub.subscribe("burst.a").await;
    sub.subscribe("burst.b").await;
    nats.wait_subscribed("burst.*").await;
    let publisher = nats.client().await;
    for i in 0..N {
        for s in ["burst.a", "burst.b"] {
            publisher
                .publish(s, json!({ "i": i }).to_string().into())
                .await
                .unwrap();
        }
    }
    publisher.flush().await.unwrap();
    let mut next = [0u64; 2];
    while next != [N, N] {
        let m = sub.recv().await;
        assert_eq!(m["op"], "message", "{m}");
        let k = usize::from(m["channel"] == "burst.b");
        assert_eq!(m["data"]["i"], next[k], "{m}");
        assert_eq!(m["offset"], next[k] + 1, "{m}");
        next[k] += 1;
    }
    assert_eq!(bridged(&hub, "burst", "in", "dropped").await, 0.0);
}

/// Subscribes from the start of `channel`'s history; (reply, data of
/// each message up to the reply's offset).
async fn history(c: &mut Client, channel: &str) -> (Value, Vec<Value>) {
    let reply = c
        .request(json!({"op": "subscribe", "channel": channel, "since": 0}))
        .await;
    assert_eq!(reply["op"], "subscribed", "{reply}");
    let latest = reply["offset"].as_u64().unwrap();
    let mut got = Vec::new();
    let mut at = 0;
    while at < latest {
        let m = c.recv().await;
        assert_eq!(m["op"], "message", "{m}");
        at = m["offset"].as_u64().unwrap();
        got.push(m["data"].clone());
    }
    (reply, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server: ./scripts/test.sh --only nats"]
async fn jetstream_after_a_sigkill_and_restart_every_message_is_stored_exactly_once() {
    const N: u64 = 1000;
    let nats = Nats::start().await;
    let js = jetstream::new(nats.client().await);
    js.create_stream(jetstream::stream::Config {
        name: "ORDERS".into(),
        subjects: vec!["orders.>".into()],
        ..Default::default()
    })
    .await
    .expect("create the stream");
    for i in 0..N {
        js.publish("orders.new", json!({ "n": i }).to_string().into())
            .await
            .unwrap()
            .await
            .expect("stored in the stream");
    }
    let config = config_file(
        "js",
        &format!(
            "[[bridge.nats]]\nname = \"orders\"\nservers = [\"{}\"]\nstream = \"ORDERS\"\n\
             durable = \"hub\"\nsubjects = [\"orders.>\"]\nchannel = \"orders\"\nack_wait = 1\n\
             max_pending = 64\n",
            nats.url()
        ),
    );
    let data = temp_dir("data");
    let args = [
        "--data-dir",
        data.to_str().unwrap(),
        "--fsync",
        "always",
        "--history-size",
        "100000",
        "--history-ttl",
        "3600",
    ];
    let mut hub = serve(&config, &args).await;
    let mut sub = client(&hub).await;
    sub.subscribe("orders").await;
    // Killed in the middle of the stream: some stored, some not, some
    // stored but not yet acknowledged.
    loop {
        let m = sub.recv().await;
        if m["offset"].as_u64() >= Some(N / 3) {
            break;
        }
    }
    hub.child.start_kill().expect("SIGKILL");
    let _ = support::within("the killed hub to exit", hub.child.wait()).await;

    let stream = js.get_stream("ORDERS").await.unwrap();
    let mut consumer = stream
        .get_consumer::<jetstream::consumer::pull::Config>("hub")
        .await
        .expect("the bridge's consumer");
    let acked = consumer.info().await.unwrap().ack_floor.stream_sequence;
    assert!(acked < N, "killed mid-way: {acked} of {N} acknowledged");
    let mut hub = serve(&config, &args).await;
    consumer_done(&stream, N).await;
    let (reply, got) = history(&mut client(&hub).await, "orders").await;
    let want: Vec<Value> = (0..N).map(|n| json!({ "n": n })).collect();
    assert_eq!(got.len(), want.len(), "{reply}: {got:?}");
    assert_eq!(got, want, "every message once, in order");
    assert_eq!(reply["offset"], N);

    // A consumer made anew reads the stream from its start: every
    // message comes again, each one is found stored, none doubled.
    hub.child.start_kill().expect("SIGKILL");
    let _ = support::within("the killed hub to exit", hub.child.wait()).await;
    stream
        .delete_consumer("hub")
        .await
        .expect("delete the consumer");
    let hub = serve(&config, &args).await;
    consumer_done(&stream, N).await;
    assert_eq!(bridged(&hub, "orders", "in", "duplicate").await, N as f64);
    assert_eq!(bridged(&hub, "orders", "in", "published").await, 0.0);
    let (reply, got) = history(&mut client(&hub).await, "orders").await;
    assert_eq!(got, want, "{reply}");
}

/// Waits until the consumer `hub` of `stream` has acknowledged all `n`
/// messages and has none pending or waiting for a redelivery.
async fn consumer_done(stream: &jetstream::stream::Stream, n: u64) {
    until("the consumer to have acknowledged everything", || async {
        let mut consumer = stream
            .get_consumer::<jetstream::consumer::pull::Config>("hub")
            .await
            .ok()?;
        let info = consumer.info().await.ok()?;
        (info.num_pending == 0 && info.num_ack_pending == 0 && info.ack_floor.stream_sequence == n)
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server: ./scripts/test.sh --only nats"]
async fn a_jetstream_stream_created_after_the_hub_started_is_read_once_it_exists() {
    let nats = Nats::start().await;
    let config = config_file(
        "late-stream",
        &format!(
            "[[bridge.nats]]\nname = \"late\"\nservers = [\"{}\"]\nstream = \"LATE\"\n\
             channel = \"late\"\n",
            nats.url()
        ),
    );
    let hub = serve(&config, &[]).await;
    let mut sub = client(&hub).await;
    sub.subscribe("late").await;
    // The bridge is retrying (no such stream yet); the hub serves.
    let mut other = client(&hub).await;
    assert_eq!(other.publish("late", json!("local")).await, 1);
    assert_eq!(sub.recv().await["data"], "local");

    let js = jetstream::new(nats.client().await);
    js.create_stream(jetstream::stream::Config {
        name: "LATE".into(),
        subjects: vec!["late.>".into()],
        ..Default::default()
    })
    .await
    .expect("create the stream");
    for i in 0..3 {
        js.publish("late.x", json!({ "i": i }).to_string().into())
            .await
            .unwrap()
            .await
            .expect("stored in the stream");
    }
    for i in 0..3 {
        let m = sub.recv().await;
        assert_eq!(m["data"], json!({ "i": i }), "{m}");
        assert_eq!(m["from"], format!("bridge:nats:LATE#{}", i + 1));
    }
}
