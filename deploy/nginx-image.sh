#!/usr/bin/env bash
# Print the nginx image for the compose stack: the official one when the engine can pull it,
# otherwise dropserve-nginx:local, Debian's nginx built on the base image (built once, reused).
set -euo pipefail
cd "$(dirname "$0")/.."
DOCKER=${DOCKER:-/usr/bin/docker}
OFFICIAL=${OFFICIAL_NGINX_IMAGE:-nginx:1.27-alpine}
LOCAL=dropserve-nginx:local

if "$DOCKER" image inspect "$OFFICIAL" >/dev/null 2>&1 \
    || timeout 60 "$DOCKER" pull --quiet "$OFFICIAL" >/dev/null 2>&1; then
    echo "$OFFICIAL"
elif "$DOCKER" image inspect "$LOCAL" >/dev/null 2>&1; then
    echo "$LOCAL"
else
    echo "nginx-image: cannot pull $OFFICIAL; building $LOCAL from Debian's nginx" >&2
    base=$(deploy/base-image.sh)
    DOCKER_BUILDKIT=1 "$DOCKER" build --quiet --build-arg "BASE_IMAGE=$base" -t "$LOCAL" deploy/nginx >&2
    echo "$LOCAL"
fi
