#!/usr/bin/env bash
# Print a Python 3.11 base image: `base-image.sh` the one the image runs on, `base-image.sh build`
# the one its build stage compiles in (models/_kernels.c wants a C compiler and Python's headers).
# The official pair (python:3.11-slim, python:3.11) when the engine can pull both, otherwise a local
# Debian bookworm pair made with debootstrap (python3.11 from Debian). Either way both images of a
# pair keep Python at the same path, which the venv copied from one to the other relies on. A local
# image is built once and reused.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
DOCKER=${DOCKER:-/usr/bin/docker}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
RUNTIME_OFFICIAL=${OFFICIAL_BASE_IMAGE:-python:3.11-slim}
BUILD_OFFICIAL=${OFFICIAL_BUILD_IMAGE:-python:3.11}
case "${1:-runtime}" in
    runtime)
        OFFICIAL=$RUNTIME_OFFICIAL
        LOCAL=${LOCAL_BASE_IMAGE:-dropserve-base:bookworm}
        # minbase: no compilers, no docs tooling; python3-venv brings ensurepip for the venv.
        PACKAGES=python3,python3-venv,ca-certificates ;;
    build)
        OFFICIAL=$BUILD_OFFICIAL
        LOCAL=${LOCAL_BUILD_IMAGE:-dropserve-build-base:bookworm}
        PACKAGES=python3,python3-venv,python3-dev,gcc,libc6-dev,ca-certificates ;;
    *) echo "usage: $0 [runtime|build]" >&2; exit 2 ;;
esac

available() {
    "$DOCKER" image inspect "$1" >/dev/null 2>&1 || timeout 60 "$DOCKER" pull --quiet "$1" >/dev/null 2>&1
}
if available "$RUNTIME_OFFICIAL" && available "$BUILD_OFFICIAL"; then
    echo "$OFFICIAL"
    exit 0
fi
if "$DOCKER" image inspect "$LOCAL" >/dev/null 2>&1; then
    echo "$LOCAL"
    exit 0
fi

echo "base-image: cannot pull $RUNTIME_OFFICIAL and $BUILD_OFFICIAL; building $LOCAL with debootstrap" >&2
command -v debootstrap >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null; }
rootfs=$(mktemp -d /tmp/dropserve-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
debootstrap --variant=minbase --include="$PACKAGES" bookworm "$rootfs" "$MIRROR" >&2
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/usr/share/doc/* \
    "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
ln -sf python3 "$rootfs"/usr/bin/python
chmod 755 "$rootfs"  # mktemp made it 0700: as /, that would lock every non-root user out
tar -C "$rootfs" -c . | "$DOCKER" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$LOCAL" >&2
echo "$LOCAL"
