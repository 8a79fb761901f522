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

# with_heartbeat NAME COMMAND...: runs COMMAND with its output shown as it comes; whenever it has
# been quiet for 45 s (a long crate, a slow test binary), says so with the elapsed time, so the
# run is never silent for more than a minute.
with_heartbeat() {
  local name=$1 t0 stamp ticker rc
  shift
  t0=$(date +%s)
  stamp=$(mktemp)
  (
    while sleep 15; do
      [ -e "$stamp" ] || exit 0
      quiet=$(( $(date +%s) - $(stat -c %Y "$stamp") ))
      if [ "$quiet" -ge 45 ]; then
        echo "    ... $name still running: $(( $(date +%s) - t0 )) s so far"
        touch "$stamp"
      fi
    done
  ) &
  ticker=$!
  set +e
  "$@" 2>&1 | while IFS= read -r line; do printf '%s\n' "$line"; touch "$stamp"; done
  rc=${PIPESTATUS[0]}
  set -e
  rm -f "$stamp"
  kill "$ticker" 2>/dev/null; wait "$ticker" 2>/dev/null || true
  return "$rc"
}

echo "==> setup (tools/setup.sh; every step says its expected time and where its log is)"
bash tools/setup.sh
# shellcheck disable=SC1091
source "$DIRSYNC_CACHE/env.sh"

# --- house rules: one format (rustfmt.toml) and clippy's lints as errors -----------------------
echo "==> format (cargo fmt --all --check)"
cargo fmt --all -- --check

echo "==> build (cargo build --workspace --all-targets --locked; cold ~6 min on 2 cores, warm ~2 min)"
t=$(date +%s)
with_heartbeat "cargo build" cargo build --workspace --all-targets --locked
echo "    build took $(( $(date +%s) - t ))s"

echo "==> lints (cargo clippy --workspace --all-targets --locked -- -D warnings; ~3 min cold)"
t=$(date +%s)
with_heartbeat "cargo clippy" cargo clippy --workspace --all-targets --locked -- -D warnings
echo "    lints took $(( $(date +%s) - t ))s"

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

echo "==> tests (cargo test --workspace --locked; ~5 min warm)"
t=$(date +%s)
with_heartbeat "cargo test" cargo test --workspace --locked --no-fail-fast -- --test-threads="${DIRSYNC_TEST_THREADS:-2}"
echo "    tests took $(( $(date +%s) - t ))s"

echo "==> all done in $(( $(date +%s) - start ))s"
