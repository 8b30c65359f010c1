//! Three `wsline serve --engine redis` nodes behind a real load balancer,
//! nginx or HAProxy, run with the configurations docs/scaling.md shows
//! (read from the file; only the node addresses and the `listen`/`bind`
//! line are replaced): a node killed with SIGKILL, or drained with
//! SIGTERM, while a publisher publishes through the balancer; its
//! subscribers (this crate's client, and the JavaScript client `wsline.js`
//! in Node doing its own reconnect) reconnect through the balancer, land on
//! the other nodes and resubscribe with `since` and `epoch`; every subscriber ends with every
//! acknowledged publication exactly once, in order. A drained node's
//! subscribers see their 1001 and no failed reconnect, and it exits 0;
//! so do all the clients through a rolling restart of the three nodes.
//!
//! They need `redis-server`, `nginx`, `haproxy` and `node` (with npm's `ws`
//! on `NODE_PATH`) on the PATH, so they are
//! ignored by plain `cargo test`: `./scripts/test.sh --only balancer`
//! installs them when missing and runs them. Each test starts its own
//! Redis, nodes and balancer on free loopback ports, killed when it ends.

mod child;
#[path = "../../hub/tests/common/mod.rs"]
mod common;
#[path = "../../wsline/tests/support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::sync::watch;
use wsline::Message;

/// The bound on anything that takes a reconnect or a health check.
const SLOW: Duration = Duration::from_secs(30);
const API_KEY: &str = "balancer-test-key";
const CHANNEL: &str = "feed";
/// Subscribers that are this crate's client (`wsline::connect`).
const SUBSCRIBERS: usize = 12;
/// Subscribers that are the JavaScript client (`wsline.js`) in Node,
/// reconnecting and recovering by themselves
/// (tests/balancer/js_subscriber.mjs).
const JS_SUBSCRIBERS: usize = 4;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A folder of this balancer's own (named after its port: tests run in
/// parallel) under the target's temp dir.
fn scratch(name: &str, port: u16) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("balancer-{name}-{port}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the scratch folder");
    dir
}

/// Spawns `program ARGS` quietly, killed on drop.
fn spawn(program: &str, args: &[&str]) -> Child {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| {
            panic!("spawn {program}: {e} (./scripts/test.sh --only balancer installs it)")
        })
}

/// One HTTP request with a body, tolerant of failures (a node may be
/// dead): `None` when there is no complete answer.
async fn try_http(addr: SocketAddr, method: &str, path: &str, body: &str) -> Option<(u16, Value)> {
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Authorization: Bearer {API_KEY}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let raw = tokio::time::timeout(Duration::from_secs(5), async {
        let mut tcp = TcpStream::connect(addr).await.ok()?;
        tcp.write_all(request.as_bytes()).await.ok()?;
        let mut out = Vec::new();
        tcp.read_to_end(&mut out).await.ok()?;
        Some(out)
    })
    .await
    .ok()??;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, serde_json::from_str(body).unwrap_or(Value::Null)))
}

/// Polls `GET /healthz` at `addr` until it answers 200.
async fn wait_healthy(addr: SocketAddr, what: &str) {
    let deadline = Instant::now() + SLOW;
    loop {
        if let Some((200, _)) = try_http(addr, "GET", "/healthz", "").await {
            return;
        }
        assert!(Instant::now() < deadline, "{what} never became healthy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A `redis-server` on a free loopback port, no persistence.
async fn start_redis() -> (Child, String) {
    let port = free_port();
    let child = spawn(
        "redis-server",
        &[
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
    );
    let deadline = Instant::now() + SLOW;
    loop {
        if let Ok(mut tcp) = TcpStream::connect(("127.0.0.1", port)).await {
            let mut buf = [0u8; 16];
            if tcp.write_all(b"PING\r\n").await.is_ok()
                && matches!(
                    tokio::time::timeout(Duration::from_secs(1), tcp.read(&mut buf)).await,
                    Ok(Ok(n)) if buf[..n].starts_with(b"+PONG")
                )
            {
                return (child, format!("redis://127.0.0.1:{port}"));
            }
        }
        assert!(Instant::now() < deadline, "redis-server never answered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Three nodes of the Redis at `url`, as docs/scaling.md says to run them
/// behind a proxy, each on a port of its own (a restarted node takes it
/// again), healthy.
async fn start_nodes(url: &str, extra: &[&str]) -> Vec<child::Server> {
    let mut nodes = Vec::new();
    for _ in 0..3 {
        let node = spawn_node(free_port(), url, extra).await;
        wait_healthy(node.addr, "a node").await;
        nodes.push(node);
    }
    nodes
}

/// `wsline serve --listen 127.0.0.1:PORT` as a node of the Redis at `url`
/// (and `extra` settings), once it listens; its output read and dropped.
async fn spawn_node(port: u16, url: &str, extra: &[&str]) -> child::Server {
    let listen = format!("127.0.0.1:{port}");
    let mut command = Command::new(child::BIN);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("WSLINE_") {
            command.env_remove(key);
        }
    }
    let mut child = command
        .args([
            "serve",
            "--listen",
            &listen,
            "--engine",
            "redis",
            "--redis-url",
            url,
        ])
        .args(["--api-key", API_KEY, "--max-connecting-per-ip", "0"])
        .args(["--history-size", "1000", "--close-timeout", "1"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn wsline serve");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("piped")).lines();
    let line = common::within("the `listening on` line", lines.next_line())
        .await
        .expect("read stdout")
        .expect("wsline serve exited before listening");
    assert_eq!(line, format!("listening on http://{listen}"));
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    child::Server {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    }
}

/// The fenced block of `lang` in docs/scaling.md, with the example node
/// addresses replaced by `nodes`' and the line that starts with `listen`
/// (its first word) replaced by `listen`.
fn docs_config(lang: &str, nodes: &[child::Server], listen: (&str, &str)) -> String {
    let docs = include_str!("../../../docs/scaling.md");
    let start = docs
        .find(&format!("```{lang}\n"))
        .unwrap_or_else(|| panic!("docs/scaling.md has no {lang} block"))
        + lang.len()
        + 4;
    let block = &docs[start..start + docs[start..].find("```").expect("the block ends")];
    let mut replaced = 0;
    let mut out = String::new();
    for line in block.lines() {
        let mut line = line.to_owned();
        for (i, node) in nodes.iter().enumerate() {
            let example = format!("10.0.0.1{}:8080", i + 1);
            line = line.replace(&example, &node.addr.to_string());
        }
        if line.trim_start().starts_with(listen.0) {
            line = listen.1.to_owned();
            replaced += 1;
        }
        out.push_str(&line);
        out.push('\n');
    }
    assert_eq!(replaced, 1, "one `{}` line in the {lang} block", listen.0);
    for i in 1..=3 {
        assert!(
            !out.contains(&format!("10.0.0.1{i}")),
            "every node replaced"
        );
    }
    out
}

/// nginx in the foreground with docs/scaling.md's configuration.
async fn start_nginx(nodes: &[child::Server]) -> (Child, SocketAddr) {
    let port = free_port();
    let dir = scratch("nginx", port);
    let d = dir.display();
    let site = docs_config(
        "nginx",
        nodes,
        ("listen", &format!("    listen 127.0.0.1:{port};")),
    );
    let conf = format!(
        "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n    access_log off;\n    client_body_temp_path {d}/body;\n    proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\n    uwsgi_temp_path {d}/uwsgi;\n    scgi_temp_path {d}/scgi;\n\
         {site}}}\n"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).expect("write nginx.conf");
    let error_log = dir.join("error.log");
    let child = spawn(
        "nginx",
        &[
            "-p",
            dir.to_str().unwrap(),
            "-e",
            error_log.to_str().unwrap(),
            "-c",
            path.to_str().unwrap(),
        ],
    );
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_healthy(addr, "nginx").await;
    (child, addr)
}

/// HAProxy in the foreground with docs/scaling.md's configuration.
async fn start_haproxy(nodes: &[child::Server]) -> (Child, SocketAddr) {
    let port = free_port();
    let dir = scratch("haproxy", port);
    let conf = docs_config(
        "haproxy",
        nodes,
        ("bind", &format!("    bind 127.0.0.1:{port}")),
    );
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, conf).expect("write haproxy.cfg");
    let check = std::process::Command::new("haproxy")
        .args(["-c", "-q", "-f", path.to_str().unwrap()])
        .output()
        .expect("run haproxy -c");
    assert!(
        check.status.success(),
        "haproxy -c: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let child = spawn("haproxy", &["-db", "-f", path.to_str().unwrap()]);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_healthy(addr, "haproxy").await;
    (child, addr)
}

/// A random number (std's hasher keys are random per instance).
fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// What one subscriber saw.
#[derive(Debug, Default)]
struct Seen {
    /// Which client it was: "rust" or "js".
    client: &'static str,
    /// Every publication, (offset, data), in the order received.
    messages: Vec<(u64, Value)>,
    /// Connections after the first.
    reconnects: usize,
    /// Resubscriptions answered `recovered: false`.
    unrecovered: usize,
    /// Every `subscribed` the hub sent, and the `since` asked for.
    subscribed: Vec<(Option<u64>, Value)>,
    /// The close codes of the connections that ended with a close.
    closes: Vec<u16>,
    /// Failed connects, and connections that ended without a close.
    errors: Vec<String>,
}

/// A client of the balancer at `lb` that subscribes to [`CHANNEL`] and,
/// whenever its connection ends, reconnects after a random 50–300 ms and
/// resubscribes with `since` and `epoch`, until it has every offset up to
/// the one `done` gives. Signals `ready` once first subscribed.
async fn subscriber(
    lb: SocketAddr,
    ready: tokio::sync::mpsc::Sender<()>,
    mut done: watch::Receiver<u64>,
) -> Seen {
    let url = format!("ws://{lb}/ws");
    let mut seen = Seen {
        client: "rust",
        ..Seen::default()
    };
    let mut epoch: Option<String> = None;
    let mut last = 0u64;
    let mut ready = Some(ready);
    let deadline = Instant::now() + Duration::from_secs(60);
    for attempt in 0.. {
        assert!(
            Instant::now() < deadline,
            "a subscriber never caught up: {seen:?}"
        );
        if attempt > 0 {
            seen.reconnects += 1;
            let pause = 50 + random() % 250;
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
        let connected = tokio::time::timeout(
            Duration::from_secs(5),
            wsline::connect_with(&url, &common::client_config()),
        )
        .await;
        let mut ws = match connected {
            Ok(Ok((ws, _))) => ws,
            Ok(Err(e)) => {
                seen.errors.push(format!("connect: {e}"));
                continue;
            }
            Err(_) => {
                seen.errors.push("connect: timed out".into());
                continue;
            }
        };
        let mut subscribe = json!({"op": "subscribe", "channel": CHANNEL, "id": attempt});
        if let Some(epoch) = &epoch {
            subscribe["since"] = json!(last);
            subscribe["epoch"] = json!(epoch);
        }
        if ws
            .send(Message::Text(subscribe.to_string().into()))
            .await
            .is_err()
        {
            seen.errors.push("send failed".into());
            continue;
        }
        loop {
            let target = *done.borrow();
            if target > 0 && last >= target {
                return seen;
            }
            let message = tokio::select! {
                m = ws.recv() => m,
                _ = done.changed() => continue,
            };
            let text = match message {
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(_)) => continue,
                Some(Err(e)) => {
                    match e.termination() {
                        Some(t) => seen.closes.push(t.code().as_u16()),
                        None => seen.errors.push(e.to_string()),
                    }
                    break;
                }
                None => {
                    match ws.termination() {
                        Some(t) => seen.closes.push(t.code().as_u16()),
                        None => seen.errors.push("ended without a termination".into()),
                    }
                    break;
                }
            };
            let m: Value = serde_json::from_str(text.as_str()).expect("JSON from the hub");
            match m["op"].as_str() {
                Some("subscribed") => {
                    seen.subscribed
                        .push((epoch.as_ref().map(|_| last), m.clone()));
                    if epoch.is_some() && m["recovered"] != json!(true) {
                        seen.unrecovered += 1;
                    }
                    if epoch.is_none() {
                        last = m["offset"].as_u64().expect("offset");
                    }
                    epoch = Some(m["epoch"].as_str().expect("epoch").to_owned());
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(()).await;
                    }
                }
                Some("message") => {
                    let offset = m["offset"].as_u64().expect("offset");
                    seen.messages.push((offset, m["data"].clone()));
                    last = last.max(offset);
                }
                Some("welcome") => {}
                _ => panic!("unexpected {m}"),
            }
        }
    }
    unreachable!()
}

/// The same as [`subscriber`], but the subscriber is the JavaScript client
/// (`crates/hub/static/wsline.js`) in a Node process, with npm's `ws`
/// (found through `NODE_PATH`, as `./scripts/test.sh --only balancer`
/// sets it): the client's own reconnect (its backoff, its spread after
/// 1001) and its own resubscribe with `since`/`epoch` are what is tested.
/// Its report lines are described in tests/balancer/js_subscriber.mjs.
async fn js_subscriber(
    lb: SocketAddr,
    ready: tokio::sync::mpsc::Sender<()>,
    mut done: watch::Receiver<u64>,
) -> Seen {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/balancer/js_subscriber.mjs"
    );
    let mut child = Command::new("node")
        .args([script, &format!("ws://{lb}/ws"), CHANNEL])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node on the PATH (./scripts/test.sh --only balancer installs it)");
    let mut stdin = child.stdin.take().expect("piped");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("piped")).lines();
    let mut seen = Seen {
        client: "js",
        ..Seen::default()
    };
    let mut ready = Some(ready);
    let mut opens = 0usize;
    let mut target_sent = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let line = tokio::select! {
            line = lines.next_line() => line,
            _ = done.changed(), if !target_sent => {
                let target = *done.borrow_and_update();
                if target > 0 {
                    stdin
                        .write_all(format!("{target}\n").as_bytes())
                        .await
                        .expect("the JS subscriber reads its stdin");
                    target_sent = true;
                }
                continue;
            }
            _ = tokio::time::sleep_until(deadline) => {
                panic!("a JS subscriber never caught up: {seen:?}")
            }
        };
        let Some(line) = line.expect("the JS subscriber's stdout") else {
            panic!("the JS subscriber ended without catching up: {seen:?}");
        };
        let m: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("a report line from the JS subscriber ({e}): {line}"));
        match m["ev"].as_str() {
            Some("ready") => {
                if let Some(ready) = ready.take() {
                    let _ = ready.send(()).await;
                }
            }
            Some("message") => {
                let offset = m["offset"].as_u64().expect("offset");
                seen.messages.push((offset, m["data"].clone()));
            }
            Some("subscribed") => {
                if m["resumed"] == json!(true) && m["recovered"] != json!(true) {
                    seen.unrecovered += 1;
                }
                seen.subscribed.push((m["since"].as_u64(), m));
            }
            Some("open") => {
                opens += 1;
                if opens > 1 {
                    seen.reconnects += 1;
                }
            }
            // 1006 is the client's word for "no close frame": the node
            // vanished, or a connection attempt failed.
            Some("lost") => match m["code"].as_u64() {
                Some(code) if code != 1006 => seen.closes.push(code as u16),
                _ => seen.errors.push(format!("lost: {}", m["reason"])),
            },
            Some("error") => seen.errors.push(format!("error: {}", m["message"])),
            Some("closed") => panic!("the JS client gave up: {m}; {seen:?}"),
            Some("done") => {
                let status = common::within("the JS subscriber to exit", child.wait())
                    .await
                    .expect("its status");
                assert!(status.success(), "the JS subscriber exited with {status}");
                return seen;
            }
            _ => panic!("unexpected report from the JS subscriber: {m}"),
        }
    }
}

/// Subscribers through the balancer, and a publisher through it at a
/// steady rate, running while a test disrupts the nodes.
struct Load {
    subscribers: Vec<tokio::task::JoinHandle<Seen>>,
    done: watch::Sender<u64>,
    stop: watch::Sender<bool>,
    publisher: tokio::task::JoinHandle<(Vec<(u64, u64)>, usize)>,
}

impl Load {
    /// [`SUBSCRIBERS`] Rust and [`JS_SUBSCRIBERS`] JavaScript subscribers
    /// of the balancer at `lb`, each subscribed, then the publisher
    /// started.
    async fn start(lb: SocketAddr) -> Load {
        let (done, done_rx) = watch::channel(0u64);
        let all = SUBSCRIBERS + JS_SUBSCRIBERS;
        let (ready_tx, mut ready) = tokio::sync::mpsc::channel(all);
        let mut subscribers: Vec<_> = (0..SUBSCRIBERS)
            .map(|_| tokio::spawn(subscriber(lb, ready_tx.clone(), done_rx.clone())))
            .collect();
        subscribers.extend(
            (0..JS_SUBSCRIBERS)
                .map(|_| tokio::spawn(js_subscriber(lb, ready_tx.clone(), done_rx.clone()))),
        );
        for _ in 0..all {
            common::within("every subscriber to subscribe", ready.recv())
                .await
                .expect("a subscriber gave up");
        }
        let (stop, mut stopped) = watch::channel(false);
        // Publishes `{"n": i}` every 20 ms through the balancer until
        // stopped; (offset, i) of each acknowledged one, and the number
        // refused or lost.
        let publisher = tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut failed = 0;
            for i in 0u64.. {
                if *stopped.borrow_and_update() {
                    break;
                }
                let body = json!({"channel": CHANNEL, "data": {"n": i}}).to_string();
                match try_http(lb, "POST", "/api/publish", &body).await {
                    Some((200, reply)) => {
                        acked.push((reply["offset"].as_u64().expect("offset"), i))
                    }
                    _ => failed += 1,
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (acked, failed)
        });
        Load {
            subscribers,
            done,
            stop,
            publisher,
        }
    }

    /// Stops the publisher, lets every subscriber catch up to the last
    /// acknowledged publication and checks that each has every one of
    /// them exactly once, in offset order, with every resubscription
    /// recovered. What they saw, for more checks.
    async fn finish(self, what: &str) -> Vec<Seen> {
        self.stop.send(true).expect("the publisher runs");
        let (acked, failed) = common::within("the publisher", self.publisher)
            .await
            .expect("no panic");
        let last = acked.last().expect("publications acknowledged").0;
        self.done.send(last).expect("subscribers listening");
        let mut all = Vec::new();
        for s in self.subscribers {
            let seen = tokio::time::timeout(SLOW, s)
                .await
                .expect("a subscriber to catch up")
                .expect("no panic");
            let offsets: Vec<u64> = seen.messages.iter().map(|(o, _)| *o).collect();
            assert!(
                offsets.windows(2).all(|w| w[0] < w[1]),
                "in order, none twice: {offsets:?}"
            );
            let data: std::collections::HashMap<u64, &Value> =
                seen.messages.iter().map(|(o, d)| (*o, d)).collect();
            for (offset, n) in &acked {
                assert_eq!(
                    data.get(offset),
                    Some(&&json!({"n": n})),
                    "acknowledged offset {offset} missing or wrong; subscribed {:?}, ends {:?} {:?}, \
                     around it {:?}",
                    seen.subscribed,
                    seen.closes,
                    seen.errors,
                    seen.messages
                        .iter()
                        .filter(|(o, _)| o + 3 >= *offset && *o <= offset + 3)
                        .collect::<Vec<_>>()
                );
            }
            assert_eq!(seen.unrecovered, 0, "{:?}", seen.subscribed);
            all.push(seen);
        }
        let reconnected = all.iter().filter(|s| s.reconnects > 0).count();
        let js = all
            .iter()
            .filter(|s| s.client == "js" && s.reconnects > 0)
            .count();
        let reconnects: usize = all.iter().map(|s| s.reconnects).sum();
        eprintln!(
            "{what}: {} publications acknowledged, {failed} refused or lost; {reconnected} \
             subscribers reconnected ({js} of them JavaScript clients; {reconnects} reconnects), \
             all recovered everything",
            acked.len()
        );
        all
    }
}

/// Open WebSocket connections of each node (`wsline_connections`).
async fn connections(nodes: &[child::Server]) -> Vec<usize> {
    let mut counts = Vec::new();
    for node in nodes {
        let metrics = common::http(node.addr, "GET", "/metrics", &[], None).await;
        counts.push(common::Metrics(metrics.body).value("wsline_connections") as usize);
    }
    counts
}

/// How the node with the most subscribers leaves, a second into the
/// publishing.
#[derive(Clone, Copy, PartialEq)]
enum Leave {
    /// SIGKILL.
    Killed,
    /// SIGTERM: it drains.
    Drained,
}

/// Under [`Load`] through the balancer at `lb`, the node with the most
/// subscribers leaves a second in; the publishing goes on for
/// `publishing` in all. Its subscribers must have reconnected; what the
/// subscribers saw.
async fn node_leaves(
    lb: SocketAddr,
    nodes: &mut [child::Server],
    leave: Leave,
    publishing: Duration,
) -> Vec<Seen> {
    let load = Load::start(lb).await;
    let counts = connections(nodes).await;
    assert!(
        counts.iter().filter(|&&n| n > 0).count() >= 2,
        "the balancer spread the subscribers over the nodes: {counts:?}"
    );
    let victim = (0..nodes.len()).max_by_key(|&i| counts[i]).unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    match leave {
        Leave::Killed => nodes[victim].child.start_kill().expect("SIGKILL a node"),
        Leave::Drained => nodes[victim].terminate(),
    }
    tokio::time::sleep(publishing - Duration::from_secs(1)).await;
    let how = if leave == Leave::Killed {
        "killed"
    } else {
        "drained"
    };
    let seen = load
        .finish(&format!(
            "subscribers per node {counts:?}, node {victim} {how} at 1 s"
        ))
        .await;
    let reconnected = seen.iter().filter(|s| s.reconnects > 0).count();
    assert!(
        reconnected >= counts[victim],
        "the {how} node's {} subscribers reconnected (saw {reconnected})",
        counts[victim]
    );
    if leave == Leave::Drained {
        let (status, stderr) = nodes[victim].wait().await;
        assert_eq!(status.code(), Some(0), "{stderr}");
    }
    seen
}

/// A drain behind the balancer: the node's clients get 1001 and nothing
/// else, and none of their reconnects fails (HAProxy has seen the 503 of
/// `/healthz` during the grace; nginx retries the upgrade a draining
/// node refuses on another node).
async fn drain_behind(lb: SocketAddr, nodes: &mut [child::Server]) {
    let seen = node_leaves(lb, nodes, Leave::Drained, Duration::from_secs(8)).await;
    for s in &seen {
        assert!(s.closes.iter().all(|&c| c == 1001), "{s:?}");
        assert!(s.errors.is_empty(), "a reconnect failed: {s:?}");
    }
}

/// A rolling restart behind the balancer: each node in turn drained
/// (SIGTERM), its exit (0) awaited, started again on its port, and given
/// [`REJOIN`] to be taken back by the balancer before the next. No client
/// sees anything but 1001, no reconnect fails, nothing is lost.
async fn rolling_restart(lb: SocketAddr, nodes: &mut [child::Server], url: &str) {
    let load = Load::start(lb).await;
    for (i, node) in nodes.iter_mut().enumerate() {
        node.terminate();
        let (status, stderr) = node.wait().await;
        assert_eq!(status.code(), Some(0), "node {i}: {stderr}");
        *node = spawn_node(node.addr.port(), url, &DRAINING).await;
        wait_healthy(node.addr, "a restarted node").await;
        tokio::time::sleep(REJOIN).await;
    }
    let counts = connections(nodes).await;
    let seen = load
        .finish(&format!(
            "rolling restart of 3 nodes, then subscribers per node {counts:?}"
        ))
        .await;
    for s in &seen {
        assert!(s.closes.iter().all(|&c| c == 1001), "{s:?}");
        assert!(s.errors.is_empty(), "a reconnect failed: {s:?}");
    }
    assert!(
        seen.iter().all(|s| s.reconnects >= 1),
        "every node was restarted"
    );
}

/// How long a restarted node is given before the next is drained: HAProxy
/// takes it back after two good checks a second apart (`rise 2`).
const REJOIN: Duration = Duration::from_secs(3);

/// The settings of the draining tests' nodes: a grace longer than
/// HAProxy's detection (`inter 1s fall 2`: 2 to 3 s), closes over 1 s.
const DRAINING: [&str; 4] = ["--drain-grace", "4", "--drain-window", "1"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server and nginx: ./scripts/test.sh --only balancer"]
async fn behind_nginx_a_killed_nodes_subscribers_recover_everything_through_the_balancer() {
    let (_redis, url) = start_redis().await;
    let mut nodes = start_nodes(&url, &[]).await;
    let (_nginx, lb) = start_nginx(&nodes).await;
    node_leaves(lb, &mut nodes, Leave::Killed, Duration::from_secs(3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server and haproxy: ./scripts/test.sh --only balancer"]
async fn behind_haproxy_a_killed_nodes_subscribers_recover_everything_through_the_balancer() {
    let (_redis, url) = start_redis().await;
    let mut nodes = start_nodes(&url, &[]).await;
    let (_haproxy, lb) = start_haproxy(&nodes).await;
    node_leaves(lb, &mut nodes, Leave::Killed, Duration::from_secs(3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server and nginx: ./scripts/test.sh --only balancer"]
async fn behind_nginx_a_draining_nodes_subscribers_see_only_1001_and_recover_everything() {
    let (_redis, url) = start_redis().await;
    let mut nodes = start_nodes(&url, &DRAINING).await;
    let (_nginx, lb) = start_nginx(&nodes).await;
    drain_behind(lb, &mut nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server and haproxy: ./scripts/test.sh --only balancer"]
async fn behind_haproxy_a_draining_nodes_subscribers_see_only_1001_and_recover_everything() {
    let (_redis, url) = start_redis().await;
    let mut nodes = start_nodes(&url, &DRAINING).await;
    let (_haproxy, lb) = start_haproxy(&nodes).await;
    drain_behind(lb, &mut nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server and nginx: ./scripts/test.sh --only balancer"]
async fn behind_nginx_a_rolling_restart_loses_nothing_and_shows_clients_only_1001() {
    let (_redis, url) = start_redis().await;
    let mut nodes = start_nodes(&url, &DRAINING).await;
    let (_nginx, lb) = start_nginx(&nodes).await;
    rolling_restart(lb, &mut nodes, &url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server and haproxy: ./scripts/test.sh --only balancer"]
async fn behind_haproxy_a_rolling_restart_loses_nothing_and_shows_clients_only_1001() {
    let (_redis, url) = start_redis().await;
    let mut nodes = start_nodes(&url, &DRAINING).await;
    let (_haproxy, lb) = start_haproxy(&nodes).await;
    rolling_restart(lb, &mut nodes, &url).await;
}
