//! `wsline serve --engine redis` against a real `redis-server`: several
//! nodes on different ports, fan-out across them, recovery on another
//! node, shared presence and ghost cleanup after a SIGKILL, and a Redis
//! outage in the middle (refusals, `/healthz` 503, then everything resumes),
//! and a long gap recovered at the reader's pace.
//!
//! Each test starts its own `redis-server` on a free loopback port (no
//! persistence), killed when the test ends, and its own `wsline serve`
//! children. They need `redis-server` on the PATH, so they are ignored by
//! plain `cargo test`: `./scripts/test.sh --only redis` installs Redis when
//! missing and runs them.

mod child;
#[path = "../../hub/tests/common/mod.rs"]
mod common;
mod long_gap;
#[path = "../../wsline/tests/support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::receiver::Receiver;
use common::{http, within, Client};
use futures_util::future::join_all;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_wsline");
/// The bound on waits for something that takes a reconnect or an expiry.
const SLOW: Duration = Duration::from_secs(30);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A `redis-server` child on 127.0.0.1, killed on drop.
struct Redis {
    port: u16,
    child: Option<Child>,
}

impl Redis {
    async fn start() -> Redis {
        let mut redis = Redis {
            port: free_port(),
            child: None,
        };
        redis.restart().await;
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again, on the same port, empty) and waits for PONG.
    async fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn redis-server (install it: apt-get install redis-server)");
        self.child = Some(child);
        let deadline = Instant::now() + SLOW;
        loop {
            if let Ok(reply) = self.command(&["PING"]).await {
                if reply.starts_with("+PONG") {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "redis-server never answered PING"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL, and waits for the process to end.
    async fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().await.expect("kill redis-server");
    }

    /// SIGSTOP (`true`) or SIGCONT: a server that stops answering without
    /// closing its connections, then answers what waited.
    fn pause(&self, stop: bool) {
        let pid = self.child.as_ref().and_then(Child::id).expect("running");
        let signal = if stop { "-STOP" } else { "-CONT" };
        let status = std::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {pid}");
    }

    /// One command in RESP; the raw reply.
    async fn command(&self, args: &[&str]) -> std::io::Result<String> {
        let mut tcp = TcpStream::connect(("127.0.0.1", self.port)).await?;
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        tcp.write_all(req.as_bytes()).await?;
        let mut buf = vec![0; 4096];
        let n = tokio::time::timeout(Duration::from_secs(2), tcp.read(&mut buf))
            .await
            .map_err(|_| std::io::Error::other("no reply"))??;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// How many nodes listen to `channel`'s pub/sub channel.
    async fn listeners(&self, channel: &str) -> u64 {
        let live = format!("wsline:{{{channel}}}:live");
        let reply = self
            .command(&["PUBSUB", "NUMSUB", &live])
            .await
            .expect("PUBSUB NUMSUB");
        // *2 $N name :COUNT
        reply
            .lines()
            .last()
            .and_then(|l| l.strip_prefix(':'))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("unexpected NUMSUB reply {reply:?}"))
    }
}

/// Config for nodes whose tests watch join/leave events: on for every
/// channel (they are opt-in).
const JOIN_LEAVE: &str = "[channels.\"*\"]\njoin_leave = true\n";

/// Writes `text` to a config file for nodes of `redis`; its path.
fn config_file(redis: &Redis, name: &str, text: &str) -> String {
    let path = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("redis-{name}-{}.toml", redis.port));
    std::fs::write(&path, text).expect("write the config file");
    path.to_str().expect("utf-8 path").to_owned()
}

/// A `wsline serve --engine redis` child, killed on drop.
struct Node {
    child: Child,
    addr: SocketAddr,
}

impl Node {
    /// A node of `redis`, healthy (`/healthz` 200).
    async fn start(redis: &Redis, extra: &[&str]) -> Node {
        let url = redis.url();
        let mut args = vec!["--engine", "redis", "--redis-url", &url];
        args.extend_from_slice(extra);
        let node = Node::spawn(&args).await;
        node.wait_health(200).await;
        node
    }

    /// `wsline serve --listen 127.0.0.1:0 --close-timeout 1 ARGS`, once it
    /// listens.
    async fn spawn(args: &[&str]) -> Node {
        let args = [&["--close-timeout", "1"], args].concat();
        let child::Server { child, addr } = child::spawn_serve(&args).await;
        Node { child, addr }
    }

    async fn client(&self) -> Client {
        Client::connect(&format!("ws://{}/ws", self.addr)).await
    }

    /// Polls `/healthz` until it answers `status`.
    async fn wait_health(&self, status: u16) {
        let deadline = Instant::now() + SLOW;
        loop {
            let reply = http(self.addr, "GET", "/healthz", &[], None).await;
            if reply.status == status {
                let want = if status == 200 { "ok" } else { "unavailable" };
                assert_eq!(reply.json(), json!({ "status": want }));
                return;
            }
            assert!(
                Instant::now() < deadline,
                "/healthz of {} still {} after {SLOW:?}",
                self.addr,
                reply.status
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls `GET path` (200 JSON) every 20 ms until `done` holds for it;
    /// fails after `SLOW`, saying it wanted `wanted`.
    async fn wait_json(&self, path: &str, wanted: &str, done: impl Fn(&Value) -> bool) {
        let deadline = Instant::now() + SLOW;
        loop {
            let reply = http(self.addr, "GET", path, &[], None).await;
            assert_eq!(reply.status, 200, "{}", reply.body);
            if done(&reply.json()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{path} of {} is {} after {SLOW:?}, not {wanted}",
                self.addr,
                reply.body
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls `/api/channels` until it lists `want` (other nodes' counts
    /// arrive within a moment).
    async fn wait_channels(&self, want: Value) {
        self.wait_json("/api/channels", &want.to_string(), |j| {
            j["channels"] == want
        })
        .await;
    }

    /// Polls `/api/presence/CHANNEL` until it lists `members` members:
    /// then their `join`s and `leave`s are in Redis.
    async fn wait_members(&self, channel: &str, members: usize) {
        let path = format!("/api/presence/{channel}");
        self.wait_json(&path, &format!("{members} members"), |j| {
            j["members"].as_array().map(Vec::len) == Some(members)
        })
        .await;
    }

    async fn engine_up(&self) -> String {
        let metrics = http(self.addr, "GET", "/metrics", &[], None).await.body;
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("wsline_engine_up "))
            .expect("wsline_engine_up in /metrics")
            .to_owned()
    }

    async fn api_publish(&self, channel: &str, data: Value) -> common::HttpReply {
        let body = json!({"channel": channel, "data": data}).to_string();
        http(self.addr, "POST", "/api/publish", &[], Some(&body)).await
    }

    async fn publish_ok(&self, channel: &str, data: Value) -> u64 {
        let reply = self.api_publish(channel, data).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.json()["offset"].as_u64().expect("offset")
    }

    fn kill(&mut self) {
        self.child.start_kill().expect("SIGKILL the node");
    }
}

/// Reads until a message with `op`, returning it (skipping nothing else:
/// anything before it fails the test).
async fn expect_op(client: &mut Client, op: &str) -> Value {
    let m = client.recv().await;
    assert_eq!(m["op"], op, "{m}");
    m
}

async fn expect_message(client: &mut Client, offset: u64, data: Value) {
    let m = expect_op(client, "message").await;
    assert_eq!(
        (m["offset"].as_u64(), &m["data"]),
        (Some(offset), &data),
        "{m}"
    );
}

async fn subscribe_since(client: &mut Client, channel: &str, since: u64, epoch: &str) -> Value {
    let reply = client
        .request(json!({"op": "subscribe", "channel": channel, "since": since, "epoch": epoch}))
        .await;
    assert_eq!(reply["op"], "subscribed", "{reply}");
    reply
}

#[tokio::test]
#[ignore = "needs redis-server: ./scripts/test.sh --only redis"]
async fn a_publish_on_one_node_reaches_subscribers_on_all_three() {
    let redis = Redis::start().await;
    // The third takes the engine from its config file.
    let config = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("redis-node-{}.toml", redis.port));
    std::fs::write(
        &config,
        format!(
            "engine = \"redis\"\nredis_url = \"{}\"\n{JOIN_LEAVE}",
            redis.url()
        ),
    )
    .expect("write the config file");
    let third = Node::spawn(&["--config", config.to_str().expect("utf-8 path")]).await;
    third.wait_health(200).await;
    let events = config_file(&redis, "events", JOIN_LEAVE);
    let nodes = [
        Node::start(&redis, &["--config", &events]).await,
        Node::start(&redis, &["--config", &events]).await,
        third,
    ];
    let ports: std::collections::HashSet<u16> = nodes.iter().map(|n| n.addr.port()).collect();
    assert_eq!(ports.len(), 3, "three nodes on different ports");
    let mut clients = Vec::new();
    for node in &nodes {
        let mut c = node.client().await;
        let s = c.subscribe("room").await;
        assert_eq!(s["offset"], 0);
        clients.push(c);
    }
    // Joins from the later subscribers reach the earlier ones.
    for (i, c) in clients.iter_mut().enumerate() {
        for _ in i + 1..3 {
            expect_op(c, "join").await;
        }
    }
    let epoch = clients[0].subscribe("room").await["epoch"].clone();
    assert_eq!(
        clients[2].subscribe("room").await["epoch"],
        epoch,
        "one epoch"
    );

    // WebSocket publish on node 0: reply first, then everyone's copy.
    let offset = clients[0].publish("room", json!({"n": 1})).await;
    assert_eq!(offset, 1);
    for c in &mut clients {
        expect_message(c, 1, json!({"n": 1})).await;
    }
    // HTTP publish on node 2.
    assert_eq!(nodes[2].publish_ok("room", json!("two")).await, 2);
    for c in &mut clients {
        let m = expect_op(c, "message").await;
        assert_eq!(
            (m["offset"].clone(), m["data"].clone(), m["from"].clone()),
            (json!(2), json!("two"), Value::Null)
        );
    }
    // Every node counts every node's subscribers.
    for n in &nodes {
        n.wait_channels(json!([{"channel": "room", "subscribers": 3}]))
            .await;
    }
    // Nodes listen only to channels with local subscribers.
    assert_eq!(redis.listeners("room").await, 3);
    assert_eq!(redis.listeners("elsewhere").await, 0);
    let r = clients[1]
        .request(json!({"op": "unsubscribe", "channel": "room"}))
        .await;
    assert_eq!(r["op"], "unsubscribed");
    within("node 1 to unsubscribe from Redis", async {
        while redis.listeners("room").await != 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    for i in [0, 2] {
        let leave = expect_op(&mut clients[i], "leave").await;
        assert_eq!(leave["member"]["client"], json!(clients[1].id));
    }
    nodes[1]
        .wait_channels(json!([{"channel": "room", "subscribers": 2}]))
        .await;
    nodes[1].publish_ok("room", json!(3)).await;
    expect_message(&mut clients[0], 3, json!(3)).await;
    expect_message(&mut clients[2], 3, json!(3)).await;
    clients[1].expect_nothing_pending().await;
    for n in &nodes {
        assert_eq!(n.engine_up().await, "1");
    }
}

#[tokio::test]
#[ignore = "needs redis-server: ./scripts/test.sh --only redis"]
async fn recovery_with_since_works_on_another_node_and_says_when_history_is_short() {
    let redis = Redis::start().await;
    let a = Node::start(&redis, &["--history-size", "3"]).await;
    let b = Node::start(&redis, &["--history-size", "3"]).await;

    // A client on A, live messages from B.
    let mut x = a.client().await;
    let epoch = x.subscribe("feed").await["epoch"]
        .as_str()
        .expect("epoch")
        .to_owned();
    assert_eq!(b.publish_ok("feed", json!("one")).await, 1);
    expect_message(&mut x, 1, json!("one")).await;
    drop(x);
    // Its leave is out before it comes back (else that leave is news).
    a.wait_members("feed", 0).await;
    // Missed while away, published on A.
    a.publish_ok("feed", json!("two")).await;
    a.publish_ok("feed", json!("three")).await;
    // It comes back through the load balancer to B.
    let mut x = b.client().await;
    let s = subscribe_since(&mut x, "feed", 1, &epoch).await;
    assert_eq!(
        (
            s["recovered"].clone(),
            s["offset"].clone(),
            s["epoch"].clone()
        ),
        (json!(true), json!(3), json!(epoch))
    );
    expect_message(&mut x, 2, json!("two")).await;
    expect_message(&mut x, 3, json!("three")).await;
    a.publish_ok("feed", json!("four")).await;
    expect_message(&mut x, 4, json!("four")).await;
    x.expect_nothing_pending().await;

    // History holds 3 messages (2, 3, 4): since 0 cannot be recovered
    // fully; what is left is replayed.
    let mut y = a.client().await;
    let s = subscribe_since(&mut y, "feed", 0, &epoch).await;
    assert_eq!(
        (s["recovered"].clone(), s["offset"].clone()),
        (json!(false), json!(4))
    );
    for (o, d) in [(2, "two"), (3, "three"), (4, "four")] {
        expect_message(&mut y, o, json!(d)).await;
    }
    // A wrong epoch: nothing replayed.
    let mut z = b.client().await;
    let s = subscribe_since(&mut z, "feed", 2, "not-the-epoch").await;
    assert_eq!(s["recovered"], false);
    z.expect_nothing_pending().await;
    // Up to date.
    let mut w = a.client().await;
    let s = subscribe_since(&mut w, "feed", 4, &epoch).await;
    assert_eq!(s["recovered"], true);
    w.expect_nothing_pending().await;
}

/// The scenario of `long_gap/mod.rs` (also run on the in-memory engine by
/// `tests/recovery.rs`): published on A, recovered on B, whose replay is
/// read from the Redis stream a page at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server: ./scripts/test.sh --only redis"]
async fn a_long_gap_is_replayed_at_the_readers_pace_without_4008() {
    let redis = Redis::start().await;
    let a = Node::start(&redis, long_gap::SERVE_ARGS).await;
    let b = Node::start(&redis, long_gap::SERVE_ARGS).await;
    long_gap::run(
        &format!("ws://{}/ws", a.addr),
        &format!("ws://{}/ws", b.addr),
        b.addr,
    )
    .await;
}

#[tokio::test]
#[ignore = "needs redis-server: ./scripts/test.sh --only redis"]
async fn a_subscriber_hears_of_no_join_older_than_itself() {
    let redis = Redis::start().await;
    let events = config_file(&redis, "events", JOIN_LEAVE);
    let a = Node::start(&redis, &["--config", &events]).await;
    let b = Node::start(&redis, &["--config", &events]).await;
    // B already receives the channel, so a join from A can reach it at any
    // moment, also while a subscribe on B is reading Redis.
    let mut watcher = b.client().await;
    watcher.subscribe("room").await;
    let mut kept = Vec::new();
    for _ in 0..40 {
        let mut p = a.client().await;
        let mut q = b.client().await;
        // p's join is published before q's subscribe starts, and races
        // q's subscribe to node B.
        p.subscribe("room").await;
        q.subscribe("room").await;
        q.expect_nothing_pending().await;
        // Kept open: a leave would be news to q.
        kept.push((p, q));
    }
}

#[tokio::test]
#[ignore = "needs redis-server: ./scripts/test.sh --only redis"]
async fn presence_is_shared_and_a_killed_nodes_members_vanish() {
    let redis = Redis::start().await;
    let events = config_file(&redis, "events", JOIN_LEAVE);
    let args = ["--presence-timeout", "1.5", "--config", &events];
    let a = Node::start(&redis, &args).await;
    let mut b = Node::start(&redis, &args).await;
    let mut alice = a.client().await;
    alice.subscribe("lobby").await;
    let mut bob = b.client().await;
    bob.subscribe("lobby").await;
    let join = expect_op(&mut alice, "join").await;
    assert_eq!(join["member"], json!({"client": bob.id, "user": null}));

    let mut want = vec![alice.id.clone(), bob.id.clone()];
    want.sort();
    let listed = |v: &Value| -> Vec<String> {
        v["members"]
            .as_array()
            .expect("members")
            .iter()
            .map(|m| m["client"].as_str().expect("client").to_owned())
            .collect()
    };
    let on_a = http(a.addr, "GET", "/api/presence/lobby", &[], None).await;
    assert_eq!(on_a.status, 200);
    assert_eq!(listed(&on_a.json()), want);
    let on_b = bob
        .request(json!({"op": "presence", "channel": "lobby"}))
        .await;
    assert_eq!(listed(&on_b), want);
    a.wait_channels(json!([{"channel": "lobby", "subscribers": 2}]))
        .await;

    // Node B dies without a word: Bob is a ghost until the timeout.
    b.kill();
    let started = Instant::now();
    let leave = within("the ghost's leave event", async {
        tokio::time::timeout(SLOW, alice.recv())
            .await
            .expect("a leave within the bound")
    })
    .await;
    assert_eq!(
        (leave["op"].clone(), leave["member"]["client"].clone()),
        (json!("leave"), json!(bob.id))
    );
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(6),
        "ghost removed after {took:?}"
    );
    let on_a = http(a.addr, "GET", "/api/presence/lobby", &[], None).await;
    assert_eq!(listed(&on_a.json()), vec![alice.id.clone()]);
    // The dead node's subscribers are no longer counted either.
    a.wait_channels(json!([{"channel": "lobby", "subscribers": 1}]))
        .await;
}

#[tokio::test]
#[ignore = "needs redis-server: ./scripts/test.sh --only redis"]
async fn join_leave_is_opt_in_and_presence_works_without_it_even_for_a_killed_nodes_members() {
    let redis = Redis::start().await;
    let events = config_file(&redis, "live", "[channels.\"live:*\"]\njoin_leave = true\n");
    let args = ["--presence-timeout", "1.5", "--config", &events];
    let a = Node::start(&redis, &args).await;
    let mut b = Node::start(&redis, &args).await;
    let mut alice = a.client().await;
    for channel in ["live:room", "lobby"] {
        alice.subscribe(channel).await;
    }
    let mut bob = b.client().await;
    for channel in ["live:room", "lobby"] {
        bob.subscribe(channel).await;
    }
    // Across nodes: bob's join on live:room only.
    let join = expect_op(&mut alice, "join").await;
    assert_eq!(
        (join["channel"].clone(), join["member"]["client"].clone()),
        (json!("live:room"), json!(bob.id))
    );
    alice.expect_nothing_pending().await;
    // Presence lists both members on both channels, from either node.
    let mut want = vec![alice.id.clone(), bob.id.clone()];
    want.sort();
    for channel in ["live:room", "lobby"] {
        for node in [&a, &b] {
            let reply = http(
                node.addr,
                "GET",
                &format!("/api/presence/{channel}"),
                &[],
                None,
            )
            .await;
            let mut listed: Vec<String> = reply.json()["members"]
                .as_array()
                .expect("members")
                .iter()
                .map(|m| m["client"].as_str().expect("client").to_owned())
                .collect();
            listed.sort();
            assert_eq!(listed, want, "{channel}");
        }
    }
    // Node B dies: bob expires from both channels, announced on live:room
    // only.
    b.kill();
    let leave = expect_op(&mut alice, "leave").await;
    assert_eq!(
        (leave["channel"].clone(), leave["member"]["client"].clone()),
        (json!("live:room"), json!(bob.id))
    );
    a.wait_members("lobby", 1).await;
    alice.expect_nothing_pending().await;
    // An unsubscribe on a channel without events: presence drops the
    // member, nobody is told.
    let mut carol = a.client().await;
    carol.subscribe("lobby").await;
    a.wait_members("lobby", 2).await;
    carol
        .request(json!({"op": "unsubscribe", "channel": "lobby"}))
        .await;
    a.wait_members("lobby", 1).await;
    alice.expect_nothing_pending().await;
}

#[tokio::test]
#[ignore = "needs redis-server: ./scripts/test.sh --only redis"]
async fn a_redis_outage_refuses_publishes_and_everything_resumes() {
    let mut redis = Redis::start().await;
    let events = config_file(&redis, "events", JOIN_LEAVE);
    let a = Node::start(&redis, &["--config", &events]).await;
    let b = Node::start(&redis, &["--config", &events]).await;
    let mut x = a.client().await;
    let old_epoch = x.subscribe("news").await["epoch"].clone();
    let mut y = b.client().await;
    y.subscribe("news").await;
    expect_op(&mut x, "join").await;
    assert_eq!(x.publish("news", json!("before")).await, 1);
    expect_message(&mut x, 1, json!("before")).await;
    expect_message(&mut y, 1, json!("before")).await;

    redis.kill().await;
    a.wait_health(503).await;
    b.wait_health(503).await;
    assert_eq!(a.engine_up().await, "0");
    // Refused, never silently dropped.
    let r = x
        .request(json!({"op": "publish", "channel": "news", "data": "lost?", "id": 9}))
        .await;
    assert_eq!(
        (r["op"].clone(), r["code"].clone(), r["id"].clone()),
        (json!("error"), json!("unavailable"), json!(9)),
        "{r}"
    );
    let r = b.api_publish("news", json!("lost?")).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.json()["error"].is_string());
    // The connections stay open.
    x.expect_nothing_pending().await;
    y.expect_nothing_pending().await;

    // Redis comes back empty: a new epoch, told as recovered:false.
    redis.restart().await;
    a.wait_health(200).await;
    b.wait_health(200).await;
    assert_eq!(b.engine_up().await, "1");
    for c in [&mut x, &mut y] {
        let s = expect_op(c, "subscribed").await;
        assert_eq!(s["recovered"], false, "{s}");
        assert_ne!(s["epoch"], old_epoch);
    }
    assert_eq!(y.publish("news", json!("after")).await, 1);
    expect_message(&mut x, 1, json!("after")).await;
    expect_message(&mut y, 1, json!("after")).await;
    a.publish_ok("news", json!("again")).await;
    expect_message(&mut x, 2, json!("again")).await;
    expect_message(&mut y, 2, json!("again")).await;
    // A client recovering across the reset learns it lost messages.
    let mut z = b.client().await;
    let s = subscribe_since(&mut z, "news", 1, old_epoch.as_str().expect("epoch")).await;
    assert_eq!(s["recovered"], false);
    z.expect_nothing_pending().await;
}

#[tokio::test]
#[ignore = "needs redis-server: ./scripts/test.sh --only redis"]
async fn a_node_started_before_redis_is_unhealthy_then_joins() {
    let mut redis = Redis::start().await;
    redis.kill().await;
    let url = redis.url();
    let node = Node::spawn(&["--engine", "redis", "--redis-url", &url]).await;
    node.wait_health(503).await;
    assert_eq!(node.engine_up().await, "0");
    let mut c = node.client().await;
    let r = c
        .request(json!({"op": "subscribe", "channel": "early", "id": 1}))
        .await;
    assert_eq!(
        (r["op"].clone(), r["code"].clone()),
        (json!("error"), json!("unavailable")),
        "{r}"
    );
    redis.restart().await;
    node.wait_health(200).await;
    c.subscribe("early").await;
    assert_eq!(c.publish("early", json!("hi")).await, 1);
    expect_message(&mut c, 1, json!("hi")).await;
}

#[tokio::test]
#[ignore = "needs redis-server: ./scripts/test.sh --only redis"]
async fn a_cut_pubsub_link_loses_and_doubles_nothing() {
    let redis = Redis::start().await;
    let a = Node::start(&redis, &[]).await;
    let b = Node::start(&redis, &["--publish-rate", "1000"]).await;
    let mut x = a.client().await;
    x.subscribe("ticks").await;
    let mut p = b.client().await;
    // Cut every pub/sub connection (node A's and B's) while B publishes:
    // what A missed comes from history when it reconnects, the rest live.
    let killed = redis
        .command(&["CLIENT", "KILL", "TYPE", "pubsub"])
        .await
        .expect("CLIENT KILL");
    assert!(killed.starts_with(':'), "{killed}");
    let mut sent = 0;
    while sent < 60 {
        let r = p
            .request(json!({"op": "publish", "channel": "ticks", "data": sent + 1}))
            .await;
        match r["op"].as_str() {
            Some("published") => sent += 1,
            // B itself noticed the cut: refused, not lost. Try again.
            Some("error") if r["code"] == "unavailable" => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            _ => panic!("{r}"),
        }
    }
    for n in 1..=60u64 {
        let m = x.recv().await;
        if m["op"] == "subscribed" {
            panic!("history covered the gap, yet recovered:false: {m}");
        }
        expect_offset(&m, n);
    }
    x.expect_nothing_pending().await;
}

fn expect_offset(m: &Value, offset: u64) {
    assert_eq!(
        (m["op"].as_str(), m["offset"].as_u64(), m["data"].as_u64()),
        (Some("message"), Some(offset), Some(offset)),
        "{m}"
    );
}

/// Runs `wsline serve ARGS` expecting a configuration error: its stderr.
async fn refused(args: &[&str]) -> String {
    let out = within(
        "wsline serve to refuse its configuration",
        Command::new(BIN)
            .arg("serve")
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("run wsline serve");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stdout.is_empty(), "no `listening on` line");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn engine_settings_are_checked_before_listening() {
    assert!(refused(&["--engine", "mongo"])
        .await
        .contains("engine must be memory or redis"));
    assert!(refused(&["--redis-url", "redis://127.0.0.1:6379"])
        .await
        .contains("--engine redis"));
    let bad = refused(&["--engine", "redis", "--redis-url", "http://example.invalid"]).await;
    assert!(bad.contains("invalid redis_url"), "{bad}");
    assert!(refused(&["--engine", "redis", "--presence-timeout", "0"])
        .await
        .contains("presence_timeout"));
}

#[tokio::test]
async fn the_memory_engine_is_the_default_and_reports_up() {
    let node = Node::spawn(&[]).await;
    node.wait_health(200).await;
    assert_eq!(node.engine_up().await, "1");
}

/// `[webhooks]` for nodes of `redis` posting to `receiver`, sending
/// `events` (client_connected always: the tests' markers).
fn webhooks_file(redis: &Redis, receiver: &Receiver, name: &str, events: &[&str]) -> String {
    let mut events: Vec<String> = events.iter().map(|e| format!("{e:?}")).collect();
    events.push("\"client_connected\"".into());
    config_file(
        redis,
        name,
        &format!(
            "[webhooks]\nurl = {:?}\nsecret = \"s\"\nbatch_delay = 0.01\nevents = [{}]\n",
            receiver.url,
            events.join(", ")
        ),
    )
}

/// The events received until a `client_connected` of each of `markers`
/// has come, repeats (same id) dropped. Each node sends its events in the
/// order it emitted them, one POST at a time, so once a node's marker is
/// in, everything it emitted before is too.
async fn events_until_markers(receiver: &mut Receiver, markers: &[String]) -> Vec<Value> {
    let (_, events) = receiver
        .until(|events| {
            markers.iter().all(|m| {
                events
                    .iter()
                    .any(|e| e["name"] == "client_connected" && e["client"] == json!(m))
            })
        })
        .await;
    let mut seen = std::collections::HashSet::new();
    events
        .into_iter()
        .filter(|e| seen.insert(e["id"].as_str().expect("an id").to_owned()))
        .collect()
}

/// How many of `events` are `name` on `channel` (and about `client`, if
/// given).
fn count(events: &[Value], name: &str, channel: &str, client: Option<&str>) -> usize {
    events
        .iter()
        .filter(|e| {
            e["name"] == name && e["channel"] == channel && client.is_none_or(|c| e["client"] == c)
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server: ./scripts/test.sh --only redis"]
async fn webhooks_report_occupied_and_vacated_once_across_three_nodes() {
    let redis = Redis::start().await;
    let mut receiver = Receiver::start().await;
    let file = webhooks_file(
        &redis,
        &receiver,
        "webhooks",
        &["channel_occupied", "channel_vacated"],
    );
    let nodes = [
        Node::start(&redis, &["--config", &file]).await,
        Node::start(&redis, &["--config", &file]).await,
        Node::start(&redis, &["--config", &file]).await,
    ];
    let mut clients = Vec::new();
    for node in &nodes {
        for _ in 0..4 {
            clients.push(node.client().await);
        }
    }
    const ROUNDS: usize = 5;
    for round in 0..ROUNDS {
        // All twelve, on three nodes, join the empty channel at once, then
        // all leave at once: one node's subscribe takes it from 0, one
        // node's unsubscribe takes it back.
        let channel = format!("round{round}");
        join_all(clients.iter_mut().map(|c| c.subscribe(&channel))).await;
        join_all(clients.iter_mut().map(|c| async {
            let reply = c
                .request(json!({"op": "unsubscribe", "channel": &channel}))
                .await;
            assert_eq!(reply["op"], "unsubscribed", "{reply}");
        }))
        .await;
    }
    // Churn: each client joins and leaves `churn` three times, all at once.
    join_all(clients.iter_mut().map(|c| async {
        for _ in 0..3 {
            c.subscribe("churn").await;
            let reply = c
                .request(json!({"op": "unsubscribe", "channel": "churn"}))
                .await;
            assert_eq!(reply["op"], "unsubscribed", "{reply}");
        }
    }))
    .await;

    let mut markers = Vec::new();
    for node in &nodes {
        markers.push(node.client().await.id);
    }
    let events = events_until_markers(&mut receiver, &markers).await;
    for round in 0..ROUNDS {
        let channel = format!("round{round}");
        assert_eq!(
            (
                count(&events, "channel_occupied", &channel, None),
                count(&events, "channel_vacated", &channel, None)
            ),
            (1, 1),
            "{channel}: {events:#?}"
        );
    }
    let occupied = count(&events, "channel_occupied", "churn", None);
    let vacated = count(&events, "channel_vacated", "churn", None);
    assert!(occupied >= 1, "churn was occupied");
    assert_eq!(occupied, vacated, "each occupancy of churn ended once");
    // Nothing is left counted: a new subscriber (on the second node)
    // occupies it again.
    clients[5].subscribe("churn").await;
    let marker = nodes[1].client().await.id;
    let events = events_until_markers(&mut receiver, &[marker]).await;
    assert_eq!(count(&events, "channel_occupied", "churn", None), 1);
}

#[tokio::test]
#[ignore = "needs redis-server: ./scripts/test.sh --only redis"]
async fn webhooks_report_a_killed_nodes_members_removed_and_channels_vacated_once() {
    let redis = Redis::start().await;
    let mut receiver = Receiver::start().await;
    let file = webhooks_file(
        &redis,
        &receiver,
        "webhooks-kill",
        &[
            "channel_occupied",
            "channel_vacated",
            "member_added",
            "member_removed",
        ],
    );
    let args = ["--presence-timeout", "1.5", "--config", &file];
    let mut a = Node::start(&redis, &args).await;
    let b = Node::start(&redis, &args).await;
    let c = Node::start(&redis, &args).await;
    let mut alice = a.client().await;
    alice.subscribe("solo").await;
    alice.subscribe("shared").await;
    let mut bob = b.client().await;
    bob.subscribe("shared").await;
    let markers = [a.client().await.id, b.client().await.id];
    let events = events_until_markers(&mut receiver, &markers).await;
    assert_eq!(count(&events, "channel_occupied", "solo", None), 1);
    assert_eq!(count(&events, "channel_occupied", "shared", None), 1);
    assert_eq!(count(&events, "member_added", "shared", None), 2);

    // Node A dies without a word. Once the presence timeout has passed,
    // one survivor claims it: Alice leaves both channels, `solo` is empty.
    a.kill();
    let started = Instant::now();
    let (_, events) = receiver
        .until(|events| {
            count(events, "member_removed", "solo", Some(&alice.id)) > 0
                && count(events, "member_removed", "shared", Some(&alice.id)) > 0
                && count(events, "channel_vacated", "solo", None) > 0
        })
        .await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1000),
        "after the timeout: {took:?}"
    );
    assert!(took < Duration::from_secs(8), "claimed after {took:?}");
    assert_eq!(
        count(&events, "channel_vacated", "shared", None),
        0,
        "Bob is still in `shared`: {events:#?}"
    );
    // Bob leaves: now `shared` is empty, once.
    bob.request(json!({"op": "unsubscribe", "channel": "shared"}))
        .await;
    let markers = [b.client().await.id, c.client().await.id];
    let mut rest = events_until_markers(&mut receiver, &markers).await;
    rest.extend(events);
    assert_eq!(count(&rest, "member_removed", "solo", Some(&alice.id)), 1);
    assert_eq!(count(&rest, "member_removed", "shared", Some(&alice.id)), 1);
    assert_eq!(count(&rest, "member_removed", "shared", Some(&bob.id)), 1);
    assert_eq!(count(&rest, "channel_vacated", "solo", None), 1);
    assert_eq!(count(&rest, "channel_vacated", "shared", None), 1);
}

#[tokio::test]
#[ignore = "needs redis-server: ./scripts/test.sh --only redis"]
async fn webhooks_count_an_unsubscribe_made_while_redis_was_unreachable() {
    let redis = Redis::start().await;
    let mut receiver = Receiver::start().await;
    let file = webhooks_file(
        &redis,
        &receiver,
        "webhooks-pause",
        &["channel_occupied", "channel_vacated"],
    );
    // A short refresh period: the unsubscribe is uncounted at the first
    // refresh once Redis is back.
    let node = Node::start(&redis, &["--presence-timeout", "3", "--config", &file]).await;
    let mut ann = node.client().await;
    ann.subscribe("paused").await;
    let events = events_until_markers(&mut receiver, &[node.client().await.id]).await;
    assert_eq!(count(&events, "channel_occupied", "paused", None), 1);

    redis.pause(true);
    node.wait_health(503).await;
    let reply = ann
        .request(json!({"op": "unsubscribe", "channel": "paused"}))
        .await;
    assert_eq!(reply["op"], "unsubscribed", "{reply}");
    redis.pause(false);
    node.wait_health(200).await;
    let (_, events) = receiver
        .until(|e| count(e, "channel_vacated", "paused", None) > 0)
        .await;
    assert_eq!(count(&events, "channel_vacated", "paused", None), 1);
    // The count is back at 0: the next subscriber occupies it again.
    ann.subscribe("paused").await;
    let events = events_until_markers(&mut receiver, &[node.client().await.id]).await;
    assert_eq!(count(&events, "channel_occupied", "paused", None), 1);
    assert_eq!(count(&events, "channel_vacated", "paused", None), 0);
}
