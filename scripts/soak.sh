#!/usr/bin/env bash
# wsline soak test (not in CI): `wsline echo` and `wsline serve` (release
# builds) under a steady mixed load, checking that memory, descriptors and
# tasks come back to their baseline once the clients leave.
# Usage: ./scripts/soak.sh SECONDS
#
# Phases: start both servers; a 20 s warm-up load (allocator pools, lazily
# created state), then the clients leave and the BASELINE is sampled; the main
# load for SECONDS; the clients leave, the servers settle (no connection, no
# handshake left: at most close timeout + write timeout), and the AFTER figures
# are sampled and compared with the baseline:
#   - open descriptors (/proc/PID/fd): equal to the baseline
#   - tasks: equal to the baseline (echo: `tasks=` of its --stats-interval
#     line; hub: the `wsline_tasks` gauge of /metrics, which counts the task
#     answering that request; tokio's num_alive_tasks(), plus for echo the
#     connections its reactor holds)
#   - RSS: at most the baseline + max(RSS_TOL_PCT %, RSS_TOL_KB) (allocators
#     keep some freed memory; a leak grows with the run's length)
#
# The load (`wsline soak-load`, a hidden subcommand) runs SOAK_WORKERS
# clients per server at a time, each one scenario after another with a short
# pause: normal sessions (echo: messages of 16 B–60 KB; hub: subscribe and
# publish), abrupt drops (no Close), slow readers (send much, read nothing for
# 1–5 s; the servers run with --write-timeout 3 so some are dropped for a
# write stall), oversized frames, malformed frames (reserved opcode, invalid
# UTF-8, unmasked) and stalled handshakes. It uses well under one core.
#
# Output: SOAK_DIR (default .cache/soak/<UTC time>) holds samples.csv
# (t_s,phase,server,pid,rss_kb,fds,tasks,threads,open), the servers' logs and
# the load's summaries. Exit status: 0 back to baseline; 1 a leak or a server
# that died; 2 usage.
#
# Environment: WSLINE_BIN (use this binary instead of building), SOAK_WORKERS
# (8), SOAK_INTERVAL (5 s between samples), SOAK_WARMUP (20 s), RSS_TOL_PCT
# (10), RSS_TOL_KB (4096), SOAK_DIR.

set -u
set -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 2

usage() { awk 'NR>1 && /^#/ { sub(/^# ?/, ""); print; next } NR>1 { exit }' "$0"; }
case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  ''|*[!0-9]*) echo "soak.sh: give the load's duration in whole seconds, e.g. ./scripts/soak.sh 1800" >&2; exit 2 ;;
esac
DURATION=$1
WORKERS="${SOAK_WORKERS:-8}"
INTERVAL="${SOAK_INTERVAL:-5}"
WARMUP="${SOAK_WARMUP:-20}"
RSS_TOL_PCT="${RSS_TOL_PCT:-10}"
RSS_TOL_KB="${RSS_TOL_KB:-4096}"
OUT="${SOAK_DIR:-$ROOT/.cache/soak/$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$OUT" || exit 2
CSV="$OUT/samples.csv"
log() { echo "[soak.sh $(date -u +%H:%M:%S)] $*"; }

# The binary is copied: rebuilding the workspace meanwhile changes nothing here.
if [ -n "${WSLINE_BIN:-}" ]; then
  cp "$WSLINE_BIN" "$OUT/wsline" || exit 1
else
  log "building the release binary"
  cargo build --release -q -p wsline-cli || exit 1
  cp "$ROOT/target/release/wsline" "$OUT/wsline" || exit 1
fi
BIN="$OUT/wsline"

PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  [ -n "${SAMPLER:-}" ] && kill "$SAMPLER" 2>/dev/null
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# Waits for "listening on SCHEME://ADDR" in $1; prints ADDR.
listening_addr() {
  local file=$1 i
  for i in $(seq 1 100); do
    if grep -q '^listening on ' "$file" 2>/dev/null; then
      sed -n 's#^listening on [a-z]*://\([^/]*\).*#\1#p' "$file" | head -1
      return 0
    fi
    sleep 0.1
  done
  return 1
}

"$BIN" echo --listen 127.0.0.1:0 --stats-interval 1 --write-timeout 3 --max-message-size 65536 \
  >"$OUT/echo.out" 2>"$OUT/echo.err" </dev/null &
ECHO_PID=$!; PIDS+=("$ECHO_PID")
"$BIN" serve --listen 127.0.0.1:0 --write-timeout 3 --publish-rate 1000 \
  >"$OUT/serve.out" 2>"$OUT/serve.err" </dev/null &
HUB_PID=$!; PIDS+=("$HUB_PID")
ECHO_ADDR=$(listening_addr "$OUT/echo.out") || { log "wsline echo did not start"; exit 1; }
HUB_ADDR=$(listening_addr "$OUT/serve.out") || { log "wsline serve did not start"; exit 1; }
log "echo pid $ECHO_PID on $ECHO_ADDR, serve pid $HUB_PID on $HUB_ADDR; output in $OUT"

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null; }
threads() { awk '/^Threads:/ { print $2 }' "/proc/$1/status" 2>/dev/null; }
fds() { ls "/proc/$1/fd" 2>/dev/null | wc -l; }
# echo: the last stats line; prints "tasks open".
echo_counts() {
  tail -n 50 "$OUT/echo.err" | grep '^stats ' | tail -1 |
    sed -n 's/.*open=\([0-9]*\) handshakes=\([0-9]*\).*tasks=\([0-9]*\).*/\3 \1 \2/p'
}
# hub: prints "tasks open" from /metrics.
hub_counts() {
  curl -s -m 5 "http://$HUB_ADDR/metrics" |
    awk '$1 == "wsline_tasks" { t = $2 } $1 == "wsline_connections" { c = $2 } END { print t, c }'
}

PHASE=start
echo "t_s,phase,server,pid,rss_kb,fds,tasks,threads,open" >"$CSV"
T0=$(date +%s)
sample() {
  local t tasks open hs
  t=$(( $(date +%s) - T0 ))
  read -r tasks open hs <<<"$(echo_counts)"
  echo "$t,$PHASE,echo,$ECHO_PID,$(rss_kb "$ECHO_PID"),$(fds "$ECHO_PID"),${tasks:-},$(threads "$ECHO_PID"),${open:-}" >>"$CSV"
  read -r tasks open <<<"$(hub_counts)"
  echo "$t,$PHASE,serve,$HUB_PID,$(rss_kb "$HUB_PID"),$(fds "$HUB_PID"),${tasks:-},$(threads "$HUB_PID"),${open:-}" >>"$CSV"
}
alive() { kill -0 "$ECHO_PID" 2>/dev/null && kill -0 "$HUB_PID" 2>/dev/null; }

# Runs the load against both servers for $1 seconds, sampling meanwhile.
load() {
  local secs=$1 tag=$2 p1 p2 rc=0
  "$BIN" soak-load "$ECHO_ADDR" --target echo --duration "$secs" --workers "$WORKERS" \
    --max-message-size 65536 >"$OUT/load-echo-$tag.txt" 2>&1 &
  p1=$!
  "$BIN" soak-load "$HUB_ADDR" --target hub --duration "$secs" --workers "$WORKERS" \
    --max-message-size 65536 >"$OUT/load-hub-$tag.txt" 2>&1 &
  p2=$!
  while kill -0 "$p1" 2>/dev/null || kill -0 "$p2" 2>/dev/null; do
    sample
    alive || { log "a server died during the load"; return 1; }
    sleep "$INTERVAL"
  done
  wait "$p1" || rc=1
  wait "$p2" || rc=1
  log "load $tag: echo: $(cat "$OUT/load-echo-$tag.txt")"
  log "load $tag: hub:  $(cat "$OUT/load-hub-$tag.txt")"
  return $rc
}

# Waits until neither server has a connection or a handshake left (bounded),
# then two more sample intervals so counts are stable.
settle() {
  local i e h
  for i in $(seq 1 90); do
    read -r _ e eh <<<"$(echo_counts)"
    read -r _ h <<<"$(hub_counts)"
    [ "${e:-1}" = 0 ] && [ "${eh:-1}" = 0 ] && [ "${h:-1}" = 0 ] && break
    sleep 1
  done
  sleep $(( 2 * INTERVAL ))
}

# The value of column $2 for server $1 in the last sample row of phase $3.
last() { awk -F, -v s="$1" -v ph="$3" -v c="$2" '$3 == s && $2 == ph { v = $c } END { print v }' "$CSV"; }
peak() { awk -F, -v s="$1" -v c="$2" '$3 == s && $2 == "load" && $c > m { m = $c } END { print m + 0 }' "$CSV"; }

sample
PHASE=warmup
log "warm-up load for ${WARMUP}s"
load "$WARMUP" warmup || exit 1
settle
PHASE=baseline
for _ in 1 2 3; do sample; sleep "$INTERVAL"; done
log "baseline sampled; main load for ${DURATION}s (${WORKERS} clients per server)"
PHASE=load
load "$DURATION" main || { log "the load driver failed"; exit 1; }
PHASE=settling
settle
PHASE=after
for _ in 1 2 3; do sample; sleep "$INTERVAL"; done
alive || { log "a server died"; exit 1; }

# Columns: 5 rss_kb, 6 fds, 7 tasks, 9 open.
FAIL=0
printf '%-6s %-8s %10s %10s %10s  %s\n' server figure baseline peak after verdict
for s in echo serve; do
  for col in 5 6 7; do
    name=$(case $col in 5) echo rss_kb ;; 6) echo fds ;; 7) echo tasks ;; esac)
    b=$(last "$s" "$col" baseline); a=$(last "$s" "$col" after); pk=$(peak "$s" "$col")
    verdict=ok
    if [ -z "$b" ] || [ -z "$a" ]; then
      verdict="FAIL (no figure)"
    elif [ "$col" = 5 ]; then
      tol=$(( b * RSS_TOL_PCT / 100 )); [ "$tol" -lt "$RSS_TOL_KB" ] && tol=$RSS_TOL_KB
      [ "$a" -le $(( b + tol )) ] || verdict="FAIL (more than baseline + $tol KB)"
    else
      [ "$a" -le "$b" ] || verdict="FAIL (above baseline)"
    fi
    [ "$verdict" = ok ] || FAIL=1
    printf '%-6s %-8s %10s %10s %10s  %s\n' "$s" "$name" "$b" "$pk" "$a" "$verdict"
  done
done

log "stopping the servers (SIGTERM)"
kill -TERM "$ECHO_PID" "$HUB_PID" 2>/dev/null
wait "$ECHO_PID"; e=$?
wait "$HUB_PID"; h=$?
PIDS=()
[ "$e" = 0 ] && [ "$h" = 0 ] || { log "exit statuses: echo $e, serve $h (expected 0)"; FAIL=1; }
log "samples: $CSV"
if [ "$FAIL" = 0 ]; then log "PASS: back to baseline"; else log "FAIL"; fi
exit "$FAIL"
