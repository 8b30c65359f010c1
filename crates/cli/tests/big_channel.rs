//! Big channels through the `wsline serve` binary: join/leave events are
//! opt-in (`join_leave = true` per channel pattern), so 10,000 clients
//! subscribing to one channel with the default settings are each answered
//! promptly, the hub's memory stays bounded and nobody is told of anyone
//! else's arrival, while presence queries still list every member. Also:
//! a pattern with `join_leave` gets the events there and nowhere else, and
//! without a config file the demo chat's `chat.*` channels get them.
//!
//! Real sockets only: the hub is a child process, the clients are
//! `wsline::connect_with` in this process (at most [`IN_FLIGHT`] opening at
//! once). Every wait is bounded.

mod child;
#[path = "../../hub/tests/common/mod.rs"]
mod common;
#[path = "../../wsline/tests/support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{http, within, Client};
use futures_util::{stream, StreamExt, TryStreamExt};
use serde_json::json;
use tokio::process::Child;
/// Clients subscribing to the one big channel.
const CLIENTS: usize = 10_000;
/// Connections opening (or being checked) at once: below the default
/// per-IP handshake cap (64), so the test does not depend on it.
const IN_FLIGHT: usize = 50;
/// The bound on every phase of the big test; on this machine it takes a
/// few seconds, with join/leave events for everyone it never ends.
const BIG_WAIT: Duration = Duration::from_secs(60);
/// The bound on the hub's resident memory with 10,000 subscribers.
const MAX_RSS_KB: u64 = 300 * 1024;

/// A running `wsline serve`, killed on drop.
struct Serve {
    child: Child,
    addr: SocketAddr,
}

impl Serve {
    /// `wsline serve --listen 127.0.0.1:0 ARGS`, once it listens.
    async fn spawn(args: &[&str]) -> Serve {
        let child::Server { child, addr } = child::spawn_serve(args).await;
        Serve { child, addr }
    }

    async fn client(&self) -> Client {
        Client::connect(&format!("ws://{}/ws", self.addr)).await
    }

    /// The hub's resident set size in KiB (`VmRSS` of /proc/PID/status).
    fn rss_kb(&self) -> u64 {
        let pid = self.child.id().expect("the hub is running");
        let status =
            std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no VmRSS in {status}"))
    }
}

/// Raises this process's soft limit on open files (inherited by the hub
/// it starts) to at least `want`, within the hard limit.
fn raise_open_files(want: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write `lim`.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        if lim.rlim_cur < want as libc::rlim_t {
            assert!(
                lim.rlim_max >= want as libc::rlim_t,
                "this test needs {want} open files; the hard limit is {}",
                lim.rlim_max
            );
            lim.rlim_cur = want as libc::rlim_t;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        }
    }
}

/// Writes a config file for this test under the target's temp dir.
fn config_file(name: &str, text: &str) -> std::path::PathBuf {
    let path = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("big-channel-{name}-{}.toml", std::process::id()));
    std::fs::write(&path, text).expect("write the config file");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_subscribers_of_one_channel_are_answered_promptly_with_default_settings() {
    // Each side holds one socket per client, plus a little.
    raise_open_files(CLIENTS as u64 + 512);
    let serve = Serve::spawn(&[]).await;
    let url = format!("ws://{}/ws", serve.addr);

    let started = Instant::now();
    let opened = stream::iter(0..CLIENTS)
        .map(|_| {
            let url = url.clone();
            async move {
                let mut c = Client::connect(&url).await;
                let reply = c
                    .request(json!({"op": "subscribe", "channel": "big"}))
                    .await;
                if reply["op"] != "subscribed" {
                    return Err(format!("client {} got {reply} for its subscribe", c.id));
                }
                Ok(c)
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<Vec<Client>>();
    let mut clients = tokio::time::timeout(BIG_WAIT, opened)
        .await
        .unwrap_or_else(|_| panic!("{CLIENTS} subscribes took over {BIG_WAIT:?}"))
        .unwrap_or_else(|e| panic!("{e}"));
    let took = started.elapsed();
    let rss_kb = serve.rss_kb();
    eprintln!(
        "{CLIENTS} clients connected and subscribed in {took:?}; hub VmRSS {} MiB",
        rss_kb / 1024
    );
    assert_eq!(clients.len(), CLIENTS);
    assert!(
        rss_kb < MAX_RSS_KB,
        "the hub holds {rss_kb} KiB with {CLIENTS} subscribers"
    );

    // Presence still lists everyone.
    let reply = within(
        "GET /api/presence/big",
        http(serve.addr, "GET", "/api/presence/big", &[], None),
    )
    .await;
    assert_eq!(reply.status, 200);
    let members = reply.json()["members"].as_array().map(Vec::len);
    assert_eq!(members, Some(CLIENTS));

    // Nobody was told of anyone's join: each client's next message is the
    // answer to its ping.
    let checked = stream::iter(clients.iter_mut())
        .map(|c| c.expect_nothing_pending())
        .buffer_unordered(IN_FLIGHT)
        .collect::<Vec<()>>();
    tokio::time::timeout(BIG_WAIT, checked)
        .await
        .unwrap_or_else(|_| panic!("{CLIENTS} pings took over {BIG_WAIT:?}"));
    let rss_kb = serve.rss_kb();
    eprintln!("after the pings: hub VmRSS {} MiB", rss_kb / 1024);
    assert!(rss_kb < MAX_RSS_KB, "the hub holds {rss_kb} KiB");
}

#[tokio::test]
async fn join_leave_true_on_a_pattern_sends_events_there_and_nowhere_else() {
    let path = config_file(
        "pattern",
        "[channels.\"live:*\"]\njoin_leave = true\n[channels.\"quiet:*\"]\nhistory_size = 5\n",
    );
    let serve = Serve::spawn(&["--config", path.to_str().expect("utf-8 path")]).await;
    let mut a = serve.client().await;
    let mut b = serve.client().await;
    let channels = ["live:room", "quiet:room", "plain"];
    for channel in channels {
        a.subscribe(channel).await;
    }
    for channel in channels {
        b.subscribe(channel).await;
    }
    let member_b = json!({"client": b.id, "user": null});
    assert_eq!(
        a.recv().await,
        json!({"op": "join", "channel": "live:room", "member": member_b})
    );
    a.expect_nothing_pending().await;
    // Presence queries answer on every channel, events or not.
    for channel in channels {
        let reply = a
            .request(json!({"op": "presence", "channel": channel}))
            .await;
        assert_eq!(
            reply["members"].as_array().map(Vec::len),
            Some(2),
            "{reply}"
        );
    }
    // b goes away: one leave, on live:room only.
    within("close", b.ws.close(wsline::CloseCode::NORMAL, "bye"))
        .await
        .expect("clean close");
    assert_eq!(
        a.recv().await,
        json!({"op": "leave", "channel": "live:room", "member": member_b})
    );
    a.expect_nothing_pending().await;
    let reply = http(serve.addr, "GET", "/api/presence/plain", &[], None).await;
    assert_eq!(
        reply.json()["members"],
        json!([{"client": a.id, "user": null}])
    );
    let _ = std::fs::remove_file(path);
}

#[tokio::test]
async fn without_a_config_file_only_the_demo_chat_channels_send_join_and_leave() {
    let serve = Serve::spawn(&[]).await;
    let mut a = serve.client().await;
    let mut b = serve.client().await;
    common::join_leave_only_on(&mut a, &mut b, "chat.lobby", "lobby").await;
}
