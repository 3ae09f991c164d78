#!/usr/bin/env bash
# Local development: a node with your VM, SDKs pointed at it, a change while it runs.
# Run from anywhere with azimds installed: bash examples/local-dev.sh
set -euo pipefail

work=$(mktemp -d)
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null; rm -rf "$work"' EXIT

cat > "$work/vm.yaml" <<'YAML'
vm:
  compute:
    name: web-1
    location: westeurope
    tags: {env: dev}
YAML

port=16935 admin=16936
azimds serve --config "$work/vm.yaml" --state-dir "$work/state" --store memory: \
  --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" > "$work/serve.log" 2>&1 &
server=$!
export AZURE_POD_IDENTITY_AUTHORITY_HOST="http://127.0.0.1:$port"   # what Azure SDKs read
export AZIMDS_STATE_DIR="$work/state"                               # what `azimds vm` reads
azimds wait --timeout 30 || { cat "$work/serve.log" >&2; exit 1; }   # until both planes answer

azimds get /metadata/instance/compute/name                   # web-1
azimds vm set web-1 compute.tags.env=staging > /dev/null
azimds get /metadata/instance/compute/tags --format text     # env:staging
azimds get "/metadata/identity/oauth2/token?resource=https://vault.azure.net" | grep -c access_token
