//! TLS, keep-alive and HTTP/2 on the hub's port, against real peers on
//! real sockets: wsline's client over `wss://` (HTTP/1.1 upgrade) and as
//! an RFC 8441 client (HTTP/2 over TLS with ALPN, and cleartext HTTP/2
//! with prior knowledge), a rustls client writing HTTP/1.1 by hand (several
//! requests on one connection), h2's own client (several publishes as
//! streams of one connection), and a certificate reload that keeps an open
//! connection and shows new handshakes the new certificate.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use common::{config, within, Client, Metrics};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use wsline::{ClientConfig, HttpVersion};
use wsline_hub::HubConfig;

/// A self-signed certificate for `localhost` and 127.0.0.1, written to a
/// fresh directory: (directory, cert path, key path, certificate DER).
struct Cert {
    dir: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    der: Vec<u8>,
}

impl Cert {
    fn new(name: &str) -> Cert {
        let dir = std::env::temp_dir().join(format!(
            "wsline-hub-tls-{name}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        let der = write_cert(&cert, &key);
        Cert {
            dir,
            cert,
            key,
            der,
        }
    }

    /// A new certificate in the same files; its DER.
    fn renew(&mut self) {
        self.der = write_cert(&self.cert, &self.key);
    }

    fn config(&self) -> HubConfig {
        let mut c = config();
        c.tls_cert = Some(self.cert.display().to_string());
        c.tls_key = Some(self.key.display().to_string());
        c
    }
}

impl Drop for Cert {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn write_cert(cert: &Path, key: &Path) -> Vec<u8> {
    let made =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("certificate");
    std::fs::write(cert, made.cert.pem()).expect("write cert");
    std::fs::write(key, made.key_pair.serialize_pem()).expect("write key");
    made.cert.der().to_vec()
}

/// A hub serving `config` on 127.0.0.1:0, and its TLS reloader.
async fn start(config: HubConfig) -> (common::Hub, Option<wsline_hub::tls::TlsReloader>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let prepared = wsline_hub::prepare(config).expect("prepare");
    let reloader = prepared.tls();
    // The common helper's shape, around a prepared hub.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(prepared.serve(listener, async move {
        let _ = stopped.await;
    }));
    (common::Hub::from_parts(addr, stop, task), reloader)
}

/// A client trusting `cert`, offering `alpn`.
fn tls_client(cert: &Cert, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(cert.der.clone()))
        .expect("root");
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

async fn tls_connect(
    addr: std::net::SocketAddr,
    cert: &Cert,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = within("connect", TcpStream::connect(addr))
        .await
        .expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    within("TLS handshake", tls_client(cert, alpn).connect(name, tcp))
        .await
        .expect("TLS handshake")
}

/// A wsline client configuration trusting `cert` only.
fn ws_config(cert: &Cert, version: HttpVersion) -> ClientConfig {
    let mut c = common::client_config();
    c.tls.ca_file = Some(cert.cert.clone());
    c.tls.no_platform_roots = true;
    c.http_version = version;
    c
}

/// One HTTP/1.1 request on a connection kept open; the status and body
/// (read by `Content-Length`).
async fn request_on<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, String) {
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    within("write", io.write_all(request.as_bytes()))
        .await
        .expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = within("the answer", io.read(&mut buf)).await.expect("read");
        assert!(n > 0, "the hub closed the connection: {got:?}");
        got.extend_from_slice(&buf[..n]);
        let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&got[..end]).to_string();
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().expect("length"))
            })
            .expect("a Content-Length");
        if got.len() >= end + 4 + len {
            assert!(
                !head.to_ascii_lowercase().contains("connection: close"),
                "{head}"
            );
            let status = head[9..12].parse().expect("status");
            let body = String::from_utf8_lossy(&got[end + 4..end + 4 + len]).to_string();
            return (status, body);
        }
    }
}

/// `/metrics` over a TLS connection.
async fn tls_metrics(addr: std::net::SocketAddr, cert: &Cert) -> Metrics {
    let mut tls = tls_connect(addr, cert, &[b"http/1.1"]).await;
    let (status, body) = request_on(&mut tls, "GET", "/metrics", "").await;
    assert_eq!(status, 200);
    Metrics(body)
}

fn publish_body(n: u64) -> String {
    json!({"channel": "news", "data": {"n": n}}).to_string()
}

#[tokio::test]
async fn wss_websocket_and_keep_alive_api_over_http1_tls() {
    let cert = Cert::new("h1");
    let (hub, _) = start(cert.config()).await;
    let url = format!("wss://localhost:{}/ws", hub.addr.port());
    let mut sub = Client::connect_with(&url, &ws_config(&cert, HttpVersion::Http1)).await;
    sub.subscribe("news").await;
    // Three publishes on one TLS connection, ALPN http/1.1.
    let mut tls = tls_connect(hub.addr, &cert, &[b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    for n in 1..=3 {
        let (status, body) = request_on(&mut tls, "POST", "/api/publish", &publish_body(n)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body, format!("{{\"offset\":{n}}}"));
        let got = sub.recv().await;
        assert_eq!(got["data"]["n"], n, "{got}");
    }
    let m = tls_metrics(hub.addr, &cert).await;
    assert_eq!(
        m.value("wsline_connections_opened_total{transport=\"http1\"}"),
        1.0
    );
    assert_eq!(
        m.value("wsline_connections_opened_total{transport=\"h2\"}"),
        0.0
    );
}

#[tokio::test]
async fn keep_alive_api_over_cleartext_http1() {
    let (hub, _) = start(config()).await;
    let mut tcp = within("connect", TcpStream::connect(hub.addr))
        .await
        .expect("connect");
    for n in 1..=3 {
        let (status, body) = request_on(&mut tcp, "POST", "/api/publish", &publish_body(n)).await;
        assert_eq!(status, 200, "{body}");
    }
    // The same connection answers the other routes and their errors.
    assert_eq!(request_on(&mut tcp, "GET", "/healthz", "").await.0, 200);
    assert_eq!(request_on(&mut tcp, "GET", "/nope", "").await.0, 404);
    assert_eq!(request_on(&mut tcp, "POST", "/metrics", "").await.0, 405);
    assert_eq!(
        request_on(&mut tcp, "POST", "/api/publish", "{").await.0,
        400
    );
    let (status, body) = request_on(&mut tcp, "GET", "/metrics", "").await;
    assert_eq!(status, 200);
    assert_eq!(Metrics(body).value("wsline_publishes_total"), 3.0);
}

/// h2's client: `n` publishes as streams of one HTTP/2 connection over
/// `io`; checks the server's SETTINGS_ENABLE_CONNECT_PROTOCOL too.
async fn h2_publishes<S>(io: S, authority: &str, n: u64)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (send, mut conn) = within("h2 handshake", h2::client::handshake(io))
        .await
        .expect("h2 handshake");
    let mut ping = conn.ping_pong().expect("ping_pong");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    within("the server's SETTINGS", ping.ping(h2::Ping::opaque()))
        .await
        .expect("pong");
    assert!(send.is_extended_connect_protocol_enabled());
    for i in 1..=n {
        let mut ready = within("ready", send.clone().ready()).await.expect("ready");
        let request = http::Request::post(format!("https://{authority}/api/publish"))
            .body(())
            .expect("request");
        let (answer, mut stream) = ready.send_request(request, false).expect("send");
        stream
            .send_data(Bytes::from(publish_body(i)), true)
            .expect("body");
        let answer = within("the answer", answer).await.expect("answer");
        assert_eq!(answer.status(), 200);
        let mut body = answer.into_body();
        let mut text = Vec::new();
        while let Some(chunk) = within("the body", body.data()).await {
            let chunk = chunk.expect("chunk");
            let _ = body.flow_control().release_capacity(chunk.len());
            text.extend_from_slice(&chunk);
        }
        let value: serde_json::Value = serde_json::from_slice(&text).expect("JSON");
        assert!(value["offset"].as_u64().is_some(), "{value}");
    }
}

#[tokio::test]
async fn keep_alive_api_over_http2_tls_and_cleartext() {
    let cert = Cert::new("h2api");
    let (hub, _) = start(cert.config()).await;
    let tls = tls_connect(hub.addr, &cert, &[b"h2"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    h2_publishes(tls, "localhost", 3).await;
    let m = tls_metrics(hub.addr, &cert).await;
    assert_eq!(m.value("wsline_publishes_total"), 3.0);

    let (plain, _) = start(config()).await;
    let tcp = TcpStream::connect(plain.addr).await.expect("connect");
    h2_publishes(tcp, &plain.addr.to_string(), 3).await;
    assert_eq!(plain.metrics().await.value("wsline_publishes_total"), 3.0);
}

#[tokio::test]
async fn rfc_8441_client_over_tls_and_cleartext_http2() {
    let cert = Cert::new("ws-h2");
    let (hub, _) = start(cert.config()).await;
    let url = format!("wss://localhost:{}/ws", hub.addr.port());
    let mut a = Client::connect_with(&url, &ws_config(&cert, HttpVersion::Http2)).await;
    let mut b = Client::connect_with(&url, &ws_config(&cert, HttpVersion::Auto)).await;
    b.subscribe("room").await;
    a.publish("room", json!("over h2")).await;
    let got = b.recv().await;
    assert_eq!(got["data"], "over h2", "{got}");
    let m = tls_metrics(hub.addr, &cert).await;
    assert_eq!(
        m.value("wsline_connections_opened_total{transport=\"h2\"}"),
        2.0
    );
    assert_eq!(
        m.value("wsline_connections_opened_total{transport=\"http1\"}"),
        0.0
    );
    assert_eq!(m.value("wsline_connections"), 2.0);

    let (plain, _) = start(config()).await;
    let mut c = Client::connect_with(&plain.url(""), &ws_config(&cert, HttpVersion::Http2)).await;
    c.subscribe("x").await;
    let offset = plain.api_publish("x", json!(7)).await;
    let got = c.recv().await;
    assert_eq!(got["offset"], offset, "{got}");
    let m = plain.metrics().await;
    assert_eq!(
        m.value("wsline_connections_opened_total{transport=\"h2\"}"),
        1.0
    );
    within("close", c.ws.close(wsline::CloseCode::NORMAL, ""))
        .await
        .expect("clean close");
    plain
        .metrics_until(|m| m.value("wsline_closes_total{code=\"1000\"}") == 1.0)
        .await;
}

#[tokio::test]
async fn a_reload_keeps_open_connections_and_new_handshakes_see_the_new_certificate() {
    let mut cert = Cert::new("reload");
    let old = cert.der.clone();
    let (hub, reloader) = start(cert.config()).await;
    let reloader = reloader.expect("a TLS hub has a reloader");
    let url = format!("wss://localhost:{}/ws", hub.addr.port());
    let mut before = Client::connect_with(&url, &ws_config(&cert, HttpVersion::Http1)).await;
    before.subscribe("r").await;
    let mut kept = tls_connect(hub.addr, &cert, &[b"http/1.1"]).await;
    assert_eq!(request_on(&mut kept, "GET", "/healthz", "").await.0, 200);

    // A broken pair is refused and the certificate in use stays.
    std::fs::write(&cert.key, "not a key").expect("write");
    let e = reloader.reload().expect_err("an unusable key");
    assert!(e.to_string().contains("key.pem"), "{e}");
    let seen = tls_connect(hub.addr, &cert, &[]).await;
    assert_eq!(peer_cert(&seen), old);

    cert.renew();
    reloader.reload().expect("reload");
    let fresh = tls_connect(hub.addr, &cert, &[]).await;
    assert_eq!(peer_cert(&fresh), cert.der);
    assert_ne!(cert.der, old);

    // What was open before still works, both ways.
    assert_eq!(request_on(&mut kept, "GET", "/healthz", "").await.0, 200);
    let offset = before.publish("r", json!("still here")).await;
    let got = before.recv().await;
    assert_eq!(got["offset"], offset, "{got}");
}

fn peer_cert(tls: &tokio_rustls::client::TlsStream<TcpStream>) -> Vec<u8> {
    tls.get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .expect("a certificate")
        .to_vec()
}

#[tokio::test]
async fn unusable_certificate_files_stop_the_hub_before_it_serves() {
    let cert = Cert::new("bad");
    let mut c = cert.config();
    c.tls_cert = Some(cert.dir.join("missing.pem").display().to_string());
    let e = wsline_hub::prepare(c).err().expect("a missing certificate");
    assert!(e.to_string().contains("missing.pem"), "{e}");
    std::fs::write(
        &cert.key,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .expect("write");
    let e = wsline_hub::prepare(cert.config())
        .err()
        .expect("an unusable key");
    assert!(e.to_string().contains("key.pem"), "{e}");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_handshake_timeout() {
    let mut c = config();
    c.server.handshake_timeout = std::time::Duration::from_millis(300);
    let (hub, _) = start(c).await;
    let mut tcp = TcpStream::connect(hub.addr).await.expect("connect");
    assert_eq!(request_on(&mut tcp, "GET", "/healthz", "").await.0, 200);
    let mut rest = Vec::new();
    let n = within(
        "the idle connection to be closed",
        tcp.read_to_end(&mut rest),
    )
    .await
    .expect("read");
    assert_eq!(n, 0, "{rest:?}");
}

#[tokio::test]
async fn a_drain_ends_idle_keep_alive_and_http2_connections() {
    let (mut hub, _) = start(config()).await;
    let mut h1 = TcpStream::connect(hub.addr).await.expect("connect");
    assert_eq!(request_on(&mut h1, "GET", "/healthz", "").await.0, 200);
    let tcp = TcpStream::connect(hub.addr).await.expect("connect");
    let (_send, conn) = within("h2 handshake", h2::client::handshake(tcp))
        .await
        .expect("h2 handshake");
    let h2_conn = tokio::spawn(conn);
    hub.stop();
    hub.finished().await.expect("serve");
    let mut rest = Vec::new();
    within("the HTTP/1.1 connection to end", h1.read_to_end(&mut rest))
        .await
        .expect("read");
    within("the HTTP/2 connection to end", h2_conn)
        .await
        .expect("join")
        .expect("a clean end (GOAWAY)");
}

/// A WebSocket upgrade that arrives as a later request of a keep-alive
/// HTTP/1.1 connection (hyper serves the connection by then) opens a
/// session as the first request of a connection does.
#[tokio::test]
async fn an_upgrade_after_other_requests_on_a_keep_alive_connection() {
    let (hub, _) = start(config()).await;
    let mut tcp = TcpStream::connect(hub.addr).await.expect("connect");
    assert_eq!(request_on(&mut tcp, "GET", "/healthz", "").await.0, 200);
    let (ws, _) = within(
        "the upgrade",
        wsline::client_handshake(
            wsline::MaybeTlsStream::Plain(tcp),
            "localhost",
            "/ws",
            &common::client_config(),
        ),
    )
    .await
    .expect("upgraded");
    let mut client = Client {
        ws,
        id: String::new(),
        welcome: serde_json::Value::Null,
    };
    assert_eq!(client.recv().await["op"], "welcome");
    client.subscribe("k").await;
    let offset = hub.api_publish("k", json!(1)).await;
    assert_eq!(client.recv().await["offset"], offset);
    let m = hub.metrics().await;
    assert_eq!(
        m.value("wsline_connections_opened_total{transport=\"http1\"}"),
        1.0
    );
}
