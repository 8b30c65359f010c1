//! `wsline serve --data-dir`: channel history, offsets and epochs survive
//! a restart (SIGTERM or SIGKILL), so reconnecting clients recover; under
//! `--fsync always` nothing acknowledged is lost however the process is
//! killed; a torn or corrupt tail is cut off; a directory that cannot be
//! used stops the hub with a clear error before it listens; a full disk
//! refuses publications with a clear error and no gap in the offsets
//! (that one mounts a tmpfs, so it is `#[ignore]`d in plain `cargo test`
//! and run by `./scripts/test.sh --only test`).

mod child;
#[path = "../../hub/tests/common/mod.rs"]
mod common;
#[path = "../../wsline/tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use child::{spawn_serve, Server, BIN};
use common::Client;
use serde_json::{json, Value};

/// A fresh directory for one test.
fn data_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "wsline-durable-{name}-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

async fn serve_on(dir: &Path, fsync: &str) -> Server {
    spawn_serve(&[
        "--data-dir",
        dir.to_str().unwrap(),
        "--fsync",
        fsync,
        "--history-size",
        "100000",
        "--history-ttl",
        "3600",
        "--publish-rate",
        "100000",
        "--close-timeout",
        "1",
    ])
    .await
}

async fn client(server: &Server) -> Client {
    Client::connect(&format!("ws://{}/ws", server.addr)).await
}

/// SIGKILL, then waits for the process to be gone.
async fn kill(server: &mut Server) {
    server.child.start_kill().expect("SIGKILL");
    let _ = support::within("the killed hub to exit", server.child.wait()).await;
}

/// Subscribes with `since` and `epoch`; returns the reply and the
/// replayed messages (offset, data) up to the reply's offset.
async fn recover(
    c: &mut Client,
    channel: &str,
    since: u64,
    epoch: &str,
) -> (Value, Vec<(u64, Value)>) {
    let mut request = json!({"op": "subscribe", "channel": channel, "since": since});
    if !epoch.is_empty() {
        request["epoch"] = json!(epoch);
    }
    let reply = c.request(request).await;
    assert_eq!(reply["op"], "subscribed", "{reply}");
    assert_eq!(reply["recovered"], true, "{reply}");
    let latest = reply["offset"].as_u64().unwrap();
    let mut got = Vec::new();
    let mut at = since;
    while at < latest {
        let m = c.recv().await;
        assert_eq!(m["op"], "message", "{m}");
        at = m["offset"].as_u64().unwrap();
        got.push((at, m["data"].clone()));
    }
    (reply, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_offsets_and_epochs_survive_sigkill_and_sigterm() {
    let dir = data_dir("restart");
    let mut hub = serve_on(&dir, "1").await;
    let mut c = client(&hub).await;
    let first = c.subscribe("room").await;
    let epoch = first["epoch"].as_str().unwrap().to_owned();
    for n in 1..=5 {
        assert_eq!(c.publish("room", json!({ "n": n })).await, n);
        assert_eq!(c.recv().await["data"]["n"], n);
    }
    drop(c);
    kill(&mut hub).await;

    // SIGKILL: the kernel kept what was written; the client recovers.
    let mut hub = serve_on(&dir, "1").await;
    let mut c = client(&hub).await;
    let (reply, got) = recover(&mut c, "room", 2, &epoch).await;
    assert_eq!(reply["recovered"], true, "{reply}");
    assert_eq!(reply["offset"], 5);
    assert_eq!(
        got,
        (3..=5).map(|n| (n, json!({ "n": n }))).collect::<Vec<_>>()
    );
    // Offsets continue.
    assert_eq!(c.publish("room", json!({"n": 6})).await, 6);
    drop(c);
    hub.terminate();
    let (status, stderr) = hub.wait().await;
    assert!(status.success(), "{status}: {stderr}");

    // SIGTERM: the same.
    let mut hub = serve_on(&dir, "1").await;
    let mut c = client(&hub).await;
    let (reply, got) = recover(&mut c, "room", 5, &epoch).await;
    assert_eq!(reply["recovered"], true, "{reply}");
    assert_eq!(got, vec![(6, json!({"n": 6}))]);
    drop(c);
    kill(&mut hub).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Publishes `{"n": next}`, `{"n": next + 1}`, … one at a time until the
/// connection breaks (the hub is killed); gives (offset, n) of each
/// acknowledged publication and the n of the one in flight, if any.
async fn publish_until_killed(url: String, mut next: u64) -> (Vec<(u64, u64)>, Option<u64>) {
    use wsline::proto::Message;
    let Ok((mut ws, _)) = wsline::connect(&url).await else {
        return (Vec::new(), None);
    };
    // The hub greets first.
    match ws.recv().await {
        Some(Ok(Message::Text(t))) if t.as_str().contains("\"welcome\"") => {}
        _ => return (Vec::new(), None),
    }
    let mut acked = Vec::new();
    loop {
        let request = json!({"op": "publish", "channel": "log", "data": {"n": next}}).to_string();
        if ws.send(Message::text(request)).await.is_err() {
            return (acked, Some(next));
        }
        match ws.recv().await {
            Some(Ok(Message::Text(t))) => {
                let reply: Value = serde_json::from_str(t.as_str()).unwrap();
                assert_eq!(reply["op"], "published", "{reply}");
                acked.push((reply["offset"].as_u64().unwrap(), next));
                next += 1;
            }
            _ => return (acked, Some(next)),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_random_moments_under_always_nothing_acknowledged_is_lost() {
    let dir = data_dir("sigkill");
    // n -> offset of every publication known to be in the log.
    let mut stored: Vec<(u64, u64)> = Vec::new();
    let mut epoch: Option<String> = None;
    let mut next_n = 1;
    let rounds = 8;
    for round in 0..rounds {
        let mut hub = serve_on(&dir, "always").await;
        // From the second round on: everything stored so far is there, in
        // order, once, under the same epoch (the first recovery names
        // none: the channel is made by the first publication).
        if round > 0 {
            let mut c = client(&hub).await;
            let (reply, got) = recover(&mut c, "log", 0, epoch.as_deref().unwrap_or("")).await;
            let now = reply["epoch"].as_str().unwrap().to_owned();
            assert_eq!(
                epoch.get_or_insert_with(|| now.clone()),
                &now,
                "round {round}: the epoch changed"
            );
            let offsets: Vec<u64> = got.iter().map(|(o, _)| *o).collect();
            assert_eq!(
                offsets,
                (1..=got.len() as u64).collect::<Vec<_>>(),
                "round {round}: offsets not contiguous from 1"
            );
            for (offset, n) in &stored {
                assert_eq!(
                    got.get(*offset as usize - 1).map(|(_, d)| d["n"].as_u64()),
                    Some(Some(*n)),
                    "round {round}: acknowledged offset {offset} (n={n}) missing or wrong"
                );
            }
            // At most the one publication in flight at the kill is there
            // without an acknowledgement.
            assert!(
                got.len() <= stored.len() + 1,
                "round {round}: {} entries for {} acknowledged",
                got.len(),
                stored.len()
            );
            if got.len() == stored.len() + 1 {
                let (offset, data) = got.last().unwrap();
                let n = data["n"].as_u64().unwrap();
                assert_eq!(n, next_n - 1, "round {round}: an entry that was never sent");
                stored.push((*offset, n));
            }
        }
        let url = format!("ws://{}/ws", hub.addr);
        let publisher = tokio::spawn(publish_until_killed(url, next_n));
        // A random moment while publishing.
        let wait = 100 + rand::random::<u64>() % 300;
        tokio::time::sleep(Duration::from_millis(wait)).await;
        kill(&mut hub).await;
        let (acked, in_flight) = support::within("the publisher to stop", publisher)
            .await
            .unwrap();
        assert!(
            !acked.is_empty() || round > 0,
            "nothing was published in {wait} ms"
        );
        for (offset, n) in &acked {
            assert_eq!(*offset, stored.len() as u64 + 1, "offsets continue");
            stored.push((*offset, *n));
        }
        next_n = in_flight.map_or(next_n + acked.len() as u64, |n| n + 1);
    }
    assert!(
        stored.len() > rounds,
        "{} publications over {rounds} rounds",
        stored.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_or_corrupt_tail_is_cut_and_offsets_stay_honest() {
    let dir = data_dir("torn");
    let mut hub = serve_on(&dir, "always").await;
    let mut c = client(&hub).await;
    let epoch = c.subscribe("t").await["epoch"].as_str().unwrap().to_owned();
    for n in 1..=4 {
        c.publish("t", json!(n)).await;
        c.recv().await;
    }
    drop(c);
    hub.terminate();
    hub.wait().await;
    let log = dir.join("history.log");
    let whole = std::fs::read(&log).unwrap();

    // Garbage after the last record (a torn append): cut, nothing lost.
    let mut torn = whole.clone();
    torn.extend_from_slice(&[0x17, 0, 0, 0, 0xde, 0xad]);
    std::fs::write(&log, &torn).unwrap();
    let mut hub = serve_on(&dir, "always").await;
    let mut c = client(&hub).await;
    let (reply, got) = recover(&mut c, "t", 0, &epoch).await;
    assert_eq!(
        (reply["recovered"].clone(), got.len()),
        (json!(true), 4),
        "{reply}"
    );
    drop(c);
    hub.terminate();
    hub.wait().await;
    assert_eq!(
        std::fs::read(&log).unwrap().len(),
        whole.len(),
        "the tail was cut"
    );

    // The last record damaged: it is dropped, the channel is at offset 3,
    // and a client that had seen 4 is told it did not recover (never a
    // wrong offset).
    let mut bad = whole.clone();
    let n = bad.len();
    bad[n - 1] ^= 0xff;
    std::fs::write(&log, &bad).unwrap();
    let mut hub = serve_on(&dir, "always").await;
    let mut c = client(&hub).await;
    let reply = c
        .request(json!({"op": "subscribe", "channel": "t", "since": 4, "epoch": epoch}))
        .await;
    assert_eq!(
        (reply["offset"].clone(), reply["recovered"].clone()),
        (json!(3), json!(false)),
        "{reply}"
    );
    assert_eq!(c.publish("t", json!("next")).await, 4);
    drop(c);
    kill(&mut hub).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs `wsline serve ARGS` expecting it to stop before listening.
async fn refused(args: &[&str]) -> (i32, String) {
    let out = support::within(
        "wsline serve to stop",
        tokio::process::Command::new(BIN)
            .arg("serve")
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env_remove("WSLINE_CONFIG")
            .output(),
    )
    .await
    .expect("run wsline");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!stdout.contains("listening on"), "{stdout}");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_directory_that_cannot_be_used_stops_the_hub_with_a_clear_error() {
    // Not creatable.
    let (code, stderr) = refused(&["--data-dir", "/proc/wsline-no-such-dir"]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("data_dir") && stderr.contains("/proc/wsline-no-such-dir"),
        "{stderr}"
    );

    // Someone else's file where the log goes.
    let dir = data_dir("foreign");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("history.log"), "not ours\n").unwrap();
    let (code, stderr) = refused(&["--data-dir", dir.to_str().unwrap()]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("not a wsline history log"), "{stderr}");
    std::fs::remove_file(dir.join("history.log")).unwrap();

    // Held by a running hub.
    let mut hub = serve_on(&dir, "1").await;
    let (code, stderr) = refused(&["--data-dir", dir.to_str().unwrap()]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("in use by another wsline process"),
        "{stderr}"
    );
    kill(&mut hub).await;

    // With the Redis engine, or fsync without a directory: settings errors.
    let (code, stderr) = refused(&["--data-dir", "/tmp/x", "--engine", "redis"]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("data_dir is for the memory engine"),
        "{stderr}"
    );
    let (code, stderr) = refused(&["--fsync", "always"]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("add --data-dir"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `wsline serve --data-dir DIR --fsync always` on a 256 KiB tmpfs that a
/// filler file already half fills, mounted at `DIR` in a mount namespace
/// of its own (`unshare -rm`: root in a user namespace, so no real root
/// needed where user namespaces are allowed; the mount goes away with the
/// process). The test reaches the tmpfs through `/proc/PID/root`.
async fn serve_on_small_disk(dir: &Path) -> Server {
    std::fs::create_dir_all(dir).unwrap();
    let script = r#"mount -t tmpfs -o size=256k tmpfs "$1" || exit 97
head -c 150000 /dev/zero > "$1/filler" || exit 98
exec "$0" serve --listen 127.0.0.1:0 --data-dir "$1" --fsync always \
  --history-size 100000 --history-ttl 3600 --publish-rate 100000 --close-timeout 1"#;
    let mut command = tokio::process::Command::new("unshare");
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("WSLINE_") {
            command.env_remove(key);
        }
    }
    let mut child = command
        .args(["-rm", "sh", "-c", script, BIN, dir.to_str().unwrap()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("unshare (util-linux) on the PATH");
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = support::within("the `listening on` line", lines.next_line())
        .await
        .expect("read stdout")
        .unwrap_or_else(|| {
            panic!("wsline serve on a tmpfs exited before listening (can this user unshare -rm?)")
        });
    let addr = line
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .unwrap();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Server { child, addr }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "mounts a tmpfs in a private mount namespace (unshare -rm): ./scripts/test.sh --only test runs it"]
async fn a_full_disk_refuses_publications_cleanly_and_offsets_stay_honest() {
    let dir = data_dir("full");
    let mut hub = serve_on_small_disk(&dir).await;
    let inside = PathBuf::from(format!("/proc/{}/root", hub.child.id().unwrap()))
        .join(dir.strip_prefix("/").unwrap());
    let mut publisher = client(&hub).await;
    let mut subscriber = client(&hub).await;
    subscriber.subscribe("t").await;
    let pad = "x".repeat(1000);

    // Publish until the disk is full: every acknowledged one numbered in
    // turn, then a clear refusal.
    let mut acked = 0u64;
    let refusal = loop {
        assert!(acked < 1000, "the 100 KiB left never filled up");
        let reply = publisher
            .request(json!({"op": "publish", "channel": "t", "id": acked + 1,
                            "data": {"n": acked + 1, "pad": pad}}))
            .await;
        match reply["op"].as_str() {
            Some("published") => {
                acked += 1;
                assert_eq!(reply["offset"], acked, "{reply}");
            }
            Some("error") => break reply,
            _ => panic!("unexpected {reply}"),
        }
    };
    assert!(acked > 10, "only {acked} publications fitted");
    assert_eq!(refusal["code"], "unavailable", "{refusal}");
    let message = refusal["message"].as_str().unwrap();
    assert!(
        message.contains("history could not be stored") && message.contains("No space left"),
        "{refusal}"
    );
    // The write was cut back out of the log: the hub stays healthy, and
    // the subscriber saw exactly the acknowledged ones.
    let health = common::http(hub.addr, "GET", "/healthz", &[], None).await;
    assert_eq!(health.status, 200, "{health:?}");
    for n in 1..=acked {
        let m = subscriber.recv().await;
        assert_eq!(
            (m["offset"].as_u64(), m["data"]["n"].as_u64()),
            (Some(n), Some(n)),
            "{m}"
        );
    }
    subscriber.expect_nothing_pending().await;

    // Room again: the next publication takes the next offset, no gap.
    std::fs::remove_file(inside.join("filler")).expect("the filler, through /proc/PID/root");
    let next = publisher
        .publish("t", json!({"n": acked + 1, "pad": pad}))
        .await;
    assert_eq!(next, acked + 1);
    let m = subscriber.recv().await;
    assert_eq!(m["offset"], acked + 1, "{m}");

    // What the log holds is exactly what was acknowledged: a hub started
    // on a copy of it (the tmpfs goes with the process) replays 1..=next.
    let copy = data_dir("full-copy");
    std::fs::create_dir_all(&copy).unwrap();
    std::fs::copy(inside.join("history.log"), copy.join("history.log")).unwrap();
    kill(&mut hub).await;
    let mut hub = serve_on(&copy, "always").await;
    let mut c = client(&hub).await;
    let epoch = {
        let reply = c.subscribe("t").await;
        assert_eq!(reply["offset"], next, "{reply}");
        reply["epoch"].as_str().unwrap().to_owned()
    };
    let mut c = client(&hub).await;
    let (_, got) = recover(&mut c, "t", 0, &epoch).await;
    let numbers: Vec<(u64, u64)> = got
        .iter()
        .map(|(o, d)| (*o, d["n"].as_u64().unwrap()))
        .collect();
    assert_eq!(numbers, (1..=next).map(|n| (n, n)).collect::<Vec<_>>());
    drop(c);
    kill(&mut hub).await;
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&copy);
}
