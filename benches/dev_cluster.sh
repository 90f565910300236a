# Sourced by the benchmark scripts: builds the release binary and starts a
# three-node `hpchain dev` cluster on loopback in a fresh work directory,
# stopped (and the directory removed) when the script exits.
#
#   source benches/dev_cluster.sh NAME BASE_PORT
# sets HPCHAIN (the binary), WORK (the directory), DEV_OUT, NODE_PIDS, and
# exports HPCHAIN_API and HPCHAIN_TOKEN_FILE for the CLI.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/hpchain-target}"
cargo build --release --locked -q -p hpchain
HPCHAIN="$CARGO_TARGET_DIR/release/hpchain"
WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/hpchain-$1.XXXXXX")
DEV_BASE=$2
DEV_PID=""
cleanup() {
  [ -n "$DEV_PID" ] && kill -TERM "$DEV_PID" 2>/dev/null && wait "$DEV_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
DEV_OUT="$WORK/dev.out"
# DEV_ARGS: extra `hpchain dev` flags (e.g. --object-io positional).
"$HPCHAIN" dev --data-dir "$WORK/data" --base-port "$DEV_BASE" --iscsi-base-port $((DEV_BASE + 5)) ${DEV_ARGS:-} > "$DEV_OUT" 2>&1 &
DEV_PID=$!
for _ in $(seq 1 600); do grep -q "hpchain dev: ready" "$DEV_OUT" && break; sleep 0.1; done
grep -q "hpchain dev: ready" "$DEV_OUT" || { cat "$DEV_OUT"; exit 1; }
export HPCHAIN_API="http://127.0.0.1:$DEV_BASE" HPCHAIN_TOKEN_FILE="$WORK/data/api-token"
NODE_PIDS=$(grep -o ' pid [0-9]*' "$DEV_OUT" | awk '{print $2}')
