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
source benches/dev_cluster.sh snapbench 29600

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
