#!/usr/bin/env bash
# A base image for the Containerfile made from Debian's mirror alone, for machines that cannot
# pull python:slim (CI behind a proxy, no Docker Hub): mmdebstrap builds a minimal Debian root
# with python3 (its venv module, ca-certificates, useradd), podman imports it. Prints the
# image's name, for `podman build --build-arg BASE=<it> .` (docs/deployment.md, "Container").
#
#   packaging/container/debian-base.sh [SUITE]     # as root; SUITE: bookworm (default), trixie
#
# The root's tarball is kept in $AZIMDS_CI_CACHE (default /var/cache/azimds-ci), named by a hash
# of everything that makes it (the suite and this script), so a rerun only imports it, or
# finds the image already there.
set -euo pipefail

suite=${1:-bookworm}
cache=${AZIMDS_CI_CACHE:-/var/cache/azimds-ci}
key=$( { echo "$suite"; cat "$0"; } | sha256sum | cut -c1-16)
image=localhost/azimds-base:$suite-$key
if podman image exists "$image"; then
    echo "$image"
    exit 0
fi

tarball=$cache/debian-$suite-$key.tar
if [[ ! -f $tarball ]]; then
    mkdir -p "$cache"
    # essential, not minbase: no apt in the image, which installs nothing after this. passwd:
    # the Containerfile's useradd. Documentation and translations are left out; unsafe-io
    # spares dpkg's fsyncs on a root thrown away on failure anyway.
    mmdebstrap --quiet --variant=essential --format=tar \
        --include=python3,python3-venv,ca-certificates,passwd \
        --dpkgopt=force-unsafe-io \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        "$suite" "$tarball.part" >&2
    mv "$tarball.part" "$tarball"
fi
podman import --quiet "$tarball" "$image" >/dev/null
echo "$image"
