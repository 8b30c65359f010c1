#!/usr/bin/env bash
# wsline: the single test command.  Usage: ./scripts/test.sh [options]
#
# Runs these suites in order, records pass/fail/skip and time for each, keeps
# going after a failure, and exits non-zero if any suite failed:
#   fmt              cargo fmt --all -- --check
#   clippy           cargo clippy --workspace --all-targets -- -D warnings, then the same for
#                    wsline with its optional features (--features hyper,axum,http2)
#   build            cargo build --release --bin wsline  (-> target/release/wsline)
#   install          cargo install --path crates/cli (into .cache/install, reusing target/): the
#                    installed `wsline` prints its version, starts `serve` with the embedded
#                    defaults and answers /healthz
#   features         wsline's cargo features: cargo check --all-targets with no features, each
#                    feature alone (tls, reactor, hyper, axum, http2) and all of them; the
#                    examples built with --features hyper,axum,http2; the hub and the binary
#                    without the NATS bridge (`nats`)
#   test             cargo test --release --workspace (the `wsline echo` tests run against
#                    both runtimes, reactor and tokio, as separate tests), then wsline's own
#                    tests with --features hyper,axum,http2 (the hyper, axum and HTTP/2
#                    (RFC 8441) tests, doc examples)
#   autobahn-server  Autobahn|TestSuite fuzzingclient against `wsline echo` (the reactor;
#                    all cases, 1.* to 13.*, strict)
#   autobahn-server-tokio
#                    the same against the library's tokio path: crates/wsline/examples/
#                    echo_server.rs (`wsline::accept`, ServerConfig::default(), recv/send),
#                    built here with cargo (-> target/release/examples/echo_server)
#   autobahn-server-hyper
#                    the same against hyper 1: crates/wsline/examples/hyper_echo.rs
#                    (`wsline::upgrade` in a hyper service, ServerConfig::default(); the
#                    example serves HTTP/1.1 and HTTP/2 on one port, Autobahn uses HTTP/1.1),
#                    built here with --features hyper,http2 (-> target/release/examples/hyper_echo)
#   autobahn-client  Autobahn|TestSuite fuzzingserver against `wsline autobahn-client`
#                    (the selected Autobahn suites run in parallel)
#   interop-python   tests/interop/py_*.py with the `websockets` library
#   interop-node     tests/interop/*.test.mjs (node --test) with the `ws` package
#   interop-browser  tests/interop/browser_vs_echo.test.mjs: Debian's Chromium, driven by
#                    playwright-core, against `wsline echo` (the browser's own WebSocket)
#   browser-e2e      tests/browser/: unit tests of the JS client /wsline.js (node --test, fake
#                    hub and clock), then the demo chat in Debian's Chromium (playwright-core)
#                    against `wsline serve` (drops, SIGSTOP, restart); screenshots in .cache/browser-e2e/
#   redis            crates/cli/tests/redis.rs: `wsline serve --engine redis` nodes against a real
#                    redis-server (Debian's, apt-installed when missing; each test starts its own)
#   nats             crates/cli/tests/nats.rs: `wsline serve` with `[[bridge.nats]]` against a real
#                    nats-server with JetStream (Debian's, apt-installed when missing; each test
#                    starts its own): subject -> channel, channel -> subject, no echo, order per
#                    subject, NATS down and back, a stream created late, a JetStream stream
#                    through a SIGKILL and restart on --data-dir with every message stored
#                    exactly once
#   proxy            crates/cli/tests/proxy.rs: `wsline connect --proxy` through real proxies,
#                    Debian's tinyproxy (HTTP CONNECT) and microsocks (SOCKS5), with and without
#                    credentials, ws:// and wss:// (apt-installed when missing; each test starts its own)
#   balancer         crates/cli/tests/balancer.rs: three `wsline serve --engine redis` nodes behind
#                    Debian's nginx and haproxy (apt-installed when missing, with redis-server),
#                    run with docs/scaling.md's configurations; one node SIGKILLed, one drained
#                    (SIGTERM), all three restarted one after another, while publishing: the
#                    clients reconnect through the balancer and recover everything (a drained
#                    node's see only 1001, no failed reconnect)
#   fuzz             scripts/fuzz.sh: every cargo-fuzz target briefly (WSLINE_FUZZ_SECONDS
#                    each, default 25) after replaying its kept crash inputs; a crash fails
#                    it; skipped if cargo-fuzz cannot be installed
#
# Options:
#   --quick             skip clippy, the Autobahn suites and fuzz
#   --only NAME[,NAME]  run only these suites (repeatable). Groups: lint = fmt,clippy;
#                       autobahn = the four Autobahn suites; interop = the three interop suites.
#                       Suites that need the binary pull in `build` unless WSLINE_BIN is set.
#   --list              print the suite names and exit
#   -h, --help          this text
#
# Environment:
#   WSLINE_BIN                 use this wsline binary for the Autobahn/interop suites
#                              (default: the one `build` makes)
#   WSLINE_SHARED              folder holding autobahn/ (default: ../shared beside the repo)
#   AUTOBAHN_SERVER_ARGS       extra test-server.sh args (default: none, i.e. every case;
#   AUTOBAHN_CLIENT_ARGS       e.g. --no-compression skips the permessage-deflate cases)
#   AUTOBAHN_HOME              where install.sh puts wstest (default: .cache/autobahn-wstest)
#   WSLINE_EXPECT_COMPRESSION  1 (default): interop tests require permessage-deflate
#   CI                         true: a missing ../shared/autobahn is a failure, not a skip
#   WSLINE_FUZZ_SECONDS        seconds of fuzzing per target in the fuzz suite (default 25)
#
# Tools are installed on demand, idempotently, into .cache/ (gitignored) with
# pinned versions: a Python venv with websockets, and the npm packages ws and
# playwright-core (interop-browser and browser-e2e also apt-install Debian's chromium if
# /usr/bin/chromium is missing; never `npx playwright install`).

set -u
set -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 2

# ---------------------------------------------------------------- pins ------
WEBSOCKETS_VERSION="16.1.1"   # PyPI websockets
WS_VERSION="8.23.0"           # npm ws
PLAYWRIGHT_CORE_VERSION="1.65.1"  # npm playwright-core (drives Debian's chromium)

# ---------------------------------------------------------- time bounds -----
# Generous upper bounds (seconds) for each external step; normal runs take far less.
T_FMT=300
T_CLIPPY=1500
T_TEST=1800
T_BUILD=1500
T_INSTALL=900
T_AUTOBAHN=1500
T_INTEROP=600
T_FUZZ=1800            # the fuzz build (ASan) plus every target's run
READY_TIMEOUT=30       # for the server's "listening on" line
STOP_TIMEOUT=15        # for the server to exit after SIGTERM

CACHE="$ROOT/.cache"
VENV="$CACHE/venv"
NODE_PREFIX="$CACHE/node"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
BUILT_BIN="$TARGET_DIR/release/wsline"
SHARED="${WSLINE_SHARED:-$ROOT/../shared}"
AB_DIR="$SHARED/autobahn"
export AUTOBAHN_HOME="${AUTOBAHN_HOME:-$CACHE/autobahn-wstest}"
# The release profile keeps line tables (`debug = 1` in Cargo.toml) for
# profiling the benchmarks; the tests do not need them, and building and
# linking them is a good part of the run. Set CARGO_PROFILE_RELEASE_DEBUG
# to keep them. (The fuzz build keeps its own: see suite_fuzz.)
WSLINE_OUTER_RELEASE_DEBUG="${CARGO_PROFILE_RELEASE_DEBUG-unset}"
export CARGO_PROFILE_RELEASE_DEBUG="${CARGO_PROFILE_RELEASE_DEBUG:-0}"
IS_CI=0
case "${CI:-}" in true|1|yes|TRUE|True) IS_CI=1 ;; esac

ALL_SUITES=(fmt clippy build install features test autobahn-server autobahn-server-tokio autobahn-server-hyper autobahn-client interop-python interop-node interop-browser browser-e2e redis nats proxy balancer fuzz)
NEEDS_BIN=" autobahn-server autobahn-client interop-python interop-node interop-browser browser-e2e "

usage() { awk 'NR>1 && /^#/ { sub(/^# ?/, ""); print; next } NR>1 { exit }' "$0"; }
die_usage() { echo "test.sh: $*" >&2; echo "see ./scripts/test.sh --help" >&2; exit 2; }

# ------------------------------------------------------------- options ------
QUICK=0
ONLY=()
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1; shift ;;
    --only) [ $# -ge 2 ] || die_usage "--only needs a value"; IFS=',' read -r -a _o <<<"$2"; ONLY+=("${_o[@]}"); shift 2 ;;
    --only=*) IFS=',' read -r -a _o <<<"${1#*=}"; ONLY+=("${_o[@]}"); shift ;;
    --list) printf '%s\n' "${ALL_SUITES[@]}"; exit 0 ;;
    -h|--help) usage; exit 0 ;;
    *) die_usage "unknown argument: $1" ;;
  esac
done

declare -A SELECTED=()
if [ ${#ONLY[@]} -eq 0 ]; then
  for s in "${ALL_SUITES[@]}"; do SELECTED[$s]=1; done
else
  for s in "${ONLY[@]}"; do
    s="${s// /}"
    case "$s" in
      "") ;;
      lint) SELECTED[fmt]=1; SELECTED[clippy]=1 ;;
      autobahn) SELECTED[autobahn-server]=1; SELECTED[autobahn-server-tokio]=1; SELECTED[autobahn-server-hyper]=1; SELECTED[autobahn-client]=1 ;;
      interop) SELECTED[interop-python]=1; SELECTED[interop-node]=1; SELECTED[interop-browser]=1 ;;
      *)
        case " ${ALL_SUITES[*]} " in
          *" $s "*) SELECTED[$s]=1 ;;
          *) die_usage "unknown suite '$s' (suites: ${ALL_SUITES[*]}; groups: lint, autobahn, interop)" ;;
        esac ;;
    esac
  done
fi

if [ -n "${WSLINE_BIN:-}" ]; then
  case "$WSLINE_BIN" in /*) ;; *) WSLINE_BIN="$PWD/$WSLINE_BIN" ;; esac
  BIN_FROM_ENV=1
else
  WSLINE_BIN="$BUILT_BIN"
  BIN_FROM_ENV=0
fi
export WSLINE_BIN

# a suite that needs the binary pulls in `build` unless WSLINE_BIN was given
BUILD_PULLED_IN=0
if [ "$BIN_FROM_ENV" = 0 ] && [ -z "${SELECTED[build]:-}" ]; then
  for s in "${!SELECTED[@]}"; do
    case "$NEEDS_BIN" in *" $s "*) SELECTED[build]=1; BUILD_PULLED_IN=1; break ;; esac
  done
fi

# ------------------------------------------------------------- helpers ------
if [ -t 1 ]; then B=$'\e[1m'; R=$'\e[31m'; G=$'\e[32m'; Y=$'\e[33m'; N=$'\e[0m'; else B=""; R=""; G=""; Y=""; N=""; fi
log() { echo "${B}[test.sh]${N} $*"; }
warn() { echo "${Y}[test.sh] WARNING:${N} $*" >&2; }

now_us() { echo "${EPOCHREALTIME/./}"; }
fmt_secs() { local us=$1; printf '%d.%d' $((us / 1000000)) $(((us % 1000000) / 100000)); }

# Background processes started by this script (killed on exit).
BG_PIDS=()
STEP_PID=""
cleanup() {
  local pid
  for pid in ${STEP_PID:+"$STEP_PID"} "${BG_PIDS[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null
      timeout 5 tail --pid="$pid" -s 0.1 -f /dev/null 2>/dev/null || kill -KILL "$pid" 2>/dev/null
    fi
  done
}
trap cleanup EXIT
trap 'echo; warn "interrupted"; exit 130' INT TERM

# run_step SECONDS CMD...: runs CMD under `timeout`, reports a timeout clearly.
# `timeout` puts CMD in its own process group, which Ctrl-C does not reach; so it
# runs in the background and is waited for: the INT trap fires at once, and the
# cleanup's SIGTERM to `timeout` is passed on to the whole group.
run_step() {
  local limit=$1 rc=0; shift
  echo "+ $*"
  timeout -k 15 "$limit" "$@" &
  STEP_PID=$!
  wait "$STEP_PID" || rc=$?
  STEP_PID=""
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    echo "${R}[test.sh] timed out after ${limit}s:${N} $*" >&2
  fi
  return "$rc"
}

SUITE_NOTE=""   # shown in the summary table next to a skipped or failed suite
skip() { SUITE_NOTE="$1"; return 77; }

# ---------------------------------------------------------- installers ------
ensure_venv() {
  local py="$VENV/bin/python"
  if [ -x "$py" ] && "$py" -c "import sys, websockets; sys.exit(websockets.__version__ != '$WEBSOCKETS_VERSION')" 2>/dev/null; then
    return 0
  fi
  log "installing Python websockets==$WEBSOCKETS_VERSION into .cache/venv"
  local sys_py
  sys_py="$(command -v python3 || true)"
  if [ -z "$sys_py" ]; then
    echo "python3 not found; install Python 3.11+" >&2
    return 1
  fi
  if ! "$sys_py" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "Python 3.11+ required for the interop tests (found $("$sys_py" --version 2>&1))" >&2
    return 1
  fi
  rm -rf "$VENV"
  mkdir -p "$CACHE"
  if ! run_step 300 "$sys_py" -m venv "$VENV"; then
    # Debian's own python3 needs python3-venv for this
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      rm -rf "$VENV"
      apt_install python3-venv || return 1
      run_step 300 "$sys_py" -m venv "$VENV" || return 1
    else
      echo "python3 -m venv failed (Debian: apt-get install python3-venv)" >&2
      return 1
    fi
  fi
  run_step "$T_INSTALL" "$VENV/bin/python" -m pip install --disable-pip-version-check -q \
    "websockets==$WEBSOCKETS_VERSION" </dev/null || return 1
  "$py" -c "import sys, websockets; sys.exit(websockets.__version__ != '$WEBSOCKETS_VERSION')" || {
    echo "websockets $WEBSOCKETS_VERSION not importable after install" >&2
    return 1
  }
}

ensure_node_ws() {
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      log "node/npm not found: installing Debian's nodejs and npm"
      apt_install nodejs npm || return 1
    else
      echo "node and npm are required for the Node interop tests" >&2
      return 1
    fi
  fi
  local pkg="$NODE_PREFIX/node_modules/ws/package.json" have=""
  [ -f "$pkg" ] && have="$(node -p "require(process.argv[1]).version" "$pkg" 2>/dev/null || true)"
  [ "$have" = "$WS_VERSION" ] && return 0
  log "installing npm ws@$WS_VERSION into .cache/node"
  mkdir -p "$NODE_PREFIX"
  run_step "$T_INSTALL" npm install --prefix "$NODE_PREFIX" --no-audit --no-fund --save-exact \
    --loglevel=error "ws@$WS_VERSION" </dev/null || return 1
  have="$(node -p "require(process.argv[1]).version" "$pkg" 2>/dev/null || true)"
  [ "$have" = "$WS_VERSION" ] || { echo "ws $WS_VERSION not installed (found '${have}')" >&2; return 1; }
}

# Debian's chromium (apt, only when /usr/bin/chromium is missing) and npm
# playwright-core beside ws in .cache/node. Never `npx playwright install`: it
# downloads a browser build of its own, which fails here. WSLINE_CHROMIUM
# (read by the test too) points at another browser binary instead.
ensure_browser() {
  ensure_node_ws || return 1
  local chromium="${WSLINE_CHROMIUM:-/usr/bin/chromium}"
  if [ ! -x "$chromium" ]; then
    if [ -z "${WSLINE_CHROMIUM:-}" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      log "/usr/bin/chromium not found: installing Debian's chromium"
      apt_install chromium || return 1
      [ -x "$chromium" ] || { echo "apt-get installed chromium but $chromium is missing" >&2; return 1; }
    else
      echo "Chromium not found or not executable: $chromium (Debian: apt-get install chromium)" >&2
      return 1
    fi
  fi
  local pkg="$NODE_PREFIX/node_modules/playwright-core/package.json" have=""
  [ -f "$pkg" ] && have="$(node -p "require(process.argv[1]).version" "$pkg" 2>/dev/null || true)"
  [ "$have" = "$PLAYWRIGHT_CORE_VERSION" ] && return 0
  log "installing npm playwright-core@$PLAYWRIGHT_CORE_VERSION into .cache/node"
  mkdir -p "$NODE_PREFIX"
  run_step "$T_INSTALL" npm install --prefix "$NODE_PREFIX" --no-audit --no-fund --save-exact \
    --loglevel=error "playwright-core@$PLAYWRIGHT_CORE_VERSION" </dev/null || return 1
  have="$(node -p "require(process.argv[1]).version" "$pkg" 2>/dev/null || true)"
  [ "$have" = "$PLAYWRIGHT_CORE_VERSION" ] || {
    echo "playwright-core $PLAYWRIGHT_CORE_VERSION not installed (found '${have}')" >&2
    return 1
  }
}

# -------------------------------------------------------------- suites ------
suite_fmt() { run_step "$T_FMT" cargo fmt --all -- --check; }

# The workspace leaves wsline's optional features off: the hyper, axum
# and HTTP/2 code (src/upgrade.rs, src/axum.rs, src/h2.rs, their tests
# and examples) is linted in a second run with them on.
suite_clippy() {
  local rc=0
  run_step "$T_CLIPPY" cargo clippy --workspace --all-targets -- -D warnings || rc=1
  run_step "$T_CLIPPY" cargo clippy -p wsline --all-targets --features hyper,axum,http2 -- -D warnings || rc=1
  return "$rc"
}

# Release profile: shares the dependency builds with `build`, and the
# socket tests move real volumes quickly. The `wsline echo` tests run
# against both runtimes (`--runtime reactor` and `--runtime tokio`) by
# parameter, as separate tests (crates/cli/tests/child: `Runtime`).
#
# wsline's hyper, axum and HTTP/2 tests (tests/hyper_upgrade.rs,
# tests/axum_extractor.rs, tests/http2.rs), the doc examples of `upgrade`,
# the extractor and `wsline::h2`, and the examples that need them build
# only with those features: the second run (wsline's tests again, with
# the features on).
suite_test() {
  local rc=0
  run_step "$T_TEST" cargo test --release --workspace || rc=1
  run_step "$T_TEST" cargo test --release -p wsline --features hyper,axum,http2 || rc=1
  # The full-disk test mounts a small tmpfs in a mount namespace of its own
  # (unshare -rm, util-linux), so plain `cargo test` leaves it out.
  # (--workspace, so that features unify as in the first run: no rebuild)
  run_step "$T_TEST" cargo test --release --workspace --test durable -- --ignored || rc=1
  return "$rc"
}

suite_build() {
  run_step "$T_BUILD" cargo build --release --bin wsline || return 1
  if [ ! -x "$BUILT_BIN" ]; then
    echo "build succeeded but $BUILT_BIN is missing" >&2
    return 1
  fi
  [ "$BIN_FROM_ENV" = 1 ] && log "note: the next suites use WSLINE_BIN=$WSLINE_BIN (from the environment), not $BUILT_BIN"
  return 0
}

# wsline's cargo features: each combination a user can ask for builds, and
# so do the examples that need them (hyper_echo, axum_chat: skipped by a
# plain `cargo build --examples`, through their required-features).
suite_install() {
  local root="$CACHE/install" out="$CACHE/install/serve.out" pid addr status i
  run_step "$T_BUILD" cargo install --locked --force --path crates/cli --root "$root" \
    --target-dir "$ROOT/target" </dev/null || {
    SUITE_NOTE="cargo install --path crates/cli failed"
    return 1
  }
  "$root/bin/wsline" --version || { SUITE_NOTE="the installed wsline does not run"; return 1; }
  # The embedded defaults, on a port of the kernel's choosing, from a
  # directory with no configuration in it.
  (cd "$root" && exec env -u WSLINE_CONFIG "$root/bin/wsline" serve --listen 127.0.0.1:0 >"$out" 2>&1) &
  pid=$!
  BG_PIDS+=("$pid")
  addr=""
  for i in $(seq 1 100); do
    addr=$(sed -n 's|^listening on http://||p' "$out" | head -n 1)
    [ -n "$addr" ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$addr" ]; then
    cat "$out" >&2
    kill "$pid" 2>/dev/null
    SUITE_NOTE="the installed wsline serve did not start"
    return 1
  fi
  status=$(exec 3<>"/dev/tcp/${addr%:*}/${addr##*:}" &&
    printf 'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n' >&3 && head -n 1 <&3 | tr -d '\r')
  kill -TERM "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  log "installed wsline serve at $addr: GET /healthz -> $status"
  case "$status" in
    "HTTP/1.1 200"*) return 0 ;;
    *) SUITE_NOTE="GET /healthz answered '$status'"; return 1 ;;
  esac
}

suite_features() {
  local combo
  # Nothing, each feature alone, and the defaults with everything: type-
  # checked (a library has nothing to link), with its tests and examples
  # where the features allow them.
  for combo in --no-default-features "--no-default-features --features tls" \
    "--no-default-features --features reactor" "--no-default-features --features hyper" \
    "--no-default-features --features axum" "--no-default-features --features http2" \
    "--all-features"; do
    # shellcheck disable=SC2086 # several words on purpose
    run_step "$T_BUILD" cargo check -p wsline --all-targets $combo </dev/null || {
      SUITE_NOTE="cargo check -p wsline --all-targets $combo failed"
      return 1
    }
  done
  run_step "$T_BUILD" cargo build --release -p wsline --examples --features hyper,axum,http2 </dev/null || {
    SUITE_NOTE="the examples with --features hyper,axum,http2 failed to build"
    return 1
  }
  # The hub and the binary without the NATS bridge (`nats`, a default of
  # the binary); the workspace builds them with it.
  run_step "$T_BUILD" cargo check -p wsline-hub --all-targets </dev/null || {
    SUITE_NOTE="cargo check -p wsline-hub --all-targets (without nats) failed"
    return 1
  }
  run_step "$T_BUILD" cargo check -p wsline-cli --all-targets --no-default-features </dev/null || {
    SUITE_NOTE="cargo check -p wsline-cli --all-targets --no-default-features failed"
    return 1
  }
}

need_bin() {
  if [ ! -x "$WSLINE_BIN" ]; then
    if [ "${STATUS[build]:-}" = failed ]; then skip "no wsline binary: build failed"; return; fi
    echo "wsline binary not found or not executable: $WSLINE_BIN" >&2
    return 1
  fi
}

AB_WARNED=0
autobahn_missing_warning() {
  cat >&2 <<EOF
${R}${B}
########################################################################
##  WARNING: Autobahn conformance suites NOT RUN
##
##  $AB_DIR
##  does not exist (set WSLINE_SHARED to the folder that holds autobahn/).
##  NOT run: the Autobahn|TestSuite SERVER conformance suite (wsline echo)
##  NOT run: the same SERVER suite against the library's tokio accept path
##  NOT run: the same SERVER suite against the library on hyper (examples/hyper_echo)
##  NOT run: the Autobahn|TestSuite CLIENT conformance suite (wsline autobahn-client)
##  They are marked $( [ "$IS_CI" = 1 ] && echo "FAILED (CI=true)" || echo "SKIPPED, not passed" ).
########################################################################${N}
EOF
}

autobahn_available() {
  if [ -f "$AB_DIR/test-server.sh" ] && [ -f "$AB_DIR/test-client.sh" ] && [ -f "$AB_DIR/install.sh" ]; then
    return 0
  fi
  if [ "$AB_WARNED" = 0 ]; then
    autobahn_missing_warning
  else
    warn "Autobahn harness missing ($AB_DIR): this suite is NOT run"
  fi
  AB_WARNED=1
  if [ "$IS_CI" = 1 ]; then
    echo "CI=true: a missing Autobahn harness is a failure" >&2
    SUITE_NOTE="NOT RUN: $AB_DIR missing (CI=true)"
    return 1
  fi
  skip "NOT RUN: $AB_DIR missing"
}

autobahn_install() {
  [ -n "${AB_INSTALLED:-}" ] && return 0
  log "AUTOBAHN_HOME=$AUTOBAHN_HOME"
  run_step "$T_INSTALL" bash "$AB_DIR/install.sh" </dev/null || { echo "Autobahn install.sh failed" >&2; return 1; }
  AB_INSTALLED=1
}

# start_echo_server LOG NAME CMD...: starts the echo server CMD (which must
# listen on a free port and print `listening on ws://IP:PORT` first); sets
# ECHO_PID, ECHO_URL and ECHO_NAME (NAME, for messages). Its stdout after
# the first line and its stderr go to LOG.
start_echo_server() {
  local logf=$1 fifo fd line="" rc=0
  ECHO_NAME=$2
  shift 2
  : >"$logf"
  fifo="$(mktemp -u "$CACHE/autobahn/.echo-stdout.XXXXXX")"
  mkfifo "$fifo" || return 1
  timeout -k 10 $((T_AUTOBAHN + 300)) "$@" >"$fifo" 2>>"$logf" </dev/null &
  ECHO_PID=$!
  BG_PIDS+=("$ECHO_PID")
  # The child opens the FIFO for writing as soon as it starts, so this open does not hang.
  exec {fd}<"$fifo"
  rm -f "$fifo"
  IFS= read -r -t "$READY_TIMEOUT" -u "$fd" line || rc=$?
  cat <&"$fd" >>"$logf" &   # keep draining stdout
  BG_PIDS+=("$!")
  exec {fd}<&-
  if [ "$rc" -ne 0 ]; then
    if [ "$rc" -gt 128 ]; then
      echo "$ECHO_NAME printed no line within ${READY_TIMEOUT}s" >&2
    else
      echo "$ECHO_NAME closed stdout without printing the listening line" >&2
    fi
    stop_echo_server "$logf" >/dev/null 2>&1
    tail -n 20 "$logf" >&2
    return 1
  fi
  line="${line%$'\r'}"
  if [[ "$line" =~ ^listening\ on\ (ws://[^[:space:]]+:[0-9]+)$ ]]; then
    ECHO_URL="${BASH_REMATCH[1]}"
    log "$ECHO_NAME (pid $ECHO_PID) $line"
    return 0
  fi
  echo "unexpected first stdout line from $ECHO_NAME: '$line' (want 'listening on ws://IP:PORT')" >&2
  stop_echo_server "$logf" >/dev/null 2>&1
  return 1
}

# SIGTERM to the server, bounded wait; returns its exit status (fails if it had to be killed).
stop_echo_server() {
  local logf=$1 rc=0
  [ -n "${ECHO_PID:-}" ] || return 0
  kill -TERM "$ECHO_PID" 2>/dev/null
  if ! timeout "$STOP_TIMEOUT" tail --pid="$ECHO_PID" -s 0.1 -f /dev/null; then
    echo "$ECHO_NAME did not exit within ${STOP_TIMEOUT}s of SIGTERM; killing it" >&2
    kill -KILL "$ECHO_PID" 2>/dev/null
    wait "$ECHO_PID" 2>/dev/null
    ECHO_PID=""
    return 1
  fi
  wait "$ECHO_PID" || rc=$?
  ECHO_PID=""
  if [ "$rc" -ne 0 ]; then
    echo "$ECHO_NAME exited with status $rc after SIGTERM (expected 0); log: $logf" >&2
    tail -n 20 "$logf" >&2
  fi
  return "$rc"
}

# autobahn_server_run NAME REPORT_DIR LOG CMD...: the fuzzingclient (every
# case unless AUTOBAHN_SERVER_ARGS says otherwise, strict) against the echo
# server CMD; fails on any failed or NON-STRICT case and on a server that
# does not exit with 0 after SIGTERM.
autobahn_server_run() {
  local name=$1 report=$2 logf=$3 rc=0 src=0 extra=()
  shift 3
  read -r -a extra <<<"${AUTOBAHN_SERVER_ARGS-}"
  start_echo_server "$logf" "$name" "$@" || return 1
  run_step "$T_AUTOBAHN" bash "$AB_DIR/test-server.sh" "$ECHO_URL" --strict \
    --report "$report" --timeout $((T_AUTOBAHN - 60)) "${extra[@]}" </dev/null || rc=$?
  stop_echo_server "$logf" || src=$?
  log "report: $report/index.html   server log: $logf"
  if [ "$rc" -ne 0 ]; then
    SUITE_NOTE="test-server.sh status $rc"
    echo "--- last lines of the $name log ($logf):" >&2
    tail -n 15 "$logf" >&2
  fi
  [ "$src" -ne 0 ] && SUITE_NOTE="${SUITE_NOTE:+$SUITE_NOTE; }$name exit status $src after SIGTERM"
  [ "$rc" -eq 0 ] && [ "$src" -eq 0 ]
}

# `wsline echo`: the reactor (its default runtime).
suite_autobahn_server() {
  autobahn_available || return
  need_bin || return
  autobahn_install || return 1
  mkdir -p "$CACHE/autobahn"
  autobahn_server_run "wsline echo" "$CACHE/autobahn/server" "$CACHE/autobahn/server-wsline.log" \
    "$WSLINE_BIN" echo --listen 127.0.0.1:0
}

# The library's tokio path as an application uses it: the crate's
# echo_server example (`wsline::accept` with the default ServerConfig, a
# task per connection, recv/send), not `wsline echo`.
TOKIO_ECHO_BIN="$TARGET_DIR/release/examples/echo_server"
suite_autobahn_server_tokio() {
  autobahn_available || return
  autobahn_install || return 1
  run_step "$T_BUILD" cargo build --release -p wsline --example echo_server </dev/null || {
    SUITE_NOTE="cargo build of the echo_server example failed"
    return 1
  }
  [ -x "$TOKIO_ECHO_BIN" ] || { echo "built, but $TOKIO_ECHO_BIN is missing" >&2; return 1; }
  mkdir -p "$CACHE/autobahn"
  autobahn_server_run "examples/echo_server" "$CACHE/autobahn/server-tokio" \
    "$CACHE/autobahn/server-tokio.log" "$TOKIO_ECHO_BIN" 127.0.0.1:0
}

# The library inside hyper 1: the crate's hyper_echo example
# (`wsline::upgrade` in a hyper service, the default ServerConfig,
# recv/send), built with the `hyper` and `http2` features (it serves
# HTTP/1.1 and HTTP/2 on one port; Autobahn speaks HTTP/1.1).
HYPER_ECHO_BIN="$TARGET_DIR/release/examples/hyper_echo"
suite_autobahn_server_hyper() {
  autobahn_available || return
  autobahn_install || return 1
  run_step "$T_BUILD" cargo build --release -p wsline --features hyper,http2 --example hyper_echo </dev/null || {
    SUITE_NOTE="cargo build of the hyper_echo example failed"
    return 1
  }
  [ -x "$HYPER_ECHO_BIN" ] || { echo "built, but $HYPER_ECHO_BIN is missing" >&2; return 1; }
  mkdir -p "$CACHE/autobahn"
  autobahn_server_run "examples/hyper_echo" "$CACHE/autobahn/server-hyper" \
    "$CACHE/autobahn/server-hyper.log" "$HYPER_ECHO_BIN" 127.0.0.1:0
}

suite_autobahn_client() {
  autobahn_available || return
  need_bin || return
  autobahn_install || return 1
  mkdir -p "$CACHE/autobahn"
  local extra=()
  read -r -a extra <<<"${AUTOBAHN_CLIENT_ARGS-}"
  run_step "$T_AUTOBAHN" bash "$AB_DIR/test-client.sh" --strict --report "$CACHE/autobahn/client" \
    --timeout $((T_AUTOBAHN - 60)) "${extra[@]}" -- "$WSLINE_BIN" autobahn-client </dev/null || return 1
  log "report: $CACHE/autobahn/client/index.html"
}

suite_interop_python() {
  need_bin || return
  ensure_venv || return 1
  local rc=0 flags=()
  [ "${WSLINE_EXPECT_COMPRESSION:-1}" = 1 ] && flags+=(--expect-compression)
  run_step "$T_INTEROP" "$VENV/bin/python" tests/interop/py_client_vs_echo.py "${flags[@]}" </dev/null || rc=1
  run_step "$T_INTEROP" "$VENV/bin/python" tests/interop/py_server_for_connect.py </dev/null || rc=1
  run_step "$T_INTEROP" "$VENV/bin/python" tests/interop/py_hub_wss.py </dev/null || rc=1
  return "$rc"
}

suite_interop_node() {
  need_bin || return
  ensure_node_ws || return 1
  # node_hub_tls.test.mjs: curl (HTTP/2 and HTTP/1.1 keep-alive) and openssl (its certificate).
  apt_tools curl openssl || return 1
  run_step "$T_INTEROP" env NODE_PATH="$NODE_PREFIX/node_modules${NODE_PATH:+:$NODE_PATH}" node --test --test-reporter=spec \
    tests/interop/node_client_vs_echo.test.mjs tests/interop/node_server_for_connect.test.mjs \
    tests/interop/node_hub_tls.test.mjs </dev/null
}

suite_interop_browser() {
  need_bin || return
  ensure_browser || return 1
  run_step "$T_INTEROP" env NODE_PATH="$NODE_PREFIX/node_modules${NODE_PATH:+:$NODE_PATH}" node --test --test-reporter=spec \
    tests/interop/browser_vs_echo.test.mjs </dev/null
}

suite_browser_e2e() {
  need_bin || return
  ensure_browser || return 1
  run_step "$T_INTEROP" env NODE_PATH="$NODE_PREFIX/node_modules${NODE_PATH:+:$NODE_PATH}" node --test --test-reporter=spec \
    tests/browser/client_unit.test.mjs tests/browser/chat_e2e.test.mjs tests/browser/hub_https_h2.test.mjs </dev/null
}

# apt_install PKG...: apt-get update and install (as root, or through
# sudo). A dpkg that an earlier install left half-done ("dpkg was
# interrupted") is finished with `dpkg --configure -a` and the install
# tried once more.
apt_install() {
  local sudo=()
  [ "$(id -u)" = 0 ] || sudo=(sudo)
  run_step "$T_INSTALL" "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q </dev/null || return 1
  run_step "$T_INSTALL" "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" </dev/null && return 0
  warn "apt-get install $* failed: finishing any interrupted dpkg run, then trying again"
  run_step "$T_INSTALL" "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive dpkg --configure -a </dev/null || true
  run_step "$T_INSTALL" "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" </dev/null
}

# apt_tools TOOL...: installs Debian's package of each TOOL (a command of
# the same name) that is missing, non-interactively; sudo only when not
# root. Fails when apt-get is missing or a tool is still not on PATH.
apt_tools() {
  local missing=() tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null || missing+=("$tool")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if ! command -v apt-get >/dev/null; then
    echo "${missing[*]} not found and no apt-get to install them" >&2
    return 1
  fi
  log "${missing[*]} not found: installing Debian's ${missing[*]}"
  apt_install "${missing[@]}" || return 1
  for tool in "${missing[@]}"; do
    command -v "$tool" >/dev/null || { echo "apt-get installed $tool but it is not on PATH" >&2; return 1; }
  done
}

# Debian's redis-server (apt, only when missing; sudo only when not root).
# The tests start their own servers on free loopback ports, so the service
# apt may start is not used.
# Redis 6.2 or later (Debian's).
ensure_redis_server() { apt_tools redis-server; }

# The Redis engine's tests are #[ignore]d in plain `cargo test` (they need
# redis-server); here they run, and a missing Redis is a failure, not a skip.
suite_redis() {
  ensure_redis_server || { SUITE_NOTE="redis-server could not be installed"; return 1; }
  log "$(redis-server --version)"
  run_step "$T_TEST" cargo test --release -p wsline-cli --test redis -- --ignored --test-threads=2
}

# Debian's nats-server (apt, only when missing; sudo only when not root).
# The tests start their own servers (JetStream on, its store in a fresh
# directory) on free loopback ports.
ensure_nats_server() { apt_tools nats-server; }

# The NATS bridge's tests are #[ignore]d in plain `cargo test` (they need
# nats-server); here they run, and a missing nats-server is a failure.
suite_nats() {
  ensure_nats_server || { SUITE_NOTE="nats-server could not be installed"; return 1; }
  log "$(nats-server --version)"
  run_step "$T_TEST" cargo test --release -p wsline-cli --test nats -- --ignored --test-threads=2
}

# Debian's tinyproxy and microsocks (apt, only the missing ones; sudo only
# when not root). The tests start their own, on free loopback ports, with
# configurations of their own, so the tinyproxy service apt may start is
# not used.
ensure_proxies() { apt_tools tinyproxy microsocks; }

# The proxy tests that need tinyproxy or microsocks are #[ignore]d in plain
# `cargo test`; here they run (with the others of the file), and a proxy
# that cannot be installed is a failure, not a skip.
suite_proxy() {
  ensure_proxies || { SUITE_NOTE="tinyproxy/microsocks could not be installed"; return 1; }
  log "$(tinyproxy -v 2>&1 | head -n 1); microsocks $(dpkg-query -W -f='${Version}' microsocks 2>/dev/null || echo '(version unknown)')"
  run_step "$T_TEST" cargo test --release -p wsline-cli --test proxy -- --include-ignored --test-threads=2
}

# Debian's nginx and haproxy (and redis-server), apt-installed when
# missing. The tests start their own, on free loopback ports, with the
# configurations docs/scaling.md shows, so the services apt may start are
# not used.
ensure_balancers() { apt_tools redis-server nginx haproxy; }

# The balancer tests are #[ignore]d in plain `cargo test`; here they run
# (their JavaScript subscribers need node and npm's ws, as interop-node),
# and a balancer that cannot be installed is a failure, not a skip.
suite_balancer() {
  ensure_balancers || { SUITE_NOTE="nginx/haproxy/redis-server could not be installed"; return 1; }
  ensure_node_ws || { SUITE_NOTE="node and npm ws could not be installed (the JavaScript subscribers)"; return 1; }
  log "$(nginx -v 2>&1); $(haproxy -v | head -n 1); $(redis-server --version); node $(node --version)"
  run_step "$T_TEST" env NODE_PATH="$NODE_PREFIX/node_modules${NODE_PATH:+:$NODE_PATH}" \
    cargo test --release -p wsline-cli --test balancer -- --ignored --test-threads=2
}

suite_fuzz() {
  local rc=0
  # The fuzz crate's own profile (line tables in crash reports), unless
  # the caller set one.
  local keep=()
  [ "$WSLINE_OUTER_RELEASE_DEBUG" = unset ] && keep=(-u CARGO_PROFILE_RELEASE_DEBUG)
  run_step "$T_FUZZ" env "${keep[@]}" ./scripts/fuzz.sh --seconds "${WSLINE_FUZZ_SECONDS:-25}" </dev/null || rc=$?
  # fuzz.sh: 3 = cargo-fuzz is missing and could not be installed.
  [ "$rc" = 3 ] && { skip "cargo-fuzz missing and not installable"; return; }
  return "$rc"
}

# -------------------------------------------------------------- driver ------
declare -A STATUS=() SECS=() NOTE=()
ORDER=()

run_suite() {
  local name=$1 fn=$2 t0 rc=0
  ORDER+=("$name")
  echo
  echo "${B}==================== suite: $name ====================${N}"
  SUITE_NOTE=""
  t0=$(now_us)
  "$fn" || rc=$?
  SECS[$name]=$(fmt_secs $(($(now_us) - t0)))
  case "$rc" in
    0) STATUS[$name]=passed ;;
    77) STATUS[$name]=skipped ;;
    *) STATUS[$name]=failed ;;
  esac
  NOTE[$name]="$SUITE_NOTE"
  local color=$G
  [ "${STATUS[$name]}" = failed ] && color=$R
  [ "${STATUS[$name]}" = skipped ] && color=$Y
  echo "${color}${B}---- suite $name: ${STATUS[$name]}${NOTE[$name]:+ (${NOTE[$name]})} in ${SECS[$name]}s${N}"
}

mark_skipped() {
  ORDER+=("$1"); STATUS[$1]=skipped; SECS[$1]=0.0; NOTE[$1]="$2"
}

log "repo: $ROOT"
log "wsline binary for the Autobahn/interop suites: $WSLINE_BIN$( [ "$BIN_FROM_ENV" = 1 ] && echo ' (from WSLINE_BIN)')"
[ "$BUILD_PULLED_IN" = 1 ] && log "build added: a selected suite needs the wsline binary"
T_ALL=$(now_us)

# The Autobahn suites spend most of their time in wstest (one Python process
# each), so the selected ones run side by side: the first in the foreground,
# the others in background subshells whose output is shown when they end.
# Each server suite has its own server on a free port and its own report
# folder; the client suite's fuzzingserver takes a free port of its own.
AUTOBAHN_SUITES=(autobahn-server autobahn-server-tokio autobahn-server-hyper autobahn-client)
run_autobahn_group() {
  local s first="" rest=() pids=() i rc t0 log res
  for s in "${AUTOBAHN_SUITES[@]}"; do
    [ -n "${SELECTED[$s]:-}" ] || continue
    if [ -z "$first" ]; then first=$s; else rest+=("$s"); fi
  done
  mkdir -p "$CACHE/autobahn"
  if [ ${#rest[@]} -eq 0 ] || ! autobahn_available; then
    for s in "$first" "${rest[@]}"; do run_suite "$s" "suite_${s//-/_}"; done
    return
  fi
  autobahn_install >/dev/null || true
  for s in "${rest[@]}"; do
    log="$CACHE/autobahn/$s-suite.log"
    log "$s runs in the background while $first runs (output: $log)"
    (
      BG_PIDS=()
      STEP_PID=""
      trap cleanup EXIT
      trap 'exit 130' INT TERM
      SUITE_NOTE=""
      t0=$(now_us)
      rc=0
      "suite_${s//-/_}" || rc=$?
      printf '%s\t%s\t%s\n' "$rc" "$(fmt_secs $(($(now_us) - t0)))" "$SUITE_NOTE" >"$log.result"
      exit "$rc"
    ) >"$log" 2>&1 </dev/null &
    pids+=("$!")
    BG_PIDS+=("$!")
  done
  run_suite "$first" "suite_${first//-/_}"
  for i in "${!rest[@]}"; do
    s=${rest[$i]}
    log="$CACHE/autobahn/$s-suite.log"
    rc=0
    wait "${pids[$i]}" || rc=$?
    ORDER+=("$s")
    echo
    echo "${B}==================== suite: $s (ran in parallel) ====================${N}"
    cat "$log"
    res=""
    [ -f "$log.result" ] && IFS=$'\t' read -r _ SECS[$s] res <"$log.result"
    rm -f "$log.result"
    [ -n "${SECS[$s]:-}" ] || SECS[$s]=0.0
    case "$rc" in
      0) STATUS[$s]=passed ;;
      77) STATUS[$s]=skipped ;;
      *) STATUS[$s]=failed ;;
    esac
    NOTE[$s]="parallel with $first${res:+; $res}"
    local color=$G
    [ "${STATUS[$s]}" = failed ] && color=$R
    [ "${STATUS[$s]}" = skipped ] && color=$Y
    echo "${color}${B}---- suite $s: ${STATUS[$s]} (${NOTE[$s]}) in ${SECS[$s]}s${N}"
  done
}

for s in "${ALL_SUITES[@]}"; do
  [ -n "${SELECTED[$s]:-}" ] || continue
  if [ "$QUICK" = 1 ]; then
    case "$s" in clippy|autobahn-*|fuzz) mark_skipped "$s" "--quick"; continue ;; esac
  fi
  case "$s" in
    autobahn-*)
      # the whole group runs at its first selected member
      [ -n "${STATUS[$s]:-}" ] || run_autobahn_group
      continue ;;
  esac
  run_suite "$s" "suite_${s//-/_}"
done

# ------------------------------------------------------------- summary ------
PASSED=0 FAILED=0 SKIPPED=0
for s in "${ORDER[@]}"; do
  case "${STATUS[$s]}" in
    passed) PASSED=$((PASSED + 1)) ;;
    failed) FAILED=$((FAILED + 1)) ;;
    skipped) SKIPPED=$((SKIPPED + 1)) ;;
  esac
done

echo
[ "$AB_WARNED" = 1 ] && autobahn_missing_warning
echo "${B}==================== summary ($(fmt_secs $(($(now_us) - T_ALL)))s) ====================${N}"
printf '%-22s %-8s %8s  %s\n' suite status seconds note
for s in "${ORDER[@]}"; do
  color=$G
  [ "${STATUS[$s]}" = failed ] && color=$R
  [ "${STATUS[$s]}" = skipped ] && color=$Y
  printf '%-22s %s%-8s%s %8s  %s\n' "$s" "$color" "${STATUS[$s]}" "$N" "${SECS[$s]}" "${NOTE[$s]:-}"
done
line="suites: $PASSED passed, $FAILED failed"
[ "$SKIPPED" -gt 0 ] && line="$line, $SKIPPED skipped"
echo "$line"
[ "$FAILED" -eq 0 ]
