//! `wsline serve` (in-memory engine) recovering a long gap: the replay
//! goes at the pace the client reads, so a client catching up on far more
//! than `--max-queue` is never closed as a slow consumer, while clients
//! that stop reading live traffic still are. The scenario is in
//! `long_gap/mod.rs`, shared with the Redis engine's test.

#[path = "../../hub/tests/common/mod.rs"]
mod common;
mod long_gap;

use std::net::SocketAddr;
use std::process::Stdio;

use common::within;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_wsline");

/// `wsline serve --listen 127.0.0.1:0 ARGS` once it listens (killed when
/// dropped), and its address.
async fn spawn_serve(args: &[&str]) -> (Child, SocketAddr) {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--close-timeout", "1"])
        .args(args)
        .env_remove("WSLINE_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn wsline serve");
    let mut err = child.stderr.take().expect("piped stderr");
    tokio::spawn(async move {
        let mut sink = Vec::new();
        let _ = err.read_to_end(&mut sink).await;
    });
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let line = within("the `listening on` line", lines.next_line())
        .await
        .expect("read stdout")
        .expect("wsline serve exited before listening");
    let addr = line
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .expect("an address");
    (child, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_gap_is_replayed_at_the_readers_pace_without_4008() {
    let (_serve, addr) = spawn_serve(long_gap::SERVE_ARGS).await;
    let url = format!("ws://{addr}/ws");
    long_gap::run(&url, &url, addr).await;
}
