#!/usr/bin/env bash
# Write latency with 1,000 snapshots against the same volume without any,
# on a three-node `hpchain dev` cluster (3 replicas), driven by the built-in
# load generator (`hpchain volume bench`, the volume client inside node 1).
#
# Three 64 MiB volumes (16 objects of 4 MiB), each filled once:
#   plain  no snapshots (the baseline, measured in the same run)
#   one    1 snapshot
#   many   1,000 snapshots
# Steady state: every object rewritten after the last snapshot (its
#   copy-on-write done), then random 4K writes: the number of snapshots must
#   not show.
# First writes: one more snapshot on `one` and `many`, then random 4K
#   writes whose first touch of each object copies it (p99/max): the cost
#   of the copy, the same whatever the number of snapshots.
#
#   benches/snapshot_writes.sh [seconds-per-workload]      (default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH="${1:-5}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/hpchain-target}"
cargo build --release --locked -q -p hpchain
HPCHAIN="$CARGO_TARGET_DIR/release/hpchain"

WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/hpchain-snapbench.XXXXXX")
BASE=29600
DEV_PID=""
cleanup() {
  [ -n "$DEV_PID" ] && kill -TERM "$DEV_PID" 2>/dev/null && wait "$DEV_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

"$HPCHAIN" dev --data-dir "$WORK/data" --base-port $BASE --iscsi-base-port $((BASE + 5)) > "$WORK/dev.out" 2>&1 &
DEV_PID=$!
for _ in $(seq 1 600); do grep -q "hpchain dev: ready" "$WORK/dev.out" && break; sleep 0.1; done
grep -q "hpchain dev: ready" "$WORK/dev.out" || { cat "$WORK/dev.out"; exit 1; }
export HPCHAIN_API="http://127.0.0.1:$BASE" HPCHAIN_TOKEN_FILE="$WORK/data/api-token"

head -c $((64 << 20)) /dev/urandom > "$WORK/fill.bin"
for v in plain one many; do
  "$HPCHAIN" volume create "$v" --pool rbd --size 64M >/dev/null
  "$HPCHAIN" volume import "$WORK/fill.bin" "$v" 2>/dev/null
done
"$HPCHAIN" snap create one@s1 >/dev/null
started=$(date +%s.%N)
for i in $(seq 1 1000); do "$HPCHAIN" snap create "many@s$i" >/dev/null; done
took=$(echo "$(date +%s.%N) - $started" | bc)
count=$("$HPCHAIN" --json snap ls many | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
echo "1,000 snapshots of 'many' taken in ${took} s (one CLI process each); snap ls lists $count"

bench() { # volume pattern bs qd seconds -> "iops p50 p99 max"
  "$HPCHAIN" --json volume bench "$1" --pattern "$2" --block-size "$3" --queue-depth "$4" --seconds "$5" |
    python3 -c 'import json,sys; r=json.load(sys.stdin); print("%.0f %d %d %d" % (r["iops"], r["latency_us_p50"], r["latency_us_p99"], r["latency_us_max"]))'
}
row() { printf "%-44s %8s %8s %8s %9s\n" "$1" $2; }
printf "%-44s %8s %8s %8s %9s\n" "workload" "IOPS" "p50 us" "p99 us" "max us"

# Steady state: rewrite every object after the last snapshot first.
for v in one many; do "$HPCHAIN" volume import "$WORK/fill.bin" "$v" 2>/dev/null; done
for qd in 1 32; do
  row "plain (0 snapshots) randwrite 4K qd$qd" "$(bench plain randwrite 4K $qd "$SECONDS_EACH")"
  row "one (1 snapshot) randwrite 4K qd$qd" "$(bench one randwrite 4K $qd "$SECONDS_EACH")"
  row "many (1,000 snapshots) randwrite 4K qd$qd" "$(bench many randwrite 4K $qd "$SECONDS_EACH")"
done

# First writes after a new snapshot: each object's first touch copies it.
"$HPCHAIN" snap create one@s2 >/dev/null
"$HPCHAIN" snap create many@s1001 >/dev/null
row "plain randwrite 4K qd1 (no copy)" "$(bench plain randwrite 4K 1 2)"
row "one: first writes after snapshot 2" "$(bench one randwrite 4K 1 2)"
row "many: first writes after snapshot 1,001" "$(bench many randwrite 4K 1 2)"
