#!/usr/bin/env bash
# bench/compare.sh: `wsline echo` against uWebSockets (uws, the anchor:
# the field's fastest server, built outside the repo by
# ../shared/uws/build.sh) and echo servers built on tokio-tungstenite,
# fastwebsockets and tokio-websockets (bench/peers/), driven by `wsline
# bench`. Not part of CI; see docs/performance.md.
#
# For each workload, round by round, each server in turn (the order rotates
# every round): start it pinned to one core (taskset -c $SERVER_CORE), run
# `wsline bench` pinned to another ($CLIENT_CORE), and take from
# /proc/PID/stat the server's utime+stime before and after. Reported:
#   CPU per message  = server CPU time / messages echoed (handshakes: per
#                      handshake), the number that does not depend on
#                      whether the client could keep the server busy;
#   msgs/s           = echoes received within the measured window / window;
#   RSS per idle connection = (peak server RSS while N connections are
#                      held - RSS before) / N.
# Medians over the rounds, one Markdown table, wsline's ratio to each peer
# and to the best one. A second table tells whether the client's core was
# saturated (then msgs/s measures the client, not the server). A third
# splits the server's CPU into user space (utime: what a WebSocket
# implementation controls) and kernel (stime: mostly the TCP stack).
#
# Usage: bench/compare.sh            (about 8 minutes with the defaults)
# Environment (defaults in brackets):
#   DURATION       seconds per echo/handshake measurement [5]
#   ROUNDS         rounds per workload [3]
#   IDLE_CONNS     connections in the idle workload [10000]
#   IDLE_HOLD      seconds the idle connections are held [3]
#   WORKLOADS      subset, space-separated, of:
#                  echo16 pipe16 text1k bin64k handshake idle, and
#                  text64k idlewarm [all of the first line]
#   SERVERS        subset of: wsline uws tokio-tungstenite fastwebsockets
#                  tokio-websockets, the references wsline-defer floor
#                  floor-defer wsline-tokio, and wsline-deflate [wsline
#                  wsline-defer uws tokio-tungstenite fastwebsockets
#                  tokio-websockets floor; uws only when built]. References
#                  are never the "best peer"; each gets a column "REF ÷ best
#                  peer". With uws in the run, the target column holds
#                  issue 19's targets against it: CPU per message (per
#                  handshake) ≤ 1.0× uws, msgs/s ≥ uws, idle ≤ 256 B per
#                  connection; without it, the old ≤ 0.8× the best peer:
#                  wsline-defer   `wsline echo --defer-accept` (TCP_DEFER_ACCEPT)
#                  wsline-tokio   `wsline echo --runtime tokio`
#                  wsline-deflate9, wsline-deflate15: see "compression"
#                  wsline-tls, uws-tls, tokio-tungstenite-tls: see "wss"
#                  wsline-base-tls  wsline-base with --tls-cert (wss)
#                  wsline-base    `$WSLINE_BASE_BIN echo`: another build of
#                                 wsline (e.g. main before a change), for a
#                                 no-regression check in the same run
#                  floor          bench/peers/src/bin/echo-floor.rs: a
#                                 yardstick, not a peer: the least work any
#                                 server can do to echo these frames (no
#                                 WebSocket rules), so its CPU per message
#                                 is the kernel's floor on this machine
#                  floor-defer    the same with TCP_DEFER_ACCEPT
#   PEER_DEFER_ACCEPT  set (to anything): the peers' listeners defer
#                  accepts too (a level field for wsline-defer)
#   UWS_DIR        where ../shared/uws/build.sh put uws-echo [/tmp/uws-build]
#   UWS_PORT       the fixed port uws-echo listens on (it cannot pick
#                  one) [19432]
#   SUBJECT        the server the ratio and target columns are about
#                  [wsline; compression: wsline-deflate9 with uws-deflate,
#                  else wsline-deflate; wss: wsline-tls]
#   SERVER_CORE    [0]   CLIENT_CORE [1]
#   WSLINE_BIN     a wsline binary to use instead of building one
#   WSLINE_DESC    how the table describes that binary (e.g. its commit)
#   OUT            results folder [bench/results/DATE-TIME]
#   FOREIGN_MAX    CPU (in cores) other processes may use during a
#                  measurement before it is redone [0.15]; compare.sh also
#                  waits for the machine to be that quiet before each one
#   TRIES          attempts per measurement [3]   QUIET_WAIT seconds [600]
#   TW_MAX         a handshake measurement waits (up to 90 s) until fewer
#                  sockets than this are in TIME_WAIT [1000]
# Quick look: DURATION=1 ROUNDS=1 IDLE_CONNS=1000 bench/compare.sh
#
# bench/compare.sh compression: `wsline echo` with permessage-deflate
# (server defaults; the load generator offers it) against itself without,
# on chat-like JSON text: throughput, CPU per message, and memory per idle
# connection before and after one message (compression contexts are
# allocated with the first compressed message). WORKLOADS defaults to
# "text1k text64k idle idlewarm" there. With uws-echo-deflate built
# (../shared/uws/build.sh), uWebSockets with its dedicated compressor
# (uws-deflate) joins, and the target column checks issue 19's: CPU per
# message ≤ 1.0× uws-deflate's. uws-echo-deflate asks for uWS's
# DEDICATED_COMPRESSOR (a 15-bit window, memory level 8) but compresses
# with a 9-bit window and memory level 1 (DEDICATED_COMPRESSOR_3KB): at
# uWebSockets 66dcff3, HttpResponse.h tests `compression &
# DEDICATED_COMPRESSOR_3KB` bitwise, true for every dedicated compressor
# (0xF8 & 0x91), and its answer does not say so (no server_max_window_bits,
# which the RFC allows). It inflates with a 15-bit window (the client's
# choice). zlib level 6 on both. So the like-for-like server, the one the
# target column holds to uws-deflate, is wsline-deflate9: `wsline echo
# --deflate-window-bits 9 --deflate-mem-level 1
# --deflate-client-window-bits 15`. With UWS_DEFLATE15_BIN (uws-echo-deflate
# built from sources where that test reads `(compression &
# _COMPRESSOR_MASK) == DEDICATED_COMPRESSOR_3KB`), uws-deflate15 compresses
# with the 15-bit window and memory level 8 it asks for: compare it with
# SUBJECT=wsline-deflate15. wsline-deflate (the defaults: 12-bit
# windows both ways, memory level 5), wsline-deflate15 (15 both ways,
# memory level 8: what DEDICATED_COMPRESSOR means to do) and wsline (no
# compression) are references. A fourth table gives the bytes on the
# loopback per echo (both directions, TCP/IP headers and ACKs included,
# from /proc/net/dev): whether and how well a server compresses. The load
# generator sends the same 1 KiB JSON-like message again and again: a
# window that holds the previous message (12 bits and up) deflates each
# one after the first to a back-reference of ~15 B; a 9-bit window cannot
# (~350 B).
#
# bench/compare.sh wss: the same over TLS 1.3 (rustls for wsline and
# tokio-tungstenite, OpenSSL for uws), with a self-signed ECDSA P-256
# certificate made by openssl in $OUT: workloads wss1k (50 conns × 1 KiB
# text × 8 in flight) and wsshandshake (TCP + TLS + WebSocket handshakes,
# 8 at a time, per handshake; `wsline bench` keeps rustls' session cache,
# so it resumes TLS sessions when the server offers tickets, against every
# server alike). Servers: wsline-tls (`wsline echo --tls-cert --tls-key`,
# on the tokio runtime), uws-tls ($UWS_DIR/uws-echo-tls: build.sh with
# WITH_OPENSSL=1) and tokio-tungstenite-tls
# (bench/peers/src/bin/echo-tokio-tungstenite-tls.rs); the target column
# holds issue 19's: CPU per message (per handshake) ≤ 1.0× uws-tls,
# msgs/s ≥ uws-tls.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

SUITE="${1:-peers}"
UWS_DIR="${UWS_DIR:-/tmp/uws-build}"
UWS_PORT="${UWS_PORT:-19432}"
case "$SUITE" in
    peers)
        DEFAULT_SERVERS="wsline wsline-defer tokio-tungstenite fastwebsockets tokio-websockets floor"
        [[ -x "$UWS_DIR/uws-echo" ]] && DEFAULT_SERVERS="wsline wsline-defer uws tokio-tungstenite fastwebsockets tokio-websockets floor"
        DEFAULT_WORKLOADS="echo16 pipe16 text1k bin64k handshake idle"
        ME=wsline TARGETS=1 ;;
    compression)
        DEFAULT_SERVERS="wsline-deflate wsline"
        DEFAULT_WORKLOADS="text1k text64k idle idlewarm"
        ME=wsline-deflate TARGETS=0
        [[ -x "$UWS_DIR/uws-echo-deflate" ]] && DEFAULT_SERVERS="wsline-deflate9 uws-deflate wsline-deflate wsline" ME=wsline-deflate9 TARGETS=1 ;;
    wss)
        DEFAULT_SERVERS="wsline-tls tokio-tungstenite-tls"
        [[ -x "$UWS_DIR/uws-echo-tls" ]] && DEFAULT_SERVERS="wsline-tls uws-tls tokio-tungstenite-tls"
        DEFAULT_WORKLOADS="wss1k wsshandshake"
        ME=wsline-tls TARGETS=1 ;;
    *) echo "usage: bench/compare.sh [peers|compression|wss]" >&2; exit 2 ;;
esac
# SUBJECT: the server the ratio and target columns are about.
ME="${SUBJECT:-$ME}"
DURATION="${DURATION:-5}"
ROUNDS="${ROUNDS:-3}"
IDLE_CONNS="${IDLE_CONNS:-10000}"
IDLE_HOLD="${IDLE_HOLD:-3}"
WORKLOADS="${WORKLOADS:-$DEFAULT_WORKLOADS}"
SERVERS="${SERVERS:-$DEFAULT_SERVERS}"
SERVER_CORE="${SERVER_CORE:-0}"
CLIENT_CORE="${CLIENT_CORE:-1}"
OUT="${OUT:-$ROOT/bench/results/$(date +%Y%m%d-%H%M%S)}"
HZ="$(getconf CLK_TCK)"
FOREIGN_MAX="${FOREIGN_MAX:-0.15}"
QUIET_WAIT="${QUIET_WAIT:-600}"
TRIES="${TRIES:-3}"
PEERS="$ROOT/bench/peers"

log() { echo "compare.sh: $*" >&2; }
# shellcheck source=bench/common.sh
source "$ROOT/bench/common.sh"

REPORT_ONLY="${REPORT_ONLY:-0}"

# ------------------------------------------------------------------ build
if [[ "$REPORT_ONLY" == 1 ]]; then
    [[ -f "$OUT/results.tsv" ]] || die "REPORT_ONLY=1 needs OUT=a folder with results.tsv"
    WSLINE_BIN="${WSLINE_BIN:-true}"
    WSLINE_DESC="${WSLINE_DESC:-measured as recorded in $OUT}"
elif [[ -n "${WSLINE_BIN:-}" ]]; then
    WSLINE_DESC="${WSLINE_DESC:-prebuilt binary $WSLINE_BIN}"
else
    log "building wsline (release)"
    cargo build --release --quiet --bin wsline
    WSLINE_BIN="$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
        sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/release/wsline"
fi
if [[ "$REPORT_ONLY" != 1 ]]; then
    [[ -x "$WSLINE_BIN" ]] || die "no wsline binary at $WSLINE_BIN"
    log "building the peers (release)"
    cargo build --release --quiet --manifest-path "$PEERS/Cargo.toml"
fi
PEER_BIN="$PEERS/target/release"
[[ -n "${CARGO_TARGET_DIR:-}" ]] && PEER_BIN="$CARGO_TARGET_DIR/release"

# --------------------------------------------------------------- machine
PIN_S=(taskset -c "$SERVER_CORE")
PIN_C=(taskset -c "$CLIENT_CORE")
if ! command -v taskset >/dev/null || [[ "$(nproc)" -lt 2 ]]; then
    log "warning: taskset or a second core missing: running unpinned"
    PIN_S=()
    PIN_C=()
fi
# The idle workload needs a descriptor per connection in each process.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [[ "$(ulimit -n)" != unlimited ]] && (( $(ulimit -n) < IDLE_CONNS + 256 )); then
    IDLE_CONNS=$(( $(ulimit -n) - 256 ))
    log "warning: ulimit -n is $(ulimit -n): the idle workload uses $IDLE_CONNS connections"
fi

mkdir -p "$OUT"
# The wss suite's certificate (ECDSA P-256, for 127.0.0.1 and localhost).
TLS_CERT="$OUT/tls-cert.pem"
TLS_KEY="$OUT/tls-key.pem"
if [[ "$SUITE" == wss && "$REPORT_ONLY" != 1 && ! -f "$TLS_CERT" ]]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$TLS_KEY" -out "$TLS_CERT" -days 7 -subj /CN=localhost \
        -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null ||
        die "openssl could not make the wss certificate"
fi
RESULTS="$OUT/results.tsv"
# An existing results.tsv is added to (a run can be resumed or completed
# with more rounds: OUT=that-folder WORKLOADS=... bench/compare.sh).
[[ -f "$RESULTS" ]] || printf 'workload\tserver\tround\tmessages_total\tmsgs_per_sec\tserver_cpu_ticks\tserver_cpu_us_per_msg\trss_before_kib\trss_peak_kib\trss_per_conn_b\tclient_cpu_us_per_msg\tclient_core_busy\terrors\tconnections_open\tforeign_load\tserver_user_us_per_msg\tlo_bytes_per_msg\n' >"$RESULTS"

# ------------------------------------------------------------- workloads
workload_label() {
    case "$1" in
        echo16) echo "100 conns × 16 B binary, 1 in flight" ;;
        pipe16) echo "100 conns × 16 B binary, 32 in flight" ;;
        text1k) echo "50 conns × 1 KiB text, 8 in flight" ;;
        bin64k) echo "10 conns × 64 KiB binary, 2 in flight" ;;
        handshake) echo "handshakes, 8 at a time (per handshake)" ;;
        idle) echo "$IDLE_CONNS idle connections (RSS per connection)" ;;
        idlewarm) echo "$IDLE_CONNS idle connections after one 1 KiB text message each (RSS per connection)" ;;
        text64k) echo "10 conns × 64 KiB text, 2 in flight" ;;
        wss1k) echo "wss: 50 conns × 1 KiB text, 8 in flight" ;;
        wsshandshake) echo "wss: TLS + WebSocket handshakes, 8 at a time (per handshake)" ;;
        *) die "unknown workload $1" ;;
    esac
}

workload_args() {
    case "$1" in
        echo16) echo "-c 100 --size 16 --in-flight 1 --binary --duration $DURATION" ;;
        pipe16) echo "-c 100 --size 16 --in-flight 32 --binary --duration $DURATION" ;;
        text1k) echo "-c 50 --size 1024 --in-flight 8 --text --duration $DURATION" ;;
        bin64k) echo "-c 10 --size 65536 --in-flight 2 --binary --duration $DURATION" ;;
        handshake) echo "--mode handshake -c 8 --duration $DURATION" ;;
        idle) echo "--mode idle -c $IDLE_CONNS --duration $IDLE_HOLD --connect-concurrency 64" ;;
        idlewarm) echo "--mode idle --warm --size 1024 --text -c $IDLE_CONNS --duration $IDLE_HOLD --connect-concurrency 64" ;;
        text64k) echo "-c 10 --size 65536 --in-flight 2 --text --duration $DURATION" ;;
        wss1k) echo "-c 50 --size 1024 --in-flight 8 --text --duration $DURATION" ;;
        wsshandshake) echo "--mode handshake -c 8 --duration $DURATION" ;;
    esac
}

server_cmd() {
    case "$1" in
        wsline) echo "$WSLINE_BIN echo --listen 127.0.0.1:0 --no-compression --ping-interval 0" ;;
        wsline-deflate) echo "$WSLINE_BIN echo --listen 127.0.0.1:0 --ping-interval 0" ;;
        # What uws-echo-deflate does (see the header): compress with a
        # 9-bit window and memory level 1, inflate with the client's 15.
        wsline-deflate9) echo "$WSLINE_BIN echo --listen 127.0.0.1:0 --ping-interval 0 --deflate-window-bits 9 --deflate-mem-level 1 --deflate-client-window-bits 15" ;;
        # What uWS's DEDICATED_COMPRESSOR means: 15 bits, memory level 8.
        wsline-deflate15) echo "$WSLINE_BIN echo --listen 127.0.0.1:0 --ping-interval 0 --deflate-window-bits 15 --deflate-mem-level 8 --deflate-client-window-bits 15" ;;
        wsline-tls) echo "$WSLINE_BIN echo --listen 127.0.0.1:0 --no-compression --ping-interval 0 --tls-cert $TLS_CERT --tls-key $TLS_KEY" ;;
        wsline-base-tls) echo "${WSLINE_BASE_BIN:?wsline-base-tls needs WSLINE_BASE_BIN} echo --listen 127.0.0.1:0 --no-compression --ping-interval 0 --tls-cert $TLS_CERT --tls-key $TLS_KEY" ;;
        tokio-tungstenite-tls) echo "$PEER_BIN/echo-tokio-tungstenite-tls 127.0.0.1:0 $TLS_CERT $TLS_KEY" ;;
        uws-tls) [[ -x "$UWS_DIR/uws-echo-tls" ]] || die "no $UWS_DIR/uws-echo-tls: build it with WITH_OPENSSL=1 ../shared/uws/build.sh"
            echo "$UWS_DIR/uws-echo-tls $UWS_PORT $TLS_KEY $TLS_CERT" ;;
        wsline-tokio) echo "$WSLINE_BIN echo --listen 127.0.0.1:0 --no-compression --ping-interval 0 --runtime tokio" ;;
        wsline-base) echo "${WSLINE_BASE_BIN:?wsline-base needs WSLINE_BASE_BIN} echo --listen 127.0.0.1:0 --no-compression --ping-interval 0" ;;
        wsline-defer) echo "$WSLINE_BIN echo --listen 127.0.0.1:0 --no-compression --ping-interval 0 --defer-accept" ;;
        tokio-tungstenite | fastwebsockets | tokio-websockets | floor) echo "$PEER_BIN/echo-$1 127.0.0.1:0" ;;
        floor-defer) echo "$PEER_BIN/echo-floor 127.0.0.1:0 --defer-accept" ;;
        # uws-echo takes a port and prints "listening on PORT".
        uws) [[ -x "$UWS_DIR/uws-echo" ]] || die "no $UWS_DIR/uws-echo: build it with ../shared/uws/build.sh"
            echo "$UWS_DIR/uws-echo $UWS_PORT" ;;
        # permessage-deflate through uWS's dedicated compressor and
        # decompressor (zlib level 6; windows: see the header).
        uws-deflate) [[ -x "$UWS_DIR/uws-echo-deflate" ]] || die "no $UWS_DIR/uws-echo-deflate: build it with ../shared/uws/build.sh"
            echo "$UWS_DIR/uws-echo-deflate $UWS_PORT" ;;
        uws-deflate15) [[ -x "${UWS_DEFLATE15_BIN:-}" ]] || die "uws-deflate15 needs UWS_DEFLATE15_BIN (see the header)"
            echo "$UWS_DEFLATE15_BIN $UWS_PORT" ;;
        *) die "unknown server $1" ;;
    esac
}

# What the load generator adds for a server: compression is offered only
# to the server that is measured with it.
server_bench_args() {
    [[ "$1" == wsline-deflate* || "$1" == uws-deflate* ]] && echo "--compression"
    # The self-signed certificate of the wss suite.
    [[ "$1" == *-tls ]] && echo "--insecure"
    return 0
}

# The URL scheme of a server.
server_scheme() { if [[ "$1" == *-tls ]]; then echo wss; else echo ws; fi; }

# lo_bytes: bytes the loopback interface has received so far (each byte
# sent over it is received once).
lo_bytes() { awk -F'[: ]+' '$2 == "lo" { print $3; exit }' /proc/net/dev; }

# ---------------------------------------------------------------- probes
# rss_kib, cpu_ticks, busy_ticks, now_s, background_load, wait_quiet (waits up to
# QUIET_WAIT seconds until other processes use less than FOREIGN_MAX cores)
# and json_num come from bench/common.sh.

# Each handshake leaves a socket in TIME_WAIT for 60 s, and their expiry
# (timer work in the kernel, charged to no process) would land in a later
# measurement: wait until fewer than TW_MAX are left (up to 90 s).
TW_MAX="${TW_MAX:-1000}"
time_wait_count() { awk '$4 == "06"' /proc/net/tcp /proc/net/tcp6 2>/dev/null | wc -l; }
wait_time_wait() {
    local n waited=0
    n="$(time_wait_count)"
    (( n < TW_MAX )) && return 0
    log "waiting for $n sockets in TIME_WAIT to expire (earlier handshakes)"
    while (( n >= TW_MAX && waited < 90 )); do
        sleep 2
        waited=$((waited + 2))
        n="$(time_wait_count)"
    done
}

SERVER_PID=""
stop_server() {
    [[ -n "$SERVER_PID" ]] || return 0
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}
trap stop_server EXIT

# measure_once WORKLOAD SERVER ROUND: one measurement; its line for
# results.tsv goes to $tag.line, the other processes' CPU use to $tag.foreign.
measure_once() {
    local w="$1" s="$2" r="$3"
    local tag="$OUT/$w.$s.$r"
    rm -f "$tag.line" "$tag.foreign"
    [[ "$w" == *handshake ]] && wait_time_wait
    wait_quiet
    : >"$tag.server.log"
    # shellcheck disable=SC2046
    "${PIN_S[@]}" $(server_cmd "$s") >"$tag.server.log" 2>&1 &
    SERVER_PID=$!
    local addr=""
    for _ in $(seq 100); do
        if [[ "$s" == uws* ]]; then
            grep -q "^listening on $UWS_PORT\$" "$tag.server.log" 2>/dev/null && addr="127.0.0.1:$UWS_PORT"
        else
            addr="$(sed -n 's/^listening on wss\{0,1\}:\/\/\(.*\)$/\1/p' "$tag.server.log" 2>/dev/null | head -1 || true)"
        fi
        [[ -n "$addr" ]] && break
        sleep 0.1
    done
    if [[ -z "$addr" ]]; then
        log "$s did not start; see $tag.server.log"
        stop_server
        return
    fi
    sleep 0.2
    local cpu0 user0 rss0 rss_peak rss busy0 t0 lo0 lo1
    lo0="$(lo_bytes)"
    busy0="$(busy_ticks)"
    t0="$(now_s)"
    cpu0="$(cpu_ticks "$SERVER_PID")"
    user0="$(user_ticks "$SERVER_PID")"
    rss0="$(rss_kib "$SERVER_PID")"
    rss_peak="$rss0"
    # shellcheck disable=SC2046
    "${PIN_C[@]}" "$WSLINE_BIN" bench "$(server_scheme "$s")://$addr/" $(workload_args "$w") $(server_bench_args "$s") --json \
        >"$tag.json" 2>"$tag.bench.log" &
    local bench_pid=$!
    if [[ "$w" == idle* ]]; then
        while kill -0 "$bench_pid" 2>/dev/null; do
            rss="$(rss_kib "$SERVER_PID" 2>/dev/null || echo 0)"
            (( rss > rss_peak )) && rss_peak="$rss"
            sleep 0.1
        done
    fi
    wait "$bench_pid" || true
    local cpu1 user1 busy1 t1
    cpu1="$(cpu_ticks "$SERVER_PID")"
    user1="$(user_ticks "$SERVER_PID")"
    busy1="$(busy_ticks)"
    t1="$(now_s)"
    lo1="$(lo_bytes)"
    stop_server

    local total rate errors open ccpu elapsed
    total="$(json_num messages_total "$tag.json")"
    rate="$(json_num msgs_per_sec "$tag.json")"
    errors="$(json_num errors "$tag.json")"
    open="$(json_num connections_open "$tag.json")"
    ccpu="$(json_num bench_cpu_s "$tag.json")"
    elapsed="$(json_num elapsed_s "$tag.json")"
    if [[ -z "$total" ]]; then
        log "$w/$s round $r: no result; see $tag.bench.log"
        return
    fi
    local ccpu_all
    ccpu_all="$(json_num bench_cpu_total_s "$tag.json")"
    awk -v w="$w" -v s="$s" -v r="$r" -v total="$total" -v rate="$rate" \
        -v t0="$cpu0" -v t1="$cpu1" -v u0="$user0" -v u1="$user1" -v hz="$HZ" -v rss0="$rss0" -v rssp="$rss_peak" \
        -v open="$open" -v ccpu="$ccpu" -v el="$elapsed" -v errors="$errors" -v idle="$([[ $w == idle* ]] && echo 1 || echo 0)" \
        -v b0="$busy0" -v b1="$busy1" -v w0="$t0" -v w1="$t1" -v call="$ccpu_all" -v foreign_file="$tag.foreign" \
        -v lo0="$lo0" -v lo1="$lo1" '
    BEGIN {
        ticks = t1 - t0
        per = (total > 0) ? ticks * 1e6 / hz / total : ""
        uper = (total > 0) ? (u1 - u0) * 1e6 / hz / total : ""
        per_conn = (idle && open > 0) ? (rssp - rss0) * 1024 / open : ""
        cper = (total > 0 && ccpu != "") ? ccpu * 1e6 / total : ""
        busy = (el > 0 && ccpu != "") ? ccpu / el : ""
        # CPU used by anything but the server and the bench, in cores.
        foreign = ((b1 - b0) / hz - ticks / hz - (call == "" ? 0 : call)) / (w1 - w0)
        if (foreign < 0) foreign = 0
        printf "%.2f\n", foreign > foreign_file
        lo = (total > 0 && !idle && lo1 != "" && lo0 != "") ? sprintf("%.0f", (lo1 - lo0) / total) : ""
        printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%.2f\t%s\t%s\n", w, s, r, total, rate, ticks, per, rss0, rssp, per_conn, cper, busy, errors, open, foreign, (idle ? "" : uper), lo
    }' >"$tag.line"
}

# measure WORKLOAD SERVER ROUND: measure_once, redone (up to TRIES times)
# while other processes used more than FOREIGN_MAX cores meanwhile.
measure() {
    local tag="$OUT/$1.$2.$3" foreign
    for _ in $(seq "$TRIES"); do
        measure_once "$1" "$2" "$3"
        [[ -f "$tag.line" ]] || continue
        # Memory does not depend on what else runs; CPU time does.
        [[ "$1" == idle* ]] && break
        foreign="$(cat "$tag.foreign")"
        awk -v l="$foreign" -v m="$FOREIGN_MAX" 'BEGIN { exit !(l <= m) }' && break
        log "$1/$2 round $3: other processes used $foreign cores meanwhile; measuring again"
    done
    [[ -f "$tag.line" ]] || return 0
    cat "$tag.line" >>"$RESULTS"
    log "$(tail -1 "$RESULTS" | awk -F'\t' '{
        if ($1 ~ /^idle/) printf "%-9s %-17s round %s: %s connections, %.0f B/conn, %s errors, background %s cores", $1, $2, $3, $14, $10, $13, $15
        else printf "%-9s %-17s round %s: %.0f msgs/s, server %.2f µs/msg, client core %.0f%% busy, %s errors, background %s cores", $1, $2, $3, $5, $7, $12 * 100, $13, $15 }')"
}

# ------------------------------------------------------------------- run
read -r -a SERVER_LIST <<<"$SERVERS"
n_servers=${#SERVER_LIST[@]}
log "results in $OUT"
for w in $WORKLOADS; do
    [[ "$REPORT_ONLY" == 1 ]] && break
    log "workload $w: $(workload_label "$w")"
    for r in $(seq "$ROUNDS"); do
        for i in $(seq 0 $((n_servers - 1))); do
            measure "$w" "${SERVER_LIST[$(((i + r - 1) % n_servers))]}" "$r"
        done
    done
done

# ----------------------------------------------------------------- table
{
    echo "Machine: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), $(nproc) cores; server on core $SERVER_CORE, client on core $CLIENT_CORE"
    echo "Run: $(date -u -r "$RESULTS" '+%Y-%m-%d %H:%M UTC'), $ROUNDS rounds, ${DURATION} s per measurement (idle: $IDLE_CONNS connections held ${IDLE_HOLD} s); medians"
    if [[ -z "${WSLINE_DESC:-}" ]]; then
        WSLINE_DESC="commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
        git -C "$ROOT" diff --quiet HEAD -- crates 2>/dev/null || WSLINE_DESC="$WSLINE_DESC with uncommitted changes"
    fi
    echo "wsline: $("$WSLINE_BIN" --version 2>/dev/null), $WSLINE_DESC"
    [[ " $SERVERS " == *" uws"* && -f "$UWS_DIR/versions.txt" ]] && echo "uws: $(cat "$UWS_DIR/versions.txt") (../shared/uws/build.sh)"
    echo "Peers: $(awk '/^name = "(tokio-tungstenite|fastwebsockets|tokio-websockets)"$/ { n = $3; getline; printf "%s %s  ", n, $3 }' "$PEERS/Cargo.lock" | tr -d '"')${PEER_DEFER_ACCEPT:+ (their listeners with TCP_DEFER_ACCEPT: PEER_DEFER_ACCEPT set)}"
    echo
} >"$OUT/table.md"

awk -F'\t' -v servers="$SERVERS" -v workloads="$WORKLOADS" -v idle_n="$IDLE_CONNS" -v fmax="$FOREIGN_MAX" \
    -v me_name="$ME" -v targets="$TARGETS" -v suite="$SUITE" '
function median(key,    n, i, j, t, v) {
    n = cnt[key]
    if (n == 0) return ""
    for (i = 1; i <= n; i++) v[i] = vals[key, i]
    for (i = 2; i <= n; i++) { t = v[i]; for (j = i - 1; j >= 1 && v[j] > t; j--) v[j + 1] = v[j]; v[j + 1] = t }
    return (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
}
function add(key, x) { if (x == "") return; cnt[key]++; vals[key, cnt[key]] = x }
# A reference column: ours in another configuration, or the floor; never the best peer.
function isref(s) { return s != me_name && (s ~ /^floor/ || s ~ /^wsline-/ || (me_name ~ /^wsline-deflate[0-9]/ && s == "wsline")) }
function rate(x) { return x >= 1e6 ? sprintf("%.2fM/s", x / 1e6) : (x >= 1e3 ? sprintf("%.1fk/s", x / 1e3) : sprintf("%.0f/s", x)) }
function ratio(a, b) { return (a == "" || b == "" || b == 0) ? "—" : sprintf("%.2f×", a / b) }
function label(w) {
    if (w == "echo16") return "100 conns × 16 B binary, 1 in flight"
    if (w == "pipe16") return "100 conns × 16 B binary, 32 in flight"
    if (w == "text1k") return "50 conns × 1 KiB text, 8 in flight"
    if (w == "bin64k") return "10 conns × 64 KiB binary, 2 in flight"
    if (w == "handshake") return "handshakes, 8 at a time"
    if (w == "idle") return idle_n " idle connections"
    if (w == "idlewarm") return idle_n " idle connections, after one 1 KiB text message each"
    if (w == "text64k") return "10 conns × 64 KiB text, 2 in flight"
    if (w == "wss1k") return "wss: 50 conns × 1 KiB text, 8 in flight"
    if (w == "wsshandshake") return "wss: TLS + WebSocket handshakes, 8 at a time"
    return w
}
NR > 1 { n++; row[n] = $0; if ($1 ~ /^idle/ || $15 <= fmax) clean[$1 SUBSEP $2]++ }
END {
    # Measurements during which other processes used more than FOREIGN_MAX
    # cores count only where no clean one exists (the cell gets a dagger).
    for (i = 1; i <= n; i++) {
        split(row[i], f, "\t"); k = f[1] SUBSEP f[2]
        if (f[1] !~ /^idle/ && f[15] > fmax) { if (clean[k]) continue; dirty[k] = 1 }
        add("cpu" SUBSEP k, f[7]); add("rate" SUBSEP k, f[5]); add("mem" SUBSEP k, f[10])
        add("ccpu" SUBSEP k, f[11]); add("busy" SUBSEP k, f[12]); err[k] += f[13]; used[k]++
        if (f[1] !~ /^idle/) { add("user" SUBSEP k, f[16]); add("lo" SUBSEP k, f[17]) }
    }
    ns = split(servers, S, " "); nw = split(workloads, W, " "); minused = 1e9; maxused = 0
    uw = 0; for (i = 1; i <= ns; i++) if (S[i] ~ /^uws/ && S[i] != me_name) uw = i
    hdr = "| Workload |"; sep = "|---|"
    for (i = 1; i <= ns; i++) { hdr = hdr " " S[i] " |"; sep = sep "---|" }
    for (i = 1; i <= ns; i++) if (S[i] != me_name && !isref(S[i])) { hdr = hdr " " me_name " ÷ " S[i] " |"; sep = sep "---|" }
    hdr = hdr " " me_name " ÷ best " (targets ? "peer" : "other") " | target |"; sep = sep "---|---|"
    for (i = 1; i <= ns; i++) if (isref(S[i])) { hdr = hdr " " S[i] " ÷ best peer |"; sep = sep "---|" }
    print hdr; print sep
    for (wi = 1; wi <= nw; wi++) {
        w = W[wi]; line = "| " label(w) " |"
        for (i = 1; i <= ns; i++) {
            k = w SUBSEP S[i]
            c[i] = median("cpu" SUBSEP k); t[i] = median("rate" SUBSEP k); m[i] = median("mem" SUBSEP k)
            e = (err[k] > 0) ? sprintf(" (%d errors)", err[k]) : ""
            if (k in dirty) e = e " †"
            if (used[k] != "" && used[k] < minused) minused = used[k]
            if (used[k] > maxused) maxused = used[k]
            if (w ~ /^idle/) cell = (m[i] == "") ? "—" : sprintf("%.0f B/conn", m[i])
            else if (w ~ /handshake$/) cell = (c[i] == "") ? "—" : sprintf("%.1f µs/hs · %s", c[i], rate(t[i]))
            else cell = (c[i] == "") ? "—" : sprintf("%.2f µs/msg · %s", c[i], rate(t[i]))
            line = line " " cell e " |"
            if (S[i] == me_name) me = i
        }
        bc = ""; bt = ""; bm = ""
        for (i = 1; i <= ns; i++) {
            if (i == me || isref(S[i])) continue
            if (w ~ /^idle/) line = line " mem " ratio(m[me], m[i]) " |"
            else line = line " CPU " ratio(c[me], c[i]) " · thr " ratio(t[me], t[i]) " |"
            if (c[i] != "" && (bc == "" || c[i] < c[bc])) bc = i
            if (t[i] != "" && (bt == "" || t[i] > t[bt])) bt = i
            if (m[i] != "" && (bm == "" || m[i] < m[bm])) bm = i
        }
        if (w ~ /^idle/ && uw) {
            line = line " mem " ratio(m[me], (bm == "" ? "" : m[bm])) (bm == "" ? "" : " (" S[bm] ")") " |"
            target = (m[me] == "") ? "—" : ((m[me] <= 256) ? "≤ 256 B/conn: met" : "≤ 256 B/conn: MISSED")
            if (suite == "compression") target = "—"
        } else if (uw) {
            rc = (c[uw] == "" || c[uw] == 0) ? "" : c[me] / c[uw]; rt = (t[uw] == "" || t[uw] == 0) ? "" : t[me] / t[uw]
            line = line " CPU " ratio(c[me], (bc == "" ? "" : c[bc])) (bc == "" ? "" : " (" S[bc] ")") " · thr " ratio(t[me], (bt == "" ? "" : t[bt])) (bt == "" ? "" : " (" S[bt] ")") " |"
            target = ""
            if (rc != "") target = (rc <= 1.0) ? "CPU ≤ 1.0× " S[uw] ": met" : "CPU ≤ 1.0× " S[uw] ": MISSED"
            if (rt != "" && w !~ /handshake$/ && suite != "compression") target = target ((rt >= 0.995) ? "; thr ≥ uws: met" : "; thr ≥ uws: MISSED")
            if (target == "") target = "—"
        } else if (w ~ /^idle/) {
            line = line " mem " ratio(m[me], (bm == "" ? "" : m[bm])) (bm == "" ? "" : " (" S[bm] ")") " |"
            target = (m[me] == "") ? "—" : ((m[me] <= 1024) ? "≤ 1 KiB/conn: met" : "≤ 1 KiB/conn: MISSED")
        } else {
            rc = (bc == "") ? "" : c[me] / c[bc]; rt = (bt == "") ? "" : t[me] / t[bt]
            line = line " CPU " ratio(c[me], (bc == "" ? "" : c[bc])) (bc == "" ? "" : " (" S[bc] ")") " · thr " ratio(t[me], (bt == "" ? "" : t[bt])) (bt == "" ? "" : " (" S[bt] ")") " |"
            target = ""
            if (rc != "") target = (rc <= 0.8) ? "CPU ≤ 0.8×: met" : "CPU ≤ 0.8×: MISSED"
            if (rt != "") target = target ((rt >= 0.995) ? "; thr ≥ 1×: met" : "; thr ≥ 1×: MISSED")
            if (target == "") target = "—"
        }
        if (!targets) target = "—"
        line = line " " target " |"
        for (i = 1; i <= ns; i++) {
            if (!isref(S[i])) continue
            if (w ~ /^idle/) line = line " mem " ratio(m[i], (bm == "" ? "" : m[bm])) " |"
            else line = line " CPU " ratio(c[i], (bc == "" ? "" : c[bc])) " · thr " ratio(t[i], (bt == "" ? "" : t[bt])) " |"
        }
        print line
    }
    print ""
    printf "Medians of %s measurements per cell. CPU: server utime+stime per message (per handshake); thr: msgs/s (handshakes/s). Ratios below 1× mean wsline uses less CPU (or memory); above 1× on thr, more throughput.\n", (minused == maxused ? maxused : minused "–" maxused)
    for (k in dirty) { print "† other processes used more than " fmax " cores during every measurement of this cell."; break }
    print ""
    print "Client side (the `wsline bench` process, medians): CPU per message and how busy its core was. Near 100% busy, msgs/s is bounded by the client: compare the servers by CPU per message."
    print ""
    hdr = "| Workload |"; sep = "|---|"
    for (i = 1; i <= ns; i++) { hdr = hdr " " S[i] " |"; sep = sep "---|" }
    print hdr; print sep
    for (wi = 1; wi <= nw; wi++) {
        w = W[wi]; if (w ~ /^idle/) continue
        line = "| " label(w) " |"
        for (i = 1; i <= ns; i++) {
            k = w SUBSEP S[i]; cc = median("ccpu" SUBSEP k); bu = median("busy" SUBSEP k)
            line = line ((cc == "") ? " — |" : sprintf(" %.2f µs · %.0f%% |", cc, bu * 100))
        }
        print line
    }
    print ""
    print "Server CPU split (medians, per message; per handshake): user space (utime, the WebSocket implementation) + kernel (stime, mostly the TCP stack, which no server controls). Ticks are 10 ms: read the split over several rounds."
    print ""
    hdr = "| Workload |"; sep = "|---|"
    for (i = 1; i <= ns; i++) { hdr = hdr " " S[i] " user + kernel |"; sep = sep "---|" }
    hdr = hdr " " me_name " ÷ best " (targets ? "peer" : "other") ", user space |"; sep = sep "---|"
    print hdr; print sep
    for (wi = 1; wi <= nw; wi++) {
        w = W[wi]; if (w ~ /^idle/) continue
        line = "| " label(w) " |"; bu = ""
        for (i = 1; i <= ns; i++) {
            k = w SUBSEP S[i]; u[i] = median("user" SUBSEP k); c[i] = median("cpu" SUBSEP k)
            line = line ((u[i] == "" || c[i] == "") ? " — |" : sprintf(" %.2f + %.2f µs |", u[i], c[i] - u[i]))
            if (S[i] == me_name) me = i
            else if (!isref(S[i]) && u[i] != "" && (bu == "" || u[i] < u[bu])) bu = i
        }
        line = line " " ratio(u[me], (bu == "" ? "" : u[bu])) (bu == "" ? "" : " (" S[bu] ")") " |"
        print line
    }
    print ""
    print "Bytes on the loopback per echo (medians; per handshake): both directions, TCP/IP headers, ACKs and TLS records included (/proc/net/dev, lo). Compression shows here; it counts whatever else used the loopback meanwhile."
    print ""
    hdr = "| Workload |"; sep = "|---|"
    for (i = 1; i <= ns; i++) { hdr = hdr " " S[i] " |"; sep = sep "---|" }
    print hdr; print sep
    for (wi = 1; wi <= nw; wi++) {
        w = W[wi]; if (w ~ /^idle/) continue
        line = "| " label(w) " |"
        for (i = 1; i <= ns; i++) { lb = median("lo" SUBSEP w SUBSEP S[i]); line = line ((lb == "") ? " — |" : sprintf(" %.0f B |", lb)) }
        print line
    }
}' "$RESULTS" >>"$OUT/table.md"

echo
cat "$OUT/table.md"
echo
log "raw results: $RESULTS"
