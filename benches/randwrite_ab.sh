#!/usr/bin/env bash
# A/B of hpchain binaries under 4 KiB random writes: each round starts every
# binary in turn on a fresh three-node `hpchain dev` (loopback, 3 replicas),
# fills the 1 GiB volume, then runs the built-in load generator. Prints IOPS,
# latency and the three node processes' CPU (user+system, % of one core, and
# per 1,000 IOPS). Alternating on fresh clusters is how this repository
# compares builds: between runs of one binary the rate moves by 10-30%.
#
#   benches/randwrite_ab.sh ROUNDS QUEUE_DEPTH SECONDS BINARY...
# Extra `hpchain dev` flags go in DEV_ARGS.
set -euo pipefail
[ $# -ge 4 ] || { sed -n 2,10p "$0" >&2; exit 2; }
ROUNDS=$1 QD=$2 SECS=$3; shift 3

one() { # binary -> one line
  local bin=$1 work dev pids c0 c1 t0 t1 out
  work=$(mktemp -d "${BENCH_DIR:-/var/tmp}/hpchain-ab.XXXXXX")
  "$bin" dev --data-dir "$work/data" --base-port 27000 --iscsi-base-port 27005 ${DEV_ARGS:-} > "$work/dev.out" 2>&1 &
  dev=$!
  for _ in $(seq 1 600); do grep -q "hpchain dev: ready" "$work/dev.out" && break; sleep 0.1; done
  if ! grep -q "hpchain dev: ready" "$work/dev.out"; then
    cat "$work/dev.out" >&2; kill -TERM "$dev"; wait "$dev" || true; rm -rf "$work"; return 1
  fi
  export HPCHAIN_API=http://127.0.0.1:27000 HPCHAIN_TOKEN_FILE=$work/data/api-token
  pids=$(grep -o ' pid [0-9]*' "$work/dev.out" | awk '{print $2}')
  "$bin" volume bench demo --pattern write --block-size 4M --queue-depth 8 --seconds 120 --once >/dev/null
  sync # the fill's writeback must not slow what is measured
  cpu() { for p in $pids; do awk '{print $14+$15}' "/proc/$p/stat"; done | tr '\n' ' '; }
  c0=$(cpu); t0=$(date +%s.%N)
  out=$("$bin" --json volume bench demo --pattern randwrite --block-size 4K --queue-depth "$QD" --seconds "$SECS")
  c1=$(cpu); t1=$(date +%s.%N)
  kill -TERM "$dev"; wait "$dev" || true; rm -rf "$work"
  python3 - "$c0" "$c1" "$t0" "$t1" "$out" <<'PY'
import json, os, sys
ticks = os.sysconf("SC_CLK_TCK")
c0, c1 = ([int(x) for x in a.split()] for a in sys.argv[1:3])
dt = float(sys.argv[4]) - float(sys.argv[3])
cpu = [(b - a) / ticks / dt * 100 for a, b in zip(c0, c1)]
r = json.loads(sys.argv[5])
print("%6.0f IOPS  p50 %6d us  p99 %6d us  node CPU %s %%  per 1,000 IOPS %.1f %%" % (
    r["iops"], r["latency_us_p50"], r["latency_us_p99"],
    " ".join("%.0f" % c for c in cpu), sum(cpu) / r["iops"] * 1000))
PY
}

for round in $(seq 1 "$ROUNDS"); do
  for bin in "$@"; do
    echo "round $round $(basename "$bin"): $(one "$bin")"
  done
done
