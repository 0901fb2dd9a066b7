#!/bin/sh
# A python3 base image made on this machine, for sites where no image registry is reachable:
# Debian bookworm (Python 3.11) from Debian's package mirror by debootstrap, imported into
# Docker, for `docker build --build-arg PYTHON_IMAGE=NAME .` (docs/deployment.md).
#
#   docker/base-image.sh [NAME [TARBALL]]
#
# NAME defaults to study-query-llm-base:bookworm; an image of that name already in Docker is
# used as it is. With TARBALL the root file system is kept there, and imported from it the
# next time instead of running debootstrap again (it also carries the base to another machine).
# Needs root and debootstrap (apt-get install debootstrap).
set -eu
name=${1:-study-query-llm-base:bookworm}
tarball=${2:-}

if docker image inspect "$name" >/dev/null 2>&1; then
    echo "$name: already there"
    exit 0
fi
if [ -n "$tarball" ] && [ -s "$tarball" ]; then
    docker import "$tarball" "$name"
    exit 0
fi

rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
    bookworm "$rootfs"
# Downloaded packages and package lists are of no use in an image.
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
if [ -n "$tarball" ]; then
    mkdir -p "$(dirname "$tarball")"
    tar -C "$rootfs" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
    docker import "$tarball" "$name"
else
    tar -C "$rootfs" -c . | docker import - "$name"
fi
