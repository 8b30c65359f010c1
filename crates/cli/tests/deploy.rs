//! `deploy/wsline.service`, the systemd unit: `systemd-analyze verify`
//! finds nothing to say about it (where systemd-analyze is available),
//! and its sandbox rates as well locked down.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_wsline");
const UNIT: &str = include_str!("../../../deploy/wsline.service");

fn systemd_analyze() -> Option<()> {
    Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|_| ())
}

/// The unit with `ExecStart` pointing at the binary under test (verify
/// checks that it exists), in a file named like the real one.
fn unit_file() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("wsline-deploy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("wsline.service");
    std::fs::write(&path, UNIT.replace("/usr/local/bin/wsline", BIN)).unwrap();
    path
}

#[test]
fn the_systemd_unit_verifies_without_a_warning() {
    if systemd_analyze().is_none() {
        eprintln!("skipped: systemd-analyze is not available here");
        return;
    }
    assert!(UNIT.contains("ExecStart=/usr/local/bin/wsline serve"));
    let path = unit_file();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("run systemd-analyze verify");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // Unknown keys and bad values are warnings, not failures.
    assert!(
        stderr.trim().is_empty(),
        "systemd-analyze verify says:\n{stderr}"
    );

    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&path)
        .output()
        .expect("run systemd-analyze security");
    let text = String::from_utf8_lossy(&out.stdout);
    let level: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for wsline.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    assert!(
        level <= 2.0,
        "exposure {level} (0 is best, 10 worst):\n{text}"
    );
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}
