#!/usr/bin/env bash
# The guest's side of tests/e2e/test_debian_agents.py: boots nothing, but gives the Debian root
# what the agents look at on an Azure VM, then runs them as systemd would, in order.
#
#   ip netns exec VM_NETNS unshare -m -u tests/e2e/guest.sh ROOT PRODUCT_UUID
#
# Run in a fresh mount and UTS namespace (the hostname cloud-init sets stays in it), but no PID
# namespace: inside one, trixie's systemd-detect-virt says "container-other", and cloud-init then
# reads no DMI at all. Ends by exec'ing waagent's daemon, which runs until killed.
set -euo pipefail
root=$1 product_uuid=$2

mount --make-rprivate /
# cloud-init looks up the mount holding / (for the resource disk): it must be one.
mount --bind "$root" "$root"
mount -t proc proc "$root/proc"
# This kernel exposes no DMI, so /sys is a tmpfs with the network namespace's own interfaces
# (ip netns exec mounted its sysfs) and the two DMI values cloud-init's Azure datasource reads.
# No /sys/firmware/efi: a generation 1 VM, whose product_uuid cloud-init byte-swaps.
mount -t tmpfs -o mode=755 sys "$root/sys"
mkdir -p "$root/sys/class/net" "$root/sys/devices" "$root/sys/class/dmi/id"
mount --rbind /sys/class/net "$root/sys/class/net"
mount --rbind /sys/devices "$root/sys/devices"
echo "$product_uuid" >"$root/sys/class/dmi/id/product_uuid"
echo 7783-7084-3265-9085-8269-3286-77 >"$root/sys/class/dmi/id/chassis_asset_tag"
mount -t tmpfs -o mode=755 dev "$root/dev"
for node in null zero full random urandom tty; do
    touch "$root/dev/$node"
    mount --bind "/dev/$node" "$root/dev/$node"
done
mkdir -p "$root/dev/shm" "$root/dev/pts"
mount -t tmpfs run "$root/run"

chroot "$root" cloud-init init --local
chroot "$root" cloud-init init
# cloud-init only wrote the network configuration; nothing here brings eth0 up for good.
chroot "$root" dhclient -1 eth0
exec chroot "$root" waagent -daemon
