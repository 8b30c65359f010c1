//! `wsline echo --tls-cert FILE --tls-key FILE`: wss:// on the tokio
//! runtime, against the library's client trusting the test's own
//! self-signed certificate; and the refusals (files that cannot be used,
//! the reactor asked for with TLS), each exiting 2 with a message that
//! names the problem.

#[path = "../../wsline/tests/support/mod.rs"]
mod support;

mod child;

use std::path::PathBuf;

use child::{run_to_end, spawn_echo_tls};
use support::within;
use wsline::{ClientConfig, CloseCode, Message};

/// A self-signed certificate for 127.0.0.1 and localhost written as PEM
/// files: (certificate, key), named after the test.
fn certificate(name: &str) -> (PathBuf, PathBuf) {
    let names = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
    let certified = rcgen::generate_simple_self_signed(names).expect("certificate");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let stem = format!("wsline-echo-tls-{}-{name}", std::process::id());
    let cert = dir.join(format!("{stem}.cert.pem"));
    let key = dir.join(format!("{stem}.key.pem"));
    std::fs::write(&cert, certified.cert.pem()).expect("write the certificate");
    std::fs::write(&key, certified.key_pair.serialize_pem()).expect("write the key");
    (cert, key)
}

fn path(p: &std::path::Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// Runs `wsline echo` with `extra` flags and the given certificate and key
/// files until it exits: (its status, its stderr).
async fn run_echo_tls(
    cert: &std::path::Path,
    key: &std::path::Path,
    extra: &[&str],
) -> (std::process::ExitStatus, String) {
    let mut args = vec!["echo", "--listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    args.extend(["--tls-cert", path(cert), "--tls-key", path(key)]);
    run_to_end(&args).await
}

/// A client that trusts `ca` only.
fn client_trusting(ca: &std::path::Path) -> ClientConfig {
    let mut config = ClientConfig::default();
    config.protocol.ping_interval = None;
    config.tls.ca_file = Some(ca.to_owned());
    config.tls.no_platform_roots = true;
    config
}

#[tokio::test]
async fn echo_tls_serves_wss_and_echoes_text_and_binary() {
    let (cert, key) = certificate("echo");
    let server = spawn_echo_tls(&["--tls-cert", path(&cert), "--tls-key", path(&key)]).await;
    let url = format!("wss://localhost:{}/", server.addr.port());
    let (mut ws, _) = within(
        "the wss handshake",
        wsline::connect_with(&url, &client_trusting(&cert)),
    )
    .await
    .expect("wss handshake with the server's certificate trusted");
    for message in [
        Message::text("over TLS"),
        Message::binary(vec![7u8; 70_000]),
    ] {
        within("send", ws.send(message.clone()))
            .await
            .expect("send");
        let echoed = within("the echo", ws.recv())
            .await
            .expect("a message")
            .expect("no error");
        assert_eq!(echoed, message);
    }
    within("close", ws.close(CloseCode::NORMAL, ""))
        .await
        .expect("a normal close");
}

#[tokio::test]
async fn echo_tls_refuses_a_client_that_does_not_trust_the_certificate() {
    let (cert, key) = certificate("untrusted");
    let (other, _) = certificate("other-ca");
    let server = spawn_echo_tls(&["--tls-cert", path(&cert), "--tls-key", path(&key)]).await;
    let url = format!("wss://localhost:{}/", server.addr.port());
    let refused = within(
        "the wss handshake",
        wsline::connect_with(&url, &client_trusting(&other)),
    )
    .await;
    let Err(e) = refused else {
        panic!("an untrusted certificate must fail");
    };
    assert!(
        e.to_string().contains("certificate"),
        "expected a certificate error, got {e}"
    );
}

#[tokio::test]
async fn echo_tls_with_a_missing_certificate_file_exits_2_naming_it() {
    let (_, key) = certificate("missing");
    let missing = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("no-such-cert.pem");
    let (status, stderr) = run_echo_tls(&missing, &key, &[]).await;
    assert_eq!(status.code(), Some(2), "stderr {stderr:?}");
    assert!(
        stderr.contains("no-such-cert.pem") && stderr.contains("cannot read"),
        "stderr {stderr:?}"
    );
}

#[tokio::test]
async fn echo_tls_with_a_key_that_does_not_fit_the_certificate_exits_2() {
    let (cert, _) = certificate("mismatch-cert");
    let (_, key) = certificate("mismatch-key");
    let (status, stderr) = run_echo_tls(&cert, &key, &[]).await;
    assert_eq!(status.code(), Some(2), "stderr {stderr:?}");
    assert!(stderr.contains("does not fit"), "stderr {stderr:?}");
}

#[tokio::test]
async fn echo_tls_with_a_certificate_file_as_key_exits_2() {
    let (cert, _) = certificate("cert-as-key");
    let (status, stderr) = run_echo_tls(&cert, &cert, &[]).await;
    assert_eq!(status.code(), Some(2), "stderr {stderr:?}");
    assert!(stderr.contains("private key"), "stderr {stderr:?}");
}

#[tokio::test]
async fn echo_tls_on_the_reactor_exits_2_saying_it_needs_tokio() {
    let (cert, key) = certificate("reactor");
    let (status, stderr) = run_echo_tls(&cert, &key, &["--runtime", "reactor"]).await;
    assert_eq!(status.code(), Some(2), "stderr {stderr:?}");
    assert!(stderr.contains("--runtime tokio"), "stderr {stderr:?}");
}

#[tokio::test]
async fn echo_tls_cert_without_key_is_a_usage_error() {
    let (cert, _) = certificate("no-key");
    let (status, stderr) =
        run_to_end(&["echo", "--listen", "127.0.0.1:0", "--tls-cert", path(&cert)]).await;
    assert_eq!(status.code(), Some(2), "stderr {stderr:?}");
    assert!(stderr.contains("--tls-key"), "stderr {stderr:?}");
}

#[tokio::test]
async fn echo_tls_drops_a_client_that_never_starts_tls_after_the_handshake_timeout() {
    use tokio::io::AsyncReadExt;
    let (cert, key) = certificate("stalled");
    let server = spawn_echo_tls(&[
        "--tls-cert",
        path(&cert),
        "--tls-key",
        path(&key),
        "--handshake-timeout",
        "0.3",
    ])
    .await;
    let started = std::time::Instant::now();
    let mut stalled = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    let mut byte = [0u8; 1];
    // The server closes it (EOF, or a reset) once the timeout passes.
    let _ = within("the server to drop the connection", stalled.read(&mut byte)).await;
    let waited = started.elapsed();
    assert!(
        waited >= std::time::Duration::from_millis(250),
        "dropped after {waited:?}, before the 0.3 s handshake timeout"
    );
}
