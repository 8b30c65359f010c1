# shellcheck shell=bash disable=SC2034
# bench/common.sh: helpers shared by bench/compare.sh, bench/fanout.sh and
# bench/scaleout.sh
# (sourced, not run). Expects ROOT, HZ, FOREIGN_MAX, QUIET_WAIT,
# SERVER_CORE, CLIENT_CORE and a log function.

die() { log "$*"; exit 1; }

# build_wsline: sets WSLINE_BIN (a release build unless already set).
build_wsline() {
    if [[ -z "${WSLINE_BIN:-}" ]]; then
        log "building wsline (release)"
        cargo build --release --quiet --bin wsline
        WSLINE_BIN="$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
            sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/release/wsline"
    fi
    [[ -x "$WSLINE_BIN" ]] || die "no wsline binary at $WSLINE_BIN"
}

# setup_machine SUBS...: sets PIN_S and PIN_C (taskset prefixes for the
# servers and the load) and raises the descriptor limit for SUBS.
setup_machine() {
    PIN_S=(taskset -c "$SERVER_CORE")
    PIN_C=(taskset -c "$CLIENT_CORE")
    if ! command -v taskset >/dev/null || [[ "$(nproc)" -lt 2 ]]; then
        log "warning: taskset or a second core missing: running unpinned"
        PIN_S=()
        PIN_C=()
    fi
    # A descriptor per subscriber, in the hub and in the bench.
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    local n
    for n in "$@"; do
        if [[ "$(ulimit -n)" != unlimited ]] && (( $(ulimit -n) < n + 256 )); then
            die "ulimit -n is $(ulimit -n): too few descriptors for $n subscribers"
        fi
    done
}

# write_hub_config FILE: publishes unlimited (the rate limit would refuse
# the publisher), no presence on the benchmark channel (10,000 joins would
# each go to every member: setup, not the workload).
write_hub_config() {
    cat >"$1" <<'TOML'
publish_rate = 1000000
[channels."bench-fanout"]
presence = false
TOML
}

# wait_listening LOG: prints the host:port a server logged it listens on
# ("listening on SCHEME://ADDR"), or nothing after 10 s.
wait_listening() {
    local addr=""
    for _ in $(seq 100); do
        addr="$(sed -n 's/^listening on [a-z]*:\/\/\([^/]*\).*$/\1/p' "$1" 2>/dev/null | head -1 || true)"
        [[ -n "$addr" ]] && break
        sleep 0.1
    done
    echo "$addr"
}

# stop_pid PID: SIGTERM, then SIGKILL after 10 s; reaps it.
stop_pid() {
    [[ -n "$1" ]] || return 0
    kill -TERM "$1" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$1" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# ---------------------------------------------------------------- probes
busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
user_ticks() { awk '{ print $14 }' "/proc/$1/stat"; }
now_s() { date +%s.%N; }
# rss_kib PID: VmRSS in KiB, with builtins only (it is polled while an
# idle workload runs).
rss_kib() {
    local k v _
    while read -r k v _; do
        [[ "$k" == VmRSS: ]] && { echo "$v"; return; }
    done <"/proc/$1/status"
    echo 0
}
background_load() {
    local b0 t0 b1 t1
    b0="$(busy_ticks)"; t0="$(now_s)"
    sleep "$1"
    b1="$(busy_ticks)"; t1="$(now_s)"
    awk -v b0="$b0" -v b1="$b1" -v t0="$t0" -v t1="$t1" -v hz="$HZ" 'BEGIN { printf "%.2f", (b1 - b0) / hz / (t1 - t0) }'
}
wait_quiet() {
    local waited=0 load
    while :; do
        load="$(background_load 0.5)"
        awk -v l="$load" -v m="$FOREIGN_MAX" 'BEGIN { exit !(l <= m) }' && return 0
        if (( waited >= QUIET_WAIT )); then
            log "warning: the machine is still busy ($load cores used by other processes); measuring anyway"
            return 0
        fi
        (( waited == 0 )) && log "waiting for the machine to be quiet ($load cores used by other processes)"
        sleep 2
        waited=$((waited + 2))
    done
}
json_num() { sed -n "s/.*\"$1\":\([-0-9.eE+]*\)[,}].*/\1/p" "$2" | head -1; }
machine_line() {
    echo "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), $(nproc) cores"
}
wsline_line() {
    echo "$("$WSLINE_BIN" --version 2>/dev/null), commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet HEAD -- crates 2>/dev/null || echo ' with uncommitted changes')"
}
