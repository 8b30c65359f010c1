//! The client through proxies written here, byte by byte: an HTTP CONNECT
//! proxy that relays (with and without Basic credentials) and one that
//! answers each way a proxy can refuse or misbehave, a SOCKS5 proxy that
//! refuses credentials, an unreachable proxy and one that never answers.
//! Each error is checked by its kind ([`ProxyError`]) and its message.
//! The same client against real proxies (tinyproxy, microsocks) is in
//! `crates/cli/tests/proxy.rs`.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::{head, listen, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use wsline::{ClientConfig, Error, Message, Proxy, ProxyChoice, ProxyError, ServerConfig};

/// A library echo server accepting any number of connections.
async fn echo_server() -> SocketAddr {
    let (listener, addr) = listen().await;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut config = ServerConfig::default();
                config.protocol.ping_interval = None;
                let Ok(mut ws) = wsline::accept(tcp, &config).await else {
                    return;
                };
                while let Some(Ok(m)) = ws.recv().await {
                    if ws.send(m).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// Reads an HTTP head (up to the blank line) from `tcp`.
async fn read_head(tcp: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = tcp.read(&mut byte).await.expect("read the head");
        assert!(
            n > 0,
            "EOF inside the head {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.push(byte[0]);
    }
    String::from_utf8(buf).expect("an ASCII head")
}

/// An HTTP CONNECT proxy for one connection: it passes the request head
/// it received to `seen`, answers 407 unless the request carries
/// `want_auth` (when set), then connects and relays.
async fn relaying_http_proxy(
    want_auth: Option<&'static str>,
) -> (SocketAddr, oneshot::Receiver<String>) {
    let (listener, addr) = listen().await;
    let (seen_tx, seen) = oneshot::channel();
    tokio::spawn(async move {
        let (mut client, _) = listener.accept().await.expect("accept");
        let request = read_head(&mut client).await;
        let _ = seen_tx.send(request.clone());
        if let Some(auth) = want_auth {
            if !request.contains(&format!("Proxy-Authorization: Basic {auth}\r\n")) {
                let answer = head(&[
                    "HTTP/1.1 407 Proxy Authentication Required",
                    "Content-Length: 0",
                ]);
                client.write_all(answer.as_bytes()).await.expect("write");
                return;
            }
        }
        let target = request
            .split_whitespace()
            .nth(1)
            .expect("CONNECT host:port")
            .to_owned();
        let mut server = TcpStream::connect(target)
            .await
            .expect("connect the target");
        client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await
            .expect("write");
        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
    });
    (addr, seen)
}

/// A proxy that reads the first bytes and answers `answer` (or nothing,
/// keeping the connection open, when `answer` is empty).
async fn answering_proxy(answer: Vec<u8>) -> SocketAddr {
    let (listener, addr) = listen().await;
    tokio::spawn(async move {
        let (mut client, _) = listener.accept().await.expect("accept");
        let mut buf = [0u8; 1024];
        let _ = client.read(&mut buf).await;
        if !answer.is_empty() {
            let _ = client.write_all(&answer).await;
        }
        // Hold the connection until the client goes.
        let _ = client.read(&mut buf).await;
    });
    addr
}

fn through(proxy: &str) -> ClientConfig {
    let mut config = ClientConfig::default();
    config.proxy = ProxyChoice::Use(proxy.parse::<Proxy>().expect("proxy URL"));
    config
}

async fn echo_once(url: &str, config: &ClientConfig) {
    let (mut ws, _) = within("connect", wsline::connect_with(url, config))
        .await
        .expect("connect through the proxy");
    ws.send(Message::text("through")).await.expect("send");
    let back = within("the echo", ws.recv())
        .await
        .expect("a message")
        .expect("ok");
    assert_eq!(back, Message::text("through"));
}

/// The proxy error, failing the test on anything else.
async fn proxy_error(url: &str, config: &ClientConfig) -> (ProxyError, String) {
    let err = within("connect", wsline::connect_with(url, config))
        .await
        .map(|_| ())
        .expect_err("the proxy must fail the connect");
    let text = err.to_string();
    match err {
        Error::Proxy { source, .. } => (source, text),
        other => panic!("expected Error::Proxy, got {other:?}"),
    }
}

#[tokio::test]
async fn http_connect_tunnels_to_the_server() {
    let server = echo_server().await;
    let (proxy, seen) = relaying_http_proxy(None).await;
    echo_once(
        &format!("ws://localhost:{}/", server.port()),
        &through(&format!("http://{proxy}")),
    )
    .await;
    let request = within("the CONNECT request", seen).await.expect("seen");
    let target = format!("localhost:{}", server.port());
    assert!(
        request.starts_with(&format!("CONNECT {target} HTTP/1.1\r\n")),
        "the proxy resolves the name: {request:?}"
    );
    assert!(
        request.contains(&format!("\r\nHost: {target}\r\n")),
        "{request:?}"
    );
    assert!(!request.contains("Proxy-Authorization"), "{request:?}");
}

#[tokio::test]
async fn http_connect_sends_basic_credentials_percent_decoded() {
    let server = echo_server().await;
    // base64("al@ice:pa:ss")
    let (proxy, seen) = relaying_http_proxy(Some("YWxAaWNlOnBhOnNz")).await;
    echo_once(
        &format!("ws://{server}/"),
        &through(&format!("http://al%40ice:pa%3Ass@{proxy}")),
    )
    .await;
    within("the request", seen).await.expect("seen");
}

#[tokio::test]
async fn http_407_without_credentials_says_to_give_them() {
    let server = echo_server().await;
    let (proxy, _seen) = relaying_http_proxy(Some("dTpw")).await;
    let (error, text) = proxy_error(
        &format!("ws://{server}/"),
        &through(&format!("http://{proxy}")),
    )
    .await;
    assert!(
        matches!(error, ProxyError::CredentialsRequired { status: 407, .. }),
        "{error:?}"
    );
    assert!(text.contains("http://USER:PASSWORD@HOST:PORT"), "{text}");
}

#[tokio::test]
async fn http_407_with_credentials_says_they_were_refused_without_showing_the_password() {
    let server = echo_server().await;
    let (proxy, _seen) = relaying_http_proxy(Some("dTpw")).await;
    let (error, text) = proxy_error(
        &format!("ws://{server}/"),
        &through(&format!("http://u:wrong@{proxy}")),
    )
    .await;
    assert!(
        matches!(error, ProxyError::CredentialsRejected { status: 407, .. }),
        "{error:?}"
    );
    assert!(text.contains("refused the username/password"), "{text}");
    assert!(!text.contains("wrong"), "the password leaked: {text}");
}

#[tokio::test]
async fn http_403_is_a_refusal_with_its_status_and_reason() {
    let answer = head(&["HTTP/1.1 403 Access violation", "Content-Length: 0"]);
    let proxy = answering_proxy(answer.into_bytes()).await;
    let (error, text) =
        proxy_error("ws://127.0.0.1:9/", &through(&format!("http://{proxy}"))).await;
    match error {
        ProxyError::Refused {
            status,
            reason,
            target,
        } => {
            assert_eq!(
                (status, reason.as_str(), target.as_str()),
                (403, "Access violation", "127.0.0.1:9")
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(text.contains("may not allow CONNECT"), "{text}");
}

#[tokio::test]
async fn a_proxy_that_is_not_http_gives_an_invalid_response() {
    let proxy = answering_proxy(b"SSH-2.0-OpenSSH_9.2\r\n\x00\x01\x02\r\n\r\n".to_vec()).await;
    let (error, _) = proxy_error("ws://127.0.0.1:9/", &through(&format!("http://{proxy}"))).await;
    assert!(matches!(error, ProxyError::InvalidResponse(_)), "{error:?}");
}

#[tokio::test]
async fn bytes_after_the_200_are_refused_not_fed_to_the_handshake() {
    let proxy = answering_proxy(b"HTTP/1.1 200 OK\r\n\r\nHTTP/1.1 101 Switching".to_vec()).await;
    let (error, text) =
        proxy_error("ws://127.0.0.1:9/", &through(&format!("http://{proxy}"))).await;
    assert!(matches!(error, ProxyError::InvalidResponse(_)), "{error:?}");
    assert!(text.contains("followed its 2xx answer"), "{text}");
}

#[tokio::test]
async fn an_endless_answer_head_is_bounded() {
    let mut answer = b"HTTP/1.1 200 OK\r\n".to_vec();
    while answer.len() < 20 * 1024 {
        answer.extend_from_slice(format!("X-Padding: {}\r\n", "a".repeat(2000)).as_bytes());
    }
    let proxy = answering_proxy(answer).await;
    let (error, text) =
        proxy_error("ws://127.0.0.1:9/", &through(&format!("http://{proxy}"))).await;
    assert!(matches!(error, ProxyError::InvalidResponse(_)), "{error:?}");
    assert!(text.contains("larger than"), "{text}");
}

#[tokio::test]
async fn a_silent_proxy_is_given_up_at_the_handshake_timeout() {
    let proxy = answering_proxy(Vec::new()).await;
    let mut config = through(&format!("http://{proxy}"));
    config.handshake_timeout = Duration::from_millis(300);
    let (error, text) = proxy_error("ws://127.0.0.1:9/", &config).await;
    assert!(
        matches!(error, ProxyError::Timeout(t) if t == Duration::from_millis(300)),
        "{error:?}"
    );
    assert!(text.contains("did not open the tunnel"), "{text}");
}

#[tokio::test]
async fn an_unreachable_proxy_is_named_as_such() {
    // A port that was free a moment ago: nothing listens there.
    let addr = {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        listener.local_addr().expect("addr")
    };
    for scheme in ["http", "socks5"] {
        let (error, text) =
            proxy_error("ws://127.0.0.1:9/", &through(&format!("{scheme}://{addr}"))).await;
        assert!(matches!(error, ProxyError::Unreachable(_)), "{error:?}");
        assert!(text.contains("cannot connect to the proxy"), "{text}");
        assert!(
            text.contains(&addr.to_string()),
            "the proxy is named: {text}"
        );
    }
}

#[tokio::test]
async fn socks5_without_credentials_to_a_proxy_that_wants_them() {
    // Version 5, no acceptable method.
    let proxy = answering_proxy(vec![0x05, 0xff]).await;
    let (error, text) =
        proxy_error("ws://127.0.0.1:9/", &through(&format!("socks5://{proxy}"))).await;
    assert!(
        matches!(error, ProxyError::Socks5CredentialsRequired),
        "{error:?}"
    );
    assert!(text.contains("socks5://USER:PASSWORD@HOST:PORT"), "{text}");
}

#[tokio::test]
async fn socks5_wrong_credentials_are_refused_clearly() {
    let (listener, proxy) = listen().await;
    let (seen_tx, seen) = oneshot::channel();
    tokio::spawn(async move {
        let (mut client, _) = listener.accept().await.expect("accept");
        let mut greeting = [0u8; 4];
        client.read_exact(&mut greeting).await.expect("greeting");
        client
            .write_all(&[0x05, 0x02])
            .await
            .expect("choose username/password");
        let mut auth = vec![0u8; 2 + 1 + 1 + 5];
        client
            .read_exact(&mut auth)
            .await
            .expect("RFC 1929 request");
        let _ = seen_tx.send((greeting, auth));
        client.write_all(&[0x01, 0x01]).await.expect("failure");
    });
    let (error, text) = proxy_error(
        "ws://127.0.0.1:9/",
        &through(&format!("socks5h://u:wrong@{proxy}")),
    )
    .await;
    assert!(
        matches!(error, ProxyError::Socks5CredentialsRejected),
        "{error:?}"
    );
    assert!(
        text.contains("the SOCKS5 proxy refused the username/password"),
        "{text}"
    );
    assert!(!text.contains("wrong"), "the password leaked: {text}");
    let (greeting, auth) = within("the exchange", seen).await.expect("seen");
    assert_eq!(
        greeting,
        [0x05, 0x02, 0x00, 0x02],
        "offers no auth and username/password"
    );
    assert_eq!(
        auth, b"\x01\x01u\x05wrong",
        "RFC 1929: version, user, password"
    );
}

#[tokio::test]
async fn an_explicit_no_proxy_match_connects_directly() {
    let server = echo_server().await;
    let mut config = through("http://127.0.0.1:9");
    config.no_proxy = Some(wsline::NoProxy::parse("127.0.0.0/8"));
    echo_once(&format!("ws://{server}/"), &config).await;
}
