#!/usr/bin/env bash
# bench/scaleout.sh: fan-out through Redis against fan-out in memory, with
# `wsline bench --mode fanout`. Not part of CI; see docs/scaling.md.
#
# Two setups, measured round by round in turn (the order alternates):
#   memory  one `wsline serve` (in-memory engine); the N subscribers and
#           the publisher all on it;
#   redis   a private redis-server (free loopback port, no persistence) and
#           two `wsline serve --engine redis` nodes A and B; the publisher
#           on A, all N subscribers on B, so that every delivery crosses
#           Redis (A publishes to Redis, Redis sends the message to B's
#           pub/sub connection, B fans it out).
# The servers (nodes and Redis) are pinned to $SERVER_CORE, the load to
# $CLIENT_CORE. Pacing, latency, losses and the CPU window are those of
# bench/fanout.sh: N subscribers on one channel, $SIZE-byte data, a closed
# loop of $IN_FLIGHT publishes in flight (with RATE, also at most RATE
# publishes/s); the bench reads each server process's utime+stime when
# publishing starts and ends (--server-pid, once per process). Reported,
# medians over the rounds: deliveries/s, CPU µs per delivery for each
# process and their total, latency p50/p99, losses (summed), and the
# ratio redis ÷ memory of throughput, total CPU per delivery and latency.
#
# Usage: bench/scaleout.sh       (about 1 minute with the defaults)
# Environment (defaults in brackets):
#   SUBS        subscriber counts [1000 10000]
#   DURATION    seconds of publishing per measurement [4]
#   ROUNDS      rounds [2]
#   SIZE        bytes of published data [100]
#   IN_FLIGHT   publishes in flight [16]      RATE  publishes/s cap [none]
#   SERVER_CORE [0]   CLIENT_CORE [1]
#   WSLINE_BIN  a wsline binary to use instead of building one
#   REDIS_SERVER  the redis-server binary [redis-server]
#   OUT         results folder [bench/results/scaleout-DATE-TIME]
#   FOREIGN_MAX, QUIET_WAIT as in bench/fanout.sh [0.15, 120]

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

SUBS="${SUBS:-1000 10000}"
DURATION="${DURATION:-4}"
ROUNDS="${ROUNDS:-2}"
SIZE="${SIZE:-100}"
IN_FLIGHT="${IN_FLIGHT:-16}"
RATE="${RATE:-}"
SERVER_CORE="${SERVER_CORE:-0}"
CLIENT_CORE="${CLIENT_CORE:-1}"
REDIS_SERVER="${REDIS_SERVER:-redis-server}"
OUT="${OUT:-$ROOT/bench/results/scaleout-$(date +%Y%m%d-%H%M%S)}"
HZ="$(getconf CLK_TCK)"
FOREIGN_MAX="${FOREIGN_MAX:-0.15}"
QUIET_WAIT="${QUIET_WAIT:-120}"

log() { echo "scaleout.sh: $*" >&2; }
# shellcheck source=bench/common.sh
source "$ROOT/bench/common.sh"

command -v "$REDIS_SERVER" >/dev/null || die "no $REDIS_SERVER (apt-get install redis-server)"
command -v jq >/dev/null || die "no jq (apt-get install jq)"
build_wsline
# shellcheck disable=SC2086
setup_machine $SUBS
mkdir -p "$OUT"
write_hub_config "$OUT/hub.toml"
RESULTS="$OUT/results.tsv"
[[ -f "$RESULTS" ]] || printf 'subs\tsetup\tround\tdeliveries\texpected\tlost\tdeliveries_per_sec\tcpu_us_per_delivery\tnode_a_us\tnode_b_us\tredis_us\tp50_us\tp99_us\terrors\n' >"$RESULTS"

# Every process started here, stopped on exit.
PIDS=()
stop_all() {
    local p
    for p in "${PIDS[@]}"; do stop_pid "$p"; done
    PIDS=()
}
trap stop_all EXIT

free_port() {
    local p
    for _ in $(seq 50); do
        p=$((20000 + RANDOM % 20000))
        (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
    done
    die "no free port"
}

# start_node LOG ARGS...: a pinned `wsline serve`; sets NODE_PID, NODE_ADDR.
start_node() {
    local logf="$1"
    shift
    "${PIN_S[@]}" "$WSLINE_BIN" serve --listen 127.0.0.1:0 --config "$OUT/hub.toml" --ping-interval 0 "$@" >"$logf" 2>&1 &
    NODE_PID=$!
    PIDS+=("$NODE_PID")
    NODE_ADDR="$(wait_listening "$logf")"
    [[ -n "$NODE_ADDR" ]] || { log "a node did not start; see $logf"; return 1; }
}

# start_redis LOG: a pinned private redis-server; sets REDIS_PID, REDIS_PORT.
start_redis() {
    REDIS_PORT="$(free_port)"
    "${PIN_S[@]}" "$REDIS_SERVER" --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no >"$1" 2>&1 &
    REDIS_PID=$!
    PIDS+=("$REDIS_PID")
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT") 2>/dev/null && return 0
        sleep 0.1
    done
    log "redis-server did not start; see $1"
    return 1
}

# measure SUBS SETUP ROUND: one measurement appended to $RESULTS.
measure() {
    local n="$1" s="$2" r="$3" tag="$OUT/$1.$2.$3"
    local sub_url pub_url pids=()
    wait_quiet
    if [[ "$s" == memory ]]; then
        start_node "$tag.node.log" || { stop_all; return; }
        sub_url="ws://$NODE_ADDR/ws"
        pub_url="$sub_url"
        pids=("$NODE_PID")
    else
        start_redis "$tag.redis.log" || { stop_all; return; }
        local redis_pid="$REDIS_PID" a_pid a_addr
        start_node "$tag.a.log" --engine redis --redis-url "redis://127.0.0.1:$REDIS_PORT" || { stop_all; return; }
        a_pid="$NODE_PID"; a_addr="$NODE_ADDR"
        start_node "$tag.b.log" --engine redis --redis-url "redis://127.0.0.1:$REDIS_PORT" || { stop_all; return; }
        sub_url="ws://$NODE_ADDR/ws"
        pub_url="ws://$a_addr/ws"
        pids=("$a_pid" "$NODE_PID" "$redis_pid")
    fi
    local rate_arg=() pid_args=() p
    [[ -n "$RATE" ]] && rate_arg=(--rate "$RATE")
    for p in "${pids[@]}"; do pid_args+=(--server-pid "$p"); done
    "${PIN_C[@]}" "$WSLINE_BIN" bench "$sub_url" --publish-url "$pub_url" --mode fanout \
        -c "$n" --size "$SIZE" --duration "$DURATION" --in-flight "$IN_FLIGHT" "${rate_arg[@]}" \
        --connect-concurrency 128 "${pid_args[@]}" --json \
        >"$tag.json" 2>"$tag.bench.log" || true
    stop_all
    if [[ -z "$(json_num server_cpu_us_per_delivery "$tag.json")" ]]; then
        log "$n/$s round $r: no result; see $tag.json and $tag.bench.log"
        return
    fi
    # Per process: memory has one (reported as node A), redis A, B, Redis.
    jq -r --arg n "$n" --arg s "$s" --arg r "$r" '
        .fanout as $f | ($f.server_cpu_by_pid | map(.us_per_delivery)) as $c |
        [$n, $s, $r, $f.deliveries, $f.expected_deliveries, $f.lost, .msgs_per_sec,
         $f.server_cpu_us_per_delivery, $c[0], ($c[1] // ""), ($c[2] // ""),
         .latency_us.p50, .latency_us.p99, .errors] | @tsv' "$tag.json" >>"$RESULTS"
    log "$(tail -1 "$RESULTS" | awk -F'\t' 'function c(x) { return x == "" ? "-" : sprintf("%.3f", x) }
        { printf "%6s subs %-6s round %s: %.0f deliveries/s, %.3f µs CPU/delivery (A %s, B %s, Redis %s), p50 %.0f µs, p99 %.0f µs, lost %s, %s errors", $1, $2, $3, $7, $8, c($9), c($10), c($11), $12, $13, $6, $14 }')"
}

# ------------------------------------------------------------------- run
log "results in $OUT"
for n in $SUBS; do
    for r in $(seq "$ROUNDS"); do
        if (( r % 2 )); then order="memory redis"; else order="redis memory"; fi
        for s in $order; do measure "$n" "$s" "$r"; done
    done
done

# ----------------------------------------------------------------- table
pacing="closed loop, $IN_FLIGHT publishes in flight"
[[ -n "$RATE" ]] && pacing="$pacing, at most $RATE publishes/s"
{
    echo "Machine: $(machine_line); nodes and Redis on core $SERVER_CORE, load on core $CLIENT_CORE"
    echo "Run: $(date -u '+%Y-%m-%d %H:%M UTC'), $ROUNDS rounds of ${DURATION} s publishing, $SIZE-byte data, $pacing; medians"
    echo "wsline: $(wsline_line); $("$REDIS_SERVER" --version | awk '{ print $1, $2, $3 }')"
    echo
} >"$OUT/table.md"
awk -F'\t' -v subs="$SUBS" '
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
function c(x) { return x == "" ? "—" : sprintf("%.3f", x) }
NR > 1 {
    k = $1 SUBSEP $2
    add("rate" SUBSEP k, $7); add("cpu" SUBSEP k, $8); add("a" SUBSEP k, $9); add("b" SUBSEP k, $10); add("r" SUBSEP k, $11)
    add("p50" SUBSEP k, $12); add("p99" SUBSEP k, $13)
    lost[k] += $6; expd[k] += $5; errs[k] += $14; rounds[k]++
}
END {
    nn = split(subs, N, " "); S[1] = "memory"; S[2] = "redis"
    L["memory"] = "one node, in memory"; L["redis"] = "two nodes via Redis"
    print "| Subscribers | Setup | deliveries/s | CPU µs per delivery: total (node A / node B / Redis) | latency p50 / p99 | lost (of expected) |"
    print "|---|---|---|---|---|---|"
    for (ni = 1; ni <= nn; ni++) {
        n = N[ni]
        for (i = 1; i <= 2; i++) {
            k = n SUBSEP S[i]
            if (!rounds[k]) { printf "| %s | %s | — | — | — | — |\n", n, L[S[i]]; continue }
            e = errs[k] ? sprintf(", %d errors", errs[k]) : ""
            printf "| %s | %s | %s | %s (%s / %s / %s) | %s / %s | %d (of %d)%s |\n", n, L[S[i]],
                rate(median("rate" SUBSEP k)), c(median("cpu" SUBSEP k)), c(median("a" SUBSEP k)),
                c(median("b" SUBSEP k)), c(median("r" SUBSEP k)), us(median("p50" SUBSEP k)), us(median("p99" SUBSEP k)),
                lost[k], expd[k], e
        }
        m = n SUBSEP "memory"; d = n SUBSEP "redis"
        if (rounds[m] && rounds[d])
            printf "| %s | **redis ÷ memory** | %.2f× | %.2f× | %.2f× / %.2f× | |\n", n,
                median("rate" SUBSEP d) / median("rate" SUBSEP m), median("cpu" SUBSEP d) / median("cpu" SUBSEP m),
                median("p50" SUBSEP d) / median("p50" SUBSEP m), median("p99" SUBSEP d) / median("p99" SUBSEP m)
    }
    print ""
    print "Medians of the rounds; lost and errors summed over them. CPU: utime+stime of each server process while publishing, per delivery (memory: the one node, shown as node A). Latency: from the publisher writing a message to a subscriber reading it. Redis setup: publisher on node A, every subscriber on node B."
}' "$RESULTS" >>"$OUT/table.md"

echo
cat "$OUT/table.md"
echo
log "raw results: $RESULTS"
