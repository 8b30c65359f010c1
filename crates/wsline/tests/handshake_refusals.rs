//! Every refusal of the server handshake over a raw socket, on both server
//! runtimes (`wsline::accept` on tokio, and `wsline::reactor`): the
//! status, a short text/plain body, and the connection closed afterwards.
//! Requests are written by hand, so the server is tested independently of
//! the library's client. Each test runs twice, as `tokio_accept::NAME` and
//! `reactor::NAME`.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::{head, listen, upgrade_request, within, HttpResponse, Raw, ACCEPT, KEY};
use tokio::task::JoinHandle;
use wsline::proto::handshake::HandshakeError;
use wsline::reactor::{Conn, Handler, Reactor, ReactorHandle};
use wsline::{Gate, Message, Request, Response, ServerConfig};

/// The server side under test.
#[derive(Clone, Copy, Debug)]
enum Runtime {
    /// `wsline::accept` on a tokio task.
    TokioAccept,
    /// A `wsline::reactor::Reactor` on a thread of its own.
    Reactor,
}

/// What the reactor's handler saw: requests past the RFC checks, and
/// connections opened.
#[derive(Default)]
struct Seen {
    requests: AtomicUsize,
    opened: AtomicUsize,
}

struct Recorder(Arc<Seen>);

impl Handler for Recorder {
    fn on_request(&mut self, _request: &Request) -> Result<wsline::Acceptance, Response> {
        self.0.requests.fetch_add(1, Ordering::SeqCst);
        Ok(wsline::Acceptance::default())
    }

    fn on_open(&mut self, _conn: &mut Conn<'_>) {
        self.0.opened.fetch_add(1, Ordering::SeqCst);
    }

    fn on_message(&mut self, _conn: &mut Conn<'_>, _message: Message) {}
}

/// A running server: the tokio task that handles one connection with
/// `accept`, or a reactor loop.
enum Served {
    TokioAccept(JoinHandle<Result<(), wsline::Error>>),
    Reactor {
        handle: ReactorHandle,
        seen: Arc<Seen>,
        thread: std::thread::JoinHandle<std::io::Result<()>>,
    },
}

/// A server on `runtime` with `config`, its close timeout cut to 1 s (the
/// reactor's shutdown waits that long for a client that keeps its
/// connection open; the handshake does not use it).
async fn serve_one(runtime: Runtime, mut config: ServerConfig) -> (SocketAddr, Served) {
    config.protocol.close_timeout = Duration::from_secs(1);
    match runtime {
        Runtime::TokioAccept => {
            let (listener, addr) = listen().await;
            let server = tokio::spawn(async move {
                let (tcp, _) = listener.accept().await.expect("accept");
                wsline::accept(tcp, &config).await.map(|_| ())
            });
            (addr, Served::TokioAccept(server))
        }
        Runtime::Reactor => {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let addr = listener.local_addr().expect("addr");
            let seen = Arc::new(Seen::default());
            let gate = Gate::new(config.limits);
            let mut reactor =
                Reactor::new(listener, config, gate, Recorder(seen.clone())).expect("reactor");
            let handle = reactor.handle();
            let thread = std::thread::spawn(move || reactor.run());
            (
                addr,
                Served::Reactor {
                    handle,
                    seen,
                    thread,
                },
            )
        }
    }
}

impl Served {
    /// How the handshake ended: `Ok` if accepted; the tokio path's error,
    /// or for the reactor `Err(None)` when its handler saw neither the
    /// request nor an open connection. Stops the reactor.
    async fn outcome(self) -> Result<(), Option<HandshakeError>> {
        match self {
            Served::TokioAccept(server) => {
                match within("the server", server).await.expect("task") {
                    Ok(()) => Ok(()),
                    Err(wsline::Error::Handshake(e)) => Err(Some(e)),
                    Err(other) => panic!("expected a handshake error, got {other:?}"),
                }
            }
            Served::Reactor {
                handle,
                seen,
                thread,
            } => {
                // The 101 may reach the client before `on_open` runs:
                // count once the loop has stopped.
                handle.shutdown();
                within(
                    "the reactor to stop",
                    tokio::task::spawn_blocking(move || thread.join()),
                )
                .await
                .expect("join")
                .expect("no panic")
                .expect("run ok");
                let requests = seen.requests.load(Ordering::SeqCst);
                let opened = seen.opened.load(Ordering::SeqCst);
                match (requests, opened) {
                    (1, 1) => Ok(()),
                    (0, 0) => Err(None),
                    other => panic!("(requests, opened) = {other:?}: want (1, 1) or (0, 0)"),
                }
            }
        }
    }

    /// Expects the handshake to have been accepted.
    async fn accepted(self) {
        if let Err(e) = self.outcome().await {
            panic!("expected an accepted handshake, got {e:?}");
        }
    }

    /// Expects a refusal; the tokio path's error (`None` on the reactor).
    async fn refused(self) -> Option<HandshakeError> {
        match self.outcome().await {
            Ok(()) => panic!("expected a refusal, the handshake was accepted"),
            Err(e) => e,
        }
    }
}

/// Sends `request`, expects a refusal with `status`, checks its body and
/// that the server closed the connection. Returns the response and the
/// server's error (tokio only; the reactor's handler must have seen
/// nothing).
async fn expect_refusal(
    runtime: Runtime,
    request: &str,
    status: u16,
) -> (HttpResponse, Option<HandshakeError>) {
    let (addr, server) = serve_one(runtime, ServerConfig::default()).await;
    let mut raw = Raw::connect(addr).await;
    raw.send(request.as_bytes()).await;
    let response = raw.read_response().await;
    assert_refusal(&response, status);
    raw.expect_eof().await;
    let error = server.refused().await;
    if let Some(error) = &error {
        assert_eq!(error.status(), status, "{error}");
    }
    (response, error)
}

/// The tokio path's error is `want`; the reactor reports none.
fn assert_error(runtime: Runtime, error: Option<HandshakeError>, want: HandshakeError) {
    match runtime {
        Runtime::TokioAccept => assert_eq!(error, Some(want)),
        Runtime::Reactor => assert_eq!(error, None),
    }
}

fn assert_refusal(response: &HttpResponse, status: u16) {
    assert_eq!(response.status, status, "{}", response.head);
    let content_type = response.header("Content-Type").unwrap_or_default();
    assert!(
        content_type.starts_with("text/plain"),
        "Content-Type {content_type:?}"
    );
    let body = std::str::from_utf8(&response.body).expect("a UTF-8 body");
    assert!(
        !body.trim().is_empty() && body.len() < 512,
        "expected a short text body, got {body:?}"
    );
    assert_eq!(response.header("Sec-WebSocket-Accept"), None);
}

fn host() -> &'static str {
    "Host: server.example"
}

fn key() -> String {
    format!("Sec-WebSocket-Key: {KEY}")
}

async fn post_is_refused_with_405(runtime: Runtime) {
    let k = key();
    let request = head(&[
        "POST /chat HTTP/1.1",
        host(),
        "Upgrade: websocket",
        "Connection: Upgrade",
        &k,
        "Sec-WebSocket-Version: 13",
        "Content-Length: 0",
    ]);
    let (response, _) = expect_refusal(runtime, &request, 405).await;
    assert_eq!(response.header("Allow"), Some("GET"));
}

async fn http_1_0_is_refused_with_400(runtime: Runtime) {
    let k = key();
    let request = head(&[
        "GET /chat HTTP/1.0",
        host(),
        "Upgrade: websocket",
        "Connection: Upgrade",
        &k,
        "Sec-WebSocket-Version: 13",
    ]);
    let (_, error) = expect_refusal(runtime, &request, 400).await;
    assert_error(runtime, error, HandshakeError::UnsupportedHttpVersion);
}

async fn missing_host_is_refused_with_400(runtime: Runtime) {
    let k = key();
    let request = head(&[
        "GET /chat HTTP/1.1",
        "Upgrade: websocket",
        "Connection: Upgrade",
        &k,
        "Sec-WebSocket-Version: 13",
    ]);
    let (_, error) = expect_refusal(runtime, &request, 400).await;
    assert_error(runtime, error, HandshakeError::MissingHost);
}

async fn missing_upgrade_is_refused_with_400(runtime: Runtime) {
    let k = key();
    let request = head(&[
        "GET /chat HTTP/1.1",
        host(),
        "Connection: Upgrade",
        &k,
        "Sec-WebSocket-Version: 13",
    ]);
    let (_, error) = expect_refusal(runtime, &request, 400).await;
    assert_error(runtime, error, HandshakeError::MissingUpgrade);
}

async fn wrong_upgrade_is_refused_with_400(runtime: Runtime) {
    let k = key();
    let request = head(&[
        "GET /chat HTTP/1.1",
        host(),
        "Upgrade: h2c",
        "Connection: Upgrade",
        &k,
        "Sec-WebSocket-Version: 13",
    ]);
    let (_, error) = expect_refusal(runtime, &request, 400).await;
    assert_error(runtime, error, HandshakeError::MissingUpgrade);
}

async fn connection_without_upgrade_token_is_refused_with_400(runtime: Runtime) {
    let k = key();
    let request = head(&[
        "GET /chat HTTP/1.1",
        host(),
        "Upgrade: websocket",
        "Connection: keep-alive",
        &k,
        "Sec-WebSocket-Version: 13",
    ]);
    let (_, error) = expect_refusal(runtime, &request, 400).await;
    assert_error(runtime, error, HandshakeError::MissingConnectionUpgrade);
}

async fn connection_keep_alive_upgrade_is_accepted_with_101(runtime: Runtime) {
    let (addr, server) = serve_one(runtime, ServerConfig::default()).await;
    let mut raw = Raw::connect(addr).await;
    let k = key();
    let request = head(&[
        "GET /chat HTTP/1.1",
        host(),
        "Upgrade: websocket",
        "Connection: keep-alive, Upgrade",
        &k,
        "Sec-WebSocket-Version: 13",
    ]);
    raw.send(request.as_bytes()).await;
    let response = raw.read_response().await;
    assert_eq!(response.status, 101, "{}", response.head);
    assert_eq!(response.header("Sec-WebSocket-Accept"), Some(ACCEPT));
    server.accepted().await;
}

async fn version_8_is_refused_with_426_naming_version_13(runtime: Runtime) {
    let k = key();
    let request = head(&[
        "GET /chat HTTP/1.1",
        host(),
        "Upgrade: websocket",
        "Connection: Upgrade",
        &k,
        "Sec-WebSocket-Version: 8",
    ]);
    let (response, _) = expect_refusal(runtime, &request, 426).await;
    assert_eq!(response.header("Sec-WebSocket-Version"), Some("13"));
}

async fn missing_version_is_refused_with_426_naming_version_13(runtime: Runtime) {
    let k = key();
    let request = head(&[
        "GET /chat HTTP/1.1",
        host(),
        "Upgrade: websocket",
        "Connection: Upgrade",
        &k,
    ]);
    let (response, _) = expect_refusal(runtime, &request, 426).await;
    assert_eq!(response.header("Sec-WebSocket-Version"), Some("13"));
}

async fn key_not_16_bytes_is_refused_with_400(runtime: Runtime) {
    // Valid base64, but of 15 bytes.
    let request = head(&[
        "GET /chat HTTP/1.1",
        host(),
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAA",
        "Sec-WebSocket-Version: 13",
    ]);
    let (_, error) = expect_refusal(runtime, &request, 400).await;
    assert_error(runtime, error, HandshakeError::BadKey);
}

async fn oversized_head_is_refused_with_431_without_waiting_for_its_end(runtime: Runtime) {
    let mut config = ServerConfig::default();
    // Far beyond the wait bound: a server that waited for the end of the
    // head would send nothing in time.
    config.handshake_timeout = Duration::from_secs(60);
    let (addr, server) = serve_one(runtime, config).await;
    let mut raw = Raw::connect(addr).await;

    // 70 KiB of header fields in 10 lines (well under the field-count
    // limit), never followed by the blank line.
    let mut request = String::from("GET /chat HTTP/1.1\r\nHost: server.example\r\n");
    for i in 0..10 {
        request.push_str(&format!("X-Filler-{i}: {}\r\n", "a".repeat(7 * 1024)));
    }
    assert!(request.len() > 70 * 1024);
    assert!(!request.ends_with("\r\n\r\n"));
    raw.send(request.as_bytes()).await;

    let response = raw.read_response().await;
    assert_refusal(&response, 431);
    // The server stopped reading mid-request: closing with unread bytes
    // may reset the connection after the FIN.
    raw.expect_closed().await;
    let error = server.refused().await;
    assert_error(
        runtime,
        error,
        HandshakeError::HeadTooLarge { limit: 64 * 1024 },
    );
}

async fn valid_request_is_accepted_with_101(runtime: Runtime) {
    let (addr, server) = serve_one(runtime, ServerConfig::default()).await;
    let mut raw = Raw::connect(addr).await;
    raw.send(upgrade_request("server.example", &[]).as_bytes())
        .await;
    let response = raw.read_response().await;
    assert_eq!(response.status, 101, "{}", response.head);
    assert_eq!(response.header("Sec-WebSocket-Accept"), Some(ACCEPT));
    assert_eq!(response.header("Sec-WebSocket-Protocol"), None);
    server.accepted().await;
}

macro_rules! on_both_runtimes {
    ($($name:ident),* $(,)?) => {
        mod tokio_accept {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Runtime::TokioAccept).await
                }
            )*
        }
        mod reactor {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Runtime::Reactor).await
                }
            )*
        }
    };
}

on_both_runtimes! {
    post_is_refused_with_405,
    http_1_0_is_refused_with_400,
    missing_host_is_refused_with_400,
    missing_upgrade_is_refused_with_400,
    wrong_upgrade_is_refused_with_400,
    connection_without_upgrade_token_is_refused_with_400,
    connection_keep_alive_upgrade_is_accepted_with_101,
    version_8_is_refused_with_426_naming_version_13,
    missing_version_is_refused_with_426_naming_version_13,
    key_not_16_bytes_is_refused_with_400,
    oversized_head_is_refused_with_431_without_waiting_for_its_end,
    valid_request_is_accepted_with_101,
}
