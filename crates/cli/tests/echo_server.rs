//! `wsline echo` as a child process, against raw clients (hand-written
//! HTTP and frames) and the library's client.

#[path = "../../wsline/tests/support/mod.rs"]
mod support;

mod child;

use std::time::{Duration, Instant};

use child::{on_both_runtimes, spawn_echo, spawn_echo_exactly, Runtime};
use support::{
    client_frame, close_payload, frame_header, upgrade_request, within, Frame, Raw, BINARY, CLOSE,
    CONTINUATION, MASK, PING, PONG, TEXT,
};
use wsline::{ClientConfig, CloseCode, Message, TerminationKind};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

async fn connect(url: &str) -> wsline::WebSocket<wsline::MaybeTlsStream> {
    let mut config = ClientConfig::default();
    config.protocol.ping_interval = None;
    within("connect", wsline::connect_with(url, &config))
        .await
        .expect("handshake")
        .0
}

/// Reads one whole message (its frames up to FIN), skipping nothing: a
/// control frame in between fails the test.
async fn read_message(raw: &mut Raw) -> (u8, Vec<u8>) {
    let first = raw.read_frame().await;
    assert!(
        first.opcode == TEXT || first.opcode == BINARY,
        "expected a data frame, got {first:?}"
    );
    let mut payload = first.payload;
    let mut fin = first.fin;
    while !fin {
        let next: Frame = raw.read_frame().await;
        assert_eq!(next.opcode, CONTINUATION, "{next:?}");
        payload.extend(next.payload);
        fin = next.fin;
    }
    (first.opcode, payload)
}

// ------------------------------------------------------------- keepalive

async fn echo_keepalive_timeout_sends_ping_then_close_1011_then_closes_tcp(runtime: Runtime) {
    let server = spawn_echo(
        runtime,
        &["--ping-interval", "0.2", "--ping-timeout", "0.3"],
    )
    .await;
    let (mut raw, _) = Raw::handshake(server.addr, &[]).await;
    let ping = raw.read_frame().await;
    let ping_at = Instant::now();
    assert_eq!(ping.opcode, PING, "first frame: {ping:?}");
    let (code, _) = raw.read_close().await;
    assert_eq!(code, 1011);
    let waited = ping_at.elapsed();
    assert!(
        waited >= ms(250),
        "Close 1011 came {waited:?} after the Ping; --ping-timeout is 0.3"
    );
    raw.expect_eof().await;
}

// ----------------------------------------------------- handshake timeout

async fn echo_handshake_timeout_drops_a_stalled_client_while_serving_others(runtime: Runtime) {
    let server = spawn_echo(runtime, &["--handshake-timeout", "0.3"]).await;
    let started = Instant::now();
    let mut stalled = Raw::connect(server.addr).await;
    stalled
        .send(b"GET /chat HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: webs")
        .await;
    let dropped = tokio::spawn(async move {
        stalled.expect_eof().await;
        Instant::now()
    });

    // Meanwhile another client is served normally.
    let mut ws = connect(&server.url()).await;
    ws.send(Message::text("served")).await.expect("send");
    let echo = within("the echo", ws.recv()).await;
    assert_eq!(echo.expect("open").expect("echo"), Message::text("served"));
    let served_at = Instant::now();

    let dropped_at = within("the stalled client to be dropped", dropped)
        .await
        .expect("the stalled client saw EOF");
    let waited = dropped_at - started;
    assert!(
        waited >= ms(300),
        "dropped after {waited:?}; --handshake-timeout is 0.3"
    );
    assert!(
        served_at < dropped_at,
        "the other client was only served once the stalled one was dropped"
    );
    let termination = within("close", ws.close(CloseCode::NORMAL, ""))
        .await
        .expect("close");
    assert_eq!(termination.kind, TerminationKind::Clean);
}

// ------------------------------------------------------- deferred accepts

/// `--defer-accept`: clients are echoed as ever; a connection that sends
/// nothing surfaces after about a second and meets the handshake timeout.
#[cfg(target_os = "linux")]
async fn echo_with_deferred_accepts_serves_clients_and_still_drops_silent_ones(runtime: Runtime) {
    let server = spawn_echo(runtime, &["--defer-accept", "--handshake-timeout", "0.3"]).await;
    let started = Instant::now();
    let mut silent = Raw::connect(server.addr).await;
    let silent_end = tokio::spawn(async move {
        silent.expect_eof().await;
        Instant::now()
    });
    let mut ws = connect(&server.url()).await;
    ws.send(Message::binary(vec![7u8; 70_000]))
        .await
        .expect("send");
    let echo = within("the echo", ws.recv()).await;
    assert_eq!(
        echo.expect("open").expect("echo"),
        Message::binary(vec![7u8; 70_000])
    );
    let ended = within("the silent connection to be dropped", silent_end)
        .await
        .expect("the silent client saw EOF");
    let waited = ended - started;
    assert!(
        waited >= ms(300) && waited < Duration::from_secs(8),
        "dropped after {waited:?}: deferred about 1 s, then the 0.3 s handshake timeout"
    );
    let termination = within("close", ws.close(CloseCode::NORMAL, ""))
        .await
        .expect("close");
    assert_eq!(termination.kind, TerminationKind::Clean);
}

// ------------------------------------------------------ graceful shutdown

/// Client `i`: connects, checks one echo, then keeps reading in a task
/// (which answers the server's Close) until the end; the task returns
/// how the connection ended and fails on any further message.
async fn echoed_then_reading(url: &str, i: usize) -> tokio::task::JoinHandle<wsline::Termination> {
    let mut ws = connect(url).await;
    let text = format!("client {i}");
    ws.send(Message::text(text.clone())).await.expect("send");
    let echo = within("the echo", ws.recv()).await;
    assert_eq!(echo.expect("open").expect("echo"), Message::text(text));
    tokio::spawn(async move {
        if let Some(m) = ws.recv().await {
            panic!("expected the end after a 1001 Close, got {m:?}");
        }
        ws.termination().cloned().expect("a termination")
    })
}

async fn sigterm_closes_every_client_with_1001_and_exits_0_quickly(runtime: Runtime) {
    let mut server = spawn_echo(runtime, &["--close-timeout", "5"]).await;
    let mut readers = Vec::new();
    for i in 0..2 {
        readers.push(echoed_then_reading(&server.url(), i).await);
    }

    let signalled = Instant::now();
    server.terminate();
    for reader in readers {
        let termination = within("the server's Close", reader).await.expect("reader");
        assert_eq!(termination.kind, TerminationKind::Clean);
        let close = termination.received.expect("a Close from the server");
        assert_eq!(close.code, CloseCode::GOING_AWAY);
    }
    let (status, stderr) = server.wait().await;
    let took = signalled.elapsed();
    assert_eq!(
        status.code(),
        Some(0),
        "exit status {status}; stderr: {stderr}"
    );
    assert!(
        took < Duration::from_secs(2),
        "took {took:?} to exit although every client answered (close timeout 5 s)"
    );
}

#[tokio::test]
async fn several_event_loops_echo_on_one_port_and_all_stop_on_sigterm() {
    let mut server = spawn_echo_exactly(&[
        "--runtime",
        "reactor",
        "--threads",
        "3",
        "--close-timeout",
        "5",
    ])
    .await;
    // Enough clients that the kernel's hash gives every loop some.
    let mut readers = Vec::new();
    for i in 0..24 {
        readers.push(echoed_then_reading(&server.url(), i).await);
    }
    // Every client has been served, so every loop is running.
    let pid = server.child.id().expect("running");
    let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert!(
        threads >= 4,
        "{threads} threads: 3 loops and the main one expected"
    );
    server.terminate();
    for reader in readers {
        let termination = within("the server's Close", reader).await.expect("reader");
        let close = termination.received.expect("a Close from the server");
        assert_eq!(close.code, CloseCode::GOING_AWAY);
    }
    let (status, stderr) = server.wait().await;
    assert_eq!(status.code(), Some(0), "stderr: {stderr}");
}

/// The tests above name `--runtime` each time; without it `wsline echo`
/// runs on the reactor: `--threads 2` (reactor only, refused with
/// `--runtime tokio` below) is taken, clients are echoed, and SIGTERM
/// closes them with 1001.
#[tokio::test]
async fn the_default_runtime_is_the_reactor() {
    let mut server = spawn_echo_exactly(&["--threads", "2"]).await;
    let mut readers = Vec::new();
    for i in 0..8 {
        readers.push(echoed_then_reading(&server.url(), i).await);
    }
    server.terminate();
    for reader in readers {
        let termination = within("the server's Close", reader).await.expect("reader");
        let close = termination.received.expect("a Close from the server");
        assert_eq!(close.code, CloseCode::GOING_AWAY);
    }
    let (status, stderr) = server.wait().await;
    assert_eq!(status.code(), Some(0), "stderr: {stderr}");
}

#[tokio::test]
async fn threads_need_the_reactor_runtime() {
    let out = within(
        "wsline echo to refuse",
        tokio::process::Command::new(child::BIN)
            .args([
                "echo",
                "--listen",
                "127.0.0.1:0",
                "--runtime",
                "tokio",
                "--threads",
                "2",
            ])
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("run wsline echo");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stdout.is_empty(), "no `listening on` line");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--threads needs --runtime reactor"),
        "{stderr}"
    );
}

async fn sigterm_with_a_client_that_never_answers_exits_0_after_the_close_timeout(
    runtime: Runtime,
) {
    let mut server = spawn_echo(runtime, &["--close-timeout", "0.3"]).await;
    let (mut raw, _) = Raw::handshake(server.addr, &[]).await;
    raw.send(&client_frame(true, TEXT, b"hello")).await;
    let (opcode, payload) = read_message(&mut raw).await;
    assert_eq!((opcode, payload.as_slice()), (TEXT, &b"hello"[..]));

    let signalled = Instant::now();
    server.terminate();
    let (code, _) = raw.read_close().await;
    assert_eq!(code, 1001);
    // Never answer the Close.
    raw.expect_eof().await;
    let (status, stderr) = server.wait().await;
    let took = signalled.elapsed();
    assert_eq!(
        status.code(),
        Some(0),
        "exit status {status}; stderr: {stderr}"
    );
    assert!(
        took >= ms(300),
        "exited {took:?} after SIGTERM, before the 0.3 s close timeout"
    );
    assert!(
        took < ms(300) + Duration::from_secs(2),
        "took {took:?} to exit with --close-timeout 0.3"
    );
}

// ---------------------------------------------------------------- origin

async fn echo_refuses_a_disallowed_origin_with_403_and_a_text_body(runtime: Runtime) {
    let server = spawn_echo(runtime, &["--allow-origin", "https://good.example"]).await;
    let mut raw = Raw::connect(server.addr).await;
    let request = upgrade_request("127.0.0.1", &["Origin: https://evil.example"]);
    raw.send(request.as_bytes()).await;
    let response = raw.read_response().await;
    assert_eq!(response.status, 403, "{}", response.head);
    let content_type = response.header("Content-Type").unwrap_or_default();
    assert!(content_type.starts_with("text/plain"), "{content_type:?}");
    let body = String::from_utf8(response.body).expect("UTF-8 body");
    assert!(!body.trim().is_empty(), "an empty body");
    raw.expect_eof().await;
}

async fn echo_accepts_an_allowed_origin_with_101(runtime: Runtime) {
    let server = spawn_echo(runtime, &["--allow-origin", "https://good.example"]).await;
    Raw::handshake(server.addr, &["Origin: https://good.example"]).await;
}

async fn echo_accepts_a_request_without_origin_with_101(runtime: Runtime) {
    let server = spawn_echo(runtime, &["--allow-origin", "https://good.example"]).await;
    Raw::handshake(server.addr, &[]).await;
}

// ----------------------------------------------------------- subprotocol

async fn echo_chooses_its_preferred_subprotocol_among_those_offered(runtime: Runtime) {
    let server = spawn_echo(runtime, &["--protocol", "chat", "--protocol", "superchat"]).await;
    let (_, response) =
        Raw::handshake(server.addr, &["Sec-WebSocket-Protocol: superchat, chat"]).await;
    let chosen: Vec<&str> = response
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("Sec-WebSocket-Protocol"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(chosen, ["chat"]);
}

async fn echo_accepts_without_subprotocol_when_none_is_in_common(runtime: Runtime) {
    let server = spawn_echo(runtime, &["--protocol", "chat", "--protocol", "superchat"]).await;
    let (_, response) = Raw::handshake(server.addr, &["Sec-WebSocket-Protocol: other"]).await;
    assert_eq!(response.header("Sec-WebSocket-Protocol"), None);
}

// ------------------------------------------------------------------ 1009

async fn echo_closes_with_1009_on_the_header_of_an_oversized_frame(runtime: Runtime) {
    let server = spawn_echo(runtime, &["--max-message-size", "1000"]).await;
    let (mut raw, _) = Raw::handshake(server.addr, &[]).await;
    // Only the header of a masked binary frame announcing 1 GiB.
    raw.send(&frame_header(true, BINARY, 1 << 30, Some(MASK)))
        .await;
    let (code, _) = raw.read_close().await;
    assert_eq!(code, 1009);
    raw.expect_eof().await;
}

// ------------------------------------------------------- echo correctness

const SIZES: [usize; 6] = [0, 125, 126, 65535, 65536, 1 << 20];

async fn echo_returns_text_messages_of_every_length_class(runtime: Runtime) {
    let server = spawn_echo(runtime, &[]).await;
    let mut ws = connect(&server.url()).await;
    for size in SIZES {
        // Multi-byte characters included, cut to exactly `size` bytes.
        let mut text: String = "wsline é€ ".chars().cycle().take(size).collect();
        while text.len() > size {
            text.pop();
        }
        while text.len() < size {
            text.push('x');
        }
        ws.send(Message::text(text.clone())).await.expect("send");
        let echo = within("the echo", ws.recv()).await;
        let echo = echo.expect("open").expect("echo");
        assert!(echo.is_text(), "size {size}: not text");
        assert!(
            echo.as_text() == Some(text.as_str()),
            "size {size}: corrupted"
        );
    }
    within("close", ws.close(CloseCode::NORMAL, ""))
        .await
        .expect("close");
}

async fn echo_returns_binary_messages_of_every_length_class(runtime: Runtime) {
    let server = spawn_echo(runtime, &[]).await;
    let mut ws = connect(&server.url()).await;
    for size in SIZES {
        // Every byte value, so not UTF-8.
        let data: Vec<u8> = (0..size).map(|i| (i * 251 % 256) as u8).collect();
        ws.send(Message::binary(data.clone())).await.expect("send");
        let echo = within("the echo", ws.recv()).await;
        let echo = echo.expect("open").expect("echo");
        assert!(!echo.is_text(), "size {size}: not binary");
        assert!(echo.payload() == data.as_slice(), "size {size}: corrupted");
    }
    within("close", ws.close(CloseCode::NORMAL, ""))
        .await
        .expect("close");
}

async fn echo_reassembles_fragmented_messages_from_a_raw_client(runtime: Runtime) {
    let server = spawn_echo(runtime, &[]).await;
    let (mut raw, _) = Raw::handshake(server.addr, &[]).await;

    // Text in three fragments cut inside multi-byte characters, with a
    // Ping between two of them.
    let text = "héllo wörld €uro";
    let bytes = text.as_bytes();
    let (a, rest) = bytes.split_at(2); // inside 'é'
    let (b, c) = rest.split_at(rest.len() - 5); // inside '€'
    let mut burst = client_frame(false, TEXT, a);
    burst.extend(client_frame(true, PING, b"mid"));
    burst.extend(client_frame(false, CONTINUATION, b));
    burst.extend(client_frame(true, CONTINUATION, c));
    // Binary in three fragments of 1000, 70000 and 1 bytes.
    let data: Vec<u8> = (0..71_001u32).map(|i| (i % 253) as u8).collect();
    burst.extend(client_frame(false, BINARY, &data[..1000]));
    burst.extend(client_frame(false, CONTINUATION, &data[1000..71_000]));
    burst.extend(client_frame(true, CONTINUATION, &data[71_000..]));
    raw.send(&burst).await;

    let pong = raw.read_frame().await;
    assert_eq!((pong.opcode, pong.payload.as_slice()), (PONG, &b"mid"[..]));
    let (opcode, payload) = read_message(&mut raw).await;
    assert_eq!(opcode, TEXT);
    assert_eq!(String::from_utf8(payload).expect("UTF-8"), text);
    let (opcode, payload) = read_message(&mut raw).await;
    assert_eq!(opcode, BINARY);
    assert!(payload == data, "binary message corrupted");
}

async fn echo_answers_ping_with_pong_carrying_the_same_payload(runtime: Runtime) {
    let server = spawn_echo(runtime, &[]).await;
    let (mut raw, _) = Raw::handshake(server.addr, &[]).await;
    for payload in [Vec::new(), b"are you there?".to_vec(), vec![0xAB; 125]] {
        raw.send(&client_frame(true, PING, &payload)).await;
        let pong = raw.read_frame().await;
        assert_eq!(pong.opcode, PONG, "{pong:?}");
        assert_eq!(pong.payload, payload);
    }
}

async fn echo_answers_pipelined_messages_before_its_close_reply(runtime: Runtime) {
    let server = spawn_echo(runtime, &[]).await;
    let (mut raw, _) = Raw::handshake(server.addr, &[]).await;
    let mut burst = Vec::new();
    for text in ["one", "two", "three"] {
        burst.extend(client_frame(true, TEXT, text.as_bytes()));
    }
    burst.extend(client_frame(true, CLOSE, &close_payload(1000, "")));
    raw.send(&burst).await;
    for text in ["one", "two", "three"] {
        let (opcode, payload) = read_message(&mut raw).await;
        assert_eq!(
            (opcode, payload.as_slice()),
            (TEXT, text.as_bytes()),
            "expected the echo of {text:?} before the Close reply"
        );
    }
    let (code, _) = raw.read_close().await;
    assert_eq!(code, 1000);
    raw.expect_eof().await;
}

on_both_runtimes! {
    #[tokio::test] echo_keepalive_timeout_sends_ping_then_close_1011_then_closes_tcp,
    #[tokio::test] echo_handshake_timeout_drops_a_stalled_client_while_serving_others,
    #[cfg(target_os = "linux")] #[tokio::test] echo_with_deferred_accepts_serves_clients_and_still_drops_silent_ones,
    #[tokio::test] sigterm_closes_every_client_with_1001_and_exits_0_quickly,
    #[tokio::test] sigterm_with_a_client_that_never_answers_exits_0_after_the_close_timeout,
    #[tokio::test] echo_refuses_a_disallowed_origin_with_403_and_a_text_body,
    #[tokio::test] echo_accepts_an_allowed_origin_with_101,
    #[tokio::test] echo_accepts_a_request_without_origin_with_101,
    #[tokio::test] echo_chooses_its_preferred_subprotocol_among_those_offered,
    #[tokio::test] echo_accepts_without_subprotocol_when_none_is_in_common,
    #[tokio::test] echo_closes_with_1009_on_the_header_of_an_oversized_frame,
    #[tokio::test] echo_returns_text_messages_of_every_length_class,
    #[tokio::test] echo_returns_binary_messages_of_every_length_class,
    #[tokio::test] echo_reassembles_fragmented_messages_from_a_raw_client,
    #[tokio::test] echo_answers_ping_with_pong_carrying_the_same_payload,
    #[tokio::test] echo_answers_pipelined_messages_before_its_close_reply,
}
