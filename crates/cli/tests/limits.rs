//! The connection-level defences of the `wsline` binary, as child
//! processes over real sockets: `wsline echo --max-connections`,
//! `--max-handshakes`, `--max-connecting-per-ip`, `--write-timeout`, and
//! the same keys in the TOML file of `wsline serve`; `wsline serve
//! --handshake-timeout` and its key.

#[path = "../../wsline/tests/support/mod.rs"]
mod support;

mod child;

use std::net::{IpAddr, SocketAddr};
use std::process::Stdio;
use std::time::{Duration, Instant};

use child::{on_both_runtimes, spawn_echo, spawn_serve, Runtime, BIN};
use support::{client_frame, upgrade_request, within, Raw, BINARY};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio::process::Command;
use wsline::{ClientConfig, Message};

async fn connect(addr: SocketAddr) -> wsline::WebSocket<wsline::MaybeTlsStream> {
    let (ws, _) = within(
        "connect",
        wsline::connect_with(&format!("ws://{addr}/"), &ClientConfig::default()),
    )
    .await
    .expect("handshake");
    ws
}

async fn echoes(ws: &mut wsline::WebSocket<wsline::MaybeTlsStream>, text: &str) {
    ws.send(Message::text(text)).await.expect("send");
    let back = within("the echo", ws.recv()).await;
    assert_eq!(back.expect("open").expect("echo"), Message::text(text));
}

/// Half a request from `local`: holds a handshake slot until the
/// handshake timeout.
async fn stalled_from(addr: SocketAddr, local: IpAddr) -> Raw {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::new(local, 0)).expect("bind");
    let tcp = within("connect", socket.connect(addr))
        .await
        .expect("connect");
    let mut raw = Raw::new(tcp);
    raw.send(b"GET / HTTP/1.1\r\nHost: x\r\nUpgr").await;
    raw
}

/// Connects, sends nothing, and expects a 503 at once, then EOF.
async fn expect_503_at_once(addr: SocketAddr) -> String {
    let started = Instant::now();
    let mut raw = Raw::connect(addr).await;
    let response = raw.read_response().await;
    assert_eq!(response.status, 503, "{}", response.head);
    raw.expect_eof().await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the refusal took {:?}",
        started.elapsed()
    );
    String::from_utf8_lossy(&response.body).into_owned()
}

fn localhost() -> IpAddr {
    IpAddr::from([127, 0, 0, 1])
}

async fn echo_max_connections_answers_503_past_the_cap_and_keeps_serving_the_open_one(
    runtime: Runtime,
) {
    let server = spawn_echo(runtime, &["--max-connections", "1"]).await;
    let mut first = connect(server.addr).await;
    let refused = within(
        "the second handshake",
        wsline::connect_with(&server.url(), &ClientConfig::default()),
    )
    .await
    .expect_err("refused");
    assert_eq!(refused.http_status(), Some(503), "{refused}");
    echoes(&mut first, "still served").await;
}

async fn echo_max_handshakes_refuses_at_once_while_a_stalled_client_holds_the_slot(
    runtime: Runtime,
) {
    let server = spawn_echo(
        runtime,
        &["--max-handshakes", "1", "--handshake-timeout", "0.5"],
    )
    .await;
    let mut stalled = stalled_from(server.addr, localhost()).await;
    let body = expect_503_at_once(server.addr).await;
    assert!(body.contains("too many handshakes"), "{body}");
    // The handshake timeout frees the slot; then a good client is served.
    stalled.expect_eof().await;
    let mut good = connect(server.addr).await;
    echoes(&mut good, "served").await;
}

async fn echo_max_connecting_per_ip_refuses_a_second_from_an_address_with_a_stalled_handshake_only(
    runtime: Runtime,
) {
    let server = spawn_echo(
        runtime,
        &["--max-connecting-per-ip", "1", "--handshake-timeout", "5"],
    )
    .await;
    let mut stalled = stalled_from(server.addr, localhost()).await;
    // A handshake counts as stalled after 3 s in progress (the wait
    // is the condition under test).
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let body = expect_503_at_once(server.addr).await;
    assert!(body.contains("RFC 6455"), "{body}");
    // Another address gets in while 127.0.0.1 is at its cap.
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(IpAddr::from([127, 0, 0, 2]), 0))
        .expect("bind");
    let tcp = within("connect", socket.connect(server.addr))
        .await
        .expect("connect");
    let mut other = Raw::new(tcp);
    other
        .send(upgrade_request(&server.addr.to_string(), &[]).as_bytes())
        .await;
    let response = other.read_response().await;
    assert_eq!(response.status, 101, "{}", response.head);
    stalled.expect_eof().await;
    let mut good = connect(server.addr).await;
    echoes(&mut good, "served").await;
}

fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

/// Clients that send 64 KiB messages and never read their echoes: each is
/// dropped once its output has waited `--write-timeout`, the server keeps
/// serving others, and its memory does not grow with what they sent.
async fn echo_write_timeout_drops_clients_that_never_read_and_the_process_does_not_grow(
    runtime: Runtime,
) {
    let server = spawn_echo(runtime, &["--write-timeout", "0.3"]).await;
    let pid = server.child.id().expect("running");
    let mut good = connect(server.addr).await;
    echoes(&mut good, "warm").await;
    let before = rss_kb(pid);

    let frame = client_frame(true, BINARY, &vec![0x42u8; 64 * 1024]);
    let mut hogs = Vec::new();
    let started = Instant::now();
    for _ in 0..4 {
        let (raw, _) = Raw::handshake(server.addr, &[]).await;
        let mut tcp = raw.stream;
        let frame = frame.clone();
        // Writes until the server drops the connection (the write fails).
        hogs.push(tokio::spawn(async move {
            let mut written = 0usize;
            loop {
                match tcp.write_all(&frame).await {
                    Ok(()) => written += frame.len(),
                    Err(e) => return (written, e.kind()),
                }
            }
        }));
    }
    echoes(&mut good, "served meanwhile").await;
    for hog in hogs {
        let (written, kind) = within("a hog to be dropped", hog).await.expect("task");
        assert!(
            matches!(
                kind,
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ),
            "{kind:?} after {written} bytes"
        );
    }
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(300), "dropped after {took:?}");
    echoes(&mut good, "served after").await;
    let after = rss_kb(pid);
    assert!(
        after < before + 16 * 1024,
        "RSS grew from {before} kB to {after} kB"
    );
}

#[tokio::test]
async fn serve_takes_the_caps_from_its_config_file() {
    let path = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("limits-{}.toml", std::process::id()));
    std::fs::write(
        &path,
        "max_handshakes = 1\nmax_connecting_per_ip = 4\nwrite_timeout = 0.5\nidle_timeout = 0\n",
    )
    .expect("write the config file");
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&path)
        .env_remove("WSLINE_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn wsline serve");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let line = within("the listening line", lines.next_line())
        .await
        .expect("read")
        .expect("a line");
    let addr: SocketAddr = line
        .strip_prefix("listening on http://")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    let mut stalled = within("connect", TcpStream::connect(addr))
        .await
        .expect("connect");
    stalled
        .write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nUp")
        .await
        .expect("write");
    let body = expect_503_at_once(addr).await;
    assert!(
        body.contains("too many handshakes in progress (1)"),
        "{body}"
    );
    drop(stalled);
    // Once the stalled one is gone, /healthz answers (the slot is free).
    let reply = within("healthz", async {
        loop {
            let mut tcp = TcpStream::connect(addr).await.expect("connect");
            let _ = tcp
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await;
            let mut buf = Vec::new();
            let _ = tcp.read_to_end(&mut buf).await;
            if buf.starts_with(b"HTTP/1.1 200") {
                return buf;
            }
        }
    })
    .await;
    assert!(reply.starts_with(b"HTTP/1.1 200"));
    let _ = std::fs::remove_file(&path);
}

/// How long `wsline serve ARGS` takes to drop a connection that sent half
/// a request head and stalls (the handshake timeout).
async fn serve_drops_a_stalled_half_request_after(args: &[&str]) -> Duration {
    let server = spawn_serve(args).await;
    let started = Instant::now();
    let mut stalled = stalled_from(server.addr, localhost()).await;
    // Meanwhile a prompt request is answered.
    let mut tcp = within("connect", TcpStream::connect(server.addr))
        .await
        .expect("connect");
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut reply = Vec::new();
    within("healthz", tcp.read_to_end(&mut reply))
        .await
        .expect("read");
    assert!(reply.starts_with(b"HTTP/1.1 200"), "{reply:?}");
    // Dropped without an answer (the default would take 10 s, past the
    // bound of `within`).
    stalled.expect_closed().await;
    started.elapsed()
}

#[tokio::test]
async fn serve_handshake_timeout_drops_a_stalled_half_request_from_the_flag_or_the_file() {
    let path = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("handshake-timeout-{}.toml", std::process::id()));
    std::fs::write(&path, "handshake_timeout = 0.5\n").expect("write the config file");
    let file = path.to_str().expect("utf-8 path");
    let from_file = serve_drops_a_stalled_half_request_after(&["--config", file]).await;
    assert!(
        (Duration::from_millis(450)..Duration::from_secs(3)).contains(&from_file),
        "handshake_timeout = 0.5: dropped after {from_file:?}"
    );
    // The flag wins over the file.
    std::fs::write(&path, "handshake_timeout = 30\n").expect("write the config file");
    let from_flag =
        serve_drops_a_stalled_half_request_after(&["--config", file, "--handshake-timeout", "1"])
            .await;
    assert!(
        (Duration::from_millis(950)..Duration::from_secs(4)).contains(&from_flag),
        "--handshake-timeout 1 over handshake_timeout = 30: dropped after {from_flag:?}"
    );
    let _ = std::fs::remove_file(&path);
}

on_both_runtimes! {
    #[tokio::test] echo_max_connections_answers_503_past_the_cap_and_keeps_serving_the_open_one,
    #[tokio::test] echo_max_handshakes_refuses_at_once_while_a_stalled_client_holds_the_slot,
    #[tokio::test] echo_max_connecting_per_ip_refuses_a_second_from_an_address_with_a_stalled_handshake_only,
    #[tokio::test] echo_write_timeout_drops_clients_that_never_read_and_the_process_does_not_grow,
}
