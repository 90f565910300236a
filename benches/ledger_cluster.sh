#!/usr/bin/env bash
# HP chain throughput on a three-node `hpchain dev` cluster (three
# delegates, one-second slots): trace records submitted in batches through
# all three nodes' APIs at a fixed offered rate, each batch followed to
# finality (`hpchain chain bench`). In the same run and process, on one
# core: raw ed25519 verification (the baseline every signed record pays)
# and the verification of the inclusion proofs the cluster produced.
#
#   benches/ledger_cluster.sh [seconds] [rates...]     (default 20 s; 5000 8000)
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH="${1:-20}"
shift || true
RATES=("${@:-5000 8000}")
source benches/dev_cluster.sh ledgerbench 29700
TARGETS="http://127.0.0.1:29700,http://127.0.0.1:29710,http://127.0.0.1:29720"
for rate in ${RATES[@]}; do
  echo "== offered $rate records/s for $SECONDS_EACH s, batches of 1000"
  "$HPCHAIN" chain bench --seconds "$SECONDS_EACH" --rate "$rate" --batch 1000 --targets "$TARGETS"
  for pid in $NODE_PIDS; do
    echo "node pid $pid: RSS $(( $(awk '/VmRSS/ {print $2}' /proc/$pid/status) / 1024 )) MiB"
  done
done
