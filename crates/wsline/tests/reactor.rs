//! `wsline::reactor` over real sockets: echo of every size through its
//! direct-write and queued paths (against the plain `WebSocket` client),
//! request heads in pieces and with a frame behind them, refusals, the
//! handshake, keepalive, write-stall and shutdown paths, and how every end
//! is reported to the handler.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use futures_util::SinkExt;
use support::*;
use tokio::io::AsyncWriteExt;
use wsline::reactor::{Conn, ConnId, Handler, Reactor, ReactorHandle};
use wsline::{
    CloseCode, Gate, Message, Request, Response, ServerConfig, Termination, TerminationKind,
};

/// Ends reported to the handler, in order.
type Ends = Arc<Mutex<Vec<Termination>>>;

/// Echoes; refuses `/private` with 401; records every end.
struct Echo {
    ends: Ends,
}

impl Handler for Echo {
    fn on_request(&mut self, request: &Request) -> Result<wsline::Acceptance, Response> {
        if request.path() == "/private" {
            return Err(Response::reject(401, "token required"));
        }
        Ok(wsline::Acceptance::default())
    }

    fn on_message(&mut self, conn: &mut Conn<'_>, message: Message) {
        if matches!(&message, Message::Text(t) if t.as_str() == "close please") {
            conn.close(CloseCode::NORMAL, "asked").expect("close");
            return;
        }
        conn.send(message).expect("send while open");
    }

    fn on_close(&mut self, _id: ConnId, termination: &Termination) {
        self.ends.lock().unwrap().push(termination.clone());
    }
}

struct Server {
    addr: SocketAddr,
    handle: ReactorHandle,
    ends: Ends,
    thread: Option<JoinHandle<std::io::Result<()>>>,
}

impl Server {
    fn start(config: ServerConfig) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        Self::start_on(listener, config)
    }

    fn start_on(listener: std::net::TcpListener, config: ServerConfig) -> Self {
        let addr = listener.local_addr().expect("addr");
        let ends = Ends::default();
        let gate = Gate::new(config.limits);
        let mut reactor =
            Reactor::new(listener, config, gate, Echo { ends: ends.clone() }).expect("reactor");
        let handle = reactor.handle();
        let thread = std::thread::spawn(move || reactor.run());
        Self {
            addr,
            handle,
            ends,
            thread: Some(thread),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// Waits (bounded) until the handler saw `n` ends and the loop holds
    /// no connection.
    async fn wait_ends(&self, n: usize) -> Vec<Termination> {
        within("the reactor to report the ends", async {
            loop {
                let ends = self.ends.lock().unwrap().clone();
                if ends.len() >= n && self.handle.connections() == 0 {
                    return ends;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
    }

    /// Shuts the loop down and waits for `run` to return.
    async fn stop(mut self) {
        self.handle.shutdown();
        let thread = self.thread.take().expect("running");
        within(
            "run() to return",
            tokio::task::spawn_blocking(move || thread.join()),
        )
        .await
        .expect("join")
        .expect("no panic")
        .expect("run ok");
    }
}

fn quiet() -> ServerConfig {
    let mut config = ServerConfig::default();
    config.protocol.ping_interval = None;
    // Clients a test leaves open hold the shutdown this long at most.
    config.protocol.close_timeout = Duration::from_secs(1);
    config
}

#[tokio::test]
async fn echoes_every_size_one_at_a_time_and_pipelined() {
    let server = Server::start(quiet());
    let (mut ws, _) = within("connect", wsline::connect(&server.url("/")))
        .await
        .expect("connect");
    // One at a time: large messages take the direct write (nothing queued).
    for m in sample_messages() {
        ws.send(m.clone()).await.expect("send");
        let back = within("echo", ws.recv())
            .await
            .expect("open")
            .expect("echo");
        assert_eq!(back, m);
    }
    // All at once, from another task: replies queue behind each other
    // (the copying path).
    let all = sample_messages();
    let (mut sink, mut stream) = ws.split();
    let sender = {
        let all = all.clone();
        tokio::spawn(async move {
            for m in all {
                sink.feed(m).await.expect("feed");
            }
            SinkExt::flush(&mut sink).await.expect("flush");
            sink
        })
    };
    for m in &all {
        let back = within("pipelined echo", stream.recv())
            .await
            .expect("open")
            .expect("echo");
        assert_eq!(&back, m);
    }
    let mut sink = sender.await.expect("sender");
    let closing = tokio::spawn(async move { sink.close(CloseCode::NORMAL, "done").await });
    assert!(within("the end", stream.recv()).await.is_none());
    closing.await.expect("join").expect("close");
    let ends = server.wait_ends(1).await;
    assert_eq!(ends[0].kind, TerminationKind::Clean);
    assert_eq!(ends[0].code(), CloseCode::NORMAL);
    server.stop().await;
}

#[tokio::test]
async fn request_in_pieces_and_a_frame_right_behind_it() {
    let server = Server::start(quiet());
    // The head in 7-byte pieces, each its own write.
    let mut raw = Raw::connect(server.addr).await;
    let request = upgrade_request(&server.addr.to_string(), &[]);
    for piece in request.as_bytes().chunks(7) {
        raw.send(piece).await;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let response = raw.read_response().await;
    assert_eq!(response.status, 101, "{}", response.head);
    assert_eq!(response.header("Sec-WebSocket-Accept"), Some(ACCEPT));
    raw.send(&client_frame(true, TEXT, b"pieces")).await;
    assert_eq!(raw.read_frame().await.payload, b"pieces");

    // The head and two frames in one write: the frames come out of the
    // same read as the head.
    let mut raw2 = Raw::connect(server.addr).await;
    let mut bytes = upgrade_request(&server.addr.to_string(), &[]).into_bytes();
    bytes.extend(client_frame(true, TEXT, b"right behind"));
    bytes.extend(client_frame(true, BINARY, &[1, 2, 3]));
    raw2.send(&bytes).await;
    assert_eq!(raw2.read_response().await.status, 101);
    assert_eq!(raw2.read_frame().await.payload, b"right behind");
    assert_eq!(raw2.read_frame().await.payload, [1, 2, 3]);
    server.stop().await;
}

#[tokio::test]
async fn refusals_get_their_http_status_and_the_loop_goes_on() {
    let mut config = quiet();
    config.allowed_origins = vec!["https://good.example".into()];
    config.max_head_size = 4096;
    let server = Server::start(config);
    let host = server.addr.to_string();
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (
            head(&[
                "GET / HTTP/1.1",
                &format!("Host: {host}"),
                "Upgrade: websocket",
                "Connection: Upgrade",
                &format!("Sec-WebSocket-Key: {KEY}"),
                "Sec-WebSocket-Version: 8",
            ])
            .into_bytes(),
            426,
        ),
        (
            upgrade_request(&host, &["Origin: https://evil.example"]).into_bytes(),
            403,
        ),
        (
            head(&["GET /private HTTP/1.1", &format!("Host: {host}")]).into_bytes(),
            400,
        ),
        (b"NOT HTTP\r\n\r\n".to_vec(), 400),
        (
            upgrade_request(&host, &[&format!("X-Big: {}", "a".repeat(5000))]).into_bytes(),
            431,
        ),
    ];
    for (request, status) in cases {
        let mut raw = Raw::connect(server.addr).await;
        raw.send(&request).await;
        let response = raw.read_response().await;
        assert_eq!(response.status, status, "{}", response.head);
    }
    // The application's refusal, through `on_request`.
    let mut raw = Raw::connect(server.addr).await;
    let mut request = upgrade_request(&host, &[]);
    request = request.replacen("GET /chat", "GET /private", 1);
    raw.send(request.as_bytes()).await;
    assert_eq!(raw.read_response().await.status, 401);
    // Still serving.
    let (mut ws, _) = within("connect", wsline::connect(&server.url("/")))
        .await
        .expect("connect");
    ws.send(Message::text("still here")).await.expect("send");
    assert_eq!(
        within("echo", ws.recv())
            .await
            .expect("open")
            .expect("echo"),
        Message::text("still here")
    );
    server.stop().await;
}

#[tokio::test]
async fn silent_client_is_dropped_at_the_handshake_timeout() {
    let mut config = quiet();
    config.handshake_timeout = Duration::from_millis(300);
    let server = Server::start(config);
    let mut raw = Raw::connect(server.addr).await;
    raw.send(b"GET / HTTP/1.1\r\n").await;
    raw.expect_eof().await;
    within("the slot to be freed", async {
        while server.handle.connections() > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    server.stop().await;
}

/// On a listener that defers accepts, each request is answered as its
/// connection is accepted: whole, in pieces, or with frames right behind
/// it; a connection that never speaks surfaces later and still meets the
/// handshake timeout.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_deferred_listener_serves_every_request_and_times_out_silent_ones() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    wsline::reactor::defer_accept(&listener, Duration::from_secs(1)).expect("defer");
    let mut config = quiet();
    config.handshake_timeout = Duration::from_millis(300);
    let server = Server::start_on(listener, config);
    let started = std::time::Instant::now();
    let mut silent = Raw::connect(server.addr).await;
    let silent_end = tokio::spawn(async move {
        silent.expect_eof().await;
        std::time::Instant::now()
    });
    // The library's client.
    let (mut ws, _) = within("connect", wsline::connect(&server.url("/")))
        .await
        .expect("connect");
    ws.send(Message::text("deferred")).await.expect("send");
    let echo = within("the echo", ws.recv()).await;
    assert_eq!(
        echo.expect("open").expect("echo"),
        Message::text("deferred")
    );
    // A request in two writes, then one with a frame in the same write.
    let request = upgrade_request(&server.addr.to_string(), &[]);
    let (a, b) = request.as_bytes().split_at(20);
    let mut pieces = Raw::connect(server.addr).await;
    pieces.send(a).await;
    pieces.send(b).await;
    assert_eq!(pieces.read_response().await.status, 101);
    let mut eager = Raw::connect(server.addr).await;
    let mut bytes = request.into_bytes();
    bytes.extend(client_frame(true, TEXT, b"right behind"));
    eager.send(&bytes).await;
    assert_eq!(eager.read_response().await.status, 101);
    let frame = eager.read_frame().await;
    assert_eq!(
        (frame.opcode, &frame.payload[..]),
        (TEXT, &b"right behind"[..])
    );
    // The silent one: handed over after about a second, then timed out.
    let ended = within("the silent connection to be dropped", silent_end)
        .await
        .expect("the silent client saw EOF");
    let waited = ended - started;
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(8),
        "dropped after {waited:?}: deferred about 1 s, then the 0.3 s handshake timeout"
    );
    server.stop().await;
}

#[tokio::test]
async fn ends_are_reported_clean_abnormal_and_server_initiated() {
    let server = Server::start(quiet());
    // The client closes: 1000, clean.
    let (mut ws, _) = within("connect", wsline::connect(&server.url("/")))
        .await
        .expect("connect");
    ws.close(CloseCode::NORMAL, "bye").await.expect("close");
    let ends = server.wait_ends(1).await;
    assert_eq!(
        (ends[0].kind, ends[0].code()),
        (TerminationKind::Clean, CloseCode::NORMAL)
    );
    // The client vanishes: 1006.
    let (raw, _) = Raw::handshake(server.addr, &[]).await;
    drop(raw);
    let ends = server.wait_ends(2).await;
    assert_eq!(ends[1].kind, TerminationKind::Abnormal);
    assert_eq!(ends[1].code(), CloseCode::ABNORMAL);
    // The handler closes: the client sees 1000 and the server closes TCP.
    let (mut raw, _) = Raw::handshake(server.addr, &[]).await;
    raw.send(&client_frame(true, TEXT, b"close please")).await;
    assert_eq!(raw.read_close().await.0, 1000);
    raw.send(&client_frame(true, CLOSE, &close_payload(1000, "")))
        .await;
    raw.expect_eof().await;
    let ends = server.wait_ends(3).await;
    assert_eq!(ends[2].kind, TerminationKind::Clean);
    // A protocol violation: 1002 to the client, reported as failed.
    let (mut raw, _) = Raw::handshake(server.addr, &[]).await;
    raw.send(&server_frame(true, TEXT, b"unmasked")).await;
    assert_eq!(raw.read_close().await.0, 1002);
    let ends = server.wait_ends(4).await;
    assert_eq!(ends[3].code(), CloseCode::PROTOCOL_ERROR);
    server.stop().await;
}

#[tokio::test]
async fn keepalive_fails_a_peer_that_never_answers() {
    let mut config = ServerConfig::default();
    config.protocol.ping_interval = Some(Duration::from_millis(100));
    config.protocol.ping_timeout = Some(Duration::from_millis(200));
    config.protocol.close_timeout = Duration::from_millis(300);
    let server = Server::start(config);
    let (mut raw, _) = Raw::handshake(server.addr, &[]).await;
    assert_eq!(raw.read_frame().await.opcode, PING);
    let (code, _) = raw.read_close().await;
    assert_eq!(code, 1011);
    let ends = server.wait_ends_some(1).await;
    assert_eq!(ends[0].kind, TerminationKind::KeepaliveTimeout);
    // A client that answers (the library's, while it reads) stays open
    // across many pings.
    let (mut ws, _) = within("connect", wsline::connect(&server.url("/")))
        .await
        .expect("connect");
    for i in 0..5 {
        let text = format!("alive {i}");
        ws.send(Message::text(text.clone())).await.expect("send");
        assert_eq!(
            within("echo", ws.recv())
                .await
                .expect("open")
                .expect("echo"),
            Message::text(text)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_never_reads_is_dropped_by_the_write_stall() {
    let mut config = quiet();
    config.write_timeout = Some(Duration::from_millis(300));
    let server = Server::start(config);
    let (mut raw, _) = Raw::handshake(server.addr, &[]).await;
    // Send until the server stops reading (its output to us is backed up,
    // and our reads never come); then it must drop us.
    let frame = client_frame(true, BINARY, &vec![7u8; 64 * 1024]);
    let flood = async {
        loop {
            if raw.stream.write_all(&frame).await.is_err() {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(WAIT, flood).await;
    let ends = server.wait_ends(1).await;
    assert_eq!(ends[0].kind, TerminationKind::Abnormal);
    server.stop().await;
}

#[tokio::test]
async fn shutdown_closes_open_connections_with_1001() {
    let server = Server::start(quiet());
    let (mut raw, _) = Raw::handshake(server.addr, &[]).await;
    let (mut ws, _) = within("connect", wsline::connect(&server.url("/")))
        .await
        .expect("connect");
    server.handle.shutdown();
    assert_eq!(raw.read_close().await.0, 1001);
    raw.send(&client_frame(true, CLOSE, &close_payload(1001, "")))
        .await;
    raw.expect_eof().await;
    // The library client answers the Close itself.
    assert!(within("the end", ws.recv()).await.is_none());
    let ends = server.wait_ends(2).await;
    assert!(ends.iter().all(|t| t.code() == CloseCode::GOING_AWAY));
    server.stop().await;
}

impl Server {
    /// Waits (bounded) until the handler saw `n` ends, whatever else is open.
    async fn wait_ends_some(&self, n: usize) -> Vec<Termination> {
        within("the reactor to report an end", async {
            loop {
                let ends = self.ends.lock().unwrap().clone();
                if ends.len() >= n {
                    return ends;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
    }
}
