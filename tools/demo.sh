#!/usr/bin/env bash
# The local demo (README "Quick start"): the operator on a real local control plane, everything
# on loopback, nothing to configure.
#
#   1. builds dirsync, the Graph emulator and the control-plane harness (in the background) while
#      `tools/setup.sh --demo` installs the pinned tools the demo uses (first run only; README
#      gives the time it takes, and every step prints its progress)
#   2. starts a Kubernetes control plane (etcd + kube-apiserver, the DirectorySync CRD installed),
#      the Graph emulator (HTTPS, a generated tenant of DEMO_USERS users in example.com) and a real SCIM 2.0 server (scim2-server from PyPI) holding one
#      hand-made user, the service's initial administrator
#   3. runs `dirsync operator` as a local process watching namespace `identity`
#   4. applies examples/dry-run.yaml (pointed at the emulator and the SCIM server) with its
#      Secrets, shows the preview, then switches the resource to `mode: Once` with
#      `approval: Always`: the run waits with its pending preview, the demo prints it, approves it
#      by its hash with `kubectl patch` (the product's "check the CSV, tick the box, Execute")
#      and waits for the sync
#   5. ends by showing `kubectl get dsync`, `kubectl describe dsync` and the preview CSV
#
# Everything it starts, it stops (--keep leaves it running and prints how to stop it).
# Work files and logs are kept in $DEMO_DIR (printed at the end).
#
# Environment: DEMO_USERS (default 60), DEMO_DIR (default a new temporary directory),
# DEMO_BIN_DIR (use binaries already built there instead of running cargo build).
set -euo pipefail
cd "$(dirname "$0")/.."
KEEP=false
case "${1:-}" in
  --keep) KEEP=true ;;
  "") ;;
  -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "usage: tools/demo.sh [--keep]" >&2; exit 2 ;;
esac
export DIRSYNC_CACHE="${DIRSYNC_CACHE:-$HOME/.cache/dirsync}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$DIRSYNC_CACHE/target}"
DEMO_USERS="${DEMO_USERS:-60}"
DEMO_DIR="${DEMO_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/dirsync-demo.XXXXXX")}"
mkdir -p "$DEMO_DIR"
NS=identity
NAME=example-com
# The emulator's default app registration (emulator/README.md); not a real credential.
TENANT=7d6f3c2a-1b4e-4f8a-9c5d-2e1f0a9b8c7d
CLIENT=3f2a1b0c-9d8e-4f7a-8b6c-5d4e3f2a1b0c
CLIENT_SECRET=emulator-client-secret
SCIM_TOKEN="demo-scim-token-$RANDOM$RANDOM"

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
show() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }
pids=()
cluster_up=false
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if $cluster_up && [ -n "${TESTENV:-}" ]; then "$TESTENV" down --state-dir "$DEMO_DIR/cluster" >/dev/null 2>&1 || true; fi
}
on_exit() {
  local rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "demo failed (exit $rc); logs in $DEMO_DIR:" >&2
    ls "$DEMO_DIR" >&2 || true
    [ -f "$DEMO_DIR/operator.log" ] && { echo "--- last operator log lines:" >&2; tail -20 "$DEMO_DIR/operator.log" >&2; }
  fi
  if $KEEP && [ "$rc" -eq 0 ]; then return; fi
  cleanup
}
trap on_exit EXIT
trap 'exit 130' INT TERM

# The binaries the demo runs, and the packages that hold them: the build step builds exactly these
# (tests/demo.rs removes them first, so a build that forgets one fails CI).
DEMO_BINS=(dirsync entra-emulator dirsync-testenv)
DEMO_PKGS=(dirsync entra-emulator dirsync-testenv)
now() { date +%s; }
T_DEMO=$(now)

# The first run on a fresh machine builds everything (README "Quick start" gives the measured
# time), so the Rust build starts at once in the background while setup builds the Go tools: on
# 2 cores the two fill each other's idle moments (downloads, single-threaded links).
build_pid=
if [ -n "${DEMO_BIN_DIR:-}" ]; then
  BIN="$DEMO_BIN_DIR"
else
  BIN="$CARGO_TARGET_DIR/debug"
  build_args=(cargo build --locked)
  for p in "${DEMO_PKGS[@]}"; do build_args+=(-p "$p"); done
  for b in "${DEMO_BINS[@]}"; do build_args+=(--bin "$b"); done
  say "build, in the background: ${build_args[*]} (first run ~10 min, alongside setup; log: $DEMO_DIR/build.log)"
  "${build_args[@]}" >"$DEMO_DIR/build.log" 2>&1 &
  build_pid=$!
  pids+=("$build_pid")
fi

say "setup: tools/setup.sh --demo (etcd, kube-apiserver, scim2-server, kubectl; first run ~10 min, then ~1 s)"
# Setup's own lines (each step, its expected time, a line every 30 s) go to the screen and the log;
# the background build reports with them.
LAST_REPORT=0
build_report() {
  [ -n "$build_pid" ] || return 0
  # Several setup steps may tick at once: one build line per 25 s is enough.
  [ $(( $(now) - LAST_REPORT )) -ge 25 ] || return 0
  LAST_REPORT=$(now)
  local n
  n=$(grep -c '^ *Compiling' "$DEMO_DIR/build.log" 2>/dev/null || true)
  echo "    [build] $(( $(now) - T_DEMO )) s: ${n:-0} crates compiled so far"
}
set +e
bash tools/setup.sh --demo 2>&1 | while IFS= read -r line; do
  echo "    $line"
  case "$line" in *"still on"*) build_report ;; esac
done | tee "$DEMO_DIR/setup.log"
rc=${PIPESTATUS[0]}
set -e
[ "$rc" -eq 0 ] || { echo "setup failed (exit $rc); its log: $DEMO_DIR/setup.log" >&2; exit 1; }
export DIRSYNC_BIN_DIR="$DIRSYNC_CACHE/bin" DIRSYNC_VENV="$DIRSYNC_CACHE/venv"
# The demo deletes nothing, so it needs no garbage collector: no kube-controller-manager.
export DIRSYNC_TESTENV_CONTROLLER_MANAGER=0
export PATH="$DIRSYNC_BIN_DIR:$DIRSYNC_VENV/bin:$PATH"

if [ -n "$build_pid" ]; then
  say "build: waiting for cargo build (log: $DEMO_DIR/build.log)"
  while kill -0 "$build_pid" 2>/dev/null; do
    for _ in $(seq 30); do kill -0 "$build_pid" 2>/dev/null || break; sleep 1; done
    kill -0 "$build_pid" 2>/dev/null && build_report
  done
  if ! wait "$build_pid"; then
    echo "---- last lines of $DEMO_DIR/build.log ----" >&2
    tail -n 30 "$DEMO_DIR/build.log" >&2
    echo "cargo build failed" >&2
    exit 1
  fi
  echo "    built in $(( $(now) - T_DEMO )) s since the demo started"
fi
for b in "${DEMO_BINS[@]}"; do
  [ -x "$BIN/$b" ] || { echo "the build step did not produce $BIN/$b (tools/demo.sh DEMO_BINS)" >&2; exit 1; }
done
DIRSYNC="$BIN/dirsync"
EMULATOR="$BIN/entra-emulator"
TESTENV="$BIN/dirsync-testenv"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# wait_for DESCRIPTION SECONDS COMMAND...: polls COMMAND every half second.
wait_for() {
  local what=$1 secs=$2; shift 2
  for _ in $(seq $((secs * 2))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
  echo "timed out after ${secs}s waiting for $what" >&2
  return 1
}

say "start a Kubernetes control plane (etcd + kube-apiserver, CRD installed)"
cluster_up=true
"$TESTENV" up --state-dir "$DEMO_DIR/cluster" >"$DEMO_DIR/cluster.out" 2>&1 || { cat "$DEMO_DIR/cluster.out"; exit 1; }
grep "^Kubernetes" "$DEMO_DIR/cluster.out" || true
eval "$("$TESTENV" env --state-dir "$DEMO_DIR/cluster" | grep '^export KUBECONFIG=')"
export KUBECONFIG

say "start the Graph emulator: $DEMO_USERS generated users in example.com, HTTPS"
"$EMULATOR" --listen 127.0.0.1:0 --generate "$DEMO_USERS" --domain example.com --seed 7 \
  --tls-ca-out "$DEMO_DIR/emulator-ca.pem" >"$DEMO_DIR/emulator.out" 2>"$DEMO_DIR/emulator.log" &
pids+=($!)
wait_for "the emulator" 20 test -s "$DEMO_DIR/emulator.out"
GRAPH=$(head -1 "$DEMO_DIR/emulator.out")
echo "    $GRAPH"

SCIM_PORT=$(free_port)
SCIM="http://127.0.0.1:$SCIM_PORT/v2"
say "start a SCIM 2.0 server (scim2-server $("$DIRSYNC_VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("scim2-server"))')) with one hand-made user"
"$DIRSYNC_VENV/bin/scim2-server" --hostname 127.0.0.1 --port "$SCIM_PORT" --bearer-token "$SCIM_TOKEN" \
  >"$DEMO_DIR/scim.log" 2>&1 &
pids+=($!)
wait_for "the SCIM server" 20 curl -fs -H "Authorization: Bearer $SCIM_TOKEN" "$SCIM/ServiceProviderConfig"
scim_users() {
  curl -fs -H "Authorization: Bearer $SCIM_TOKEN" "$SCIM/Users?count=0" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["totalResults"])'
}
# The service's initial administrator, made by hand: dirsync must never touch it.
curl -fs -H "Authorization: Bearer $SCIM_TOKEN" -H 'Content-Type: application/scim+json' \
  -d '{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"admin@example.com","displayName":"Initial Administrator","active":true}' \
  "$SCIM/Users" >/dev/null
echo "    $SCIM (holds $(scim_users) user: admin@example.com, made by hand)"

say "start the operator (dirsync operator, a local process watching namespace $NS)"
kubectl create namespace "$NS" >/dev/null
OPERATOR_PORT=$(free_port)
# The endpoint policy admits the emulator and the loopback SCIM server only because these
# flags say so; by default only Microsoft's clouds and public SCIM addresses are allowed.
"$DIRSYNC" operator --namespaces "$NS" --lease-namespace "$NS" --identity demo-operator \
  --metrics-addr "127.0.0.1:$OPERATOR_PORT" --health-addr "127.0.0.1:$OPERATOR_PORT" \
  --allowed-authority-hosts 127.0.0.1 --allowed-graph-hosts 127.0.0.1 \
  --allowed-private-cidrs 127.0.0.1/32 --log-format plain >"$DEMO_DIR/operator.log" 2>&1 &
pids+=($!)
wait_for "the operator's /readyz" 30 curl -fs "http://127.0.0.1:$OPERATOR_PORT/readyz"
echo "    metrics: http://127.0.0.1:$OPERATOR_PORT/metrics   log: $DEMO_DIR/operator.log"

say "apply the Secrets and examples/dry-run.yaml, pointed at the emulator and the SCIM server"
kubectl -n "$NS" create secret generic entra-app --from-literal=client-secret="$CLIENT_SECRET" >/dev/null
kubectl -n "$NS" create secret generic access-control-scim --from-literal=token="$SCIM_TOKEN" >/dev/null
kubectl -n "$NS" create secret generic emulator-ca --from-file=ca.pem="$DEMO_DIR/emulator-ca.pem" >/dev/null
# The example as shipped, with the demo's tenant, endpoints and the emulator's CA filled in.
python3 - examples/dry-run.yaml "$TENANT" "$CLIENT" "$GRAPH" "$SCIM" >"$DEMO_DIR/dry-run.yaml" <<'PY'
import re, sys
path, tenant, client, graph, scim = sys.argv[1:]
out = []
for line in open(path, encoding="utf-8"):
    indent = re.match(r"\s*", line).group(0)
    key = line.strip().split(":", 1)[0]
    if key == "tenantID":
        line = f"{indent}tenantID: {tenant}\n"
    elif key == "clientID":
        line = (f"{indent}clientID: {client}\n{indent}authorityHost: {graph}\n"
                f"{indent}graphEndpoint: {graph}\n{indent}caBundleRef: {{ name: emulator-ca, key: ca.pem }}\n")
    elif key == "endpoint":
        line = f"{indent}endpoint: {scim}\n"
    out.append(line)
text = "".join(out)
for needle in ("tenantID: " + tenant, "graphEndpoint: " + graph, "endpoint: " + scim):
    if needle not in text:
        sys.exit(f"examples/dry-run.yaml no longer has the field the demo fills in ({needle.split(':')[0]})")
sys.stdout.write(text)
PY
kubectl -n "$NS" apply -f "$DEMO_DIR/dry-run.yaml"

ready_reason() { kubectl -n "$NS" get dsync "$NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].reason}'; }
reason_is() { [ "$(ready_reason)" = "$1" ]; }
wait_for "the dry run (Ready reason PreviewReady)" 90 reason_is PreviewReady
show kubectl -n "$NS" get dsync
echo
"$DIRSYNC" preview get "$NAME" -n "$NS" >"$DEMO_DIR/preview-dry-run.csv"
echo "The dry run wrote a preview and nothing else: the SCIM server still holds $(scim_users) user."

say "sync what was reviewed: switch the resource to mode Once with approval Always"
show kubectl -n "$NS" patch dsync "$NAME" --type merge -p '{"spec":{"mode":"Once","approval":"Always"}}'
wait_for "the run to wait for approval (Ready reason AwaitingApproval)" 120 reason_is AwaitingApproval
show kubectl -n "$NS" get dsync
echo "The run wrote nothing: the SCIM server still holds $(scim_users) user. Its plan is pinned for review:"
"$DIRSYNC" preview get "$NAME" -n "$NS" --pending >"$DEMO_DIR/pending.csv" 2>/dev/null
printf '\n\033[1m$ dirsync preview get %s -n %s --pending | head -4\033[0m\n' "$NAME" "$NS"
head -4 "$DEMO_DIR/pending.csv"
printf '\n\033[1m$ dirsync preview get %s -n %s --pending | sha256sum\033[0m\n' "$NAME" "$NS"
sha256sum <"$DEMO_DIR/pending.csv"
hash="sha256:$(sha256sum <"$DEMO_DIR/pending.csv" | cut -d' ' -f1)"
status_hash=$(kubectl -n "$NS" get dsync "$NAME" -o jsonpath='{.status.approval.pending.sha256}')
if [ "$hash" != "$status_hash" ]; then
  echo "the pending preview's sha256 ($hash) is not the one status shows ($status_hash)" >&2
  exit 1
fi
echo "status.approval.pending.sha256 is the same: $status_hash"

say "approve the reviewed preview by its hash"
show kubectl -n "$NS" patch dsync "$NAME" --type merge -p "{\"spec\":{\"approvedPreview\":\"$hash\"}}"
wait_for "the sync (Ready reason Synced)" 120 reason_is Synced
echo "The SCIM server now holds $(scim_users) users (admin@example.com untouched)."

say "what an operator of dirsync sees"
show kubectl -n "$NS" get dsync
show kubectl -n "$NS" describe dsync "$NAME"
"$DIRSYNC" preview get "$NAME" -n "$NS" >"$DEMO_DIR/preview.csv"
rows=$(($(wc -l <"$DEMO_DIR/preview.csv") - 1))
printf '\n\033[1m$ dirsync preview get %s -n %s > preview.csv\033[0m   (%s rows; the first 8, and the Unmanaged row)\n' "$NAME" "$NS" "$rows"
head -9 "$DEMO_DIR/preview.csv"
grep '^Unmanaged,' "$DEMO_DIR/preview.csv" || true

if $KEEP; then
  say "left running (--keep)"
  echo "export KUBECONFIG=$KUBECONFIG"
  echo "kubectl -n $NS get dsync; $DIRSYNC preview get $NAME -n $NS"
  echo "stop it: kill ${pids[*]}; $TESTENV down --state-dir $DEMO_DIR/cluster"
else
  say "done in $(( $(now) - T_DEMO )) s: everything the demo started is being stopped; work files and logs in $DEMO_DIR"
fi
