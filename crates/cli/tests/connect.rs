//! `wsline connect` as a child process: against `wsline echo`, library
//! servers that close in different ways, raw HTTP servers that refuse or
//! answer wrongly, and a TLS library server for `wss://`.

#[path = "../../wsline/tests/support/mod.rs"]
mod support;

mod child;

use std::net::SocketAddr;
use std::path::PathBuf;

use child::{on_both_runtimes, run_connect, spawn_connect, spawn_echo, Finished, Runtime};
use support::{head, listen, within, Raw};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_rustls::TlsAcceptor;
use wsline::{Acceptance, CloseCode, ServerConfig, TerminationKind, WebSocket};

fn quiet_server() -> ServerConfig {
    let mut config = ServerConfig::default();
    config.protocol.ping_interval = None;
    config
}

/// Echoes until the end.
async fn echo<S>(mut ws: WebSocket<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    while let Some(Ok(m)) = ws.recv().await {
        if ws.send(m).await.is_err() {
            break;
        }
    }
}

/// A library server that accepts one connection and closes it at once
/// with `code` and `reason`; the server's view of the end.
async fn closing_server(
    code: u16,
    reason: &'static str,
) -> (
    SocketAddr,
    tokio::task::JoinHandle<Result<wsline::Termination, wsline::Error>>,
) {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        let mut ws = wsline::accept(tcp, &quiet_server())
            .await
            .expect("handshake");
        ws.close(CloseCode::new(code).expect("a close code"), reason)
            .await
    });
    (addr, server)
}

fn assert_failed(out: &Finished) {
    assert!(
        !out.status.success(),
        "expected a non-zero exit; stdout {:?} stderr {:?}",
        out.stdout,
        out.stderr
    );
}

fn assert_succeeded(out: &Finished) {
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout {:?} stderr {:?}",
        out.stdout,
        out.stderr
    );
}

// ------------------------------------------------------------ plain ws://

async fn connect_echoes_stdin_lines_and_exits_0_with_closed_1000(runtime: Runtime) {
    let server = spawn_echo(runtime, &[]).await;
    let out = run_connect(&[&server.url()], "hello\nwörld\n\nlast line\n").await;
    assert_succeeded(&out);
    assert_eq!(out.stdout, "hello\nwörld\n\nlast line\n");
    assert!(
        out.stderr.contains("closed: 1000"),
        "stderr {:?}",
        out.stderr
    );
}

#[tokio::test]
async fn connect_exits_nonzero_when_the_server_closes_with_4000_bye() {
    let (addr, server) = closing_server(4000, "bye").await;
    // stdin stays open: the server is the one closing.
    let connect = spawn_connect(&[&format!("ws://{addr}/")]);
    let out = connect.finish().await;
    assert_failed(&out);
    assert!(
        out.stderr.contains("closed: 4000 bye"),
        "stderr {:?}",
        out.stderr
    );
    let termination = within("the server", server)
        .await
        .expect("task")
        .expect("close");
    assert_eq!(termination.kind, TerminationKind::Clean, "{termination:?}");
}

#[tokio::test]
async fn connect_exits_0_when_the_server_closes_with_1001() {
    let (addr, server) = closing_server(1001, "going away").await;
    let connect = spawn_connect(&[&format!("ws://{addr}/")]);
    let out = connect.finish().await;
    assert_succeeded(&out);
    assert!(
        out.stderr.contains("closed: 1001"),
        "stderr {:?}",
        out.stderr
    );
    let termination = within("the server", server)
        .await
        .expect("task")
        .expect("close");
    assert_eq!(termination.kind, TerminationKind::Clean, "{termination:?}");
}

/// An empty Close (reported as 1005) is a normal end, by the core's one
/// rule (`Termination::is_normal`): `closed: 1005`, exit 0.
#[tokio::test]
async fn connect_exits_0_when_the_server_closes_with_an_empty_close_1005() {
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        let mut raw = Raw::accept(&listener).await;
        raw.serve_handshake().await;
        raw.send(&[0x88, 0x00]).await; // FIN + Close, no payload
        let reply = raw.read_frame().await;
        (reply.opcode, reply.payload)
    });
    let connect = spawn_connect(&[&format!("ws://{addr}/")]);
    let out = connect.finish().await;
    assert_succeeded(&out);
    assert!(
        out.stderr.contains("closed: 1005"),
        "stderr {:?}",
        out.stderr
    );
    let (opcode, payload) = within("the server", server).await.expect("task");
    assert_eq!((opcode, payload), (0x8, Vec::new()), "an empty Close back");
}

#[tokio::test]
async fn connect_sends_custom_headers_to_the_server() {
    let (listener, addr) = listen().await;
    let (seen_tx, seen) = oneshot::channel();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        let ws = wsline::accept_with(tcp, &quiet_server(), |request| {
            let _ = seen_tx.send(request.headers.get("X-Test").map(str::to_owned));
            Ok(Acceptance::default())
        })
        .await
        .expect("handshake");
        echo(ws).await;
    });
    let out = run_connect(
        &["--header", "X-Test: yes", &format!("ws://{addr}/")],
        "ping\n",
    )
    .await;
    let header = within("the request", seen).await.expect("a request");
    assert_eq!(header.as_deref(), Some("yes"));
    assert_succeeded(&out);
    assert_eq!(out.stdout, "ping\n");
}

// ------------------------------------------------- refusals and bad answers

/// A raw HTTP server that answers the first request with `response`.
async fn answering_server(response: String) -> SocketAddr {
    let (listener, addr) = listen().await;
    tokio::spawn(async move {
        let mut raw = Raw::accept(&listener).await;
        raw.read_head().await;
        raw.send(response.as_bytes()).await;
        // Keep the connection until the client goes away.
        let _ = tokio::io::AsyncReadExt::read(&mut raw.stream, &mut [0u8; 64]).await;
    });
    addr
}

#[tokio::test]
async fn connect_reports_an_http_200_answer_and_exits_nonzero() {
    let response = head(&[
        "HTTP/1.1 200 OK",
        "Content-Type: text/plain",
        "Content-Length: 13",
    ]) + "not a socket\n";
    let addr = answering_server(response).await;
    let out = run_connect(&[&format!("ws://{addr}/")], "").await;
    assert_failed(&out);
    assert!(out.stderr.contains("200"), "stderr {:?}", out.stderr);
}

#[tokio::test]
async fn connect_reports_an_http_403_refusal_and_exits_nonzero() {
    let response = head(&[
        "HTTP/1.1 403 Forbidden",
        "Content-Type: text/plain",
        "Content-Length: 10",
    ]) + "forbidden\n";
    let addr = answering_server(response).await;
    let out = run_connect(&[&format!("ws://{addr}/")], "").await;
    assert_failed(&out);
    assert!(out.stderr.contains("403"), "stderr {:?}", out.stderr);
    assert!(out.stderr.contains("forbidden"), "stderr {:?}", out.stderr);
}

#[tokio::test]
async fn connect_rejects_a_101_with_a_wrong_sec_websocket_accept() {
    let response = head(&[
        "HTTP/1.1 101 Switching Protocols",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    ]);
    let addr = answering_server(response).await;
    let out = run_connect(&[&format!("ws://{addr}/")], "").await;
    assert_failed(&out);
    assert!(
        out.stderr.contains("Sec-WebSocket-Accept"),
        "expected an error naming Sec-WebSocket-Accept; stderr {:?}",
        out.stderr
    );
}

// ------------------------------------------------------------------ wss://

/// A self-signed certificate for 127.0.0.1 and localhost: the acceptor
/// and the certificate's PEM file.
fn tls_setup(name: &str) -> (TlsAcceptor, PathBuf) {
    let (acceptor, cert) = support::self_signed(&["127.0.0.1", "localhost"]);
    let pem = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("wsline-connect-{}-{name}.pem", std::process::id()));
    std::fs::write(&pem, cert).expect("write the PEM file");
    (acceptor, pem)
}

/// A TLS echo server (library `accept` over tokio-rustls).
async fn tls_echo_server(acceptor: TlsAcceptor) -> SocketAddr {
    let (listener, addr): (TcpListener, SocketAddr) = listen().await;
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.expect("accept");
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                if let Ok(ws) = wsline::accept(tls, &quiet_server()).await {
                    echo(ws).await;
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn connect_wss_with_the_ca_file_works() {
    let (acceptor, pem) = tls_setup("with-ca");
    let addr = tls_echo_server(acceptor).await;
    let url = format!("wss://127.0.0.1:{}/", addr.port());
    let out = run_connect(&["--ca", pem.to_str().expect("path"), &url], "secret\n").await;
    assert_succeeded(&out);
    assert_eq!(out.stdout, "secret\n");
    assert!(
        out.stderr.contains("closed: 1000"),
        "stderr {:?}",
        out.stderr
    );
}

#[tokio::test]
async fn connect_wss_without_the_ca_file_fails() {
    let (acceptor, _pem) = tls_setup("without-ca");
    let addr = tls_echo_server(acceptor).await;
    let url = format!("wss://127.0.0.1:{}/", addr.port());
    let out = run_connect(&[&url], "secret\n").await;
    assert_failed(&out);
    assert_eq!(out.stdout, "", "nothing may be echoed");
    assert!(
        out.stderr.to_lowercase().contains("certificate"),
        "expected a certificate error; stderr {:?}",
        out.stderr
    );
}

#[tokio::test]
async fn connect_wss_insecure_works_without_the_ca_file() {
    let (acceptor, _pem) = tls_setup("insecure");
    let addr = tls_echo_server(acceptor).await;
    let url = format!("wss://127.0.0.1:{}/", addr.port());
    let out = run_connect(&["--insecure", &url], "secret\n").await;
    assert_succeeded(&out);
    assert_eq!(out.stdout, "secret\n");
}

on_both_runtimes! {
    #[tokio::test] connect_echoes_stdin_lines_and_exits_0_with_closed_1000,
}
