#!/usr/bin/env bash
# bench/durable.sh: what `--data-dir` costs a publisher. One client
# publishes N messages over one WebSocket (pipelined: `wsline connect` sends
# them as fast as it reads its stdin) to `wsline serve` with history in
# memory only, with --data-dir and --fsync 1 (the default), and with
# --fsync always; the server pinned to one core, the client to the other,
# the three interleaved for ROUNDS rounds. Prints publishes/s and the
# server's CPU per publish (utime + stime from /proc), medians, and each
# against memory only.
#
# Usage: bench/durable.sh [N] [ROUNDS]     (default 50000 publishes, 3 rounds)
# Environment: WSLINE_BIN (default: a release build), DATA_ROOT (where the
# data directories go; default a temporary directory: put it on the disk
# you want to measure), SERVER_CORE=0, CLIENT_CORE=1.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
N=${1:-50000}
ROUNDS=${2:-3}
SERVER_CORE=${SERVER_CORE:-0}
CLIENT_CORE=${CLIENT_CORE:-1}
HZ=$(getconf CLK_TCK)
log() { echo "[durable] $*" >&2; }
# shellcheck source=bench/common.sh
source "$ROOT/bench/common.sh"
build_wsline
setup_machine 0
DATA_ROOT=${DATA_ROOT:-$(mktemp -d)}
PORT=${PORT:-18731}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# run MODE: one measurement; prints "publishes_per_s cpu_us_per_publish".
run() {
    local mode=$1 dir="$DATA_ROOT/$1-$RANDOM" args=() pid t0 t1=0 c0 c1=0 got=0
    case "$mode" in
        memory) ;;
        interval) args=(--data-dir "$dir" --fsync 1) ;;
        always) args=(--data-dir "$dir" --fsync always) ;;
    esac
    "${PIN_S[@]}" "$WSLINE_BIN" serve --listen "127.0.0.1:$PORT" --publish-rate 1000000 \
        --history-size 1000 --max-queue 1000000000 "${args[@]}" >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
        sleep 0.05
    done
    local out="$DATA_ROOT/out-$RANDOM"
    : >"$out"
    c0=$(cpu_ticks "$pid")
    t0=$(date +%s%N)
    # The client's stdin stays open (a sleep) until every reply is in;
    # grep ends at the last one.
    (seq "$N" | sed 's/.*/{"op":"publish","channel":"bench","data":{"n":&,"text":"a message of some forty bytes, roughly"}}/'
        echo "$BASHPID" >"$out.sleep"
        exec sleep 120) |
        "${PIN_C[@]}" "$WSLINE_BIN" connect "ws://127.0.0.1:$PORT/ws" 2>/dev/null |
        grep -c -m "$N" '"published"' >"$out" &
    # grep, not awk: mawk holds its input until a block fills.
    for _ in $(seq 1 12000); do
        [[ -s "$out" ]] && break
        sleep 0.01
    done
    t1=$(date +%s%N)
    c1=$(cpu_ticks "$pid")
    got=$(cat "$out")
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    kill "$(cat "$out.sleep" 2>/dev/null)" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$dir" "$out" "$out.sleep"
    [[ "$got" == "$N" ]] || die "$mode: $got of $N publishes acknowledged"
    awk -v n="$N" -v ns=$((t1 - t0)) -v ticks=$((c1 - c0)) -v hz="$HZ" \
        'BEGIN { printf "%.0f %.2f\n", n / (ns / 1e9), ticks / hz * 1e6 / n }'
}

declare -A RATE CPU
for r in $(seq 1 "$ROUNDS"); do
    for mode in memory interval always; do
        read -r rate cpu < <(run "$mode")
        log "round $r $mode: $rate publishes/s, $cpu µs CPU per publish"
        RATE[$mode]+="$rate "
        CPU[$mode]+="$cpu "
    done
done
median() { tr ' ' '\n' | sed '/^$/d' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
m_rate=$(echo "${RATE[memory]}" | median)
m_cpu=$(echo "${CPU[memory]}" | median)
printf '%-10s %14s %14s %10s %10s\n' mode publishes/s "CPU µs/pub" "rate/mem" "CPU/mem"
for mode in memory interval always; do
    rate=$(echo "${RATE[$mode]}" | median)
    cpu=$(echo "${CPU[$mode]}" | median)
    awk -v m="$mode" -v r="$rate" -v c="$cpu" -v mr="$m_rate" -v mc="$m_cpu" \
        'BEGIN { printf "%-10s %14d %14.2f %9.2fx %9.2fx\n", m, r, c, r / mr, c / mc }'
done
