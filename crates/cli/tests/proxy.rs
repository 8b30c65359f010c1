//! `wsline connect` through real proxies: Debian's `tinyproxy` (HTTP
//! CONNECT, with and without Basic credentials) and `microsocks` (SOCKS5,
//! with and without username/password), to `wsline echo` over `ws://` and
//! to a TLS library server over `wss://`; wrong or missing credentials give
//! a clear error and exit 1. The proxy variables (`http_proxy`,
//! `ALL_PROXY`, `NO_PROXY`, …) are read as curl reads them.
//!
//! Each test starts its own proxies on free loopback ports (killed when the
//! test ends). Those that need `tinyproxy` or `microsocks` on the PATH are
//! ignored by plain `cargo test`: `./scripts/test.sh --only proxy` installs
//! them when missing and runs them. The others (an unreachable proxy, the
//! environment) run everywhere.

#[path = "../../wsline/tests/support/mod.rs"]
mod support;

mod child;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use child::{run_connect, run_connect_with_env, spawn_echo_exactly, Finished, Server};
use support::{listen, within};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_rustls::TlsAcceptor;

/// The bound on a proxy's start (several tries on new ports included).
const START: Duration = Duration::from_secs(20);
/// How many ports a proxy tries when the one it was given is taken.
const TRIES: usize = 5;

const USER: &str = "alice";
const PASSWORD: &str = "s3cret";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A folder of this test's own under the target's temporary folder.
fn scratch(name: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "proxy-{}-{}-{name}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("create the scratch folder");
    dir
}

/// A proxy child on 127.0.0.1, killed on drop.
struct ProxyProcess {
    port: u16,
    _child: Child,
}

impl ProxyProcess {
    fn url(&self, scheme: &str, credentials: Option<(&str, &str)>) -> String {
        match credentials {
            Some((user, pass)) => format!("{scheme}://{user}:{pass}@127.0.0.1:{}", self.port),
            None => format!("{scheme}://127.0.0.1:{}", self.port),
        }
    }
}

/// `tinyproxy -d` with a configuration of its own: loopback only, CONNECT
/// to any port (no `ConnectPort` line), `BasicAuth` when `credentials` are
/// given. Ready when it logs (on stdout) that its main loop started; a
/// port taken meanwhile makes it exit, and it is tried again on another.
async fn tinyproxy(credentials: Option<(&str, &str)>) -> ProxyProcess {
    let dir = scratch("tinyproxy");
    let deadline = Instant::now() + START;
    for _ in 0..TRIES {
        let port = free_port();
        let mut conf = format!(
            "Port {port}\nListen 127.0.0.1\nAllow 127.0.0.1\nTimeout 60\nMaxClients 20\nLogLevel Info\n"
        );
        if let Some((user, pass)) = credentials {
            conf.push_str(&format!("BasicAuth {user} {pass}\n"));
        }
        let path = dir.join("tinyproxy.conf");
        std::fs::write(&path, conf).expect("write tinyproxy.conf");
        let mut child = Command::new("tinyproxy")
            .arg("-d")
            .arg("-c")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn tinyproxy (install it: apt-get install tinyproxy)");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let ready = tokio::time::timeout_at(deadline.into(), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("Accepting connections") {
                    return true;
                }
            }
            false // exited: most likely the port was taken
        })
        .await
        .expect("tinyproxy did not start in time");
        if ready {
            // Keep reading its log, so that it never blocks on a full pipe.
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return ProxyProcess {
                port,
                _child: child,
            };
        }
        let mut err = String::new();
        if let Some(mut stderr) = child.stderr.take() {
            let _ = within("tinyproxy's stderr", stderr.read_to_string(&mut err)).await;
        }
        eprintln!(
            "tinyproxy on port {port} did not start ({}); another port",
            err.trim()
        );
    }
    panic!("tinyproxy did not start on any of {TRIES} ports");
}

/// `microsocks -i 127.0.0.1 -p PORT [-u USER -P PASSWORD]`. It prints
/// nothing when ready, so it is asked a SOCKS5 greeting until it answers
/// one (which also tells it from anything else on the port); a port taken
/// meanwhile makes it exit, and it is tried again on another.
async fn microsocks(credentials: Option<(&str, &str)>) -> ProxyProcess {
    let deadline = Instant::now() + START;
    for _ in 0..TRIES {
        let port = free_port();
        let mut command = Command::new("microsocks");
        command.args(["-i", "127.0.0.1", "-p", &port.to_string()]);
        if let Some((user, pass)) = credentials {
            command.args(["-u", user, "-P", pass]);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn microsocks (install it: apt-get install microsocks)");
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                eprintln!("microsocks on port {port} exited ({status}); another port");
                break;
            }
            if socks5_greeting_answered(port).await {
                return ProxyProcess {
                    port,
                    _child: child,
                };
            }
            assert!(
                Instant::now() < deadline,
                "microsocks did not start in time"
            );
            // Polling a process that says nothing when it is ready.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    panic!("microsocks did not start on any of {TRIES} ports");
}

/// Whether a SOCKS5 server on `port` answers a greeting with version 5.
async fn socks5_greeting_answered(port: u16) -> bool {
    let probe = async {
        let mut tcp = TcpStream::connect(("127.0.0.1", port)).await?;
        tcp.write_all(&[0x05, 0x01, 0x00]).await?;
        let mut answer = [0u8; 2];
        tcp.read_exact(&mut answer).await?;
        Ok::<_, std::io::Error>(answer[0] == 0x05)
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), probe).await,
        Ok(Ok(true))
    )
}

async fn echo_server() -> Server {
    spawn_echo_exactly(&[]).await
}

fn assert_echoed(out: &Finished, input: &str) {
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout {:?} stderr {:?}",
        out.stdout,
        out.stderr
    );
    assert_eq!(out.stdout, input, "stderr {:?}", out.stderr);
    assert!(
        out.stderr.contains("closed: 1000"),
        "stderr {:?}",
        out.stderr
    );
}

/// Exit 1, nothing echoed, and one `error:` line containing `expected`.
fn assert_failed_with(out: &Finished, expected: &str) {
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout {:?} stderr {:?}",
        out.stdout,
        out.stderr
    );
    assert_eq!(out.stdout, "", "nothing may be echoed");
    let line = out
        .stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line in {:?}", out.stderr));
    assert!(line.contains(expected), "expected {expected:?} in {line:?}");
}

// --------------------------------------------------- HTTP CONNECT: tinyproxy

#[tokio::test]
#[ignore = "needs tinyproxy: ./scripts/test.sh --only proxy"]
async fn through_tinyproxy_without_credentials() {
    let server = echo_server().await;
    let proxy = tinyproxy(None).await;
    let out = run_connect(
        &["--proxy", &proxy.url("http", None), &server.url()],
        "one\ntwo\n",
    )
    .await;
    assert_echoed(&out, "one\ntwo\n");
}

#[tokio::test]
#[ignore = "needs tinyproxy: ./scripts/test.sh --only proxy"]
async fn through_tinyproxy_with_basic_credentials() {
    let server = echo_server().await;
    let proxy = tinyproxy(Some((USER, PASSWORD))).await;
    // By name: tinyproxy resolves `localhost`.
    let url = format!("ws://localhost:{}/", server.addr.port());
    let out = run_connect(
        &["--proxy", &proxy.url("http", Some((USER, PASSWORD))), &url],
        "hello\n",
    )
    .await;
    assert_echoed(&out, "hello\n");
}

#[tokio::test]
#[ignore = "needs tinyproxy: ./scripts/test.sh --only proxy"]
async fn tinyproxy_with_wrong_credentials_is_a_clear_error() {
    let server = echo_server().await;
    let proxy = tinyproxy(Some((USER, PASSWORD))).await;
    let out = run_connect(
        &[
            "--proxy",
            &proxy.url("http", Some((USER, "wrong-pw"))),
            &server.url(),
        ],
        "hello\n",
    )
    .await;
    assert_failed_with(&out, "the proxy refused the username/password");
    assert!(
        !out.stderr.contains("wrong-pw"),
        "the password leaked: {}",
        out.stderr
    );
    assert!(out.stderr.contains("alice:***@"), "{}", out.stderr);
}

#[tokio::test]
#[ignore = "needs tinyproxy: ./scripts/test.sh --only proxy"]
async fn tinyproxy_without_the_credentials_it_wants_says_to_give_them() {
    let server = echo_server().await;
    let proxy = tinyproxy(Some((USER, PASSWORD))).await;
    let out = run_connect(&["--proxy", &proxy.url("http", None), &server.url()], "x\n").await;
    assert_failed_with(&out, "the proxy requires credentials (HTTP 407");
}

#[tokio::test]
#[ignore = "needs tinyproxy: ./scripts/test.sh --only proxy"]
async fn tinyproxy_that_cannot_reach_the_server_is_reported_with_its_status() {
    let proxy = tinyproxy(None).await;
    // Nothing listens on a port that was free a moment ago.
    let url = format!("ws://127.0.0.1:{}/", free_port());
    let out = run_connect(&["--proxy", &proxy.url("http", None), &url], "x\n").await;
    assert_failed_with(&out, "the proxy refused to open a tunnel to 127.0.0.1:");
}

#[tokio::test]
#[ignore = "needs tinyproxy: ./scripts/test.sh --only proxy"]
async fn wss_through_tinyproxy_checks_the_servers_certificate_by_its_name() {
    let (acceptor, pem) = tls_setup("tinyproxy");
    let addr = tls_echo_server(acceptor).await;
    let proxy = tinyproxy(Some((USER, PASSWORD))).await;
    let url = format!("wss://localhost:{}/", addr.port());
    let pem = pem.to_str().expect("path");
    let out = run_connect(
        &[
            "--ca",
            pem,
            "--proxy",
            &proxy.url("http", Some((USER, PASSWORD))),
            &url,
        ],
        "secret\n",
    )
    .await;
    assert_echoed(&out, "secret\n");
}

// --------------------------------------------------------- SOCKS5: microsocks

#[tokio::test]
#[ignore = "needs microsocks: ./scripts/test.sh --only proxy"]
async fn through_microsocks_without_credentials() {
    let server = echo_server().await;
    let proxy = microsocks(None).await;
    // socks5:// resolves `localhost` here; socks5h:// lets the proxy do it.
    let url = format!("ws://localhost:{}/", server.addr.port());
    for scheme in ["socks5", "socks5h"] {
        let out = run_connect(&["--proxy", &proxy.url(scheme, None), &url], "one\n").await;
        assert_echoed(&out, "one\n");
    }
}

#[tokio::test]
#[ignore = "needs microsocks: ./scripts/test.sh --only proxy"]
async fn through_microsocks_with_credentials_percent_encoded() {
    let server = echo_server().await;
    let proxy = microsocks(Some(("al-ice", "p@ss:w%rd"))).await;
    let url = format!("ws://localhost:{}/", server.addr.port());
    let out = run_connect(
        &[
            "--proxy",
            &proxy.url("socks5h", Some(("al-ice", "p%40ss%3Aw%25rd"))),
            &url,
        ],
        "hello\n",
    )
    .await;
    assert_echoed(&out, "hello\n");
}

#[tokio::test]
#[ignore = "needs microsocks: ./scripts/test.sh --only proxy"]
async fn microsocks_with_wrong_credentials_is_a_clear_error() {
    let server = echo_server().await;
    let proxy = microsocks(Some((USER, PASSWORD))).await;
    let out = run_connect(
        &[
            "--proxy",
            &proxy.url("socks5", Some((USER, "wrong-pw"))),
            &server.url(),
        ],
        "hello\n",
    )
    .await;
    assert_failed_with(&out, "the SOCKS5 proxy refused the username/password");
    assert!(
        !out.stderr.contains("wrong-pw"),
        "the password leaked: {}",
        out.stderr
    );
}

#[tokio::test]
#[ignore = "needs microsocks: ./scripts/test.sh --only proxy"]
async fn microsocks_without_the_credentials_it_wants_says_to_give_them() {
    let server = echo_server().await;
    let proxy = microsocks(Some((USER, PASSWORD))).await;
    let out = run_connect(
        &["--proxy", &proxy.url("socks5", None), &server.url()],
        "x\n",
    )
    .await;
    assert_failed_with(&out, "the SOCKS5 proxy requires a username/password");
}

#[tokio::test]
#[ignore = "needs microsocks: ./scripts/test.sh --only proxy"]
async fn wss_through_microsocks_from_all_proxy() {
    let (acceptor, pem) = tls_setup("microsocks");
    let addr = tls_echo_server(acceptor).await;
    let proxy = microsocks(Some((USER, PASSWORD))).await;
    let url = format!("wss://localhost:{}/", addr.port());
    let all_proxy = proxy.url("socks5h", Some((USER, PASSWORD)));
    let out = run_connect_with_env(
        &["--ca", pem.to_str().expect("path"), &url],
        &[("ALL_PROXY", &all_proxy)],
        "secret\n",
    )
    .await;
    assert_echoed(&out, "secret\n");
    // The same with a wrong password: proof that it went through the proxy.
    let wrong = proxy.url("socks5h", Some((USER, "nope")));
    let out = run_connect_with_env(
        &["--ca", pem.to_str().expect("path"), &url],
        &[("ALL_PROXY", &wrong)],
        "secret\n",
    )
    .await;
    assert_failed_with(&out, "the SOCKS5 proxy refused the username/password");
}

// ------------------------------------ without external proxies: run always

/// A proxy URL on a port where nothing listens.
fn dead_proxy(scheme: &str) -> String {
    format!("{scheme}://127.0.0.1:{}", free_port())
}

#[tokio::test]
async fn an_unreachable_proxy_is_a_clear_error() {
    let server = echo_server().await;
    for scheme in ["http", "socks5"] {
        let out = run_connect(&["--proxy", &dead_proxy(scheme), &server.url()], "x\n").await;
        assert_failed_with(&out, "cannot connect to the proxy");
    }
}

#[tokio::test]
async fn an_invalid_proxy_url_is_a_usage_error() {
    let server = echo_server().await;
    let out = run_connect(&["--proxy", "ftp://u:pw@h:1", &server.url()], "x\n").await;
    assert_eq!(out.status.code(), Some(2), "stderr {:?}", out.stderr);
    assert!(out.stderr.contains("--proxy"), "{}", out.stderr);
    assert!(
        out.stderr.contains("unsupported proxy scheme"),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("pw@"),
        "the password leaked: {}",
        out.stderr
    );
}

#[tokio::test]
async fn http_proxy_from_the_environment_is_used_for_ws() {
    let server = echo_server().await;
    let out = run_connect_with_env(
        &[&server.url()],
        &[("http_proxy", &dead_proxy("http"))],
        "x\n",
    )
    .await;
    assert_failed_with(&out, "cannot connect to the proxy");
}

#[tokio::test]
async fn uppercase_http_proxy_is_ignored_as_curl_does() {
    let server = echo_server().await;
    let out = run_connect_with_env(
        &[&server.url()],
        &[("HTTP_PROXY", &dead_proxy("http"))],
        "x\n",
    )
    .await;
    assert_echoed(&out, "x\n");
}

#[tokio::test]
async fn https_proxy_is_not_used_for_ws() {
    let server = echo_server().await;
    let out = run_connect_with_env(
        &[&server.url()],
        &[("HTTPS_PROXY", &dead_proxy("http"))],
        "x\n",
    )
    .await;
    assert_echoed(&out, "x\n");
}

#[tokio::test]
async fn no_proxy_sends_matching_hosts_direct() {
    let server = echo_server().await;
    let proxy = dead_proxy("socks5");
    for no_proxy in ["127.0.0.1", "127.0.0.0/8", "*", "example.com, 127.0.0.1"] {
        let out = run_connect_with_env(
            &[&server.url()],
            &[("ALL_PROXY", &proxy), ("NO_PROXY", no_proxy)],
            "x\n",
        )
        .await;
        assert_echoed(&out, "x\n");
    }
    // By name, on a domain boundary.
    let url = format!("ws://localhost:{}/", server.addr.port());
    let out = run_connect_with_env(
        &[&url],
        &[("all_proxy", &proxy), ("no_proxy", ".localhost")],
        "x\n",
    )
    .await;
    assert_echoed(&out, "x\n");
}

#[tokio::test]
async fn an_empty_proxy_flag_or_noproxy_overrides_the_environment() {
    let server = echo_server().await;
    let env = [("http_proxy", dead_proxy("http"))];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = run_connect_with_env(&["--proxy", "", &server.url()], &env, "x\n").await;
    assert_echoed(&out, "x\n");
    let out = run_connect_with_env(&["--noproxy", "*", &server.url()], &env, "x\n").await;
    assert_echoed(&out, "x\n");
    // --noproxy applies to --proxy too.
    let dead = dead_proxy("http");
    let out = run_connect(
        &["--proxy", &dead, "--noproxy", "127.0.0.1", &server.url()],
        "x\n",
    )
    .await;
    assert_echoed(&out, "x\n");
}

// ------------------------------------------------------------------ wss://

/// A self-signed certificate for localhost: the acceptor and the
/// certificate's PEM file.
fn tls_setup(name: &str) -> (TlsAcceptor, PathBuf) {
    let (acceptor, cert) = support::self_signed(&["localhost"]);
    let pem = scratch(name).join("server.pem");
    std::fs::write(&pem, cert).expect("write the PEM file");
    (acceptor, pem)
}

/// A TLS echo server (the library's `accept` over tokio-rustls).
async fn tls_echo_server(acceptor: TlsAcceptor) -> SocketAddr {
    let (listener, addr) = listen().await;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut config = wsline::ServerConfig::default();
                config.protocol.ping_interval = None;
                let Ok(mut ws) = wsline::accept(tls, &config).await else {
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
