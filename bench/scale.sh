#!/usr/bin/env bash
# bench/scale.sh: what one idle WebSocket connection costs, user space and
# kernel, so that docs/performance.md can say what 1,000,000 cost (issue
# 19). Not part of CI.
#
# Starts one server pinned to $SERVER_CORE, opens N idle connections to it
# from `wsline bench --mode idle` (another process, pinned to
# $CLIENT_CORE), and once all are open samples, against a baseline taken
# before: the server's RSS, the client's RSS, /proc/meminfo (MemAvailable,
# Slab), /proc/net/sockstat (TCP sockets and the pages TCP accounts to
# socket buffers) and /proc/slabinfo (when readable) for the caches one
# connected socket uses: TCP (the socket), sock_inode_cache (its inode
# and struct socket), dentry and filp (its file), eventpoll_epi and
# eventpoll_pwq (its epoll registration), tcp_bind_bucket (a client's
# local port), skbuff_head_cache and kmalloc-* (buffers queued, and
# whatever else is allocated per socket).
#
# Over loopback each connection is two kernel sockets, the client's and
# the server's, in the same caches. They are the same objects on both
# sides (an established TCP socket, its inode, file, dentry and epoll
# entry), so the kernel bytes per server-side connection are the
# per-socket caches' growth / (2 N); what only a client socket has (its
# bind buckets) is left out. Bytes per object are the slab's, page
# rounding included: pages per slab × 4096 / objects per slab. SLUB
# merges caches of one size: where eventpoll_epi shares its slabs with
# tcp_bind_bucket and tcp_bind2_bucket (the client's local ports, two per
# client socket; /sys/kernel/slab tells), the server's share of that row is
# its own epoll registrations (counted in /proc/PID/fdinfo of its epoll
# descriptors, after the sample) per connection. The script counts the
# connections with ss (netlink), not through /proc/PID/fd (each entry read
# there would add a dentry), and first waits for the sockets of an earlier
# run to be gone. Other processes create and free dentries
# and files (compilers): read the dentry and filp rows against their
# expected one per socket.
#
# Usage: bench/scale.sh                  (wsline echo, 19,000 connections)
# Environment (defaults in brackets):
#   N            connections [19000: this machine caps a process at 20,000
#                descriptors]
#   SERVER       wsline | uws | wsline-tokio [wsline]
#   HOLD         seconds the connections are held once open [10]
#   WSLINE_BIN   a wsline binary to use instead of building one
#   UWS_DIR      where ../shared/uws/build.sh put uws-echo [/tmp/uws-build]
#   UWS_PORT     [19432]   SERVER_CORE [0]   CLIENT_CORE [1]
#   OUT          results folder [bench/results/scale-DATE-TIME]
# Writes $OUT/scale.md (the tables) and $OUT/before.* / $OUT/open.* (the
# raw samples).

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

N="${N:-19000}"
SERVER="${SERVER:-wsline}"
HOLD="${HOLD:-10}"
UWS_DIR="${UWS_DIR:-/tmp/uws-build}"
UWS_PORT="${UWS_PORT:-19432}"
SERVER_CORE="${SERVER_CORE:-0}"
CLIENT_CORE="${CLIENT_CORE:-1}"
OUT="${OUT:-$ROOT/bench/results/scale-$(date +%Y%m%d-%H%M%S)}"
HZ="$(getconf CLK_TCK)"
FOREIGN_MAX="${FOREIGN_MAX:-0.15}"
QUIET_WAIT="${QUIET_WAIT:-0}"

log() { echo "scale.sh: $*" >&2; }
# shellcheck source=bench/common.sh
source "$ROOT/bench/common.sh"

build_wsline
setup_machine "$N"
mkdir -p "$OUT"

case "$SERVER" in
    wsline) CMD=("$WSLINE_BIN" echo --listen 127.0.0.1:0 --no-compression --ping-interval 0 --max-connections $((N + 1000))) ;;
    wsline-tokio) CMD=("$WSLINE_BIN" echo --listen 127.0.0.1:0 --no-compression --ping-interval 0 --max-connections $((N + 1000)) --runtime tokio) ;;
    uws) [[ -x "$UWS_DIR/uws-echo" ]] || die "no $UWS_DIR/uws-echo: build it with ../shared/uws/build.sh"
        CMD=("$UWS_DIR/uws-echo" "$UWS_PORT") ;;
    *) die "unknown SERVER $SERVER (wsline, wsline-tokio or uws)" ;;
esac

# The caches a connected socket uses (see the header).
CACHES="TCP sock_inode_cache dentry filp eventpoll_epi eventpoll_pwq tcp_bind_bucket skbuff_head_cache kmalloc-64 kmalloc-128 kmalloc-192 kmalloc-256 kmalloc-512 kmalloc-1k kmalloc-2k kmalloc-4k"
# sample PREFIX: the kernel's counters into PREFIX.*.
sample() {
    cp /proc/meminfo "$1.meminfo"
    cp /proc/net/sockstat "$1.sockstat"
    if [[ -r /proc/slabinfo ]]; then
        # name, active objects, bytes per object (page rounding included)
        awk -v caches=" $CACHES " 'index(caches, " " $1 " ") { printf "%s %d %.1f\n", $1, $2, $6 * 4096 / $5 }' /proc/slabinfo >"$1.slab"
    else
        : >"$1.slab"
    fi
}
meminfo_kib() { awk -v k="$1:" '$1 == k { print $2 }' "$2.meminfo"; }
tcp_mem_pages() { awk '$1 == "TCP:" { for (i = 2; i < NF; i++) if ($i == "mem") print $(i + 1) }' "$1.sockstat"; }
tcp_inuse() { awk '$1 == "TCP:" { for (i = 2; i < NF; i++) if ($i == "inuse") print $(i + 1) }' "$1.sockstat"; }
tcp_inuse_now() { awk '$1 == "TCP:" { for (i = 2; i < NF; i++) if ($i == "inuse") print $(i + 1) }' /proc/net/sockstat; }
# epoll_registrations PID: descriptors registered in PID's epoll sets.
epoll_registrations() {
    local fd n=0
    for fd in $(find "/proc/$1/fd" -mindepth 1 -maxdepth 1 -lname 'anon_inode:\[eventpoll\]' -printf '%f\n' 2>/dev/null); do
        n=$((n + $(grep -c '^tfd:' "/proc/$1/fdinfo/$fd" 2>/dev/null || echo 0)))
    done
    echo "$n"
}
# established PORT: established TCP connections to local port PORT (ss
# asks the kernel over netlink: no /proc dentries).
established() { ss -Htn state established "( sport = :$1 )" 2>/dev/null | wc -l; }
# Whether eventpoll_epi shares its slabs with the TCP bind buckets.
epi_merged() {
    [[ -e /sys/kernel/slab/eventpoll_epi && -e /sys/kernel/slab/tcp_bind_bucket ]] &&
        [[ "$(readlink /sys/kernel/slab/eventpoll_epi)" == "$(readlink /sys/kernel/slab/tcp_bind_bucket)" ]] &&
        [[ -n "$(readlink /sys/kernel/slab/eventpoll_epi)" ]]
}

SERVER_PID=""
BENCH_PID=""
cleanup() {
    [[ -n "$BENCH_PID" ]] && stop_pid "$BENCH_PID"
    [[ -n "$SERVER_PID" ]] && stop_pid "$SERVER_PID"
    return 0
}
trap cleanup EXIT

"${PIN_S[@]}" "${CMD[@]}" >"$OUT/server.log" 2>&1 &
SERVER_PID=$!
if [[ "$SERVER" == uws ]]; then
    for _ in $(seq 100); do
        grep -q "^listening on $UWS_PORT\$" "$OUT/server.log" 2>/dev/null && break
        sleep 0.1
    done
    ADDR="127.0.0.1:$UWS_PORT"
else
    ADDR="$(wait_listening "$OUT/server.log")"
fi
[[ -n "$ADDR" ]] || die "$SERVER did not start; see $OUT/server.log"
PORT="${ADDR##*:}"
# Sockets of an earlier run still closing would be counted as this one's.
for _ in $(seq 60); do
    (( $(tcp_inuse_now) < 200 )) && break
    sleep 1
done
sleep 0.5
rss0="$(rss_kib "$SERVER_PID")"
sample "$OUT/before"

# Held long enough for the sample to be taken; closed by the bench.
"${PIN_C[@]}" "$WSLINE_BIN" bench "ws://$ADDR/" --mode idle -c "$N" --duration "$HOLD" \
    --connect-concurrency 64 --json >"$OUT/bench.json" 2>"$OUT/bench.log" &
BENCH_PID=$!
bench_rss0="$(rss_kib "$BENCH_PID" 2>/dev/null || echo 0)"
log "opening $N idle connections to $SERVER ($ADDR)"
open=0
for _ in $(seq 1200); do
    open="$(established "$PORT")"
    (( open >= N )) && break
    kill -0 "$BENCH_PID" 2>/dev/null || break
    sleep 0.3
done
(( open >= N )) || log "warning: only $open connections reached the server"
# Let the last handshakes finish and the sockets settle to idle.
sleep 1
rss1="$(rss_kib "$SERVER_PID")"
bench_rss1="$(rss_kib "$BENCH_PID" 2>/dev/null || echo 0)"
sample "$OUT/open"
regs="$(epoll_registrations "$SERVER_PID")"
wait "$BENCH_PID" || true
BENCH_PID=""
stop_pid "$SERVER_PID"
SERVER_PID=""

opened="$(json_num connections_open "$OUT/bench.json")"
[[ -n "$opened" ]] || opened="$open"
log "$opened connections held"

{
    echo "Machine: $(machine_line); kernel $(uname -r); server on core $SERVER_CORE, client on core $CLIENT_CORE"
    echo "Run: $(date -u '+%Y-%m-%d %H:%M UTC'); server: $SERVER ($([[ "$SERVER" == uws ]] && cat "$UWS_DIR/versions.txt" 2>/dev/null || wsline_line)); $opened idle connections over loopback (the client: \`wsline bench --mode idle\`, another process)"
    echo
    awk -v n="$opened" -v rss0="$rss0" -v rss1="$rss1" -v b0="$bench_rss0" -v b1="$bench_rss1" \
        -v ma0="$(meminfo_kib MemAvailable "$OUT/before")" -v ma1="$(meminfo_kib MemAvailable "$OUT/open")" \
        -v sl0="$(meminfo_kib Slab "$OUT/before")" -v sl1="$(meminfo_kib Slab "$OUT/open")" \
        -v tm0="$(tcp_mem_pages "$OUT/before")" -v tm1="$(tcp_mem_pages "$OUT/open")" \
        -v ti0="$(tcp_inuse "$OUT/before")" -v ti1="$(tcp_inuse "$OUT/open")" '
    BEGIN {
        print "| measure | before | with the connections open | per connection |"
        print "|---|---|---|---|"
        printf "| server RSS (user space) | %d KiB | %d KiB | **%.0f B** per connection |\n", rss0, rss1, (rss1 - rss0) * 1024 / n
        printf "| client RSS (`wsline bench`) | %d KiB | %d KiB | %.0f B per connection |\n", b0, b1, (b1 - b0) * 1024 / n
        printf "| TCP sockets in use (sockstat) | %d | %d | %.2f sockets |\n", ti0, ti1, (ti1 - ti0) / n
        printf "| TCP buffer pages (sockstat mem) | %d | %d | %.0f B per socket |\n", tm0, tm1, (tm1 - tm0) * 4096 / (2 * n)
        printf "| Slab (meminfo) | %d KiB | %d KiB | %.0f B per socket (both sides: / 2 N; other processes add noise) |\n", sl0, sl1, (sl1 - sl0) * 1024 / (2 * n)
        printf "| MemAvailable (meminfo) | %d KiB | %d KiB | %.0f B per connection, both processes and both sockets (other processes add noise) |\n", ma0, ma1, (ma0 - ma1) * 1024 / n
    }'
    if [[ -s "$OUT/before.slab" ]]; then
        echo
        echo "Slab caches (/proc/slabinfo, active objects; bytes per object with page rounding). Per server-side socket: growth / (2 N), both sockets of a connection being the same objects; tcp_bind_bucket (a client's local port) is the client's alone."
        echo
        echo "| cache | bytes per object | objects before | objects open | objects per socket | bytes per server-side socket |"
        echo "|---|---|---|---|---|---|"
        merged=0
        epi_merged && merged=1
        (( merged )) && echo "eventpoll_epi shares its slabs with tcp_bind_bucket and tcp_bind2_bucket here: the server's share of that row is its $regs epoll registrations / $opened connections."
        (( merged )) && echo
        join <(sort "$OUT/before.slab") <(sort "$OUT/open.slab") | awk -v n="$opened" -v merged="$merged" -v regs="$regs" '
        { per = ($4 - $2) / (2 * n); if ($1 == "tcp_bind_bucket") per = 0
          if ($1 == "eventpoll_epi" && merged) per = regs / n
          if ($1 ~ /^(TCP|sock_inode_cache|dentry|filp|eventpoll_epi|eventpoll_pwq)$/) { sum += per * $3; core[$1] = per }
          printf "| %s | %.0f | %d | %d | %.2f | %s |\n", $1, $3, $2, $4, ($4 - $2) / (2 * n), ($1 == "tcp_bind_bucket") ? "client only" : sprintf("%.0f", per * $3) ($1 == "eventpoll_epi" && merged ? sprintf(" (%.2f registrations per connection)", per) : "") }
        END { printf "| **socket, inode, file, dentry, epoll entry** | | | | | **%.0f B** |\n", sum }'
    fi
} >"$OUT/scale.md"
echo
cat "$OUT/scale.md"
log "results in $OUT"
