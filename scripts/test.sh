#!/usr/bin/env bash
# Sets up a Debian 12 machine (scripts/setup.sh) and runs every check and
# test of the workspace: formatting, clippy, unit, integration and
# end-to-end tests (real processes, real clients on loopback).
#
# The cargo target directory lives outside the checkout
# ($HOME/.cache/hpchain-target unless CARGO_TARGET_DIR is set) so that CI
# and repeated runs reuse earlier builds.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/hpchain-target}"
export CARGO_TERM_COLOR=never

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked
