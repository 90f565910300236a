#!/usr/bin/env bash
# The main job: sets up a Debian 12 machine and runs hpchain locally.
#
# Today hpchain's placement layer is what runs end to end: this prints the
# example cluster map, how 100,000 placement groups balance over it, and
# where the first objects of a volume land. When the node daemon lands,
# this starts `hpchain dev` (three nodes on loopback, volume `demo`
# exported over iSCSI) instead.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/hpchain-target}"
cargo run --release --locked -q -p hpchain-placement --bin hpchain-placement -- demo
