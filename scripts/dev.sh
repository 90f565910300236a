#!/usr/bin/env bash
# The main job: sets up a Debian 12 machine, builds hpchain and starts a
# local three-node cluster (`hpchain dev`): three `hpchain node` processes
# on loopback, pool `rbd` (3 replicas) and a thin 1 GiB volume `demo`.
# Ctrl-C stops every process it started.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/hpchain-target}"
cargo build --release --locked -q -p hpchain
exec "$CARGO_TARGET_DIR/release/hpchain" dev "$@"
