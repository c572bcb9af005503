#!/usr/bin/env bash
# Fill deploy/wheelhouse/ with every wheel the image needs, for the offline build
# (docker build --build-arg OFFLINE=1). Run it where pip reaches an index that serves the CPU torch
# build (pip download --extra-index-url https://download.pytorch.org/whl/cpu, or a local mirror).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
dest=deploy/wheelhouse
# cp311 manylinux wheels: the image's interpreter, whatever the host runs.
platform=(--only-binary=:all: --python-version 3.11 --implementation cp --abi cp311
          --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64
          --platform manylinux2014_x86_64 --platform any)
requirements=$(mktemp)
trap 'rm -f "$requirements"' EXIT
"$PYTHON" - >"$requirements" <<'PY'
import tomllib
with open("pyproject.toml", "rb") as f:
    project = tomllib.load(f)
print("\n".join(project["project"]["dependencies"] + project["build-system"]["requires"]))
PY
"$PYTHON" -m pip download --quiet --dest "$dest" "${platform[@]}" \
    ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} --constraint constraints.txt -r "$requirements" wheel
echo "wheelhouse: $(ls "$dest"/*.whl | wc -l) wheels, $(du -sh "$dest" | cut -f1) in $dest"
