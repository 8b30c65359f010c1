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

fn command(subcommand: &str) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg(subcommand)
        .env_remove("WSLINE_LOG")
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

/// Starts `wsline echo --listen 127.0.0.1:0 ARGS` and waits for its
/// `listening on` line. With `WSLINE_ECHO_RUNTIME` set (scripts/test.sh
/// sets `tokio`), `--runtime VALUE` is added, so the same tests cover both
/// ways `wsline echo` runs its connections.
pub async fn spawn_echo(args: &[&str]) -> Server {
    match std::env::var("WSLINE_ECHO_RUNTIME") {
        Ok(runtime) => spawn_echo_exactly(&[&["--runtime", &runtime], args].concat()).await,
        Err(_) => spawn_echo_exactly(args).await,
    }
}

/// Starts `wsline echo --listen 127.0.0.1:0 ARGS`, ignoring
/// `WSLINE_ECHO_RUNTIME` (for tests of one runtime's options).
pub async fn spawn_echo_exactly(args: &[&str]) -> Server {
    spawn_listening("echo", "listening on ws://", args).await
}

/// Starts `wsline serve --listen 127.0.0.1:0 ARGS` (its stderr is not
/// read: keep its logs quiet).
pub async fn spawn_serve(args: &[&str]) -> Server {
    spawn_listening("serve", "listening on http://", args).await
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
    let mut child = command("connect")
        .args(args)
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn wsline connect");
    let stdin = child.stdin.take();
    Connect { child, stdin }
}

impl Connect {
    /// Writes `input` to stdin.
    pub async fn write(&mut self, input: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        within("writing stdin", async {
            stdin.write_all(input.as_bytes()).await?;
            stdin.flush().await
        })
        .await
        .expect("write stdin");
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
    let mut connect = spawn_connect(args);
    connect.write(input).await;
    connect.close_stdin();
    connect.finish().await
}
