#!/usr/bin/env bash
# CI's proof of the README's Deploy section: its lines run verbatim, in the README's order, in a fresh
# copy of this tree (what a clone holds: nothing git ignores, so no .venv, dataset cache, wheelhouse
# or artifacts), with nothing else prepared:
#   make docker-build, make docker-up, the curl lines through nginx on 127.0.0.1:8080, make docker-down
# Each curl answer is checked (docs/examples/digit-7.png is a 7), and before `make docker-down` the
# stack: image size, non-root user, no compilers, the releases of constraints.txt, 2 healthy api
# replicas, nginx using both. Run as root (the make targets may install docker.io and docker-compose
# and start dockerd).
#   deploy/ci-docker-e2e.sh            # or: make docker-e2e
# Knobs: KEEP=1 (keep the copy, and on failure the stack), E2E_DIR (an empty folder for the copy).
set -euo pipefail
cd "$(dirname "$0")/.."

started=$(date +%s)
step() { echo "== [$(($(date +%s) - started))s] $*"; }

export DOCKER=${DOCKER:-/usr/bin/docker}
PYTHON=${PYTHON:-python3}  # the checks need only the standard library
check=$PWD/deploy/e2e_check.py
digit_label=7
image=dropserve:latest  # IMAGE in deploy/deploy.mk, which the README's lines leave as is

# The README's Deploy lines this proves, as the README spells them.
mapfile -t lines < <(grep -E '^(make docker-(build|up|down)( |$)|curl .*127\.0\.0\.1:8080/)' README.md)
shape=$(printf '%s\n' "${lines[@]}" | awk '{print $1 == "curl" ? "curl" : $2}' | uniq | xargs)
[ "$shape" = "docker-build docker-up curl docker-down" ] || {
    echo "README.md: expected the lines make docker-build, make docker-up, curl ... 127.0.0.1:8080, make docker-down; found: $shape"
    exit 1
}

root=${E2E_DIR:-$(mktemp -d /tmp/dropserve-e2e.XXXXXX)}
clone=$root/dropserve  # a clone's folder name, which compose names the project after
mkdir -p "$clone"
git ls-files -z --cached --others --exclude-standard \
    | tar --null --files-from=- --ignore-failed-read -c 2>/dev/null | tar -x -C "$clone"
step "fresh copy of the tree in $clone ($(git -C . rev-parse --short HEAD) plus uncommitted edits)"
cd "$clone"
log=$root/make.log
compose() { deploy/compose.sh "$@"; }

teardown() {
    status=$?
    if [ "$status" -ne 0 ]; then
        echo "== FAILED (exit $status); last lines of make, stack state and logs:"
        tail -n 40 "$log" 2>/dev/null || true
        compose ps || true
        compose logs --tail=40 || true
    fi
    if [ "${KEEP:-0}" != 1 ]; then
        [ "$status" -eq 0 ] || make docker-down >/dev/null 2>&1 || true
        rm -rf "$root"
    fi
    # Each run's build adds its layers to the build cache, full copies on vfs storage: a machine
    # that runs CI again and again filled its disk. The most recent 8 GB stay for the next build.
    "$DOCKER" builder prune -f --keep-storage 8gb >/dev/null 2>&1 || true
    step "done (exit $status)"
}
trap teardown EXIT

check_stack() {
    local size user inside identity compilers releases replicas
    size=$("$DOCKER" image inspect -f '{{.Size}}' "$image")
    user=$("$DOCKER" image inspect -f '{{.Config.User}}' "$image")
    # One container for the three questions: on vfs storage each one copies the whole image.
    inside=$("$DOCKER" run --rm -i "$image" sh -c \
        'id; for c in gcc cc c++ g++ clang; do command -v $c; done; python - "$1"' sh "$(cat constraints.txt)" \
        <deploy/image_releases.py)
    identity=$(head -n 1 <<<"$inside")
    compilers=$(tail -n +2 <<<"$inside" | grep -v '^release ' || true)
    releases=$(grep '^release ' <<<"$inside" || true)
    echo "image: $image size=$((size / 1000000)) MB user=$user ($identity)"
    [ "$size" -lt 1200000000 ] || { echo "image is over 1.2 GB"; return 1; }
    case "$identity" in uid=0\(*|"") echo "image runs as root"; return 1 ;; esac
    [ -z "$compilers" ] || { echo "compilers in the final image: $compilers"; return 1; }
    echo "no compilers in the image (gcc, cc, c++, g++, clang)"
    [ -z "$releases" ] || { echo "the image holds other releases than constraints.txt:"; echo "$releases"; return 1; }
    echo "every package in the image at its release in constraints.txt"

    replicas=$("$DOCKER" ps -q --filter label=com.docker.compose.project=dropserve \
        --filter label=com.docker.compose.service=api --filter health=healthy | wc -l)
    echo "healthy api replicas: $replicas"
    [ "$replicas" -ge 2 ] || { echo "expected 2+ healthy api replicas"; return 1; }
    # More requests, then every replica must have served some: nginx logs which upstream answered.
    for _ in $(seq 1 10); do
        curl -fsS -o /dev/null -F file=@docs/examples/digit-7.png http://127.0.0.1:8080/v1/predict
    done
    compose logs --no-color nginx 2>/dev/null | grep -o 'POST /v1/predict.*upstream=[0-9.:]*' \
        | sed 's/.*upstream=//' | sort | uniq -c >"$root/upstreams" || true
    cat "$root/upstreams"
    [ "$(wc -l <"$root/upstreams")" -ge 2 ] || { echo "nginx sent every request to one replica"; return 1; }
}

previous_image=""
for line in "${lines[@]}"; do
    case "$line" in
        "make docker-build"*)
            previous_image=$("$DOCKER" image inspect -f '{{.Id}}' "$image" 2>/dev/null || true) ;;
        "make docker-down"*)
            step "checks of the stack before: $line"
            check_stack ;;
    esac
    step "\$ $line"
    case "$line" in
        curl*)
            body=$(eval "$line")
            echo "$body" | head -c 300; echo
            kind=predict
            [[ "$line" == */v1/uncertainty* ]] && kind=uncertainty
            "$PYTHON" "$check" "$kind" "$digit_label" <<<"$body" ;;
        *)
            eval "$line" >>"$log" 2>&1 || { echo "failed: $line"; exit 1; }
            tail -n 3 "$log" ;;
    esac
    # A rebuild untags the previous image, a dangling GB on vfs storage: remove it unless in use.
    if [[ "$line" == "make docker-build"* && -n "$previous_image" ]] \
        && [ "$previous_image" != "$("$DOCKER" image inspect -f '{{.Id}}' "$image")" ]; then
        "$DOCKER" rmi "$previous_image" >/dev/null 2>&1 || true
    fi
done
step "e2e passed: the README's Deploy lines ran verbatim on a fresh copy"
