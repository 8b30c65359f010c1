//! Fuzz harnesses for wsline: one module per cargo-fuzz target, each with
//! the invariants it asserts beyond "no panic". The binaries in
//! `fuzz_targets/` only pass libFuzzer's input to [`frames::run`],
//! [`handshake::run_request`], and so on; [`seeds`] writes the starting
//! corpora in `seeds/<target>/`.
//!
//! Every harness is deterministic (fixed `Instant`, fixed masking keys,
//! no clock), so a crash input replays exactly.

pub mod deflate;
pub mod frames;
pub mod handshake;
pub mod hub;
pub mod inflate;
pub mod seeds;
pub mod wire;

/// Whether the check for the known, reported bug `name` is to be skipped:
/// when `name` is listed in `WSLINE_FUZZ_SKIP_KNOWN` (comma-separated), so
/// that fuzzing can look for other bugs until that one is fixed. A check
/// guarded by this names its bug in regressions/README.md; none is at
/// present.
pub fn known_bug_skipped(name: &str) -> bool {
    static SKIP: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    SKIP.get_or_init(|| {
        std::env::var("WSLINE_FUZZ_SKIP_KNOWN")
            .unwrap_or_default()
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect()
    })
    .iter()
    .any(|s| s == name)
}
