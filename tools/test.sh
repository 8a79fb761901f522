#!/usr/bin/env bash
# The test command (README "Quick start"). On a fresh machine it installs what the tests need
# (tools/setup.sh: etcd, kube-apiserver, helm, kubectl and the pinned Python packages, all under
# ~/.cache/dirsync), then builds with --locked and runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)

export DIRSYNC_CACHE="${DIRSYNC_CACHE:-$HOME/.cache/dirsync}"
# One shared target dir outside the clone, so a fresh clone in CI reuses earlier builds.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$DIRSYNC_CACHE/target}"

echo "==> setup (tools/setup.sh)"
bash tools/setup.sh
# shellcheck disable=SC1091
source "$DIRSYNC_CACHE/env.sh"

echo "==> build (cargo build --workspace --all-targets --locked)"
t=$(date +%s)
cargo build --workspace --all-targets --locked
echo "    build took $(( $(date +%s) - t ))s"

# --- issue 7: dependency policy (deny.toml: licences, banned crates, sources), offline --------
# cargo-deny is installed by tools/setup.sh; advisories need the network database, so they are
# not checked here.
if command -v cargo-deny >/dev/null; then
  echo "==> dependency policy (cargo deny --offline check licenses bans sources)"
  t=$(date +%s)
  # cargo-deny reads `cargo metadata` for every platform, which needs the crates of every
  # target (windows-sys, ...) in the local registry; `cargo build` fetched only this host's.
  cargo fetch --locked >/dev/null
  # --log-level error: duplicate versions (warnings in deny.toml) are not printed; run without it to see them.
  cargo deny --offline --locked --workspace --log-level error check --hide-inclusion-graph licenses bans sources
  echo "    dependency policy took $(( $(date +%s) - t ))s"
else
  echo "==> dependency policy: SKIPPED (cargo-deny not installed; DIRSYNC_SETUP_CARGO_DENY=0?)"
fi

echo "==> tests (cargo test --workspace --locked)"
t=$(date +%s)
cargo test --workspace --locked --no-fail-fast -- --test-threads="${DIRSYNC_TEST_THREADS:-2}"
echo "    tests took $(( $(date +%s) - t ))s"

echo "==> all done in $(( $(date +%s) - start ))s"
