//! Shared helpers of the hub's integration tests (also included from
//! `crates/cli/tests/serve.rs` with `#[path]`).
//!
//! Real peers only: the hub runs on a real socket (127.0.0.1, port 0),
//! clients are `wsline::connect_with` or hand-written HTTP over a tokio
//! `TcpStream`. Every wait is bounded by [`WAIT`]; a hang fails the test.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use wsline::{ClientConfig, MaybeTlsStream, Message, WebSocket};
use wsline_hub::HubConfig;

pub mod receiver;

/// The bound on any single wait: generous, so a slow machine passes, but a
/// hang fails the test instead of stalling the suite.
pub const WAIT: Duration = Duration::from_secs(10);

/// Awaits `fut`, failing the test if it takes longer than [`WAIT`].
pub async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(WAIT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

/// The config tests start from: the defaults, with a short close timeout
/// so closing handshakes and shutdown do not hold a test.
pub fn config() -> HubConfig {
    let mut c = HubConfig::default();
    c.server.protocol.close_timeout = Duration::from_secs(2);
    c
}

/// `c` with `join_leave = true` on the channels `pattern` matches (its
/// other options left unset).
pub fn with_join_leave(mut c: HubConfig, pattern: &str) -> HubConfig {
    c.channels.insert(
        pattern.to_owned(),
        wsline_hub::config::ChannelOptions {
            join_leave: Some(true),
            ..Default::default()
        },
    );
    c
}

/// A hub served in this process on 127.0.0.1 with a free port.
pub struct Hub {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

/// Starts `wsline_hub::serve` with `config` on 127.0.0.1:0.
pub async fn start(config: HubConfig) -> Hub {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    start_on(listener, config)
}

/// Starts `wsline_hub::serve` with `config` on `listener`.
pub fn start_on(listener: TcpListener, config: HubConfig) -> Hub {
    let addr = listener.local_addr().expect("local_addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(wsline_hub::serve(listener, config, async move {
        let _ = stopped.await;
    }));
    Hub {
        addr,
        stop: Some(stop),
        task: Some(task),
    }
}

impl Hub {
    /// A hub already serving on `addr` (from `wsline_hub::prepare`):
    /// `stop` completes its shutdown future, `task` is its `serve`.
    pub fn from_parts(
        addr: SocketAddr,
        stop: oneshot::Sender<()>,
        task: JoinHandle<std::io::Result<()>>,
    ) -> Hub {
        Hub {
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// `ws://ADDR/ws` plus `query` (e.g. `?token=…`).
    pub fn url(&self, query: &str) -> String {
        format!("ws://{}/ws{query}", self.addr)
    }

    /// Completes the shutdown future; `serve` then closes every client.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Waits for `serve` to return.
    pub async fn finished(&mut self) -> std::io::Result<()> {
        let task = self.task.take().expect("serve is running");
        within("serve to return", task)
            .await
            .expect("serve panicked")
    }

    /// A WebSocket client with its `welcome` read.
    pub async fn client(&self) -> Client {
        Client::connect(&self.url("")).await
    }

    /// GET `path` with no headers.
    pub async fn get(&self, path: &str) -> HttpReply {
        http(self.addr, "GET", path, &[], None).await
    }

    /// POST `/api/publish` with a JSON body (from loopback, no key).
    pub async fn api_publish(&self, channel: &str, data: Value) -> u64 {
        let body = json!({"channel": channel, "data": data}).to_string();
        let reply = http(self.addr, "POST", "/api/publish", &[], Some(&body)).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        reply.json()["offset"].as_u64().expect("offset")
    }

    /// The current `/metrics` text.
    pub async fn metrics(&self) -> Metrics {
        let reply = self.get("/metrics").await;
        assert_eq!(reply.status, 200, "{reply:?}");
        Metrics(reply.body)
    }

    /// Reads `/metrics` until `done` holds for it, for counters updated
    /// after what a client can see (a connection's end is counted after its
    /// TCP close).
    pub async fn metrics_until(&self, done: impl Fn(&Metrics) -> bool) -> Metrics {
        within("the metrics to catch up", async {
            loop {
                let m = self.metrics().await;
                if done(&m) {
                    return m;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The client settings tests use: no keepalive pings, no compression (so
/// sizes on the wire are the sizes sent).
pub fn client_config() -> ClientConfig {
    let mut config = ClientConfig::default();
    config.protocol.ping_interval = None;
    config.deflate = None;
    config
}

/// A hub client speaking the JSON protocol.
pub struct Client {
    pub ws: WebSocket<MaybeTlsStream>,
    /// The client ID from `welcome`.
    pub id: String,
    /// The `welcome` message.
    pub welcome: Value,
}

impl Client {
    /// Connects to `url` and reads the `welcome`.
    pub async fn connect(url: &str) -> Client {
        Self::connect_with(url, &client_config()).await
    }

    /// Connects with `config` and reads the `welcome`.
    pub async fn connect_with(url: &str, config: &ClientConfig) -> Client {
        let (ws, _) = within("connect", wsline::connect_with(url, config))
            .await
            .unwrap_or_else(|e| panic!("connect {url}: {e}"));
        let mut client = Client {
            ws,
            id: String::new(),
            welcome: Value::Null,
        };
        let welcome = client.recv().await;
        assert_eq!(welcome["op"], "welcome", "{welcome}");
        client.id = welcome["client"]
            .as_str()
            .expect("welcome has a client ID")
            .to_owned();
        client.welcome = welcome;
        client
    }

    /// Sends a JSON value as one text message.
    pub async fn send(&mut self, value: Value) {
        self.send_text(&value.to_string()).await;
    }

    /// Sends a text message as is.
    pub async fn send_text(&mut self, text: &str) {
        within("send", self.ws.send(Message::Text(text.into())))
            .await
            .expect("send");
    }

    /// The next message, parsed; fails if the connection ends instead.
    pub async fn recv(&mut self) -> Value {
        match within("a message from the hub", self.ws.recv()).await {
            Some(Ok(Message::Text(t))) => serde_json::from_str(t.as_str())
                .unwrap_or_else(|e| panic!("not JSON ({e}): {}", t.as_str())),
            Some(Ok(other)) => panic!("expected a text message, got {other:?}"),
            Some(Err(e)) => panic!("connection failed instead of a message: {e}"),
            None => panic!(
                "connection closed instead of a message: {:?}",
                self.ws.termination()
            ),
        }
    }

    /// Sends `value` and returns the next message (its reply, when nothing
    /// else is on the way).
    pub async fn request(&mut self, value: Value) -> Value {
        self.send(value).await;
        self.recv().await
    }

    /// Subscribes and returns the `subscribed` reply.
    pub async fn subscribe(&mut self, channel: &str) -> Value {
        let reply = self
            .request(json!({"op": "subscribe", "channel": channel}))
            .await;
        assert_eq!(reply["op"], "subscribed", "{reply}");
        reply
    }

    /// Publishes and returns the offset from `published` (the reply comes
    /// before the publisher's own copy when it is subscribed).
    pub async fn publish(&mut self, channel: &str, data: Value) -> u64 {
        let reply = self
            .request(json!({"op": "publish", "channel": channel, "data": data}))
            .await;
        assert_eq!(reply["op"], "published", "{reply}");
        reply["offset"].as_u64().expect("offset")
    }

    /// Proves nothing is queued ahead: a ping's reply must be the next
    /// message.
    pub async fn expect_nothing_pending(&mut self) {
        let reply = self.request(json!({"op": "ping", "id": "sync"})).await;
        assert_eq!(reply, json!({"op": "pong", "id": "sync"}));
    }

    /// Reads until the connection ends, failing on any message; returns the
    /// close code and reason the hub sent.
    pub async fn closed(&mut self) -> (u16, String) {
        let (code, reason, extra) = self.closed_after_messages().await;
        assert!(extra.is_empty(), "messages before the close: {extra:?}");
        (code, reason)
    }

    /// Reads until the connection ends; the close code, reason, and the
    /// messages that came before.
    pub async fn closed_after_messages(&mut self) -> (u16, String, Vec<Value>) {
        let mut messages = Vec::new();
        loop {
            match within("the connection to end", self.ws.recv()).await {
                Some(Ok(Message::Text(t))) => {
                    messages.push(serde_json::from_str(t.as_str()).expect("JSON"))
                }
                Some(Ok(other)) => panic!("unexpected {other:?}"),
                Some(Err(e)) => {
                    let t = e
                        .termination()
                        .unwrap_or_else(|| panic!("not a close: {e}"));
                    return (t.code().as_u16(), t.reason().to_owned(), messages);
                }
                None => {
                    let t = self.ws.termination().expect("a termination");
                    return (t.code().as_u16(), t.reason().to_owned(), messages);
                }
            }
        }
    }
}

/// A plain HTTP answer.
#[derive(Debug)]
pub struct HttpReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpReply {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }

    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request written by hand; the answer read to end of stream
/// (the hub answers one request per connection).
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> HttpReply {
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = body {
        request.push_str("Content-Type: application/json\r\n");
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    if let Some(body) = body {
        request.push_str(body);
    }
    let raw = within(&format!("{method} {path}"), async {
        let mut tcp = TcpStream::connect(addr).await?;
        tcp.write_all(request.as_bytes()).await?;
        let mut out = Vec::new();
        tcp.read_to_end(&mut out).await?;
        Ok::<_, std::io::Error>(out)
    })
    .await
    .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    parse_http(&raw)
}

/// Reads one HTTP/1.1 request from `tcp`: its head (up to the blank
/// line, as sent) and its body (`Content-Length` bytes); `None` when the
/// connection ends or fails first. For the test backends that stand in
/// for an application (hooks, webhooks).
pub async fn read_request(tcp: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let (head_end, length) = loop {
        match tcp.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse::<usize>().unwrap());
            break (end + 4, length);
        }
    };
    while buf.len() < head_end + length {
        match tcp.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    Some((head, buf[head_end..head_end + length].to_vec()))
}

/// Parses a response head and body (the body is what follows the head).
pub fn parse_http(raw: &[u8]) -> HttpReply {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete HTTP head in {text:?}"));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    HttpReply {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// A `/metrics` exposition.
#[derive(Debug)]
pub struct Metrics(pub String);

impl Metrics {
    /// The value of the sample `series` (name with labels, as written), or
    /// `None` if there is no such line.
    pub fn get(&self, series: &str) -> Option<f64> {
        self.0.lines().find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().expect("a number"))
        })
    }

    /// Like [`Metrics::get`], failing the test if the series is missing.
    pub fn value(&self, series: &str) -> f64 {
        self.get(series)
            .unwrap_or_else(|| panic!("no {series} in /metrics:\n{}", self.0))
    }
}

/// `a` then `b` subscribe to `evented` and `plain`, then `b` unsubscribes
/// from both: `a` gets `b`'s join and leave on `evented` only.
pub async fn join_leave_only_on(a: &mut Client, b: &mut Client, evented: &str, plain: &str) {
    for channel in [evented, plain] {
        a.subscribe(channel).await;
    }
    for channel in [evented, plain] {
        b.subscribe(channel).await;
    }
    let member_b = json!({"client": b.id, "user": null});
    // Exactly one join: `evented`'s (`plain`'s would follow it).
    assert_eq!(
        a.recv().await,
        json!({"op": "join", "channel": evented, "member": member_b})
    );
    a.expect_nothing_pending().await;
    for channel in [plain, evented] {
        b.request(json!({"op": "unsubscribe", "channel": channel}))
            .await;
    }
    assert_eq!(
        a.recv().await,
        json!({"op": "leave", "channel": evented, "member": member_b})
    );
    a.expect_nothing_pending().await;
}
