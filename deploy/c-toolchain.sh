#!/usr/bin/env bash
# Make sure models/_kernels.c can be built for PYTHON: a C compiler and Python's headers, from
# Debian when missing (as root). A no-op where both are present.
set -euo pipefail
PYTHON=${1:-python3}
has_headers() {
    "$PYTHON" -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'
}
missing=()
command -v cc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
has_headers || missing+=(python3-dev)
[ ${#missing[@]} -eq 0 ] && exit 0
echo "c-toolchain: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
