#!/usr/bin/env bash
# Make sure a Docker engine answers: install Debian's docker.io when missing, start dockerd when
# no daemon listens. vfs is the storage driver that works inside any container or VM (no overlay).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

need() { command -v "$1" >/dev/null 2>&1; }

if ! need dockerd; then
    echo "docker-engine: installing Debian's docker.io"
    apt-get update -qq && apt-get install -y -qq docker.io >/dev/null
fi

# Debian's client speaks to its own daemon and carries BuildKit without the buildx plugin.
DOCKER=${DOCKER:-/usr/bin/docker}
if "$DOCKER" info >/dev/null 2>&1; then
    exit 0
fi

log=${DOCKERD_LOG:-/tmp/dropserve-dockerd.log}
echo "docker-engine: starting dockerd (vfs), log in $log"
nohup dockerd --storage-driver="${DOCKER_STORAGE_DRIVER:-vfs}" >"$log" 2>&1 &
for _ in $(seq 1 60); do
    "$DOCKER" info >/dev/null 2>&1 && exit 0
    sleep 1
done
echo "docker-engine: dockerd did not answer within 60 s; last log lines:" >&2
tail -n 20 "$log" >&2
exit 1
