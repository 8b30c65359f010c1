#!/usr/bin/env bash
# wsline fuzzing: builds the cargo-fuzz targets in fuzz/ and runs each one.
# Usage: ./scripts/fuzz.sh [options] [TARGET...]      (default: every target)
#
#   --seconds N       fuzz each target for N seconds (default 60)
#   --jobs J          run at most J targets at once (default 1)
#   --sanitizer S     address (default) or none: ASan on stable Rust needs
#                     RUSTC_BOOTSTRAP=1, which this script sets for the fuzz build only
#   --merge           afterwards, shrink each target's corpus to the inputs that add
#                     coverage (libFuzzer -merge=1)
#   --write-seeds     regenerate fuzz/seeds/ from fuzz/src/seeds.rs, then exit
#   --list            print the target names and exit
#   -h, --help        this text
#
# Corpora: each run reads the committed seeds in fuzz/seeds/TARGET/ and grows
# .cache/fuzz-corpus/TARGET/ (gitignored), where new inputs are kept between runs.
# Before fuzzing, the inputs in fuzz/regressions/TARGET/ (kept crash inputs) are
# replayed. A crash input goes to fuzz/artifacts/TARGET/ (gitignored); reproduce
# it with: fuzz/target/<host>/release/TARGET FILE. Logs: .cache/fuzz-logs/TARGET.log
#
# Prints, per target: runs executed, final coverage (cov, ft), corpus size,
# peak RSS, and the crash file if any.
# Exit status: 0 no crash; 1 a crash, a failed replay or a failed build;
# 2 usage; 3 cargo-fuzz is missing and could not be installed.
#
# Environment: CARGO_FUZZ_VERSION (default 0.13.2) is installed when cargo-fuzz
# is missing; FUZZ_ARGS adds libFuzzer flags to every run; WSLINE_FUZZ_SKIP_KNOWN
# (comma-separated names, see fuzz/src/lib.rs) skips the checks of known, reported
# bugs, their kept inputs included, so that fuzzing can look for other bugs.

set -u
set -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 2

CARGO_FUZZ_VERSION="${CARGO_FUZZ_VERSION:-0.13.2}"
FUZZ_DIR="$ROOT/fuzz"
FUZZ_TARGET_DIR="$FUZZ_DIR/target"
CORPUS_ROOT="$ROOT/.cache/fuzz-corpus"
LOG_ROOT="$ROOT/.cache/fuzz-logs"

usage() { awk 'NR>1 && /^#/ { sub(/^# ?/, ""); print; next } NR>1 { exit }' "$0"; }
die_usage() { echo "fuzz.sh: $*" >&2; echo "see ./scripts/fuzz.sh --help" >&2; exit 2; }
log() { echo "[fuzz.sh] $*"; }

all_targets() { sed -n 's/^name = "\([a-z_]*\)"$/\1/p' "$FUZZ_DIR/Cargo.toml" | grep -v '^wsline-fuzz$'; }

SECONDS_EACH=60
JOBS=1
SANITIZER=address
MERGE=0
TARGETS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) [ $# -ge 2 ] || die_usage "--seconds needs a value"; SECONDS_EACH=$2; shift 2 ;;
    --seconds=*) SECONDS_EACH=${1#*=}; shift ;;
    --jobs) [ $# -ge 2 ] || die_usage "--jobs needs a value"; JOBS=$2; shift 2 ;;
    --jobs=*) JOBS=${1#*=}; shift ;;
    --sanitizer) [ $# -ge 2 ] || die_usage "--sanitizer needs a value"; SANITIZER=$2; shift 2 ;;
    --sanitizer=*) SANITIZER=${1#*=}; shift ;;
    --merge) MERGE=1; shift ;;
    --write-seeds)
      WSLINE_FUZZ_WRITE_SEEDS=1 exec cargo test --manifest-path "$FUZZ_DIR/Cargo.toml" --release \
        --test replay seeds_are_current -- --nocapture ;;
    --list) all_targets; exit 0 ;;
    -h|--help) usage; exit 0 ;;
    -*) die_usage "unknown option: $1" ;;
    *) TARGETS+=("$1"); shift ;;
  esac
done
[[ "$SECONDS_EACH" =~ ^[1-9][0-9]*$ ]] || die_usage "--seconds wants a positive integer"
[[ "$JOBS" =~ ^[1-9][0-9]*$ ]] || die_usage "--jobs wants a positive integer"
case "$SANITIZER" in address|none) ;; *) die_usage "--sanitizer: address or none" ;; esac
KNOWN=" $(all_targets | tr '\n' ' ') "
[ ${#TARGETS[@]} -eq 0 ] && mapfile -t TARGETS < <(all_targets)
for t in "${TARGETS[@]}"; do
  case "$KNOWN" in *" $t "*) ;; *) die_usage "unknown target '$t' (targets:$KNOWN)" ;; esac
done

# Per-target libFuzzer flags: the largest input, and a dictionary.
target_flags() {
  case "$1" in
    frame_server|frame_client) echo "-max_len=20000" ;;
    inflate) echo "-max_len=16384" ;;
    handshake_request|handshake_response) echo "-max_len=4096 -dict=$FUZZ_DIR/dicts/http.dict" ;;
    deflate_negotiation) echo "-max_len=512 -dict=$FUZZ_DIR/dicts/http.dict" ;;
    hub_protocol) echo "-max_len=4096 -dict=$FUZZ_DIR/dicts/json.dict" ;;
  esac
}

# ------------------------------------------------------------ cargo-fuzz ----
if ! cargo fuzz --version >/dev/null 2>&1; then
  log "cargo-fuzz not found: cargo install cargo-fuzz --version $CARGO_FUZZ_VERSION --locked"
  if ! cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked </dev/null; then
    echo "fuzz.sh: cargo-fuzz could not be installed" >&2
    exit 3
  fi
fi
log "$(cargo fuzz --version)"

# cargo-fuzz passes -Zsanitizer (and other -Z flags) to rustc: allowed on a
# stable toolchain only with RUSTC_BOOTSTRAP=1. Set for the fuzz build only
# (its own target dir), never for the workspace.
export RUSTC_BOOTSTRAP=1
HOST="$(rustc -vV | sed -n 's/^host: //p')"
BIN_DIR="$FUZZ_TARGET_DIR/$HOST/release"

# One target builds alone; several build all (cargo fuzz build takes one or all).
BUILD_WHAT=()
[ ${#TARGETS[@]} -eq 1 ] && BUILD_WHAT=("${TARGETS[0]}")
log "building ${BUILD_WHAT[*]:-every target}: release, debug assertions, sanitizer=$SANITIZER"
if ! cargo fuzz build --fuzz-dir "$FUZZ_DIR" -O -a -s "$SANITIZER" --target-dir "$FUZZ_TARGET_DIR" \
  "${BUILD_WHAT[@]}" </dev/null; then
  echo "fuzz.sh: build failed" >&2
  exit 1
fi

mkdir -p "$LOG_ROOT"

# replay TARGET: runs every kept crash input once.
replay() {
  local t=$1 dir="$FUZZ_DIR/regressions/$1" files=()
  [ -d "$dir" ] || return 0
  mapfile -t files < <(find "$dir" -type f | sort)
  [ ${#files[@]} -eq 0 ] && return 0
  log "$t: replaying ${#files[@]} regression input(s)"
  "$BIN_DIR/$t" -runs=1 "${files[@]}" >"$LOG_ROOT/$t.replay.log" 2>&1
}

# fuzz TARGET: one libFuzzer run; output in the log.
fuzz_one() {
  local t=$1 corpus="$CORPUS_ROOT/$1" flags
  mkdir -p "$corpus" "$FUZZ_DIR/artifacts/$t"
  read -r -a flags <<<"$(target_flags "$t") ${FUZZ_ARGS:-}"
  # shellcheck disable=SC2086
  "$BIN_DIR/$t" -artifact_prefix="$FUZZ_DIR/artifacts/$t/" -max_total_time="$SECONDS_EACH" \
    -timeout=10 -rss_limit_mb=2560 -malloc_limit_mb=64 -print_final_stats=1 "${flags[@]}" \
    "$corpus" "$FUZZ_DIR/seeds/$t" >"$LOG_ROOT/$t.log" 2>&1
}

merge_one() {
  local t=$1 corpus="$CORPUS_ROOT/$1" tmp
  tmp="$(mktemp -d "$CORPUS_ROOT/.merge-$t.XXXXXX")"
  if "$BIN_DIR/$t" -merge=1 "$tmp" "$corpus" "$FUZZ_DIR/seeds/$t" >"$LOG_ROOT/$t.merge.log" 2>&1; then
    rm -rf "$corpus" && mv "$tmp" "$corpus"
  else
    rm -rf "$tmp"
    log "$t: merge failed (see $LOG_ROOT/$t.merge.log)"
  fi
}

# ------------------------------------------------------------------ runs ----
declare -A RC=()
FAILED=0
for t in "${TARGETS[@]}"; do
  if ! replay "$t"; then
    log "$t: a regression input FAILS (see $LOG_ROOT/$t.replay.log)"
    grep -m3 -E 'panicked at|ERROR: ' "$LOG_ROOT/$t.replay.log" | sed 's/^/    /'
    FAILED=1
  fi
done

log "fuzzing ${#TARGETS[@]} target(s), ${SECONDS_EACH}s each, $JOBS at a time (logs: $LOG_ROOT/)"
declare -A PID_OF=()
running=0
for t in "${TARGETS[@]}"; do
  while [ "$running" -ge "$JOBS" ]; do
    wait -n 2>/dev/null || true
    running=0
    for p in "${PID_OF[@]}"; do kill -0 "$p" 2>/dev/null && running=$((running + 1)); done
  done
  fuzz_one "$t" &
  PID_OF[$t]=$!
  running=$((running + 1))
done
for t in "${TARGETS[@]}"; do
  rc=0
  wait "${PID_OF[$t]}" || rc=$?
  RC[$t]=$rc
done

[ "$MERGE" = 1 ] && for t in "${TARGETS[@]}"; do merge_one "$t"; done

# --------------------------------------------------------------- summary ----
echo
printf '%-20s %-7s %12s %7s %8s %7s %7s  %s\n' target result runs cov ft corpus rss_mb crash
for t in "${TARGETS[@]}"; do
  f="$LOG_ROOT/$t.log"
  runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$f" | tail -1)"
  [ -z "$runs" ] && runs="$(grep -oE '^#[0-9]+' "$f" | tail -1 | tr -d '#')"
  rss="$(sed -n 's/^stat::peak_rss_mb: *//p' "$f" | tail -1)"
  last="$(grep -E '^#[0-9]+[[:space:]]+(DONE|REDUCE|NEW|pulse|INITED|RELOAD)' "$f" | tail -1)"
  cov="$(grep -oE 'cov: [0-9]+' <<<"$last" | tail -1 | cut -d' ' -f2)"
  ft="$(grep -oE 'ft: [0-9]+' <<<"$last" | tail -1 | cut -d' ' -f2)"
  corpus="$(grep -oE 'corp: [0-9]+' <<<"$last" | tail -1 | cut -d' ' -f2)"
  crash="$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$f" | tail -1)"
  if [ "${RC[$t]}" = 0 ]; then
    result=ok
  else
    result=CRASH
    FAILED=1
    [ -z "$crash" ] && crash="exit status ${RC[$t]}, see $f"
  fi
  printf '%-20s %-7s %12s %7s %8s %7s %7s  %s\n' "$t" "$result" "${runs:-?}" "${cov:-?}" \
    "${ft:-?}" "${corpus:-?}" "${rss:-?}" "${crash#"$ROOT"/}"
  [ "$result" = CRASH ] && grep -m2 -E 'panicked at|ERROR: (libFuzzer|AddressSanitizer)' "$f" | sed 's/^/    /'
  [ "$result" = ok ] && grep -E '^#[0-9]+[[:space:]]+DONE' "$f" | tail -1 | sed 's/^/    /'
done
if [ "$FAILED" = 0 ]; then
  log "no crash"
else
  log "FAILED: see above; keep a crash input under fuzz/regressions/TARGET/ once diagnosed"
fi
exit "$FAILED"
