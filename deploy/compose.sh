#!/usr/bin/env bash
# Run Docker Compose with the arguments given: Compose v2 (`docker compose`) when the client has it,
# else `docker-compose`, else Debian's docker-compose (1.29) installed first (as root).
#   deploy/compose.sh up -d --no-build      # what the make targets call
set -euo pipefail
DOCKER=${DOCKER:-/usr/bin/docker}

if "$DOCKER" compose version >/dev/null 2>&1; then
    exec "$DOCKER" compose "$@"
fi
if ! command -v docker-compose >/dev/null 2>&1; then
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "compose: neither \`docker compose\` nor \`docker-compose\` is installed;" \
            "install one (Debian/Ubuntu: sudo apt-get install docker-compose)" >&2
        exit 1
    fi
    echo "compose: installing Debian's docker-compose" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq docker-compose >/dev/null
fi
exec docker-compose "$@"
