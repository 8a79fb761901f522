#!/usr/bin/env bash
# The local demo (README "Quick start"): everything on loopback, nothing to configure.
#
#   1. tools/setup.sh installs the pinned tools (first run only; see README for the time it takes)
#   2. builds dirsync and the Graph emulator
#   3. starts the Graph emulator (HTTPS, a generated tenant of DEMO_USERS users in example.com)
#      and a real SCIM 2.0 server (scim2-server from PyPI)
#   4. `dirsync plan`  -> the dry-run preview CSV (nothing is written)
#   5. `dirsync apply` -> the users land in the SCIM server
#   6. changes a user and removes one in the emulator, then `dirsync plan` shows exactly that
#
# Everything it starts, it stops. Work files are kept in $DEMO_DIR (printed at the end).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export DIRSYNC_CACHE="${DIRSYNC_CACHE:-$HOME/.cache/dirsync}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$DIRSYNC_CACHE/target}"
DEMO_USERS="${DEMO_USERS:-60}"
DEMO_DIR="${DEMO_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/dirsync-demo.XXXXXX")}"
mkdir -p "$DEMO_DIR"

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

say "setup (tools/setup.sh; quick when already done)"
bash tools/setup.sh >"$DEMO_DIR/setup.log" 2>&1 || { tail -30 "$DEMO_DIR/setup.log"; exit 1; }
# shellcheck disable=SC1091
source "$DIRSYNC_CACHE/env.sh"

say "build (cargo build --locked --bins)"
cargo build --locked -q --bin dirsync -p dirsync -p entra-emulator
DIRSYNC="$CARGO_TARGET_DIR/debug/dirsync"
EMULATOR="$CARGO_TARGET_DIR/debug/entra-emulator"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

say "start the Graph emulator: $DEMO_USERS generated users in example.com, HTTPS"
"$EMULATOR" --listen 127.0.0.1:0 --generate "$DEMO_USERS" --domain example.com --seed 7 \
  --tls-ca-out "$DEMO_DIR/emulator-ca.pem" >"$DEMO_DIR/emulator.out" 2>"$DEMO_DIR/emulator.log" &
pids+=($!)
for _ in $(seq 100); do [ -s "$DEMO_DIR/emulator.out" ] && break; sleep 0.1; done
GRAPH=$(head -1 "$DEMO_DIR/emulator.out")
[ -n "$GRAPH" ] || { cat "$DEMO_DIR/emulator.log"; echo "the emulator did not start" >&2; exit 1; }
echo "    $GRAPH"

say "start a SCIM 2.0 server (scim2-server $("$DIRSYNC_VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("scim2-server"))'))"
SCIM_PORT=$(free_port)
"$DIRSYNC_VENV/bin/scim2-server" --hostname 127.0.0.1 --port "$SCIM_PORT" --bearer-token demo-scim-token \
  >"$DEMO_DIR/scim.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$SCIM_PORT/v2/ServiceProviderConfig" >/dev/null && break; sleep 0.1; done
echo "    http://127.0.0.1:$SCIM_PORT/v2"

# The same YAML a user applies to a cluster; the CLI reads it as it is.
cat >"$DEMO_DIR/directorysync.yaml" <<YAML
apiVersion: dirsync.io/v1alpha1
kind: DirectorySync
metadata:
  name: example-com
  namespace: identity
spec:
  domain: example.com
  upnMode: Enabled
  maxAllowedDeletions: 65
  mode: Once
  protectedUserNames: [admin]
  source:
    entraID:
      tenantID: 7d6f3c2a-1b4e-4f8a-9c5d-2e1f0a9b8c7d
      clientID: 3f2a1b0c-9d8e-4f7a-8b6c-5d4e3f2a1b0c
      clientSecretRef: { name: entra-app, key: client-secret }
      authorityHost: $GRAPH
      graphEndpoint: $GRAPH
  destination:
    scim:
      endpoint: http://127.0.0.1:$SCIM_PORT/v2
      bearerTokenRef: { name: access-control-scim, key: token }
YAML
cat >"$DEMO_DIR/secrets.yaml" <<'YAML'
apiVersion: v1
kind: Secret
metadata: { name: entra-app, namespace: identity }
stringData: { client-secret: emulator-client-secret }
---
apiVersion: v1
kind: Secret
metadata: { name: access-control-scim, namespace: identity }
stringData: { token: demo-scim-token }
YAML
ARGS=(-f "$DEMO_DIR/directorysync.yaml" --secrets "$DEMO_DIR/secrets.yaml" --ca-file "$DEMO_DIR/emulator-ca.pem")

say "dirsync plan (dry run: nothing is written)"
"$DIRSYNC" plan "${ARGS[@]}" --out "$DEMO_DIR/preview-1.csv"
echo "--- first rows of the preview CSV ($DEMO_DIR/preview-1.csv):"
head -6 "$DEMO_DIR/preview-1.csv"

say "dirsync apply"
"$DIRSYNC" apply "${ARGS[@]}" --state "$DEMO_DIR/state.json"
echo "    SCIM server now holds $(curl -fs -H 'Authorization: Bearer demo-scim-token' "http://127.0.0.1:$SCIM_PORT/v2/Users?count=0" | python3 -c 'import json,sys; print(json.load(sys.stdin)["totalResults"])') users"

say "change one user and remove another in the emulator (its control API), then plan again"
python3 - "$DEMO_DIR/preview-1.csv" >"$DEMO_DIR/victims" <<'PY'
import csv, sys
rows = [r for r in csv.DictReader(open(sys.argv[1], encoding="utf-8-sig")) if r["action"] == "Add" and r["active"] == "true"]
print(rows[0]["userPrincipalName"], rows[1]["userPrincipalName"])
PY
read -r changed removed <"$DEMO_DIR/victims"
curl -fs --cacert "$DEMO_DIR/emulator-ca.pem" -X PATCH -H 'Content-Type: application/json' \
  -d '{"displayName":"Renamed In Entra"}' "$GRAPH/_emulator/users/$changed" >/dev/null
curl -fs --cacert "$DEMO_DIR/emulator-ca.pem" -X DELETE "$GRAPH/_emulator/users/$removed" >/dev/null
"$DIRSYNC" plan "${ARGS[@]}" --state "$DEMO_DIR/state.json" --out "$DEMO_DIR/preview-2.csv"
echo "--- the preview now ($DEMO_DIR/preview-2.csv):"
cat "$DEMO_DIR/preview-2.csv"

say "done; work files in $DEMO_DIR"
