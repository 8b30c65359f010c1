#!/usr/bin/env bash
# bench/fanout.sh: fan-out of `wsline serve` against hubs built the
# idiomatic way on tokio-tungstenite and fastwebsockets (bench/peers/, one
# tokio::sync::broadcast per channel), all driven by
# `wsline bench --mode fanout`. Not part of CI; see docs/performance.md.
#
# For each subscriber count, round by round, each hub in turn (the order
# rotates every round): start it pinned to one core (taskset -c
# $SERVER_CORE), run the load pinned to another ($CLIENT_CORE): N
# subscribers on one channel, one publisher, $SIZE-byte data, publishes
# paced by a closed loop of $IN_FLIGHT publishes in flight (each one
# retired when every subscriber got it; with RATE set, also at most RATE
# publishes/s). The bench reads the hub's utime+stime from /proc/PID/stat
# when publishing starts and when the last publish reached everyone.
# Reported, medians over the rounds:
#   deliveries/s   = messages received by subscribers / publishing window;
#   CPU/delivery   = hub CPU time over that window / deliveries;
#   p50, p99       = publish-to-delivery latency (send time in the data);
#   lost           = expected (publishes × subscribers) - received, summed
#                    over the rounds (any loss also shows in the errors);
#   bench CPU      = the load generator's own CPU per delivery and how busy
#                    its core was.
# wsline's ratios are to the Rust peer with the lower CPU per delivery
# and to uWebSockets' pub/sub (uws), the anchor.
#
# Usage: bench/fanout.sh         (about 6 minutes with the defaults)
# Environment (defaults in brackets):
#   SUBS        subscriber counts [1000 10000]
#   DURATION    seconds of publishing per measurement [5]
#   ROUNDS      rounds [3]
#   SIZE        bytes of published data [100]
#   IN_FLIGHT   publishes in flight [16]      RATE  publishes/s cap [none]
#   SERVERS     subset of: wsline (--threads 1) wsline-t2 (--threads 2, same
#               core: the cost of crossing loops) tokio-tungstenite
#               fastwebsockets uws [all but wsline-t2; uws when built]
#   WSLINE_BASE_BIN  another wsline build (say main before a change), run
#               as server wsline-base (--threads 1) [none]
#   UWS_DIR     where ../shared/uws/build.sh put uws-hub, uWebSockets'
#               built-in pub/sub speaking the hub protocol [/tmp/uws-build]
#   SERVER_CORE [0]   CLIENT_CORE [1]
#   WSLINE_BIN  a wsline binary to use instead of building one
#   OUT         results folder [bench/results/fanout-DATE-TIME]
#   FOREIGN_MAX CPU (cores) other processes may use during a measurement
#               before it is redone [0.15]; QUIET_WAIT seconds to wait for
#               a quiet machine first [120]; TRIES per measurement [2]

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

SUBS="${SUBS:-1000 10000}"
DURATION="${DURATION:-5}"
ROUNDS="${ROUNDS:-3}"
SIZE="${SIZE:-100}"
IN_FLIGHT="${IN_FLIGHT:-16}"
RATE="${RATE:-}"
UWS_DIR="${UWS_DIR:-/tmp/uws-build}"
DEFAULT_SERVERS="wsline tokio-tungstenite fastwebsockets"
[[ -x "$UWS_DIR/uws-hub" ]] && DEFAULT_SERVERS="$DEFAULT_SERVERS uws"
[[ -n "${WSLINE_BASE_BIN:-}" ]] && DEFAULT_SERVERS="$DEFAULT_SERVERS wsline-base"
SERVERS="${SERVERS:-$DEFAULT_SERVERS}"
SERVER_CORE="${SERVER_CORE:-0}"
CLIENT_CORE="${CLIENT_CORE:-1}"
OUT="${OUT:-$ROOT/bench/results/fanout-$(date +%Y%m%d-%H%M%S)}"
HZ="$(getconf CLK_TCK)"
FOREIGN_MAX="${FOREIGN_MAX:-0.15}"
QUIET_WAIT="${QUIET_WAIT:-120}"
TRIES="${TRIES:-2}"
PEERS="$ROOT/bench/peers"

log() { echo "fanout.sh: $*" >&2; }
# shellcheck source=bench/common.sh
source "$ROOT/bench/common.sh"

# ------------------------------------------------------------------ build
build_wsline
log "building the peer hubs (release)"
cargo build --release --quiet --manifest-path "$PEERS/Cargo.toml" --bin hub-tokio-tungstenite --bin hub-fastwebsockets
PEER_BIN="$PEERS/target/release"
[[ -n "${CARGO_TARGET_DIR:-}" ]] && PEER_BIN="$CARGO_TARGET_DIR/release"

# --------------------------------------------------------------- machine
# shellcheck disable=SC2086
setup_machine $SUBS

mkdir -p "$OUT"
RESULTS="$OUT/results.tsv"
[[ -f "$RESULTS" ]] || printf 'subs\tserver\tround\tdeliveries\texpected\tlost\tdeliveries_per_sec\tserver_cpu_us_per_delivery\tp50_us\tp99_us\tp999_us\tbench_cpu_us_per_delivery\tbench_core_busy\terrors\tforeign_load\n' >"$RESULTS"

write_hub_config "$OUT/hub.toml"

server_cmd() {
    case "$1" in
        wsline) echo "$WSLINE_BIN serve --listen 127.0.0.1:0 --config $OUT/hub.toml --ping-interval 0 --threads 1" ;;
        # Two event loops on the hub's one core: what distributing the
        # connections over loops costs (cross-thread wake-ups), not speed.
        wsline-t2) echo "$WSLINE_BIN serve --listen 127.0.0.1:0 --config $OUT/hub.toml --ping-interval 0 --threads 2" ;;
        wsline-base) echo "$WSLINE_BASE_BIN serve --listen 127.0.0.1:0 --config $OUT/hub.toml --ping-interval 0 --threads 1" ;;
        tokio-tungstenite | fastwebsockets) echo "$PEER_BIN/hub-$1 127.0.0.1:0" ;;
        # uws-hub takes a port and logs "listening on PORT".
        uws) echo "$UWS_DIR/uws-hub $UWS_PORT" ;;
        *) die "unknown server $1" ;;
    esac
}
server_url() { # SERVER ADDR
    case "$1" in
        wsline | wsline-t2 | wsline-base) echo "ws://$2/ws" ;;
        *) echo "ws://$2/" ;;
    esac
}

# uws-hub cannot pick its own port: a fixed one, free at the start.
UWS_PORT="${UWS_PORT:-19431}"
SERVER_PID=""
stop_server() {
    stop_pid "$SERVER_PID"
    SERVER_PID=""
}
trap stop_server EXIT

# measure_once SUBS SERVER ROUND: one measurement into $tag.line.
measure_once() {
    local n="$1" s="$2" r="$3"
    local tag="$OUT/$n.$s.$r"
    rm -f "$tag.line"
    wait_quiet
    # shellcheck disable=SC2046
    "${PIN_S[@]}" $(server_cmd "$s") >"$tag.server.log" 2>&1 &
    SERVER_PID=$!
    local addr
    if [[ "$s" == uws ]]; then
        addr=""
        for _ in $(seq 100); do
            grep -q "^listening on $UWS_PORT" "$tag.server.log" 2>/dev/null && addr="127.0.0.1:$UWS_PORT" && break
            sleep 0.1
        done
    else
        addr="$(wait_listening "$tag.server.log")"
    fi
    if [[ -z "$addr" ]]; then
        log "$s did not start; see $tag.server.log"
        stop_server
        return
    fi
    local busy0 t0 cpu0
    busy0="$(busy_ticks)"; t0="$(now_s)"; cpu0="$(cpu_ticks "$SERVER_PID")"
    local rate_arg=()
    [[ -n "$RATE" ]] && rate_arg=(--rate "$RATE")
    "${PIN_C[@]}" "$WSLINE_BIN" bench "$(server_url "$s" "$addr")" --mode fanout \
        -c "$n" --size "$SIZE" --duration "$DURATION" --in-flight "$IN_FLIGHT" "${rate_arg[@]}" \
        --connect-concurrency 128 --server-pid "$SERVER_PID" --json \
        >"$tag.json" 2>"$tag.bench.log" || true
    local busy1 t1 cpu1
    busy1="$(busy_ticks)"; t1="$(now_s)"; cpu1="$(cpu_ticks "$SERVER_PID")"
    stop_server
    local per
    per="$(json_num server_cpu_us_per_delivery "$tag.json")"
    if [[ -z "$per" ]]; then
        log "$n/$s round $r: no result; see $tag.json and $tag.bench.log"
        return
    fi
    awk -v n="$n" -v s="$s" -v r="$r" \
        -v got="$(json_num deliveries "$tag.json")" -v expd="$(json_num expected_deliveries "$tag.json")" \
        -v lost="$(json_num lost "$tag.json")" -v rate="$(json_num msgs_per_sec "$tag.json")" -v per="$per" \
        -v p50="$(json_num p50 "$tag.json")" -v p99="$(json_num p99 "$tag.json")" -v p999="$(json_num p999 "$tag.json")" \
        -v cper="$(json_num bench_cpu_us_per_msg "$tag.json")" -v ccpu="$(json_num bench_cpu_s "$tag.json")" \
        -v el="$(json_num elapsed_s "$tag.json")" -v errors="$(json_num errors "$tag.json")" \
        -v call="$(json_num bench_cpu_total_s "$tag.json")" -v b0="$busy0" -v b1="$busy1" -v w0="$t0" -v w1="$t1" \
        -v s0="$cpu0" -v s1="$cpu1" -v hz="$HZ" '
    BEGIN {
        busy = (el > 0 && ccpu != "") ? ccpu / el : ""
        foreign = ((b1 - b0) / hz - (s1 - s0) / hz - (call == "" ? 0 : call)) / (w1 - w0)
        if (foreign < 0) foreign = 0
        printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%.2f\n", n, s, r, got, expd, lost, rate, per, p50, p99, p999, cper, busy, errors, foreign
    }' >"$tag.line"
}

# Foreign load is measured over the whole measurement (connecting
# included), so it is a rough guide; a measurement above FOREIGN_MAX is
# redone up to TRIES times and the last one kept.
measure() {
    local tag="$OUT/$1.$2.$3" foreign
    for _ in $(seq "$TRIES"); do
        measure_once "$1" "$2" "$3"
        [[ -f "$tag.line" ]] || continue
        foreign="$(cut -f15 "$tag.line")"
        awk -v l="$foreign" -v m="$FOREIGN_MAX" 'BEGIN { exit !(l <= m) }' && break
        log "$1/$2 round $3: other processes used $foreign cores meanwhile; measuring again"
    done
    [[ -f "$tag.line" ]] || return 0
    cat "$tag.line" >>"$RESULTS"
    log "$(tail -1 "$RESULTS" | awk -F'\t' '{ printf "%6s subs %-17s round %s: %.0f deliveries/s, hub %.3f µs/delivery, p50 %.0f µs, p99 %.0f µs, lost %s, bench %.2f µs/delivery (core %.0f%% busy), %s errors, background %s cores", $1, $2, $3, $7, $8, $9, $10, $6, $12, $13 * 100, $14, $15 }')"
}

# ------------------------------------------------------------------- run
read -r -a SERVER_LIST <<<"$SERVERS"
n_servers=${#SERVER_LIST[@]}
log "results in $OUT"
for n in $SUBS; do
    for r in $(seq "$ROUNDS"); do
        for i in $(seq 0 $((n_servers - 1))); do
            measure "$n" "${SERVER_LIST[$(((i + r - 1) % n_servers))]}" "$r"
        done
    done
done

# ----------------------------------------------------------------- table
pacing="closed loop, $IN_FLIGHT publishes in flight"
[[ -n "$RATE" ]] && pacing="$pacing, at most $RATE publishes/s"
{
    echo "Machine: $(machine_line); hub on core $SERVER_CORE, load on core $CLIENT_CORE"
    echo "Run: $(date -u '+%Y-%m-%d %H:%M UTC'), $ROUNDS rounds of ${DURATION} s publishing, $SIZE-byte data, $pacing; medians"
    echo "wsline: $(wsline_line)"
    echo "Peers: $(awk '/^name = "(tokio-tungstenite|fastwebsockets|tokio)"$/ { n = $3; getline; printf "%s %s  ", n, $3 }' "$PEERS/Cargo.lock" | tr -d '"')"
    echo
} >"$OUT/table.md"
awk -F'\t' -v servers="$SERVERS" -v subs="$SUBS" '
function median(key,    n, i, j, t, v) {
    n = cnt[key]
    if (n == 0) return ""
    for (i = 1; i <= n; i++) v[i] = vals[key, i]
    for (i = 2; i <= n; i++) { t = v[i]; for (j = i - 1; j >= 1 && v[j] > t; j--) v[j + 1] = v[j]; v[j + 1] = t }
    return (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
}
function add(key, x) { if (x == "") return; cnt[key]++; vals[key, cnt[key]] = x }
function rate(x) { return x >= 1e6 ? sprintf("%.2fM/s", x / 1e6) : (x >= 1e3 ? sprintf("%.0fk/s", x / 1e3) : sprintf("%.0f/s", x)) }
function us(x) { return x >= 1000 ? sprintf("%.1f ms", x / 1000) : sprintf("%.0f µs", x) }
NR > 1 {
    k = $1 SUBSEP $2
    add("rate" SUBSEP k, $7); add("cpu" SUBSEP k, $8); add("p50" SUBSEP k, $9); add("p99" SUBSEP k, $10)
    add("ccpu" SUBSEP k, $12); add("busy" SUBSEP k, $13)
    lost[k] += $6; expd[k] += $5; errs[k] += $14; rounds[k]++
}
END {
    ns = split(servers, S, " "); nn = split(subs, N, " ")
    print "| Subscribers | Hub | deliveries/s | hub CPU per delivery | latency p50 / p99 | lost (of expected) | bench CPU per delivery (core busy) | wsline ÷ best Rust peer, ÷ uWS (CPU) |"
    print "|---|---|---|---|---|---|---|---|"
    for (ni = 1; ni <= nn; ni++) {
        n = N[ni]; best = ""; me = ""; uws = ""
        for (i = 1; i <= ns; i++) {
            c = median("cpu" SUBSEP n SUBSEP S[i])
            if (S[i] == "wsline") me = c
            else if (S[i] == "uws") uws = c
            else if (S[i] !~ /^wsline/ && c != "" && (best == "" || c < best)) { best = c; bestname = S[i] }
        }
        for (i = 1; i <= ns; i++) {
            k = n SUBSEP S[i]
            if (!rounds[k]) { printf "| %s | %s | — | — | — | — | — | |\n", n, S[i]; continue }
            ratio = ""
            if (S[i] == "wsline" && me != "" && best != "")
                ratio = sprintf("%.2f× (%s); target ≤ 0.25×: %s", me / best, bestname, (me / best <= 0.25) ? "met" : "MISSED")
            if (S[i] == "wsline" && me != "" && uws != "")
                ratio = sprintf("%s%s%.2f× uws; target ≤ 1.0×: %s", ratio, (ratio == "" ? "" : "; "), me / uws, (me / uws <= 1.0) ? "met" : "MISSED")
            if (S[i] == "wsline-base" && me != "") {
                c = median("cpu" SUBSEP k)
                ratio = sprintf("wsline ÷ this: %.2f×", me / c)
            }
            if (S[i] == "wsline-t2" && me != "") {
                c = median("cpu" SUBSEP k)
                ratio = sprintf("%.2f× wsline --threads 1; target ≤ 1.2×: %s", c / me, (c / me <= 1.2) ? "met" : "MISSED")
            }
            e = errs[k] ? sprintf(", %d errors", errs[k]) : ""
            printf "| %s | %s | %s | %.3f µs | %s / %s | %d (of %d)%s | %.2f µs (%.0f%%) | %s |\n", n, S[i],
                rate(median("rate" SUBSEP k)), median("cpu" SUBSEP k), us(median("p50" SUBSEP k)), us(median("p99" SUBSEP k)),
                lost[k], expd[k], e, median("ccpu" SUBSEP k), median("busy" SUBSEP k) * 100, ratio
        }
    }
    print ""
    print "Medians of the rounds; lost and errors summed over them. Hub CPU: utime+stime of the hub process while publishing, per delivery. Latency: from the publisher writing a message to a subscriber reading it."
}' "$RESULTS" >>"$OUT/table.md"

echo
cat "$OUT/table.md"
echo
log "raw results: $RESULTS"
