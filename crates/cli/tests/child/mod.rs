//! Running the `wsline` binary as a child process: `wsline echo` and
//! `wsline serve` on a free port (the address read from the `listening on`
//! line) and
//! `wsline connect` with piped stdin. Every wait is bounded; a child left
//! running when its handle is dropped is killed.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};

use crate::support::within;

pub const BIN: &str = env!("CARGO_BIN_EXE_wsline");

/// The variables `wsline connect` reads its proxy from (as curl does).
/// Removed from every child, so that a proxy set where the tests run never
/// comes between them and their servers; tests of these variables set
/// them explicitly ([`run_connect_with_env`]).
pub const PROXY_VARS: [&str; 12] = [
    "ws_proxy",
    "WS_PROXY",
    "wss_proxy",
    "WSS_PROXY",
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
];

fn command(subcommand: &str) -> Command {
    let mut cmd = Command::new(BIN);
    // No inherited WSLINE_ variable (every `serve` setting can come from
    // one) and no proxy variable.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("WSLINE_") {
            cmd.env_remove(key);
        }
    }
    for var in PROXY_VARS {
        cmd.env_remove(var);
    }
    cmd.arg(subcommand)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// A running `wsline echo` or `wsline serve`.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
}

/// How `wsline echo` runs its connections (`--runtime`). The tests of
/// `wsline echo` run against each: see [`on_both_runtimes`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runtime {
    /// `--runtime reactor` (the default): `wsline::reactor`.
    Reactor,
    /// `--runtime tokio`: a task per connection on `wsline::accept_with`
    /// and `wsline::WebSocket`.
    Tokio,
}

impl Runtime {
    /// The value of `--runtime`.
    pub fn arg(self) -> &'static str {
        match self {
            Runtime::Reactor => "reactor",
            Runtime::Tokio => "tokio",
        }
    }
}

/// Starts `wsline echo --listen 127.0.0.1:0 --runtime RUNTIME ARGS` and
/// waits for its `listening on` line.
pub async fn spawn_echo(runtime: Runtime, args: &[&str]) -> Server {
    spawn_echo_exactly(&[&["--runtime", runtime.arg()], args].concat()).await
}

/// Starts `wsline echo --listen 127.0.0.1:0 ARGS`, with no `--runtime`
/// (for tests of one runtime's options, and of the default).
pub async fn spawn_echo_exactly(args: &[&str]) -> Server {
    spawn_listening("echo", "listening on ws://", args).await
}

/// Starts `wsline echo --listen 127.0.0.1:0 ARGS` where ARGS make it serve
/// TLS (`--tls-cert`, `--tls-key`), and waits for its `listening on
/// wss://` line.
pub async fn spawn_echo_tls(args: &[&str]) -> Server {
    spawn_listening("echo", "listening on wss://", args).await
}

/// Runs `wsline ARGS` to its end (bounded); its status and stderr.
pub async fn run_to_end(args: &[&str]) -> (ExitStatus, String) {
    let mut cmd = command(args[0]);
    let out = within(
        "wsline to exit",
        cmd.args(&args[1..]).stdin(Stdio::null()).output(),
    )
    .await
    .expect("run wsline");
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// For each `async fn NAME(runtime: Runtime)` listed (with the test
/// attribute it runs under, and any `cfg`), two tests:
/// `runtime_reactor::NAME` and `runtime_tokio::NAME`, calling it with
/// [`Runtime::Reactor`] and [`Runtime::Tokio`]. A failure names the
/// runtime, and both run in parallel like any two tests. Tests of an
/// option that only one runtime has use [`spawn_echo_exactly`] and stay
/// out of this list.
///
/// ```ignore
/// on_both_runtimes! {
///     #[tokio::test] echo_returns_text,
///     #[tokio::test(flavor = "multi_thread", worker_threads = 2)] echo_serves_a_burst,
/// }
/// ```
#[allow(unused_macros)] // not every test file has tests for both runtimes
macro_rules! on_both_runtimes {
    ($($(#[$attr:meta])+ $name:ident),* $(,)?) => {
        mod runtime_reactor {
            $(
                $(#[$attr])+
                async fn $name() {
                    super::$name($crate::child::Runtime::Reactor).await
                }
            )*
        }
        mod runtime_tokio {
            $(
                $(#[$attr])+
                async fn $name() {
                    super::$name($crate::child::Runtime::Tokio).await
                }
            )*
        }
    };
}
#[allow(unused_imports)]
pub(crate) use on_both_runtimes;

/// Starts `wsline serve --listen 127.0.0.1:0 ARGS`; its logs (stderr) are
/// read and dropped, so the hub never blocks on a full pipe.
pub async fn spawn_serve(args: &[&str]) -> Server {
    let mut server = spawn_listening("serve", "listening on http://", args).await;
    let mut err = server.child.stderr.take().expect("piped stderr");
    tokio::spawn(async move {
        let mut sink = Vec::new();
        let _ = err.read_to_end(&mut sink).await;
    });
    server
}

async fn spawn_listening(subcommand: &str, prefix: &str, args: &[&str]) -> Server {
    let mut command = command(subcommand);
    command.args(["--listen", "127.0.0.1:0"]);
    let mut child = command
        .args(args)
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn wsline {subcommand}: {e}"));
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let line = within("the `listening on` line", lines.next_line())
        .await
        .expect("read stdout")
        .unwrap_or_else(|| panic!("wsline {subcommand} exited before listening"));
    let addr = line
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .unwrap_or_else(|e| panic!("bad address in {line:?}: {e}"));
    // Keep reading, so that what the server prints later never meets a
    // closed pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Server { child, addr }
}

impl Server {
    pub fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    /// Sends SIGTERM (`kill -TERM PID`).
    pub fn terminate(&self) {
        let pid = self.child.id().expect("the server is running");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {pid} failed");
    }

    /// Waits for the process to exit; its status and stderr.
    pub async fn wait(&mut self) -> (ExitStatus, String) {
        let status = within("the server to exit", self.child.wait())
            .await
            .expect("wait");
        let mut stderr = String::new();
        if let Some(mut err) = self.child.stderr.take() {
            within("stderr", err.read_to_string(&mut stderr))
                .await
                .expect("read stderr");
        }
        (status, stderr)
    }
}

/// A running `wsline connect`.
pub struct Connect {
    pub child: Child,
    pub stdin: Option<ChildStdin>,
}

/// What `wsline connect` did.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Starts `wsline connect ARGS` with piped stdin (left open).
pub fn spawn_connect(args: &[&str]) -> Connect {
    spawn_connect_with_env(args, &[])
}

/// Starts `wsline connect ARGS` with these environment variables set (on
/// top of the test's environment less [`PROXY_VARS`]).
pub fn spawn_connect_with_env(args: &[&str], env: &[(&str, &str)]) -> Connect {
    let mut command = command("connect");
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command
        .args(args)
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn wsline connect");
    let stdin = child.stdin.take();
    Connect { child, stdin }
}

impl Connect {
    /// Writes `input` to stdin. A process that has already exited (a
    /// usage error, a refused connection) closed its end: that is not an
    /// error here, its status and stderr tell the test what happened.
    pub async fn write(&mut self, input: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        let written = within("writing stdin", async {
            stdin.write_all(input.as_bytes()).await?;
            stdin.flush().await
        })
        .await;
        match written {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            other => other.expect("write stdin"),
        }
    }

    /// Closes stdin (end of input).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits for the process to exit (stdin stays as it is).
    pub async fn finish(self) -> Finished {
        let Connect { child, stdin } = self;
        let output = within("wsline connect to exit", child.wait_with_output())
            .await
            .expect("wait");
        drop(stdin);
        Finished {
            status: output.status,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// Runs `wsline connect ARGS` with `input` on stdin, then end of input.
pub async fn run_connect(args: &[&str], input: &str) -> Finished {
    run_connect_with_env(args, &[], input).await
}

/// [`run_connect`] with these environment variables set.
pub async fn run_connect_with_env(args: &[&str], env: &[(&str, &str)], input: &str) -> Finished {
    let mut connect = spawn_connect_with_env(args, env);
    connect.write(input).await;
    connect.close_stdin();
    connect.finish().await
}
