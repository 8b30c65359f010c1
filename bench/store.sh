#!/usr/bin/env bash
# Which storage for `wsline serve --data-dir`: the hub's append-only log
# against redb and fjall on the hub's write pattern (1 KiB publications
# over 100 channels, history_size 100), each fsync policy, ROUNDS rounds
# (stores interleaved within a round). Not part of CI; see
# docs/performance.md "Durable history".
#
#   bench/store.sh [ROUNDS] [DIR]     DIR: on the disk to measure (default /tmp)
set -euo pipefail
cd "$(dirname "$0")/store"
ROUNDS=${1:-3}
DIR=${2:-/tmp}/wsline-bench-store.$$
cargo build --release -q
BIN=target/release/wsline-bench-store
echo "# $(date -u +%FT%TZ) $(uname -srm), $(nproc) CPUs, dir $DIR"
for r in $(seq "$ROUNDS"); do
  echo "## round $r: --fsync 1 (30,000 publications)"
  "$BIN" "$DIR" 30000 interval
  echo "## round $r: --fsync always (1,500 publications, one writer)"
  "$BIN" "$DIR" 1500 always
done
