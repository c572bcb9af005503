#!/usr/bin/env bash
# Runs `make run` as a user would (training first when artifacts/ is empty), then every curl line
# of the README verbatim against it, and checks each answer. Stops the server at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp)
setsid make run >"$log" 2>&1 &  # its own process group, so the trap stops make and the server
runner=$!
trap 'kill -- -"$runner" 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do
  curl -sf http://127.0.0.1:8000/readyz >/dev/null && break
  kill -0 $runner 2>/dev/null || { cat "$log"; echo "make run exited"; exit 1; }
  sleep 1
done
curl -sf http://127.0.0.1:8000/readyz >/dev/null || { cat "$log"; echo "not ready after 300 s"; exit 1; }
grep -E 'artifact:|test_accuracy|train_seconds' "$log" || true

grep -E '^curl .*127\.0\.0\.1:8000' README.md | while read -r line; do
  echo "\$ $line"
  body=$(eval "$line")
  echo "$body" | head -c 300; echo
  echo "$body" | .venv/bin/python -c '
import json, sys
body = json.load(sys.stdin)
assert "predictions" in body, body
for p in body["predictions"]:
    assert abs(sum(p["probabilities"]) - 1) < 1e-4
'
done
# The example digits are a 7, a 2 and a 1 from the MNIST test set.
labels=$(for f in digit-7.png; do curl -s -F file=@docs/examples/$f http://127.0.0.1:8000/v1/predict; done | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["predictions"][0]["label"])')
[ "$labels" = "7" ] || { echo "digit-7.png predicted as $labels"; exit 1; }
echo "README examples: all answered"
