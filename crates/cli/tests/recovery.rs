//! `wsline serve` (in-memory engine) recovering a long gap: the replay
//! goes at the pace the client reads, so a client catching up on far more
//! than `--max-queue` is never closed as a slow consumer, while clients
//! that stop reading live traffic still are. The scenario is in
//! `long_gap/mod.rs`, shared with the Redis engine's test.

mod child;
#[path = "../../hub/tests/common/mod.rs"]
mod common;
mod long_gap;
#[path = "../../wsline/tests/support/mod.rs"]
mod support;

use child::spawn_serve;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_gap_is_replayed_at_the_readers_pace_without_4008() {
    let serve = spawn_serve(&[&["--close-timeout", "1"], long_gap::SERVE_ARGS].concat()).await;
    let addr = serve.addr;
    let url = format!("ws://{addr}/ws");
    long_gap::run(&url, &url, addr).await;
}
