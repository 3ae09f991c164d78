#!/usr/bin/env bash
# Boot an Azure-targeting image under QEMU with IMDS served by azimds on this host.
#
#   sudo azimds serve --link-local --config vm.yaml &     # 169.254.169.254:80 on this host
#   bash examples/qemu/run-vm.sh IMAGE.qcow2 [SEED.iso]
#
# User-mode networking (slirp): the guest reaches 169.254.169.254 through QEMU's NAT, which
# opens the connection from this host, where azimds answers on the link-local address. One
# VM per node in this mode: every caller is the configured VM (caller mode `single`).
# SEED.iso: provisioning for the image (e.g. a cloud-init NoCloud seed made with
# `cloud-localds seed.iso user-data`), since azimds serves IMDS, not Azure's WireServer.
# Not run by CI (no image, no KVM there); the networking it relies on is tested in
# tests/test_link_local.py and tests/fleet/test_namespaces.py.
set -euo pipefail

image=${1:?usage: run-vm.sh IMAGE.qcow2 [SEED.iso]}
seed=${2:-}

curl -sf -H Metadata:true --noproxy "*" -o /dev/null \
  "http://169.254.169.254/metadata/instance?api-version=2021-02-01" \
  || { echo "no IMDS at 169.254.169.254: start 'sudo azimds serve --link-local' first" >&2; exit 1; }

args=(
  -machine q35,accel=kvm:tcg -m 2048 -smp 2 -nographic
  -drive "file=$image,if=virtio,snapshot=on"        # snapshot: the image is left unchanged
  -netdev user,id=net0 -device virtio-net-pci,netdev=net0
)
[ -n "$seed" ] && args+=(-drive "file=$seed,if=virtio,format=raw,readonly=on")
exec qemu-system-x86_64 "${args[@]}"
