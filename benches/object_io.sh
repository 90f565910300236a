#!/usr/bin/env bash
# The object store's I/O backends side by side: the same `hpchain dev`
# cluster (three nodes, 3 replicas) started once with positional I/O (the
# baseline: pread/pwrite/fdatasync) and once with io_uring, alternating
# ROUNDS times, each driven by the built-in load generator on volume `demo`.
#
#   benches/object_io.sh [seconds-per-workload] [rounds]     (default 5, 2)
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH="${1:-5}"
ROUNDS="${2:-2}"
RESULTS=$(mktemp)
trap 'rm -f "$RESULTS"' EXIT
WORKLOADS=("randwrite 4K 1" "randwrite 4K 32" "randread 4K 32" "write 1M 4" "read 1M 4")
for round in $(seq 1 "$ROUNDS"); do
  for io in positional io_uring; do
    (
      DEV_ARGS="--object-io $io"
      source benches/dev_cluster.sh objio 29800
      grep -q "through $io" "$WORK"/data/node1.log || { echo "node 1 is not using $io" >&2; exit 1; }
      "$HPCHAIN" volume bench demo --pattern write --block-size 4M --queue-depth 8 --seconds 3 >/dev/null
      sync # the fill's writeback must not slow what is measured next
      for w in "${WORKLOADS[@]}"; do
        set -- $w
        "$HPCHAIN" --json volume bench demo --pattern "$1" --block-size "$2" --queue-depth "$3" --seconds "$SECONDS_EACH" |
          python3 -c 'import json,sys; r=json.load(sys.stdin); print("%s|%s|%.0f|%d" % (sys.argv[1], sys.argv[2], r["iops"], r["latency_us_p99"]))' "$io" "$w" >> "$RESULTS"
      done
    )
  done
done
python3 - "$RESULTS" <<'PY'
import sys, collections
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    io, w, iops, p99 = line.strip().split("|")
    runs[(w, io)].append((float(iops), int(p99)))
order = []
for (w, _) in runs:
    if w not in order:
        order.append(w)
print("%-18s %16s %16s %7s" % ("workload", "positional IOPS", "io_uring IOPS", "ratio"))
for w in order:
    base = [r[0] for r in runs[(w, "positional")]]
    new = [r[0] for r in runs[(w, "io_uring")]]
    b, n = sum(base) / len(base), sum(new) / len(new)
    print("%-18s %16s %16s %7.2f" % (w, "/".join("%.0f" % x for x in base), "/".join("%.0f" % x for x in new), n / b))
PY
