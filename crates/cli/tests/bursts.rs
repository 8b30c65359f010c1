//! Many connections from one address against the built binary, `wsline
//! echo` and `wsline serve` with their default flags: a burst of 1,000
//! prompt clients from 127.0.0.1 is served whole (a load test, a NAT, a
//! carrier's gateway, a proxy), while handshakes that one address stalls
//! (slowloris) neither keep a client from another address out nor outlive
//! the handshake timeout.

#[path = "../../wsline/tests/support/mod.rs"]
mod support;

mod child;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use child::{on_both_runtimes, spawn_echo, spawn_serve, Runtime, Server};
use support::Raw;
use tokio::io::AsyncReadExt;
use tokio::net::TcpSocket;
use tokio::sync::Barrier;
use wsline::{ClientConfig, Message, WebSocket};

const BURST: usize = 1000;
/// More than half of the default handshake pool (4096): one address's share.
const STALLED: usize = 2500;

#[derive(Clone, Copy)]
enum Kind {
    /// `wsline echo` on one of its runtimes.
    Echo(Runtime),
    Hub,
}

impl Kind {
    async fn spawn(self, args: &[&str]) -> Server {
        match self {
            Kind::Echo(runtime) => spawn_echo(runtime, args).await,
            Kind::Hub => spawn_serve(args).await,
        }
    }

    fn url(self, addr: SocketAddr) -> String {
        match self {
            Kind::Echo(_) => format!("ws://{addr}/"),
            Kind::Hub => format!("ws://{addr}/ws"),
        }
    }

    /// One message each way: an echo, or the hub's welcome and a ping
    /// answered with a pong.
    async fn exchange<S>(self, ws: &mut WebSocket<S>, n: usize) -> Result<(), String>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let recv_text = |m: Option<Result<Message, wsline::Error>>| match m {
            Some(Ok(m)) => m.as_text().map(str::to_owned).ok_or("not text".to_owned()),
            other => Err(format!("{other:?}")),
        };
        match self {
            Kind::Echo(_) => {
                let text = format!("hello {n}");
                ws.send(Message::text(text.clone()))
                    .await
                    .map_err(|e| e.to_string())?;
                let back = recv_text(ws.recv().await)?;
                (back == text).then_some(()).ok_or(back)
            }
            Kind::Hub => {
                let welcome = recv_text(ws.recv().await)?;
                if !welcome.contains("\"welcome\"") {
                    return Err(welcome);
                }
                ws.send(Message::text(format!(r#"{{"op":"ping","id":{n}}}"#)))
                    .await
                    .map_err(|e| e.to_string())?;
                let pong = recv_text(ws.recv().await)?;
                let want = serde_json::json!({"op": "pong", "id": n});
                let got: serde_json::Value =
                    serde_json::from_str(&pong).map_err(|e| e.to_string())?;
                (got == want).then_some(()).ok_or(pong)
            }
        }
    }
}

/// Opens `BURST` connections at once from 127.0.0.1 (released together),
/// each sending its request at once and exchanging a message; every one
/// stays open until all are done. The failures, with why.
async fn burst(kind: Kind, addr: SocketAddr) -> Vec<String> {
    let barrier = Arc::new(Barrier::new(BURST));
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..BURST {
        let barrier = barrier.clone();
        let url = kind.url(addr);
        tasks.spawn(async move {
            barrier.wait().await;
            let (mut ws, _) = wsline::connect_with(&url, &ClientConfig::default())
                .await
                .map_err(|e| format!("client {n}: {e}"))?;
            kind.exchange(&mut ws, n)
                .await
                .map_err(|e| format!("client {n}: {e}"))?;
            Ok::<_, String>(ws)
        });
    }
    let mut open = Vec::new();
    let mut failures = Vec::new();
    let all = async {
        while let Some(done) = tasks.join_next().await {
            match done.expect("client task") {
                Ok(ws) => open.push(ws),
                Err(e) => failures.push(e),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), all)
        .await
        .expect("1,000 clients done within 60 s");
    assert_eq!(open.len() + failures.len(), BURST);
    failures
}

async fn a_burst_from_one_address_is_served_whole(kind: Kind) {
    let server = kind.spawn(&[]).await;
    let failures = burst(kind, server.addr).await;
    assert!(
        failures.is_empty(),
        "{} of {BURST} refused or failed, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
}

async fn echo_serves_1000_connections_opened_at_once_from_one_address(runtime: Runtime) {
    a_burst_from_one_address_is_served_whole(Kind::Echo(runtime)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_serves_1000_connections_opened_at_once_from_one_address() {
    a_burst_from_one_address_is_served_whole(Kind::Hub).await;
}

/// A TCP connection from `local` that sends half a request head and stalls.
async fn stalled_from(addr: SocketAddr, local: IpAddr) -> Raw {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::new(local, 0)).expect("bind");
    let tcp = socket.connect(addr).await.expect("connect");
    let mut raw = Raw::new(tcp);
    raw.send(b"GET / HTTP/1.1\r\nHost: x\r\nUpgr").await;
    raw
}

/// What a stalled connection ends with: a refusal at once (503), or the
/// server dropping it without an answer (the handshake timeout).
#[derive(Debug, PartialEq)]
enum End {
    Refused,
    Dropped,
}

/// Reads a stalled connection to its end: what it got and when.
async fn end_of(mut raw: Raw) -> (End, Instant) {
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), raw.stream.read_to_end(&mut got))
        .await
        .expect("the server ends every stalled connection within 30 s");
    let at = Instant::now();
    match read {
        Ok(_) if got.starts_with(b"HTTP/1.1 503") => (End::Refused, at),
        Ok(_) if got.is_empty() => (End::Dropped, at),
        // A reset after the server closed with our bytes unread.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && got.is_empty() => {
            (End::Dropped, at)
        }
        other => panic!("unexpected end of a stalled connection: {other:?} {got:?}"),
    }
}

/// `STALLED` connections from 127.0.0.1 stall their handshake; a client
/// from 127.0.0.2 still connects and exchanges a message at once, and the
/// stalled ones are dropped at the handshake timeout (or refused at once
/// past the address's share of the handshake pool).
async fn stalled_handshakes_from_one_address_keep_no_one_else_out(
    kind: Kind,
    args: &[&str],
    handshake_timeout: Duration,
) {
    let server = kind.spawn(args).await;
    let started = Instant::now();
    let mut stalled = Vec::with_capacity(STALLED);
    for _ in 0..STALLED {
        stalled.push(stalled_from(server.addr, IpAddr::from([127, 0, 0, 1])).await);
    }
    let ends: Vec<_> = stalled
        .into_iter()
        .map(|raw| tokio::spawn(end_of(raw)))
        .collect();

    // Another address: a full handshake and a message, at once.
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(IpAddr::from([127, 0, 0, 2]), 0))
        .expect("bind");
    let asked = Instant::now();
    let tcp = socket.connect(server.addr).await.expect("connect");
    let path = match kind {
        Kind::Echo(_) => "/",
        Kind::Hub => "/ws",
    };
    let host = server.addr.to_string();
    let exchanged = tokio::time::timeout(Duration::from_secs(5), async {
        let (mut ws, _) = wsline::client_handshake(tcp, &host, path, &ClientConfig::default())
            .await
            .map_err(|e| e.to_string())?;
        kind.exchange(&mut ws, 7).await
    })
    .await
    .expect("an answer within 5 s");
    exchanged.expect("a handshake and a message each way");
    let took = asked.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "the client from another address took {took:?}"
    );

    let mut refused = 0;
    for end in ends {
        let (end, at) = end.await.expect("reader");
        match end {
            End::Refused => refused += 1,
            End::Dropped => assert!(
                at.duration_since(started) + Duration::from_millis(100) >= handshake_timeout,
                "dropped after {:?}, before the handshake timeout",
                at.duration_since(started)
            ),
        }
    }
    assert!(
        refused >= STALLED - 2048,
        "one address holds at most half the pool: {refused} refused"
    );
    assert!(refused < STALLED, "some stalled handshakes were admitted");
}

async fn echo_stalled_handshakes_from_one_address_keep_no_one_else_out_and_are_dropped(
    runtime: Runtime,
) {
    // Long enough that opening all of them (seconds on a loaded machine)
    // ends before the first ones time out and free their slots: else
    // later ones are admitted in their place instead of refused.
    stalled_handshakes_from_one_address_keep_no_one_else_out(
        Kind::Echo(runtime),
        &["--handshake-timeout", "10"],
        Duration::from_secs(10),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_stalled_handshakes_from_one_address_keep_no_one_else_out_and_are_dropped() {
    // The hub's handshake timeout is the library's, 10 s.
    stalled_handshakes_from_one_address_keep_no_one_else_out(
        Kind::Hub,
        &[],
        Duration::from_secs(10),
    )
    .await;
}

on_both_runtimes! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    echo_serves_1000_connections_opened_at_once_from_one_address,
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    echo_stalled_handshakes_from_one_address_keep_no_one_else_out_and_are_dropped,
}
