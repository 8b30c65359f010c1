//! Replays the committed seeds and crash regressions through the harnesses
//! without libFuzzer (`cargo test --manifest-path fuzz/Cargo.toml`), and
//! checks that `fuzz/seeds/` is what `seeds::all` makes.
//!
//! `WSLINE_FUZZ_WRITE_SEEDS=1` rewrites `fuzz/seeds/` instead of checking it.

use std::path::{Path, PathBuf};

use wsline_proto::Role;

fn run(target: &str, data: &[u8]) {
    match target {
        "frame_server" => wsline_fuzz::frames::run(Role::Server, data),
        "frame_client" => wsline_fuzz::frames::run(Role::Client, data),
        "handshake_request" => wsline_fuzz::handshake::run_request(data),
        "handshake_response" => wsline_fuzz::handshake::run_response(data),
        "deflate_negotiation" => wsline_fuzz::deflate::run(data),
        "inflate" => wsline_fuzz::inflate::run(data),
        "hub_protocol" => wsline_fuzz::hub::run(data),
        other => panic!("unknown target {other}"),
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

#[test]
fn seeds_are_current() {
    let dir = root().join("seeds");
    if std::env::var_os("WSLINE_FUZZ_WRITE_SEEDS").is_some() {
        let _ = std::fs::remove_dir_all(&dir);
        let n = wsline_fuzz::seeds::write_all(&dir).unwrap();
        eprintln!("wrote {n} seeds under {}", dir.display());
        return;
    }
    for (target, name, bytes) in wsline_fuzz::seeds::all() {
        let path = dir.join(target).join(&name);
        let on_disk = std::fs::read(&path).unwrap_or_default();
        assert!(
            on_disk == bytes,
            "{} is stale: rerun with WSLINE_FUZZ_WRITE_SEEDS=1",
            path.display()
        );
    }
}

/// Every file under `seeds/<target>/` and `regressions/<target>/`.
#[test]
fn seeds_and_regressions_replay() {
    let mut n = 0;
    for sub in ["seeds", "regressions"] {
        let Ok(targets) = std::fs::read_dir(root().join(sub)) else {
            continue;
        };
        for t in targets {
            let t = t.unwrap();
            if !t.file_type().unwrap().is_dir() {
                continue;
            }
            let target = t.file_name().into_string().unwrap();
            for f in std::fs::read_dir(t.path()).unwrap() {
                let path = f.unwrap().path();
                let data = std::fs::read(&path).unwrap();
                eprintln!("{}", path.display());
                run(&target, &data);
                n += 1;
            }
        }
    }
    assert!(n > 0, "no inputs found");
}
