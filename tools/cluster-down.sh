#!/usr/bin/env bash
# tools/cluster-down.sh — stop the control plane started by tools/cluster-up.sh and remove its
# data. Extra arguments go to `dirsync-testenv down` (e.g. --state-dir DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
export DIRSYNC_CACHE="${DIRSYNC_CACHE:-$HOME/.cache/dirsync}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$DIRSYNC_CACHE/target}"
cargo build -q --locked -p dirsync-testenv --bin dirsync-testenv
exec "$CARGO_TARGET_DIR/debug/dirsync-testenv" down "$@"
