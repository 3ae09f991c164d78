#!/usr/bin/env bash
# A CI job whose tests hard-code http://169.254.169.254: run them inside `azimds run`.
# Needs root, or unprivileged user namespaces: bash examples/ci-job.sh
set -euo pipefail

azimds run -- sh -c '
  set -e
  # Anything inside sees IMDS at the real address; here, the documentation commands.
  curl -sf -H Metadata:true --noproxy "*" \
    "http://169.254.169.254/metadata/instance/compute/vmId?api-version=2017-08-01&format=text"
  echo
  curl -sf -H Metadata:true --noproxy "*" \
    "http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://management.azure.com/" \
    | grep -o "\"token_type\":\"Bearer\""
'
