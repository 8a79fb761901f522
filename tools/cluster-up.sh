#!/usr/bin/env bash
# tools/cluster-up.sh — start a local Kubernetes control plane (etcd + kube-apiserver, and
# kube-controller-manager when installed) in the background, with the dirsync CRD installed, and
# print how to use it (export KUBECONFIG=...). Stop it with tools/cluster-down.sh.
# Runs tools/setup.sh first when something is missing. Extra arguments go to
# `dirsync-testenv up` (e.g. --state-dir DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
export DIRSYNC_CACHE="${DIRSYNC_CACHE:-$HOME/.cache/dirsync}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$DIRSYNC_CACHE/target}"
bash tools/setup.sh --check >/dev/null 2>&1 || bash tools/setup.sh
# shellcheck disable=SC1091
source "$DIRSYNC_CACHE/env.sh"
cargo build -q --locked -p dirsync-testenv --bin dirsync-testenv
exec "$CARGO_TARGET_DIR/debug/dirsync-testenv" up "$@"
