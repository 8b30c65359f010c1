#!/usr/bin/env bash
# bench/keepalive.sh: what keep-alive saves a publisher of the HTTP API.
# One client (curl, one process) sends N `POST /api/publish` in a row to
# `wsline serve`: over one keep-alive HTTP/1.1 connection (`keepalive`),
# and with a new connection per request (`close`: the request says
# `Connection: close`, which is what every request cost before the hub had
# keep-alive); with WSLINE_BASE_BIN set, also that binary (a build from
# before keep-alive, `base`: it closes after every answer); and over TLS
# (a self-signed certificate made with openssl), one HTTP/2 connection
# (`h2-tls`) against one keep-alive HTTP/1.1 connection (`h1-tls`).
# (Cleartext HTTP/2 is left out: curl 7.88's --http2-prior-knowledge does
# not reuse its connection for a second URL; h2's and Node's clients do,
# see crates/hub/tests/tls_h2.rs.) The server is pinned
# to one core, curl to the other; the modes interleaved for ROUNDS rounds.
# Prints publishes/s and the server's CPU per publish (utime + stime from
# /proc), medians, and each against `close`. curl's own cost bounds the
# rate: the server's CPU per publish is the figure that compares servers.
#
# Usage: bench/keepalive.sh [N] [ROUNDS]     (default 5000 publishes, 5 rounds)
# Environment: WSLINE_BIN (default: a release build), WSLINE_BASE_BIN,
# SERVER_CORE=0, CLIENT_CORE=1, PORT=18741.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
N=${1:-5000}
ROUNDS=${2:-5}
SERVER_CORE=${SERVER_CORE:-0}
CLIENT_CORE=${CLIENT_CORE:-1}
HZ=$(getconf CLK_TCK)
log() { echo "[keepalive] $*" >&2; }
# shellcheck source=bench/common.sh
source "$ROOT/bench/common.sh"
build_wsline
setup_machine 0
command -v curl >/dev/null || die "curl is needed"
PORT=${PORT:-18741}
MODES="keepalive close"
[[ -n "${WSLINE_BASE_BIN:-}" ]] && MODES="$MODES base"
MODES="$MODES h1-tls h2-tls"
CERT_DIR=$(mktemp -d)
trap 'rm -rf "$CERT_DIR"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$CERT_DIR/key.pem" \
    -out "$CERT_DIR/cert.pem" -days 1 -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null || die "openssl failed"
BODY='{"channel":"bench","data":{"text":"a message of some forty bytes, roughly"}}'

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
published() {
    curl -s --cacert "$CERT_DIR/cert.pem" "$SCHEME://127.0.0.1:$PORT/metrics" |
        awk '$1 == "wsline_publishes_total" {print $2}'
}

# run MODE: one measurement; prints "publishes_per_s cpu_us_per_publish".
run() {
    local mode=$1 bin=$WSLINE_BIN pid t0 t1 c0 c1 before after flags=() tls=()
    SCHEME=http
    case "$mode" in
        keepalive) flags=(--http1.1) ;;
        close) flags=(--http1.1 -H 'Connection: close') ;;
        base) flags=(--http1.1) bin=$WSLINE_BASE_BIN ;;
        h1-tls) flags=(--http1.1) SCHEME=https ;;
        h2-tls) flags=(--http2) SCHEME=https ;;
    esac
    if [[ $SCHEME == https ]]; then
        tls=(--tls-cert "$CERT_DIR/cert.pem" --tls-key "$CERT_DIR/key.pem")
        flags+=(--cacert "$CERT_DIR/cert.pem")
    fi
    "${PIN_S[@]}" "$bin" serve --listen "127.0.0.1:$PORT" --history-size 100 "${tls[@]}" >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
        sleep 0.05
    done
    local urls=()
    for _ in $(seq "$N"); do urls+=("$SCHEME://127.0.0.1:$PORT/api/publish"); done
    before=$(published)
    c0=$(cpu_ticks "$pid")
    t0=$(date +%s%N)
    "${PIN_C[@]}" curl -s "${flags[@]}" -H 'Content-Type: application/json' -d "$BODY" "${urls[@]}" >/dev/null
    t1=$(date +%s%N)
    c1=$(cpu_ticks "$pid")
    after=$(published)
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    [[ $((after - before)) == "$N" ]] || die "$mode: $((after - before)) of $N publishes made"
    awk -v n="$N" -v ns=$((t1 - t0)) -v ticks=$((c1 - c0)) -v hz="$HZ" \
        'BEGIN { printf "%.0f %.2f\n", n / (ns / 1e9), ticks / hz * 1e6 / n }'
}

declare -A RATE CPU
for r in $(seq 1 "$ROUNDS"); do
    for mode in $MODES; do
        read -r rate cpu < <(run "$mode")
        log "round $r $mode: $rate publishes/s, $cpu µs server CPU per publish"
        RATE[$mode]+="$rate "
        CPU[$mode]+="$cpu "
    done
done
median() { tr ' ' '\n' | sed '/^$/d' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
c_rate=$(echo "${RATE[close]}" | median)
c_cpu=$(echo "${CPU[close]}" | median)
printf '%-10s %14s %14s %10s %10s\n' mode publishes/s "CPU µs/pub" "rate/close" "CPU/close"
for mode in $MODES; do
    rate=$(echo "${RATE[$mode]}" | median)
    cpu=$(echo "${CPU[$mode]}" | median)
    awk -v m="$mode" -v r="$rate" -v c="$cpu" -v cr="$c_rate" -v cc="$c_cpu" \
        'BEGIN { printf "%-10s %14d %14.2f %9.2fx %9.2fx\n", m, r, c, r / cr, c / cc }'
done
