//! `wsline serve` as a child process: no config needed, the `listening on`
//! line, draining on SIGTERM/SIGINT and `POST /api/drain`, the `--config` TOML file
//! and flags over it, `[channels."pattern"]` tables.

#[path = "../../hub/tests/common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{http, within, Client};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

const BIN: &str = env!("CARGO_BIN_EXE_wsline");

/// A running `wsline serve`.
struct Serve {
    child: Child,
    addr: SocketAddr,
    /// Lines printed on stdout after `listening on`, read to the end.
    stdout_rest: Option<JoinHandle<Vec<String>>>,
    /// Everything printed on stderr (the logs), read to the end.
    stderr: Option<JoinHandle<String>>,
}

/// `wsline serve ARGS` with the environment `env` and no other `WSLINE_`
/// variable (every setting can come from one).
fn serve_command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("serve").args(args);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("WSLINE_") {
            cmd.env_remove(key);
        }
    }
    cmd.envs(env.iter().copied());
    cmd
}

/// Starts `wsline serve ARGS` and waits for its `listening on` line.
async fn spawn_serve(args: &[&str]) -> Serve {
    spawn_serve_env(args, &[]).await
}

/// [`spawn_serve`] with environment variables.
async fn spawn_serve_env(args: &[&str], env: &[(&str, &str)]) -> Serve {
    let mut child = serve_command(args, env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn wsline serve");
    // Drain stderr so the child never blocks on a full pipe.
    let mut err = child.stderr.take().expect("piped stderr");
    let stderr = tokio::spawn(async move {
        let mut text = String::new();
        let _ = err.read_to_string(&mut text).await;
        text
    });
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let line = within("the `listening on` line", lines.next_line())
        .await
        .expect("read stdout")
        .unwrap_or_else(|| panic!("wsline serve exited before listening"));
    let addr = line
        .strip_prefix("listening on http://")
        .or_else(|| line.strip_prefix("listening on https://"))
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .unwrap_or_else(|e| panic!("bad address in {line:?}: {e}"));
    let stdout_rest = tokio::spawn(async move {
        let mut rest = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            rest.push(line);
        }
        rest
    });
    Serve {
        child,
        addr,
        stdout_rest: Some(stdout_rest),
        stderr: Some(stderr),
    }
}

impl Serve {
    fn url(&self, query: &str) -> String {
        format!("ws://{}/ws{query}", self.addr)
    }

    async fn client(&self) -> Client {
        Client::connect(&self.url("")).await
    }

    /// Sends `signal` (`kill -TERM PID` and the like).
    fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("the server is running");
        let status = std::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {pid} failed");
    }

    /// Waits for the process to exit.
    async fn wait(&mut self) -> ExitStatus {
        within("wsline serve to exit", self.child.wait())
            .await
            .expect("wait")
    }

    /// Waits for the process to exit; its status, the stdout lines after
    /// `listening on`, and its stderr.
    async fn finish(&mut self) -> (ExitStatus, Vec<String>, String) {
        let status = self.wait().await;
        let rest = self.stdout_rest.take().expect("not finished yet");
        let rest = within("stdout to end", rest).await.expect("stdout reader");
        let err = self.stderr.take().expect("not finished yet");
        let err = within("stderr to end", err).await.expect("stderr reader");
        (status, rest, err)
    }
}

/// Runs `wsline serve ARGS` expecting it to fail before listening: its
/// exit status and stderr.
async fn serve_fails(args: &[&str]) -> (ExitStatus, String, String) {
    serve_output(args, &[]).await
}

/// Runs `wsline serve ARGS` with `env` to its end (one that does not
/// listen: a bad setting, `--print-config`): status, stdout, stderr.
async fn serve_output(args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String, String) {
    let out = within(
        "wsline serve to finish",
        serve_command(args, env)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("run wsline serve");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Writes a config file for this test under the target's temp dir.
fn config_file(name: &str, text: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("serve-{name}-{}.toml", std::process::id()));
    std::fs::write(&path, text).expect("write the config file");
    path
}

#[tokio::test]
async fn serve_runs_without_config_prints_listening_and_serves_ws_and_http() {
    let mut serve = spawn_serve(&["--listen", "127.0.0.1:0"]).await;
    assert!(serve.addr.ip().is_loopback());
    assert_ne!(serve.addr.port(), 0, "the real port is printed");
    let health = http(serve.addr, "GET", "/healthz", &[], None).await;
    assert_eq!(
        (health.status, health.json()),
        (200, json!({"status": "ok"}))
    );
    let mut a = serve.client().await;
    let mut b = serve.client().await;
    a.subscribe("hello").await;
    assert_eq!(b.publish("hello", json!({"n": 1})).await, 1);
    let m = a.recv().await;
    assert_eq!(
        m,
        json!({"op": "message", "channel": "hello", "offset": 1, "data": {"n": 1}, "from": b.id})
    );
    // The API answers loopback clients without a key.
    let body = r#"{"channel":"hello","data":2}"#;
    let reply = http(serve.addr, "POST", "/api/publish", &[], Some(body)).await;
    assert_eq!((reply.status, reply.json()), (200, json!({"offset": 2})));
    assert_eq!(a.recv().await["from"], json!(null));
    serve.signal("-TERM");
    assert_eq!(a.closed().await.0, 1001);
    assert_eq!(b.closed().await.0, 1001);
    let (status, more_stdout, stderr) = serve.finish().await;
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(
        more_stdout.is_empty(),
        "`listening on` is the only stdout line: {more_stdout:?}"
    );
}

/// `"data":null` is data: published and delivered as `null`, over `/ws`
/// and `POST /api/publish`; no `data` key at all is a bad request.
#[tokio::test]
async fn serve_publishes_and_delivers_data_null_over_ws_and_http() {
    let serve = spawn_serve(&["--listen", "127.0.0.1:0"]).await;
    let mut a = serve.client().await;
    a.subscribe("n").await;
    let raw_null = r#"{"op":"publish","channel":"n","data":null,"id":1}"#;
    a.send_text(raw_null).await;
    assert_eq!(
        a.recv().await,
        json!({"op": "published", "channel": "n", "offset": 1, "id": 1})
    );
    assert_eq!(
        a.recv().await,
        json!({"op": "message", "channel": "n", "offset": 1, "data": null, "from": a.id})
    );
    let reply = http(
        serve.addr,
        "POST",
        "/api/publish",
        &[],
        Some(r#"{"channel":"n","data":null}"#),
    )
    .await;
    assert_eq!((reply.status, reply.json()), (200, json!({"offset": 2})));
    assert_eq!(
        a.recv().await,
        json!({"op": "message", "channel": "n", "offset": 2, "data": null, "from": null})
    );
    a.send_text(r#"{"op":"publish","channel":"n","id":3}"#)
        .await;
    let reply = a.recv().await;
    assert_eq!(
        (&reply["op"], &reply["code"]),
        (&json!("error"), &json!("bad_request"))
    );
}

#[tokio::test]
async fn serve_listens_on_127_0_0_1_8080_by_default() {
    let mut child = Command::new(BIN)
        .arg("serve")
        .env_remove("WSLINE_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn wsline serve");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    match within("the first stdout line", lines.next_line())
        .await
        .unwrap()
    {
        Some(line) => {
            assert_eq!(line, "listening on http://127.0.0.1:8080");
            // Shut it down once it serves (its signal handlers are then
            // installed).
            let health = http(([127, 0, 0, 1], 8080).into(), "GET", "/healthz", &[], None).await;
            assert_eq!(health.status, 200);
            let pid = child.id().unwrap().to_string();
            let killed = std::process::Command::new("kill")
                .args(["-TERM", &pid])
                .status();
            assert!(killed.unwrap().success());
            let status = within("exit", child.wait()).await.unwrap();
            assert_eq!(status.code(), Some(0));
        }
        None => {
            // Something else holds port 8080 here: the error names it.
            let out = within("exit", child.wait_with_output()).await.unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{stderr}");
            assert!(stderr.contains("127.0.0.1:8080"), "{stderr}");
        }
    }
}

/// The default drain (no grace, 200 closes a second over at most 5 s)
/// closes three clients within 15 ms: the process is gone long before
/// the close timeout. (Before draining, SIGTERM closed every client at
/// once; a larger hub now spreads them, see the test below.)
#[tokio::test]
async fn serve_sigterm_closes_every_client_with_1001_and_exits_0() {
    let mut serve = spawn_serve(&["--listen", "127.0.0.1:0", "--close-timeout", "3"]).await;
    let mut clients = Vec::new();
    for i in 0..3 {
        let mut c = serve.client().await;
        c.subscribe(&format!("room{i}")).await;
        clients.push(c);
    }
    let started = Instant::now();
    serve.signal("-TERM");
    for c in &mut clients {
        let (code, reason) = c.closed().await;
        assert_eq!(code, 1001, "{reason}");
    }
    let (status, _, stderr) = serve.finish().await;
    assert_eq!(status.code(), Some(0), "{status:?}: {stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "clients that answer let it exit before the close timeout: {:?}",
        started.elapsed()
    );
    // It no longer listens.
    assert!(tokio::net::TcpStream::connect(serve.addr).await.is_err());
}

/// Polls `/healthz` until it answers 503 `draining`; when it first did.
async fn health_says_draining(addr: SocketAddr) -> Instant {
    within("/healthz to say draining", async {
        loop {
            let reply = http(addr, "GET", "/healthz", &[], None).await;
            if reply.status == 503 {
                assert_eq!(reply.json(), json!({"status": "draining"}));
                return Instant::now();
            }
            assert_eq!(reply.status, 200, "{reply:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
}

/// SIGTERM drains: `/healthz` flips to 503 first, nothing is closed during
/// the grace, then the clients are closed with 1001 spread over the
/// window (the rate of 1 a second is slower than 40 clients over 1.5 s,
/// so the window sets the pace), and the process exits 0 once the last
/// one has gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_sigterm_drains_health_first_then_closes_spread_over_the_window_and_exits_0() {
    const CLIENTS: usize = 40;
    let grace = Duration::from_secs(1);
    let window = Duration::from_millis(1500);
    let mut serve = spawn_serve(&[
        "--listen",
        "127.0.0.1:0",
        "--drain-grace",
        "1",
        "--drain-window",
        "1.5",
        "--drain-rate",
        "1",
        "--close-timeout",
        "3",
    ])
    .await;
    let mut closes = tokio::task::JoinSet::new();
    for i in 0..CLIENTS {
        let mut c = serve.client().await;
        c.subscribe(&format!("room{}", i % 5)).await;
        closes.spawn(async move {
            let (code, reason) = c.closed().await;
            (code, reason, Instant::now())
        });
    }
    let asked = Instant::now();
    serve.signal("-TERM");
    let flipped = health_says_draining(serve.addr).await;
    let mut got = within("every client's close", closes.join_all()).await;
    let (status, _, stderr) = serve.finish().await;
    let exited = asked.elapsed();
    assert_eq!(status.code(), Some(0), "{status:?}: {stderr}");
    for (code, reason, _) in &got {
        assert_eq!((*code, reason.as_str()), (1001, "server shutting down"));
    }
    got.sort_by_key(|(_, _, at)| *at);
    let (first, last) = (got[0].2, got[CLIENTS - 1].2);
    let spread = last - first;
    eprintln!(
        "health flipped {:?} after SIGTERM; closes from {:?} to {:?} (spread {spread:?}, window \
         {window:?}); exit after {exited:?}",
        flipped - asked,
        first - asked,
        last - asked
    );
    assert!(
        flipped < first,
        "/healthz flipped after a client was closed"
    );
    assert!(
        first - asked >= grace - Duration::from_millis(100),
        "a close during the grace: {:?} after SIGTERM",
        first - asked
    );
    assert!(spread >= window / 2, "closes spread over only {spread:?}");
    assert!(
        spread <= window + Duration::from_millis(1500),
        "closes spread over {spread:?}"
    );
    assert!(
        stderr.contains("draining") && stderr.contains("drained"),
        "the drain's start and end are logged: {stderr}"
    );
    assert!(tokio::net::TcpStream::connect(serve.addr).await.is_err());
}

/// `POST /api/drain` (from loopback: no API key set) drains like SIGTERM.
#[tokio::test]
async fn serve_post_api_drain_drains_and_exits_0() {
    let mut serve = spawn_serve(&["--listen", "127.0.0.1:0", "--drain-grace", "0.5"]).await;
    let mut c = serve.client().await;
    let reply = http(serve.addr, "POST", "/api/drain", &[], Some("")).await;
    assert_eq!(reply.status, 202, "{reply:?}");
    assert_eq!(reply.json()["started"], json!(true));
    let health = http(serve.addr, "GET", "/healthz", &[], None).await;
    assert_eq!(health.status, 503);
    assert_eq!(c.closed().await.0, 1001);
    let (status, _, stderr) = serve.finish().await;
    assert_eq!(status.code(), Some(0), "{stderr}");
}

/// A second SIGTERM while draining ends the process at once (status 1).
#[tokio::test]
async fn serve_a_second_signal_while_draining_exits_at_once() {
    let mut serve = spawn_serve(&["--listen", "127.0.0.1:0", "--drain-grace", "60"]).await;
    let _c = serve.client().await;
    serve.signal("-TERM");
    health_says_draining(serve.addr).await;
    let started = Instant::now();
    serve.signal("-INT");
    let (status, _, stderr) = serve.finish().await;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("second signal"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// The event-loop threads of the process `pid` (tokio's workers, named
/// `tokio-rt-worker`).
fn event_loop_threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("/proc")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("tokio-rt-worker"))
        .count()
}

/// Waits until the process `pid` has started `n` event-loop threads (the
/// runtime starts them as it goes); the count then.
async fn wait_for_loops(pid: u32, n: usize) -> usize {
    let started = Instant::now();
    loop {
        let count = event_loop_threads(pid);
        if count >= n || started.elapsed() > Duration::from_secs(5) {
            return count;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn serve_threads_runs_that_many_loops_and_their_clients_share_channels_and_shutdown() {
    let mut serve = spawn_serve(&["--listen", "127.0.0.1:0", "--threads", "3"]).await;
    let pid = serve.child.id().expect("running");
    assert_eq!(wait_for_loops(pid, 3).await, 3);
    let mut clients = Vec::new();
    for _ in 0..12 {
        let mut c = serve.client().await;
        c.subscribe("all").await;
        clients.push(c);
    }
    let mut publisher = serve.client().await;
    for i in 0..10 {
        publisher.publish("all", json!(i)).await;
    }
    for c in &mut clients {
        for i in 0..10u64 {
            let m = c.recv().await;
            assert_eq!((m["offset"].as_u64(), &m["data"]), (Some(i + 1), &json!(i)));
        }
    }
    clients.push(publisher);
    serve.signal("-TERM");
    for c in &mut clients {
        let (code, reason) = c.closed().await;
        assert_eq!(code, 1001, "{reason}");
    }
    let (status, _, stderr) = serve.finish().await;
    assert_eq!(status.code(), Some(0), "{status:?}: {stderr}");

    // One loop: no worker threads, the runtime runs on the main thread.
    let serve = spawn_serve(&["--listen", "127.0.0.1:0", "--threads", "1"]).await;
    assert_eq!(event_loop_threads(serve.child.id().expect("running")), 0);
    // The default: one loop per available core.
    let serve = spawn_serve(&["--listen", "127.0.0.1:0"]).await;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let want = if cores > 1 { cores } else { 0 };
    assert_eq!(
        wait_for_loops(serve.child.id().expect("running"), want).await,
        want
    );
}

#[tokio::test]
async fn serve_keeps_serving_after_sighup() {
    let mut serve = spawn_serve(&["--listen", "127.0.0.1:0", "--close-timeout", "2"]).await;
    let mut c = serve.client().await;
    c.subscribe("hup").await;
    serve.signal("-HUP");
    // Still serving: the subscriber gets a publication made afterwards.
    assert_eq!(api_status(serve.addr, None).await, 200);
    let mut p = serve.client().await;
    assert_eq!(p.publish("hup", json!("after")).await, 1);
    assert_eq!(c.recv().await["data"], "after");
    drop(p);
    serve.signal("-TERM");
    assert_eq!(c.closed().await.0, 1001);
    let (status, _, stderr) = serve.finish().await;
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("SIGHUP"), "{stderr}");
}

#[tokio::test]
async fn serve_sigint_shuts_down_like_sigterm() {
    let mut serve = spawn_serve(&["--listen", "127.0.0.1:0"]).await;
    let mut c = serve.client().await;
    serve.signal("-INT");
    assert_eq!(c.closed().await.0, 1001);
    assert_eq!(serve.wait().await.code(), Some(0));
}

#[tokio::test]
async fn serve_sigterm_exits_0_after_the_close_timeout_when_a_client_never_answers() {
    let mut serve = spawn_serve(&["--listen", "127.0.0.1:0", "--close-timeout", "0.5"]).await;
    // Open the WebSocket, read the welcome, then never read again (so the
    // Close is never answered).
    let mut stuck = Client::connect(&serve.url("")).await;
    let started = Instant::now();
    serve.signal("-TERM");
    let status = serve.wait().await;
    assert_eq!(status.code(), Some(0));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(5),
        "waits for the close timeout, then exits: {took:?}"
    );
    // What it sent before leaving was the 1001.
    assert_eq!(stuck.closed().await.0, 1001);
}

/// The status of `GET /api/channels` with `Authorization: Bearer KEY`.
async fn api_status(addr: SocketAddr, key: Option<&str>) -> u16 {
    let auth = key.map(|k| format!("Bearer {k}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    http(addr, "GET", "/api/channels", &headers, None)
        .await
        .status
}

#[tokio::test]
async fn serve_config_file_applies_and_flags_win_over_it() {
    let path = config_file(
        "precedence",
        r#"
listen = "127.0.0.1:0"
api_key = "from-file"
history_size = 2
max_subscriptions = 1
"#,
    );
    let serve = spawn_serve(&[
        "--config",
        path.to_str().unwrap(),
        "--api-key",
        "from-flag",
        "--max-subscriptions",
        "3",
    ])
    .await;
    // `listen` came from the file (there is no --listen).
    assert!(serve.addr.ip().is_loopback());
    // --api-key wins over api_key.
    assert_eq!(api_status(serve.addr, Some("from-flag")).await, 200);
    assert_eq!(api_status(serve.addr, Some("from-file")).await, 401);
    assert_eq!(api_status(serve.addr, None).await, 401);

    // --max-subscriptions 3 wins over max_subscriptions = 1.
    let mut c = serve.client().await;
    for channel in ["a", "b", "c"] {
        c.subscribe(channel).await;
    }
    let reply = c.request(json!({"op": "subscribe", "channel": "d"})).await;
    assert_eq!(reply["code"], "limit_exceeded", "{reply}");

    // history_size = 2 from the file: of 4 messages only the last 2 are
    // kept, so recovery from 0 is incomplete.
    let mut publisher = serve.client().await;
    for i in 1..=4 {
        assert_eq!(publisher.publish("log", json!(i)).await, i);
    }
    let mut late = serve.client().await;
    let reply = late
        .request(json!({"op": "subscribe", "channel": "log", "since": 0}))
        .await;
    assert_eq!(
        (reply["offset"].clone(), reply["recovered"].clone()),
        (json!(4), json!(false))
    );
    assert_eq!(late.recv().await["offset"], 3);
    assert_eq!(late.recv().await["offset"], 4);
    late.expect_nothing_pending().await;
    let _ = std::fs::remove_file(path);
}

/// The `key = value` lines `--print-config` printed (defaults are
/// comments and left out).
fn set_lines(toml: &str) -> Vec<&str> {
    toml.lines()
        .take_while(|l| !l.starts_with('['))
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect()
}

#[tokio::test]
async fn serve_settings_come_from_the_environment_after_flags_before_the_file() {
    let path = config_file(
        "env-precedence",
        r#"
history_size = 5
max_subscriptions = 1
publish_rate = 3
"#,
    );
    let (status, out, err) = serve_output(
        &["--max-subscriptions", "4", "--print-config"],
        &[
            ("WSLINE_CONFIG", path.to_str().unwrap()),
            ("WSLINE_HISTORY_SIZE", "6"),
            ("WSLINE_MAX_SUBSCRIPTIONS", "2"),
            ("WSLINE_ALLOW_ORIGIN", "https://a.example,https://b.example"),
            ("WSLINE_PING_INTERVAL", "2.5"),
        ],
    )
    .await;
    assert!(status.success(), "{status:?} {err}");
    assert_eq!(
        set_lines(&out),
        [
            r#"allow_origin = ["https://a.example", "https://b.example"]"#,
            // The environment over the file.
            "history_size = 6",
            // The file, where neither a flag nor the environment says.
            "publish_rate = 3",
            // The flag over the environment and the file.
            "max_subscriptions = 4",
            "ping_interval = 2.5",
        ],
        "{out}"
    );
    // Defaults are shown as comments.
    assert!(out.contains("# listen = \"127.0.0.1:8080\""), "{out}");
    // Read back as a file, the output gives the same configuration.
    let again = config_file("env-precedence-again", &out);
    let (status, out2, err) = serve_output(
        &["--config", again.to_str().unwrap(), "--print-config"],
        &[],
    )
    .await;
    assert!(status.success(), "{status:?} {err}");
    assert_eq!(out2, out);
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(again);
}

#[tokio::test]
async fn serve_runs_with_settings_from_the_environment_only() {
    let serve = spawn_serve_env(
        &[],
        &[
            ("WSLINE_LISTEN", "127.0.0.1:0"),
            ("WSLINE_API_KEY", "env-key"),
        ],
    )
    .await;
    assert!(serve.addr.ip().is_loopback() && serve.addr.port() != 8080);
    assert_eq!(api_status(serve.addr, Some("env-key")).await, 200);
    assert_eq!(api_status(serve.addr, None).await, 401);
}

#[tokio::test]
async fn serve_print_config_masks_secrets() {
    let (status, out, err) = serve_output(
        &[
            "--jwt-secret",
            "flag-secret-1234567890",
            "--engine",
            "redis",
            "--print-config",
        ],
        &[
            ("WSLINE_API_KEY", "env-api-key"),
            (
                "WSLINE_REDIS_URL",
                "redis://user:redis-pass@10.0.0.1:6379/0",
            ),
        ],
    )
    .await;
    assert!(status.success(), "{status:?} {err}");
    for secret in ["flag-secret-1234567890", "env-api-key", "redis-pass"] {
        assert!(!out.contains(secret), "{secret} shown in:\n{out}");
    }
    assert!(out.contains(r#"api_key = "********""#), "{out}");
    assert!(out.contains(r#"jwt_secret = "********""#), "{out}");
    assert!(
        out.contains(r#"redis_url = "redis://user:********@10.0.0.1:6379/0""#),
        "{out}"
    );
}

#[tokio::test]
async fn serve_refuses_a_bad_value_from_the_environment_with_exit_2() {
    let (status, _, err) =
        serve_output(&["--print-config"], &[("WSLINE_HISTORY_SIZE", "lots")]).await;
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains("'lots'") && err.contains("--history-size"),
        "{err}"
    );
}

#[tokio::test]
async fn serve_channels_table_with_client_publish_false_is_forbidden() {
    let path = config_file(
        "channels",
        r#"
[channels."x:*"]
client_publish = false

[channels."x:open:*"]
client_publish = true
presence = false
"#,
    );
    let serve = spawn_serve(&[
        "--config",
        path.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ])
    .await;
    let mut c = serve.client().await;
    let reply = c
        .request(json!({"op": "publish", "channel": "x:news", "data": 1, "id": 1}))
        .await;
    assert_eq!(
        (
            reply["op"].clone(),
            reply["code"].clone(),
            reply["id"].clone()
        ),
        (json!("error"), json!("forbidden"), json!(1)),
        "{reply}"
    );
    // The longer pattern wins: publishing is allowed again, presence is off.
    assert_eq!(c.publish("x:open:room", json!(1)).await, 1);
    let reply = c
        .request(json!({"op": "presence", "channel": "x:open:room"}))
        .await;
    assert_eq!(reply["code"], "forbidden", "{reply}");
    // Unmatched channels keep the defaults; the HTTP API may publish anywhere.
    assert_eq!(c.publish("y", json!(1)).await, 1);
    let body = r#"{"channel":"x:news","data":1}"#;
    let api = http(serve.addr, "POST", "/api/publish", &[], Some(body)).await;
    assert_eq!((api.status, api.json()), (200, json!({"offset": 1})));
    let _ = std::fs::remove_file(path);
}

#[tokio::test]
async fn serve_runs_the_example_config_of_docs_hub_md() {
    let doc = include_str!("../../../docs/hub.md");
    let example = doc
        .split("```toml\n")
        .skip(1)
        .filter_map(|block| block.split_once("```").map(|(toml, _)| toml))
        .find(|toml| toml.contains("listen ="))
        .expect("docs/hub.md has an example config file");
    let path = config_file("docs-example", example);
    // Its listen address is overridden by the flag.
    let serve = spawn_serve(&[
        "--config",
        path.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ])
    .await;
    let token = wsline_hub::auth::sign(&json!({"sub": "ann"}), b"another-long-secret");
    let mut ann = Client::connect(&serve.url(&format!("?token={token}"))).await;
    assert_eq!(ann.welcome["user"], "ann");
    ann.subscribe("announce:all").await;
    let reply = ann
        .request(json!({"op": "publish", "channel": "announce:all", "data": 1}))
        .await;
    assert_eq!(reply["code"], "forbidden", "{reply}");
    assert_eq!(api_status(serve.addr, Some("change-me")).await, 200);
    assert_eq!(api_status(serve.addr, None).await, 401);
    let _ = std::fs::remove_file(path);
}

#[tokio::test]
async fn serve_allow_origin_is_repeatable_and_refuses_other_origins_with_403() {
    let serve = spawn_serve(&[
        "--listen",
        "127.0.0.1:0",
        "--allow-origin",
        "https://a.example",
        "--allow-origin",
        "https://b.example",
    ])
    .await;
    for (origin, allowed) in [
        ("https://a.example", true),
        ("https://b.example", true),
        ("https://c.example", false),
    ] {
        let mut config = common::client_config();
        config.headers.push("Origin", origin);
        let result = within("connect", wsline::connect_with(&serve.url(""), &config)).await;
        match result {
            Ok(_) => assert!(allowed, "{origin} was let in"),
            Err(e) => {
                assert!(!allowed, "{origin} refused: {e}");
                assert_eq!(e.http_status(), Some(403), "{e}");
            }
        }
    }
}

#[tokio::test]
async fn serve_refuses_a_bad_config_file_or_flag_with_exit_2() {
    let unknown = config_file("unknown", "histroy_size = 5\n");
    let (status, stdout, stderr) = serve_fails(&["--config", unknown.to_str().unwrap()]).await;
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stdout.is_empty(), "no listening line: {stdout}");
    assert!(stderr.contains("histroy_size"), "{stderr}");
    let (status, _, stderr) = serve_fails(&["--config", "/nonexistent/wsline.toml"]).await;
    assert_eq!(status.code(), Some(2), "{stderr}");
    let (status, _, stderr) = serve_fails(&["--listen", "not-an-address"]).await;
    assert_eq!(status.code(), Some(2), "{stderr}");
    let (status, _, _) = serve_fails(&["--history-size", "many"]).await;
    assert_eq!(status.code(), Some(2));
    let (status, stdout, stderr) = serve_fails(&["--jwt-public-key", "/nonexistent/key.pem"]).await;
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stdout.is_empty(), "no listening line: {stdout}");
    assert!(stderr.contains("/nonexistent/key.pem"), "{stderr}");
    let (status, _, stderr) = serve_fails(&["--jwt-audience", "hub"]).await;
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--jwks-url"), "{stderr}");
    // A subscribe hook no channel pattern opts in to would never be asked.
    let hooks = config_file(
        "hooks",
        "[hooks]\nsubscribe_url = \"http://127.0.0.1:9/subscribe\"\n",
    );
    let (status, stdout, stderr) = serve_fails(&["--config", hooks.to_str().unwrap()]).await;
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stdout.is_empty(), "no listening line: {stdout}");
    assert!(stderr.contains("subscribe_hook = true"), "{stderr}");
    let _ = std::fs::remove_file(unknown);
    let _ = std::fs::remove_file(hooks);
}

/// `wsline serve --help` has a flag for every setting of the hub's table,
/// with its default, and no other flag but `--config` (and `-h, --help`).
#[tokio::test]
async fn serve_help_shows_every_setting_with_its_default_and_nothing_else() {
    let out = within(
        "wsline serve --help",
        Command::new(BIN).args(["serve", "--help"]).output(),
    )
    .await
    .expect("run wsline serve --help");
    assert!(out.status.success(), "{out:?}");
    let help = String::from_utf8_lossy(&out.stdout);
    let settings = wsline_hub::config::settings();
    for s in &settings {
        let flag = format!("--{} <{}>", s.flag(), s.value_name);
        let line = help
            .lines()
            .find(|l| l.trim_start().starts_with(&flag))
            .unwrap_or_else(|| panic!("no {flag} in:\n{help}"));
        let default = format!("[default: {}]", s.default);
        let env = format!("{default} [env: {}]", s.env());
        assert!(line.ends_with(&env), "{line:?} lacks {env}");
    }
    let mut flags: Vec<String> = help
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("--"))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    flags.sort();
    let mut expected: Vec<String> = settings.iter().map(|s| s.flag()).collect();
    // (`-h, --help` starts with `-h`.)
    expected.push("config".to_owned());
    expected.push("print-config".to_owned());
    expected.sort();
    assert_eq!(flags, expected);
    // The defaults shown are the ones relied on.
    for expected in [
        "--listen <ADDR>",
        "[default: 127.0.0.1:8080]",
        "--max-connecting-per-ip <N>",
        "[default: 64]",
        "--handshake-timeout <SECS>",
        "[default: 10]",
        "--history-size <N>",
        "[default: 100]",
    ] {
        assert!(help.contains(expected), "{expected} not in:\n{help}");
    }
}

#[tokio::test]
async fn serve_sigterm_right_after_the_listening_line_still_exits_0() {
    // A supervisor may signal as soon as the line is out. Until the
    // handlers are installed, SIGTERM kills the process (status: signal
    // 15) instead of shutting it down; a few tries catch that window.
    for _ in 0..50 {
        let mut serve = spawn_serve(&["--listen", "127.0.0.1:0"]).await;
        serve.signal("-TERM");
        let status = serve.wait().await;
        assert_eq!(status.code(), Some(0), "{status:?}");
    }
}

/// `wsline bench --mode fanout` against `wsline serve`: every subscriber
/// gets every publish, and the report says so.
#[tokio::test]
async fn bench_fanout_counts_every_delivery() {
    let mut serve = spawn_serve(&["--listen", "127.0.0.1:0", "--publish-rate", "100000"]).await;
    let pid = serve.child.id().expect("running").to_string();
    let out = within(
        "wsline bench --mode fanout",
        Command::new(BIN)
            .args(["bench", &serve.url(""), "--mode", "fanout", "-c", "20"])
            .args(["--size", "64", "--duration", "0.5", "--in-flight", "4"])
            .args(["--server-pid", &pid, "--json"])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("run wsline bench");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "bench JSON: {e}; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(out.status.success(), "bench failed: {report}");
    let fanout = &report["fanout"];
    let publishes = fanout["publishes"].as_u64().expect("publishes");
    assert!(publishes > 0, "{report}");
    assert_eq!(fanout["subscribers"], 20, "{report}");
    assert_eq!(fanout["expected_deliveries"].as_u64(), Some(publishes * 20));
    assert_eq!(
        fanout["deliveries"].as_u64(),
        Some(publishes * 20),
        "{report}"
    );
    assert_eq!(fanout["lost"], 0, "{report}");
    assert_eq!(fanout["duplicates"], 0, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    assert!(report["latency_us"]["p99"].as_f64().is_some(), "{report}");
    if cfg!(target_os = "linux") {
        assert!(
            fanout["server_cpu_us_per_delivery"].as_f64().is_some(),
            "{report}"
        );
    }
    serve.signal("-TERM");
    assert!(serve.wait().await.success());
}

/// A self-signed certificate for localhost in `dir`: its DER.
fn write_cert(dir: &std::path::Path) -> Vec<u8> {
    let made =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
    std::fs::write(dir.join("cert.pem"), made.cert.pem()).expect("write cert");
    std::fs::write(dir.join("key.pem"), made.key_pair.serialize_pem()).expect("write key");
    made.cert.der().to_vec()
}

/// The certificate a new TLS handshake with `addr` gets (verification
/// off: only the certificate is looked at).
async fn served_cert(addr: SocketAddr) -> Vec<u8> {
    let options = wsline::TlsOptions {
        insecure: true,
        ..Default::default()
    };
    let config = wsline::tls::client_config(&options).expect("client config");
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    tls.get_ref().1.peer_certificates().expect("certificates")[0].to_vec()
}

#[tokio::test]
async fn tls_prints_https_reloads_on_sighup_and_unusable_files_exit_2() {
    let dir = std::env::temp_dir().join(format!("wsline-serve-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let first = write_cert(&dir);
    let cert = dir.join("cert.pem").display().to_string();
    let key = dir.join("key.pem").display().to_string();
    // The key from the environment, as every setting may come.
    let mut server = spawn_serve_env(
        &["--listen", "127.0.0.1:0", "--tls-cert", &cert],
        &[("WSLINE_TLS_KEY", &key)],
    )
    .await;
    let mut config = common::client_config();
    config.tls.insecure = true;
    let url = format!("wss://localhost:{}/ws", server.addr.port());
    let mut open = Client::connect_with(&url, &config).await;
    open.subscribe("t").await;
    assert_eq!(served_cert(server.addr).await, first);

    let second = write_cert(&dir);
    server.signal("-HUP");
    // New handshakes get the new certificate once the signal is handled.
    within("the reloaded certificate", async {
        while served_cert(server.addr).await != second {
            tokio::task::yield_now().await;
        }
    })
    .await;
    // The connection opened before is still served.
    let offset = open.publish("t", json!("after reload")).await;
    assert_eq!(open.recv().await["offset"], offset);
    within("close", open.ws.close(wsline::CloseCode::NORMAL, ""))
        .await
        .expect("clean close");

    server.signal("-TERM");
    let (status, _, stderr) = server.finish().await;
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("reloaded"), "{stderr}");

    // Unusable files: exit 2 before listening, naming the file.
    let missing = dir.join("missing.pem").display().to_string();
    let (status, stdout, stderr) = serve_fails(&[
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        &missing,
        "--tls-key",
        &key,
    ])
    .await;
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("missing.pem"), "{stderr}");
    let (status, _, stderr) = serve_fails(&["--listen", "127.0.0.1:0", "--tls-cert", &cert]).await;
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("tls_key"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
