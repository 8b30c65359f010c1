#!/usr/bin/env bash
# bench/hubmem.sh: memory per open connection of `wsline serve` (the hub)
# beside `wsline echo` (the reactor), both holding N idle connections.
# Not part of CI; see docs/performance.md.
#
# Workloads, round by round, each server in turn (the order rotates):
#   hub      `wsline serve --threads 1`: N connections, each subscribed to
#            a channel of its own (`own.{i}`) and to one shared channel
#            (`all`), join/leave events off (the built-in defaults turn
#            them on only for `chat.*`); `wsline bench --mode idle
#            --subscribe 'own.{i}' --subscribe all`.
#   hub-base the same against WSLINE_BASE_BIN (say main before a change).
#   echo     `wsline echo` (its default runtime, the reactor): N plain
#            idle connections (`wsline bench --mode idle`).
# Reported: (peak server RSS while the N are held - RSS before) / N,
# medians over the rounds. The server is pinned to $SERVER_CORE, the load
# to $CLIENT_CORE.
#
# Usage: bench/hubmem.sh   (about 2 minutes with the defaults)
# Environment (defaults in brackets):
#   CONNS [10000]  ROUNDS [3]  HOLD seconds the connections are held [3]
#   SERVERS subset of: hub hub-base echo [hub echo, and hub-base with
#           WSLINE_BASE_BIN]
#   WSLINE_BIN, WSLINE_BASE_BIN  binaries to use [a release build; none]
#   SERVER_CORE [0]  CLIENT_CORE [1]
#   OUT  results folder [bench/results/hubmem-DATE-TIME]

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

CONNS="${CONNS:-10000}"
ROUNDS="${ROUNDS:-3}"
HOLD="${HOLD:-3}"
SERVER_CORE="${SERVER_CORE:-0}"
CLIENT_CORE="${CLIENT_CORE:-1}"
OUT="${OUT:-$ROOT/bench/results/hubmem-$(date +%Y%m%d-%H%M%S)}"
HZ="$(getconf CLK_TCK)"
FOREIGN_MAX="${FOREIGN_MAX:-0.3}"
QUIET_WAIT="${QUIET_WAIT:-60}"
DEFAULT_SERVERS="hub echo"
[[ -n "${WSLINE_BASE_BIN:-}" ]] && DEFAULT_SERVERS="hub hub-base echo"
SERVERS="${SERVERS:-$DEFAULT_SERVERS}"

log() { echo "hubmem.sh: $*" >&2; }
# shellcheck source=bench/common.sh
source "$ROOT/bench/common.sh"

build_wsline
setup_machine "$CONNS"
mkdir -p "$OUT"
RESULTS="$OUT/results.tsv"
printf 'server\tround\topen\trss_before_kib\trss_peak_kib\tbytes_per_conn\terrors\n' >"$RESULTS"

server_cmd() {
    case "$1" in
        hub) echo "$WSLINE_BIN serve --listen 127.0.0.1:0 --threads 1" ;;
        hub-base) echo "$WSLINE_BASE_BIN serve --listen 127.0.0.1:0 --threads 1" ;;
        echo) echo "$WSLINE_BIN echo --listen 127.0.0.1:0" ;;
        *) die "unknown server $1" ;;
    esac
}
load_args() {
    case "$1" in
        hub | hub-base) echo "--subscribe own.{i} --subscribe all" ;;
        echo) echo "" ;;
    esac
}
server_url() {
    case "$1" in
        hub | hub-base) echo "ws://$2/ws" ;;
        echo) echo "ws://$2/" ;;
    esac
}

SERVER_PID=""
trap 'stop_pid "$SERVER_PID"' EXIT

measure() { # SERVER ROUND
    local s="$1" r="$2" tag="$OUT/$1.$2"
    wait_quiet
    # shellcheck disable=SC2046
    "${PIN_S[@]}" $(server_cmd "$s") >"$tag.server.log" 2>&1 &
    SERVER_PID=$!
    local addr
    addr="$(wait_listening "$tag.server.log")"
    [[ -n "$addr" ]] || { log "$s did not start; see $tag.server.log"; stop_pid "$SERVER_PID"; return; }
    local rss0 peak=0 rss
    rss0="$(rss_kib "$SERVER_PID")"
    # shellcheck disable=SC2046
    "${PIN_C[@]}" "$WSLINE_BIN" bench "$(server_url "$s" "$addr")" --mode idle -c "$CONNS" \
        --duration "$HOLD" --connect-concurrency 64 $(load_args "$s") --json \
        >"$tag.json" 2>"$tag.bench.log" &
    local bench=$!
    while kill -0 "$bench" 2>/dev/null; do
        rss="$(rss_kib "$SERVER_PID")"
        ((rss > peak)) && peak=$rss
        sleep 0.1
    done
    wait "$bench" || true
    stop_pid "$SERVER_PID"
    SERVER_PID=""
    local open errors
    open="$(json_num connections_open "$tag.json")"
    errors="$(json_num errors "$tag.json")"
    if [[ -z "$open" || "$open" == 0 ]]; then
        log "$s round $r: no connections held; see $tag.bench.log"
        return
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$s" "$r" "$open" "$rss0" "$peak" \
        "$(((peak - rss0) * 1024 / open))" "$errors" >>"$RESULTS"
    log "$(tail -1 "$RESULTS" | awk -F'\t' '{ printf "%-8s round %s: %s open, %s B per connection, %s errors", $1, $2, $3, $6, $7 }')"
}

read -r -a LIST <<<"$SERVERS"
for r in $(seq "$ROUNDS"); do
    for i in $(seq 0 $((${#LIST[@]} - 1))); do
        measure "${LIST[$(((i + r - 1) % ${#LIST[@]}))]}" "$r"
    done
done

{
    echo "Machine: $(machine_line); server on core $SERVER_CORE, load on core $CLIENT_CORE"
    echo "Run: $(date -u '+%Y-%m-%d %H:%M UTC'), $ROUNDS rounds, $CONNS connections held $HOLD s; medians"
    echo "wsline: $(wsline_line)"
    echo
    echo "| server | workload | RSS per connection (median) | rounds |"
    echo "|---|---|---|---|"
    awk -F'\t' -v servers="$SERVERS" '
    NR > 1 { n[$1]++; v[$1, n[$1]] = $6 }
    END {
        k = split(servers, S, " ")
        for (i = 1; i <= k; i++) {
            s = S[i]; m = n[s]
            if (!m) { printf "| %s | | — | 0 |\n", s; continue }
            for (a = 1; a <= m; a++) x[a] = v[s, a]
            for (a = 2; a <= m; a++) { t = x[a]; for (b = a - 1; b >= 1 && x[b] > t; b--) x[b + 1] = x[b]; x[b + 1] = t }
            med = (m % 2) ? x[(m + 1) / 2] : (x[m / 2] + x[m / 2 + 1]) / 2
            w = (s == "echo") ? "idle" : "idle, own channel + shared channel"
            printf "| %s | %s | %d B | %d |\n", s, w, med, m
        }
    }' "$RESULTS"
} >"$OUT/table.md"
echo
cat "$OUT/table.md"
log "raw results: $RESULTS"
