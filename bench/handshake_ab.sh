#!/usr/bin/env bash
# bench/handshake_ab.sh: WebSocket handshakes per second against
# `wsline serve`, two builds side by side (A: WSLINE_BIN, B:
# WSLINE_BASE_BIN, say main before a change), interleaved round by round,
# medians. Each measurement: a fresh hub pinned to one core (--threads 1),
# `wsline bench --mode handshake` (connect, upgrade, welcome not awaited,
# close) pinned to the other, and the hub's CPU per handshake (utime +
# stime from /proc).
#
# Usage: bench/handshake_ab.sh [SECS] [ROUNDS] [CONCURRENCY]   (default 3 5 16)
# Environment: WSLINE_BIN (default: a release build), WSLINE_BASE_BIN
# (required), SERVER_CORE=0, CLIENT_CORE=1, PORT=18751.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SECS=${1:-3}
ROUNDS=${2:-5}
CONC=${3:-16}
SERVER_CORE=${SERVER_CORE:-0}
CLIENT_CORE=${CLIENT_CORE:-1}
HZ=$(getconf CLK_TCK)
log() { echo "[handshake_ab] $*" >&2; }
# shellcheck source=bench/common.sh
source "$ROOT/bench/common.sh"
build_wsline
setup_machine 0
[[ -x "${WSLINE_BASE_BIN:-}" ]] || die "set WSLINE_BASE_BIN to the build to compare with"
PORT=${PORT:-18751}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# run BIN: prints "handshakes_per_s cpu_us_per_handshake".
run() {
    local bin=$1 pid c0 c1 json rate total
    "${PIN_S[@]}" "$bin" serve --listen "127.0.0.1:$PORT" --threads 1 --ping-interval 0 >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
        sleep 0.05
    done
    c0=$(cpu_ticks "$pid")
    json=$("${PIN_C[@]}" "$WSLINE_BIN" bench "ws://127.0.0.1:$PORT/ws" --mode handshake \
        -c "$CONC" --duration "$SECS" --json)
    c1=$(cpu_ticks "$pid")
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rate=$(sed -n 's/.*"msgs_per_sec":\([0-9.]*\).*/\1/p' <<<"$json")
    total=$(sed -n 's/.*"messages_total":\([0-9]*\).*/\1/p' <<<"$json")
    awk -v r="$rate" -v n="$total" -v ticks=$((c1 - c0)) -v hz="$HZ" \
        'BEGIN { printf "%.0f %.2f\n", r, ticks / hz * 1e6 / n }'
}

declare -A RATE CPU
for r in $(seq 1 "$ROUNDS"); do
    order="new base"
    (( r % 2 == 0 )) && order="base new"
    for which in $order; do
        bin=$WSLINE_BIN
        [[ $which == base ]] && bin=$WSLINE_BASE_BIN
        read -r rate cpu < <(run "$bin")
        log "round $r $which: $rate handshakes/s, $cpu µs hub CPU per handshake"
        RATE[$which]+="$rate "
        CPU[$which]+="$cpu "
    done
done
median() { tr ' ' '\n' | sed '/^$/d' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
printf '%-6s %14s %16s\n' build handshakes/s "CPU µs/handshake"
for which in new base; do
    printf '%-6s %14s %16s\n' "$which" "$(echo "${RATE[$which]}" | median)" "$(echo "${CPU[$which]}" | median)"
done
