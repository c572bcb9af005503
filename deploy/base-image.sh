#!/usr/bin/env bash
# Print a Python 3.11 base image to build on: the official python:3.11-slim when the engine can
# pull it, otherwise a local Debian bookworm image made with debootstrap (python3.11 from Debian).
# The local image is built once and reused.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
DOCKER=${DOCKER:-/usr/bin/docker}
OFFICIAL=${OFFICIAL_BASE_IMAGE:-python:3.11-slim}
LOCAL=${LOCAL_BASE_IMAGE:-dropserve-base:bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if "$DOCKER" image inspect "$OFFICIAL" >/dev/null 2>&1 \
    || timeout 60 "$DOCKER" pull --quiet "$OFFICIAL" >/dev/null 2>&1; then
    echo "$OFFICIAL"
    exit 0
fi
if "$DOCKER" image inspect "$LOCAL" >/dev/null 2>&1; then
    echo "$LOCAL"
    exit 0
fi

echo "base-image: cannot pull $OFFICIAL; building $LOCAL with debootstrap" >&2
command -v debootstrap >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null; }
rootfs=$(mktemp -d /tmp/dropserve-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
# minbase: no compilers, no docs tooling; python3-venv brings ensurepip for the build stage's venv.
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$rootfs" "$MIRROR" >&2
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/usr/share/doc/* \
    "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
ln -sf python3 "$rootfs"/usr/bin/python
chmod 755 "$rootfs"  # mktemp made it 0700: as /, that would lock every non-root user out
tar -C "$rootfs" -c . | "$DOCKER" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$LOCAL" >&2
echo "$LOCAL"
