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

# qemu-img with the iscsi:// driver, for the end-to-end tests: Debian 12's
# qemu-utils 7.2 with its qemu-block-extra, unpacked under the cache
# directory so that it does not replace a system qemu (the machine image
# may carry a newer qemu-utils without the iSCSI driver).
QEMU_DIR="$HOME/.cache/hpchain-qemu"
if [ ! -x "$QEMU_DIR/usr/bin/qemu-img" ] || [ ! -e "$QEMU_DIR/usr/lib/x86_64-linux-gnu/qemu/block-iscsi.so" ]; then
  echo "setup: unpacking Debian 12's qemu-img with the iSCSI driver into $QEMU_DIR"
  qemu_tmp="$(mktemp -d)"
  chmod 777 "$qemu_tmp"
  if ! (cd "$qemu_tmp" && apt-get download -qq qemu-utils/bookworm qemu-block-extra/bookworm >/dev/null 2>&1); then
    sudo_if_needed apt-get update -qq || true
    (cd "$qemu_tmp" && apt-get download -qq qemu-utils/bookworm qemu-block-extra/bookworm >/dev/null 2>&1) ||
      echo "setup: WARNING: could not download Debian 12's qemu-utils/qemu-block-extra; the qemu-img iSCSI test will fail" >&2
  fi
  mkdir -p "$QEMU_DIR"
  for deb in "$qemu_tmp"/*.deb; do if [ -e "$deb" ]; then dpkg -x "$deb" "$QEMU_DIR"; fi; done
  rm -rf "$qemu_tmp"
fi
export HPCHAIN_QEMU_IMG="$QEMU_DIR/usr/bin/qemu-img"
export QEMU_MODULE_DIR="$QEMU_DIR/usr/lib/x86_64-linux-gnu/qemu"
