#!/usr/bin/env bash
# Write latency of one volume before and after it has 1,000 snapshots, on
# a three-node `hpchain dev` cluster (3 replicas), driven by the built-in
# load generator (`hpchain volume bench`, the volume client inside node 1).
# The same volume is measured both times (same objects, same placement
# groups, same leaders), and an untouched control volume is measured beside
# each step to show the drift of the machine in the same run.
#
# Volume `v` and `control`: 256 MiB (64 objects of 4 MiB), filled once.
# 1. v with no snapshots: random 4K writes, qd1 and qd32.
# 2. 1,000 snapshots of v, then every object rewritten once (its copy for
#    the newest snapshot done): the same writes. The number of snapshots
#    must not show.
# 3. One more snapshot: random 4K writes whose first touch of each object
#    copies it (p99/max): the cost of the copy itself.
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

head -c $((256 << 20)) /dev/urandom > "$WORK/fill.bin"
for v in v control; do
  "$HPCHAIN" volume create "$v" --pool rbd --size 256M >/dev/null
  "$HPCHAIN" volume import "$WORK/fill.bin" "$v" 2>/dev/null
done

bench() { # volume pattern bs qd seconds -> "iops p50 p99 max"
  "$HPCHAIN" --json volume bench "$1" --pattern "$2" --block-size "$3" --queue-depth "$4" --seconds "$5" |
    python3 -c 'import json,sys; r=json.load(sys.stdin); print("%.0f %d %d %d" % (r["iops"], r["latency_us_p50"], r["latency_us_p99"], r["latency_us_max"]))'
}
row() { printf "%-46s %8s %8s %8s %9s\n" "$1" $2; }
steady() { # label
  for qd in 1 32; do
    row "v, $1, randwrite 4K qd$qd" "$(bench v randwrite 4K $qd "$SECONDS_EACH")"
    row "control, randwrite 4K qd$qd" "$(bench control randwrite 4K $qd "$SECONDS_EACH")"
  done
}
printf "%-46s %8s %8s %8s %9s\n" "workload" "IOPS" "p50 us" "p99 us" "max us"
steady "0 snapshots"

started=$(date +%s.%N)
for i in $(seq 1 1000); do "$HPCHAIN" snap create "v@s$i" >/dev/null; done
took=$(echo "$(date +%s.%N) - $started" | bc)
count=$("$HPCHAIN" --json snap ls v | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
"$HPCHAIN" volume import "$WORK/fill.bin" v 2>/dev/null
steady "1,000 snapshots"

"$HPCHAIN" snap create v@s1001 >/dev/null
row "v, first writes after snapshot 1,001, qd1" "$(bench v randwrite 4K 1 "$SECONDS_EACH")"
row "control, randwrite 4K qd1" "$(bench control randwrite 4K 1 "$SECONDS_EACH")"
echo "1,000 snapshots of v taken in ${took} s (one CLI process each); snap ls lists $count"
