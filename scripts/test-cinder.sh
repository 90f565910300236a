#!/usr/bin/env bash
# Tests the OpenStack Cinder driver (cinder-bridge/) on Debian 12:
#   1. the driver against a real `hpchain dev` cluster (tests/test_driver.py)
#   2. end to end through real Cinder 29.0.0 services, RabbitMQ and sqlite
#      on loopback, driven with python-cinderclient (tests/test_cinder_e2e.py)
# Both share one hpchain dev cluster on free loopback ports. Installs what
# is missing (scripts/setup.sh's packages, python3-venv, a venv with cinder,
# python-cinderclient and pytest under $HPCHAIN_CINDER_ANCHOR), exits
# non-zero on any failure, and stops every process it started, also when
# the time budget ($HPCHAIN_CINDER_TEST_TIMEOUT seconds, default 900) runs
# out. About 4 minutes warm; the first run adds ~2 minutes of installs.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUDGET_S=${HPCHAIN_CINDER_TEST_TIMEOUT:-900}
ANCHOR=${HPCHAIN_CINDER_ANCHOR:-$HOME/.cache/hpchain-cinder-anchor}
VENV=$ANCHOR/venv
TOOLS=${HPCHAIN_CINDER_TOOLS:-$ROOT/../shared/tools/cinder}
CINDER_VERSION=29.0.0
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/hpchain-target}

log() { echo "[test-cinder $(date +%T)] $*"; }

if [ ! -x "$TOOLS/setup.sh" ]; then
  echo "test-cinder: $TOOLS/setup.sh is missing: it brings up the Cinder services;" \
       "set HPCHAIN_CINDER_TOOLS to the directory holding setup.sh and teardown.sh" >&2
  exit 2
fi

# Packages, the Rust toolchain and qemu-img with iSCSI (HPCHAIN_QEMU_IMG,
# QEMU_MODULE_DIR); then what this script and the Cinder setup need.
# shellcheck disable=SC1091
. "$ROOT/scripts/setup.sh"
missing=()
for p in python3-venv curl; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  sudo_if_needed apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

log "building hpchain (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
(cd "$ROOT" && cargo build -q -p hpchain)
export HPCHAIN_BIN=$CARGO_TARGET_DIR/debug/hpchain

# The venv setup.sh would make, plus pytest; the driver from a copy, so that
# pip leaves no build/ or *.egg-info in the tree.
mkdir -p "$ANCHOR"
if [ ! -x "$VENV/bin/cinder-volume" ]; then
  log "creating $VENV (cinder==$CINDER_VERSION, python-cinderclient)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip wheel setuptools
  "$VENV/bin/pip" install -q "cinder==$CINDER_VERSION" python-cinderclient fixtures
fi
"$VENV/bin/python" -c "import pytest" 2>/dev/null || "$VENV/bin/pip" install -q pytest
rm -rf "$ANCHOR/driver-src"
cp -r "$ROOT/cinder-bridge" "$ANCHOR/driver-src"
rm -rf "$ANCHOR/driver-src/build" "$ANCHOR"/driver-src/*.egg-info
"$VENV/bin/pip" install -q --no-deps --force-reinstall "$ANCHOR/driver-src"
log "driver installed into $VENV"

# Whatever happens (a failure, the budget), stop what the tests started:
# the Cinder services by teardown.sh's PID files, hpchain dev by its
# process group (the tests start it in a session of its own).
export HPCHAIN_CINDER_RUN_DIR=$ANCHOR/run-test
export HPCHAIN_DEV_PIDFILE=$ANCHOR/hpchain-dev.pid
rm -f "$HPCHAIN_DEV_PIDFILE"
cleanup() {
  ANCHOR_DIR=$ANCHOR RUN_DIR=$HPCHAIN_CINDER_RUN_DIR timeout 180 "$TOOLS/teardown.sh" >/dev/null 2>&1 || true
  if [ -s "$HPCHAIN_DEV_PIDFILE" ]; then
    pid=$(cat "$HPCHAIN_DEV_PIDFILE")
    if kill -0 "$pid" 2>/dev/null; then
      log "stopping hpchain dev ($pid) left by the tests"
      kill -TERM -- "-$pid" 2>/dev/null || true
      for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
      kill -KILL -- "-$pid" 2>/dev/null || true
    fi
  fi
}
trap cleanup EXIT

log "running the driver tests and the Cinder end-to-end test (budget ${BUDGET_S}s)"
cd "$ROOT/cinder-bridge"
HPCHAIN_CINDER_E2E=1 HPCHAIN_CINDER_ANCHOR=$ANCHOR HPCHAIN_CINDER_TOOLS=$TOOLS \
  timeout --kill-after=60 "$BUDGET_S" \
  "$VENV/bin/python" -m pytest -p no:cacheprovider -v -rs \
    -W ignore::DeprecationWarning tests "$@"
