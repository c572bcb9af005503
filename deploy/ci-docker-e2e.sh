#!/usr/bin/env bash
# End-to-end proof of the Docker deployment: engine, base image, dropserve image, compose stack
# (train -> 2 api replicas -> nginx), a real MNIST PNG prediction and an uncertainty request through
# nginx, answers checked, teardown. Run as root (it may install docker.io and start dockerd).
#   deploy/ci-docker-e2e.sh            # or: make docker-e2e
# Knobs: OFFLINE=1 (default: build from deploy/wheelhouse/), DROPSERVE_HTTP_PORT (8080), KEEP=1 (no teardown).
set -euo pipefail
cd "$(dirname "$0")/.."

started=$(date +%s)
step() { echo "== [$(($(date +%s) - started))s] $*"; }

export DOCKER=${DOCKER:-/usr/bin/docker}
export DOCKER_BUILDKIT=1 COMPOSE_DOCKER_CLI_BUILD=1
export DROPSERVE_IMAGE=${DROPSERVE_IMAGE:-dropserve:ci}
export DROPSERVE_HTTP_PORT=${DROPSERVE_HTTP_PORT:-8080}
OFFLINE=${OFFLINE:-1}
PROJECT=${COMPOSE_PROJECT:-dropserve-e2e}
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
work=$(mktemp -d /tmp/dropserve-e2e.XXXXXX)

step "engine"
deploy/docker-engine.sh
"$DOCKER" version --format 'client {{.Client.Version}}, server {{.Server.Version}}'

if "$DOCKER" compose version >/dev/null 2>&1; then
    compose=("$DOCKER" compose)
else
    command -v docker-compose >/dev/null 2>&1 \
        || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null; }
    compose=(docker-compose)
fi
compose+=(-p "$PROJECT" -f docker-compose.yml)
echo "compose: ${compose[*]} ($("${compose[@]}" version --short 2>/dev/null || true))"

teardown() {
    status=$?
    if [ "$status" -ne 0 ]; then
        echo "== FAILED (exit $status); stack state and logs:"
        "${compose[@]}" ps || true
        "${compose[@]}" logs --tail=40 || true
    fi
    if [ "${KEEP:-0}" != 1 ]; then
        step "teardown"
        "${compose[@]}" down --volumes --remove-orphans >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
    step "done (exit $status)"
}
trap teardown EXIT

step "base images"
export BASE_IMAGE BUILD_IMAGE
BASE_IMAGE=$(deploy/base-image.sh)
BUILD_IMAGE=$(deploy/base-image.sh build)
echo "base: $BASE_IMAGE, build stage: $BUILD_IMAGE"

build_args=(--build-arg "BASE_IMAGE=$BASE_IMAGE" --build-arg "BUILD_IMAGE=$BUILD_IMAGE" --build-arg "OFFLINE=$OFFLINE")
if [ "$OFFLINE" = 1 ]; then
    if ! ls deploy/wheelhouse/torch-*.whl >/dev/null 2>&1; then
        step "wheelhouse (pip download on the host)"
        PYTHON=python3 deploy/wheelhouse.sh
    fi
elif [ -s "$CA_BUNDLE" ]; then
    # Behind a TLS-intercepting proxy pip needs the host's CA; a secret never lands in a layer.
    build_args+=(--secret "id=pip_ca,src=$CA_BUNDLE")
fi

step "build $DROPSERVE_IMAGE"
previous=$("$DOCKER" image inspect -f '{{.Id}}' "$DROPSERVE_IMAGE" 2>/dev/null || true)
"$DOCKER" build --progress=plain "${build_args[@]}" -t "$DROPSERVE_IMAGE" . >"$work/build.log" 2>&1 \
    || { tail -n 40 "$work/build.log"; exit 1; }
# The image this build untagged would stay behind as a dangling GB each run (vfs storage copies
# every layer): remove it, unless something still uses it.
if [ -n "$previous" ] && [ "$previous" != "$("$DOCKER" image inspect -f '{{.Id}}' "$DROPSERVE_IMAGE")" ]; then
    "$DOCKER" rmi "$previous" >/dev/null 2>&1 || true
fi
size=$("$DOCKER" image inspect -f '{{.Size}}' "$DROPSERVE_IMAGE")
user=$("$DOCKER" image inspect -f '{{.Config.User}}' "$DROPSERVE_IMAGE")
identity=$("$DOCKER" run --rm "$DROPSERVE_IMAGE" id)
echo "image: $DROPSERVE_IMAGE size=$((size / 1000000)) MB user=$user ($identity)"
[ "$size" -lt 1200000000 ] || { echo "image is over 1.2 GB"; exit 1; }
case "$identity" in uid=0\(*|"") echo "image runs as root"; exit 1 ;; esac
compilers=$("$DOCKER" run --rm "$DROPSERVE_IMAGE" sh -c 'for c in gcc cc c++ g++ clang; do command -v $c; done; true')
[ -z "$compilers" ] || { echo "compilers in the final image: $compilers"; exit 1; }
echo "no compilers in the image (gcc, cc, c++, g++, clang)"

step "nginx image"
export NGINX_IMAGE
NGINX_IMAGE=$(deploy/nginx-image.sh)
echo "nginx: $NGINX_IMAGE"

# The train job finds MNIST in its dataset cache first (checksum-verified). Seed it from the
# host's cache, filled here by the test suite or by this fetch, so the container needs no network.
if [ ! -s .cache/datasets/mnist.npz ]; then
    step "dataset cache (host)"
    "$PYTHON" -c 'from training.datasets import load_dataset; load_dataset("mnist")'
fi
export DROPSERVE_DATASETS=$PWD/.cache/datasets

step "compose up (train, then 2 api replicas, then nginx)"
"${compose[@]}" down --volumes --remove-orphans >/dev/null 2>&1 || true
"${compose[@]}" up -d --no-build --scale api=2
"${compose[@]}" logs train | tail -n 5

step "wait for readiness through nginx"
base_url="http://127.0.0.1:$DROPSERVE_HTTP_PORT"
for _ in $(seq 1 60); do
    curl -fsS "$base_url/readyz" >/dev/null 2>&1 && break
    sleep 2
done
curl -fsS "$base_url/readyz"; echo
replicas=$("$DOCKER" ps -q --filter "label=com.docker.compose.project=$PROJECT" \
    --filter "label=com.docker.compose.service=api" --filter health=healthy | wc -l)
echo "healthy api replicas: $replicas"
[ "$replicas" -ge 2 ] || { echo "expected 2+ healthy api replicas"; exit 1; }

step "prediction and uncertainty through nginx"
index=${DIGIT_INDEX:-0}
label=$("$PYTHON" deploy/e2e_digit.py .cache/datasets "$index" "$work/digit.png")
echo "MNIST test digit #$index, true label $label, $(stat -c %s "$work/digit.png") bytes of PNG"
curl -fsS -F "file=@$work/digit.png;type=image/png" "$base_url/v1/predict" \
    | "$PYTHON" deploy/e2e_check.py predict "$label"
curl -fsS -H 'Content-Type: image/png' --data-binary "@$work/digit.png" \
    "$base_url/v1/uncertainty?samples=100&seed=1" | "$PYTHON" deploy/e2e_check.py uncertainty "$label"

# More requests, then every replica must have served some: nginx logs which upstream answered.
for _ in $(seq 1 10); do
    curl -fsS -o /dev/null -F "file=@$work/digit.png;type=image/png" "$base_url/v1/predict"
done
"${compose[@]}" logs --no-color nginx 2>/dev/null | grep -o 'POST /v1/predict.*upstream=[0-9.:]*' \
    | sed 's/.*upstream=//' | sort | uniq -c >"$work/upstreams" || true
cat "$work/upstreams"
[ "$(wc -l <"$work/upstreams")" -ge 2 ] || { echo "nginx sent every request to one replica"; exit 1; }
step "e2e passed"
