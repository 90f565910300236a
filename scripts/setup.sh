#!/usr/bin/env bash
# Installs what building and testing hpchain needs on Debian 12, and only
# what is missing: the system packages below and a Rust toolchain.
set -euo pipefail

packages=(
  build-essential pkg-config curl ca-certificates
  protobuf-compiler   # raft-rs and tonic generate code with protoc
  libclang-dev        # rocksdb's bindings are generated with bindgen
  librocksdb-dev      # linked instead of building RocksDB (docs/decisions/0001)
  libiscsi-bin        # iscsi-ls, iscsi-inq, iscsi-test-cu: real initiators in tests
  fio                 # the baseline of the benchmarks
)

sudo_if_needed() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  sudo_if_needed apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "setup: installing the Rust toolchain with rustup"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c clippy,rustfmt
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
fi
