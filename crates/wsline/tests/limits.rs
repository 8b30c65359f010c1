//! Connection-level defences over real sockets: the [`wsline::Gate`]'s caps
//! (open connections, handshakes in progress, handshakes per address), the
//! write-stall timeout and the idle timeout.
//!
//! The server under test is the accept loop the `Gate` docs describe, an
//! echo server; it reports each admission, refusal and end on a channel,
//! so the tests wait for events rather than for time.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use support::{listen, within, Raw, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use wsline::{ClientConfig, CloseCode, Gate, Limits, Message, Refusal, ServerConfig};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[derive(Debug)]
enum Event {
    Admitted,
    Refused(Refusal),
    /// A connection's task ended (its permits are dropped), with the
    /// error that ended it if any.
    Ended(Option<String>),
}

struct Server {
    addr: SocketAddr,
    gate: Gate,
    events: mpsc::UnboundedReceiver<Event>,
}

impl Server {
    async fn next(&mut self) -> Event {
        within("a server event", self.events.recv())
            .await
            .expect("the server is running")
    }

    async fn expect_admitted(&mut self) {
        match self.next().await {
            Event::Admitted => {}
            other => panic!("expected an admission, got {other:?}"),
        }
    }

    async fn expect_refused(&mut self) -> Refusal {
        match self.next().await {
            Event::Refused(r) => r,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    async fn expect_ended(&mut self) -> Option<String> {
        match self.next().await {
            Event::Ended(e) => e,
            other => panic!("expected a connection to end, got {other:?}"),
        }
    }
}

/// An echo server behind a gate with `limits`.
async fn serve(limits: Limits, config: ServerConfig) -> Server {
    let (listener, addr) = listen().await;
    let gate = Gate::new(limits);
    let (tx, events) = mpsc::unbounded_channel();
    let server_gate = gate.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, peer)) = listener.accept().await else {
                return;
            };
            let handshake = match server_gate.admit(peer.ip()) {
                Ok(permit) => permit,
                Err(refusal) => {
                    refusal.refuse_now(tcp);
                    let _ = tx.send(Event::Refused(refusal));
                    continue;
                }
            };
            let _ = tx.send(Event::Admitted);
            let (config, tx) = (config.clone(), tx.clone());
            tokio::spawn(async move {
                let mut open = None;
                let accepted = wsline::accept_with(tcp, &config, |_| {
                    open = Some(handshake.open().map_err(|r| r.response())?);
                    Ok(wsline::Acceptance::default())
                });
                let end = match accepted.await {
                    Ok(mut ws) => loop {
                        match ws.recv().await {
                            Some(Ok(m)) => {
                                if let Err(e) = ws.send(m).await {
                                    break Some(e.to_string());
                                }
                            }
                            Some(Err(e)) => break Some(e.to_string()),
                            None => break None,
                        }
                    },
                    Err(e) => Some(e.to_string()),
                };
                drop(open);
                let _ = tx.send(Event::Ended(end));
            });
        }
    });
    Server { addr, gate, events }
}

fn limits(connections: usize, handshakes: usize, per_ip: usize) -> Limits {
    let mut l = Limits::default();
    l.max_connections = connections;
    l.max_handshakes = handshakes;
    l.max_connecting_per_ip = per_ip;
    l
}

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

/// A client that sent half a request: it holds a handshake slot.
async fn stalled_from(addr: SocketAddr, local: IpAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::new(local, 0)).expect("bind");
    let mut tcp = within("connect", socket.connect(addr))
        .await
        .expect("connect");
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nUpgr")
        .await
        .expect("write");
    tcp
}

/// A refused connection reads a 503 with `Retry-After`, then EOF, without
/// having sent anything.
async fn expect_503_at_once(addr: SocketAddr) {
    let mut raw = Raw::connect(addr).await;
    let response = raw.read_response().await;
    assert_eq!(response.status, 503, "{}", response.head);
    assert_eq!(response.header("Retry-After"), Some("1"));
    raw.expect_eof().await;
}

fn localhost() -> IpAddr {
    IpAddr::from([127, 0, 0, 1])
}

#[tokio::test]
async fn the_connection_past_max_connections_gets_503_and_one_is_served_once_a_slot_frees() {
    let mut server = serve(limits(2, 16, 0), ServerConfig::default()).await;
    let mut a = connect(server.addr).await;
    server.expect_admitted().await;
    let mut b = connect(server.addr).await;
    server.expect_admitted().await;

    let refused = within(
        "the third handshake",
        wsline::connect_with(&format!("ws://{}/", server.addr), &ClientConfig::default()),
    )
    .await
    .expect_err("the third connection is refused");
    assert_eq!(refused.http_status(), Some(503), "{refused}");
    server.expect_admitted().await;
    assert!(
        server.expect_ended().await.is_some(),
        "the refused handshake"
    );
    assert_eq!(server.gate.stats().refused, 1);

    // The two open ones are still served; one leaves, and a new one fits.
    echoes(&mut a, "a").await;
    echoes(&mut b, "b").await;
    within("close", a.close(CloseCode::NORMAL, ""))
        .await
        .expect("close");
    assert_eq!(server.expect_ended().await, None, "a clean close");
    let mut c = connect(server.addr).await;
    server.expect_admitted().await;
    echoes(&mut c, "c").await;
    assert_eq!(server.gate.stats().open, 2);
}

#[tokio::test]
async fn the_handshake_cap_refuses_at_once_while_stalled_clients_hold_it_and_serves_after_one_leaves(
) {
    let mut config = ServerConfig::default();
    // Long enough that the stalled clients hold their slots for the test.
    config.handshake_timeout = Duration::from_secs(30);
    let mut server = serve(limits(100, 2, 0), config).await;
    let first = stalled_from(server.addr, localhost()).await;
    server.expect_admitted().await;
    let _second = stalled_from(server.addr, localhost()).await;
    server.expect_admitted().await;

    let started = Instant::now();
    expect_503_at_once(server.addr).await;
    assert!(
        matches!(server.expect_refused().await, Refusal::Handshakes(2)),
        "refused for the handshake cap"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the refusal waited {:?}",
        started.elapsed()
    );

    // One stalled client leaves: its slot frees, and a good client is served.
    drop(first);
    assert!(
        server.expect_ended().await.is_some(),
        "the stalled one ends"
    );
    let mut good = connect(server.addr).await;
    server.expect_admitted().await;
    echoes(&mut good, "served").await;
    let stats = server.gate.stats();
    assert_eq!((stats.open, stats.handshakes), (1, 1), "{stats:?}");
}

#[tokio::test]
async fn two_stalled_handshakes_cap_one_address_but_not_another_address() {
    let mut config = ServerConfig::default();
    config.handshake_timeout = Duration::from_secs(30);
    let mut limits = limits(100, 100, 2);
    limits.stalled_after = Duration::from_millis(200);
    let mut server = serve(limits, config).await;
    let first = stalled_from(server.addr, localhost()).await;
    server.expect_admitted().await;
    let _second = stalled_from(server.addr, localhost()).await;
    server.expect_admitted().await;
    // Not stalled yet: a third from the same address gets in at once.
    let early = stalled_from(server.addr, localhost()).await;
    server.expect_admitted().await;
    drop(early);
    assert!(server.expect_ended().await.is_some(), "ends unfinished");

    // Once the two have been in progress for `stalled_after`, the address
    // gets no more. (The wait is the condition under test.)
    tokio::time::sleep(limits.stalled_after + Duration::from_millis(50)).await;
    expect_503_at_once(server.addr).await;
    match server.expect_refused().await {
        Refusal::ConnectingPerIp { ip, limit } => assert_eq!((ip, limit), (localhost(), 2)),
        other => panic!("refused for {other:?}"),
    }
    // Another address (all of 127/8 is loopback on Linux) still gets in.
    let other = stalled_from(server.addr, IpAddr::from([127, 0, 0, 2])).await;
    server.expect_admitted().await;
    assert_eq!(server.gate.stats().addresses, 2);

    // A connection that is open no longer counts as CONNECTING.
    drop(first);
    assert!(server.expect_ended().await.is_some());
    let mut ws = connect(server.addr).await;
    server.expect_admitted().await;
    echoes(&mut ws, "open").await;
    let _third = stalled_from(server.addr, localhost()).await;
    server.expect_admitted().await;
    drop(other);
    assert!(server.expect_ended().await.is_some());
    assert_eq!(
        server.gate.stats().addresses,
        1,
        "the map forgets an address"
    );
}

/// A client that sends big messages and never reads: the echo server's
/// output backs up, it stops reading, and after the write timeout it drops
/// the client, reporting a write timeout, while still serving others.
#[tokio::test]
async fn a_client_that_never_reads_is_dropped_after_the_write_timeout_and_others_are_served() {
    let mut config = ServerConfig::default();
    config.write_timeout = Some(ms(300));
    let mut server = serve(limits(100, 100, 0), config).await;

    let (mut hog, _) = Raw::handshake(server.addr, &[]).await;
    server.expect_admitted().await;
    let started = Instant::now();
    let payload = vec![0x42u8; 64 * 1024];
    let frame = support::client_frame(true, support::BINARY, &payload);
    // Writes until the server drops the connection: a write fails (reset)
    // once the server is gone. Bounded: the server reads nothing more past
    // its output limit, so this loop blocks in a write until the drop.
    let hog_task = tokio::spawn(async move {
        let mut written = 0usize;
        loop {
            match hog.stream.write_all(&frame).await {
                Ok(()) => written += frame.len(),
                Err(e) => return (written, e.kind()),
            }
        }
    });

    // Meanwhile another client is served.
    let mut good = connect(server.addr).await;
    server.expect_admitted().await;
    echoes(&mut good, "still served").await;

    let ended = server
        .expect_ended()
        .await
        .expect("the hog ends with an error");
    let took = started.elapsed();
    assert!(ended.contains("took no data"), "ended with: {ended}");
    assert!(
        took >= ms(300),
        "dropped after {took:?}; the timeout is 300 ms"
    );
    let (written, kind) = within("the hog's write to fail", hog_task)
        .await
        .expect("task");
    assert!(
        matches!(
            kind,
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
        ),
        "the hog's write failed with {kind:?}"
    );
    // The server stopped reading instead of buffering: what the hog got in
    // is what the kernel buffers hold plus the server's bounded output.
    assert!(
        written < 64 << 20,
        "the hog wrote {written} bytes before the drop"
    );
    echoes(&mut good, "and after").await;
}

#[tokio::test]
async fn write_timeout_none_keeps_a_blocked_writer_waiting() {
    let (listener, addr) = listen().await;
    let mut config = ServerConfig::default();
    config.write_timeout = None;
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        let mut ws = wsline::accept(tcp, &config).await.expect("handshake");
        loop {
            ws.send(Message::binary(vec![1u8; 64 * 1024])).await?;
        }
        #[allow(unreachable_code)]
        Ok::<(), wsline::Error>(())
    });
    let (raw, _) = Raw::handshake(addr, &[]).await;
    // Well past a stall of 300 ms, the server still waits on its write.
    tokio::time::sleep(ms(800)).await;
    assert!(
        !server.is_finished(),
        "the writer gave up without a timeout"
    );
    drop(raw);
    let result = within("the server's write to fail", server)
        .await
        .expect("task");
    assert!(matches!(result, Err(wsline::Error::Io(_))), "{result:?}");
}

#[tokio::test]
async fn idle_timeout_closes_a_silent_client_with_1001_but_not_a_talking_one() {
    let mut config = ServerConfig::default();
    config.idle_timeout = Some(ms(400));
    config.protocol.ping_interval = Some(ms(100)); // Pongs do not count.
    let mut server = serve(limits(100, 100, 0), config).await;

    let started = Instant::now();
    let mut silent = connect(server.addr).await;
    server.expect_admitted().await;
    let mut talking = connect(server.addr).await;
    server.expect_admitted().await;
    let silent_task = tokio::spawn(async move {
        let end = within("the idle close", silent.recv()).await;
        (end.is_none(), silent.termination().cloned(), Instant::now())
    });
    // The talking client sends every 150 ms for 900 ms: never idle 400 ms.
    for i in 0..6 {
        echoes(&mut talking, &format!("m{i}")).await;
        tokio::time::sleep(ms(150)).await;
    }
    let (normal_end, termination, at) = within("the silent client", silent_task)
        .await
        .expect("task");
    assert!(normal_end, "a 1001 close is a normal end for the client");
    let termination = termination.expect("terminated");
    assert_eq!(termination.code(), CloseCode::GOING_AWAY);
    assert_eq!(termination.reason(), "idle timeout");
    let waited = at - started;
    assert!(
        waited >= ms(400) && waited < WAIT,
        "closed after {waited:?}"
    );
    assert_eq!(server.expect_ended().await, None, "a clean close");
    echoes(&mut talking, "still open").await;
}

/// The refusal path costs no task and no wait, so a flood of connections
/// past the cap leaves the server serving.
#[tokio::test]
async fn a_flood_past_the_handshake_cap_is_refused_cheaply_and_the_server_keeps_serving() {
    let mut config = ServerConfig::default();
    config.handshake_timeout = Duration::from_secs(30);
    let mut server = serve(limits(100, 1, 0), config).await;
    let mut ws = connect(server.addr).await;
    server.expect_admitted().await;
    let stalled = stalled_from(server.addr, localhost()).await;
    server.expect_admitted().await;
    let mut flood = Vec::new();
    for _ in 0..200 {
        flood.push(
            within("connect", TcpStream::connect(server.addr))
                .await
                .expect("connect"),
        );
    }
    for _ in 0..200 {
        assert!(matches!(
            server.expect_refused().await,
            Refusal::Handshakes(1)
        ));
    }
    for mut tcp in flood {
        let mut buf = Vec::new();
        // A 503, then EOF (or a reset, for a request the server never read).
        let _ = within("the refusal", tcp.read_to_end(&mut buf)).await;
        assert!(buf.is_empty() || buf.starts_with(b"HTTP/1.1 503"));
    }
    echoes(&mut ws, "served through the flood").await;
    drop(stalled);
    assert!(server.expect_ended().await.is_some());
    assert_eq!(server.gate.stats().handshakes, 0);
}
