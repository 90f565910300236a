#!/usr/bin/env bash
# iSCSI read throughput: hpchain's target against tgt (Debian's reference
# target), both serving the same 1 GiB file on this disk, measured in the
# same run by the same client (libiscsi's iscsi-perf), then hpchain's
# target in front of a replicated volume of a 3-node `hpchain dev` cluster.
#
#   ./benches/iscsi_io.sh            # about 2 minutes after the build
#   SECONDS_PER_RUN=20 ./benches/iscsi_io.sh
#
# Needs root for tgtd; installs tgt and libiscsi-bin if they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/hpchain-target}"
RUN="${SECONDS_PER_RUN:-10}"
WORK="$(mktemp -d /tmp/hpchain-iscsi-bench.XXXXXX)"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  sleep 1
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

if ! command -v tgtd >/dev/null; then
  echo "bench: installing tgt (the baseline target)"
  sudo_if_needed apt-get install -y -qq tgt >/dev/null
fi

cargo build --release -q -p hpchain-iscsi --example file_target
cargo build --release -q -p hpchain
BIN="$CARGO_TARGET_DIR/release"

# The same data for both targets: 1 GiB written once, so reads hit the disk
# (or its page cache) rather than holes.
IMG="$WORK/lun.img"
dd if=/dev/urandom of="$IMG" bs=1M count=1024 status=none

"$BIN/examples/file_target" 127.0.0.1:3290 "$IMG" 1073741824 512 >"$WORK/hpchain-target.log" 2>&1 &
PIDS+=($!)
tgtd -f --iscsi portal=127.0.0.1:3291 >"$WORK/tgtd.log" 2>&1 &
PIDS+=($!)
sleep 1
tgtadm --lld iscsi --op new --mode target --tid 1 -T iqn.2026-11.io.hpchain:tgt-baseline
tgtadm --lld iscsi --op new --mode logicalunit --tid 1 --lun 1 -b "$IMG"
tgtadm --lld iscsi --op bind --mode target --tid 1 -I ALL

# iops average from iscsi-perf's last line.
perf() {
  local url=$1; shift
  timeout $((RUN + 20)) iscsi-perf -t "$RUN" "$@" "$url" 2>&1 | tr '\r' '\n' | grep -o 'iops average [0-9]*' | tail -1 | awk '{print $3}'
}

HP=iscsi://127.0.0.1:3290/iqn.2026-11.io.hpchain:file/0
TGT=iscsi://127.0.0.1:3291/iqn.2026-11.io.hpchain:tgt-baseline/1

echo
echo "iSCSI reads, same 1 GiB file, ${RUN} s per run (iscsi-perf)"
printf '%-28s %12s %12s %8s\n' "load" "hpchain IOPS" "tgt IOPS" "ratio"
for spec in "4K random qd1:-b 8 -m 1 -r" "4K random qd32:-b 8 -m 32 -r" "64K sequential qd8:-b 128 -m 8" "1M sequential qd4:-b 2048 -m 4"; do
  name=${spec%%:*}; args=${spec#*:}
  # shellcheck disable=SC2086
  hp=$(perf "$HP" $args); tgt=$(perf "$TGT" $args)
  printf '%-28s %12s %12s %8s\n' "$name" "$hp" "$tgt" "$(awk -v a="$hp" -v b="$tgt" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')"
done

# The same target in front of a replicated volume.
"$BIN/hpchain" dev --data-dir "$WORK/dev" --base-port 9700 --iscsi-base-port 3300 >"$WORK/dev.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 90); do grep -q "hpchain dev: ready" "$WORK/dev.log" && break; sleep 1; done
grep -q "hpchain dev: ready" "$WORK/dev.log" || { echo "hpchain dev did not start:"; cat "$WORK/dev.log"; exit 1; }
DEMO=iscsi://127.0.0.1:3300/iqn.2026-11.io.hpchain:demo/0
# Fill the first 256 MiB so reads find data, then read it back.
"$BIN/hpchain" --api http://127.0.0.1:9700 --token-file "$WORK/dev/api-token" volume bench demo --pattern write --block-size 1M --queue-depth 8 --seconds 5 >/dev/null
echo
echo "iSCSI reads of the replicated volume demo (3 replicas, hpchain dev), ${RUN} s per run"
printf '%-28s %12s\n' "load" "IOPS"
for spec in "4K random qd1:-b 8 -m 1 -r" "4K random qd32:-b 8 -m 32 -r" "64K sequential qd8:-b 128 -m 8"; do
  name=${spec%%:*}; args=${spec#*:}
  # shellcheck disable=SC2086
  printf '%-28s %12s\n' "$name" "$(perf "$DEMO" $args)"
done
