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

# The inference curl lines (the reload and metrics lines need an admin key or answer text).
grep -E '^curl .*127\.0\.0\.1:8000/v1/[^ ]*(predict|uncertainty)' README.md | while read -r line; do
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
# The README's prediction sets: the 7 alone for the digit; more than one label, flagged ood, for the bag.
sets() { curl -s -F file=@docs/examples/$1 'http://127.0.0.1:8000/v1/uncertainty?seed=1&coverage=0.99' \
  | .venv/bin/python -c 'import json,sys; p=json.load(sys.stdin)["predictions"][0]; print(p["prediction_set"], p["ood"])'; }
seven=$(sets digit-7.png)
[ "$seven" = "[7] False" ] || { echo "digit-7.png: prediction set and ood $seven, not [7] False"; exit 1; }
bag=$(sets fashion-bag.png)
[[ "$bag" =~ ^\[[0-9]+(,\ [0-9]+)+\]\ True$ ]] || { echo "fashion-bag.png: prediction set and ood $bag"; exit 1; }

# The README's tritonclient script (the python block that starts `# readme: tritonclient`), verbatim.
triton_script=$(mktemp --suffix=.py)
.venv/bin/python - "$triton_script" <<'EOF'
import pathlib, re, sys
blocks = re.findall(r"^```python\n(# readme: tritonclient\n.*?)^```$", pathlib.Path("README.md").read_text(), re.S | re.M)
assert len(blocks) == 1, "README.md needs exactly one python block that starts with `# readme: tritonclient`"
pathlib.Path(sys.argv[1]).write_text(blocks[0])
EOF
echo "\$ .venv/bin/python <README's tritonclient script>"
triton_out=$(.venv/bin/python "$triton_script") || { echo "$triton_out"; echo "the README's tritonclient script failed"; exit 1; }
rm -f "$triton_script"
echo "$triton_out"
grep -qx 'label: 7' <<<"$triton_out" || { echo "the tritonclient script did not print label: 7"; exit 1; }
grep -q '^mutual_information: ' <<<"$triton_out" || { echo "the tritonclient script printed no uncertainty"; exit 1; }

# The README's dropserve command lines verbatim; the first prints the example 7 and 2.
grep -E '^\.venv/bin/dropserve ' README.md | while read -r line; do
  echo "\$ $line"
  out=$(eval "$line") || { echo "$out"; echo "failed: $line"; exit 1; }
  echo "$out" | head -c 400; echo
done
predicted=$(.venv/bin/dropserve predict docs/examples/digit-7.png docs/examples/digit-2-paper.png | awk 'NR > 1 && NF == 4 {print $2}' | xargs)
[ "$predicted" = "7 2" ] || { echo "dropserve predict printed labels '$predicted', not '7 2'"; exit 1; }

# The README's Python client block (it starts `# readme: client`), verbatim.
echo "\$ .venv/bin/python <README's client block>"
.venv/bin/python - <<'EOF'
import pathlib, re
blocks = re.findall(r"^```python\n(# readme: client\n.*?)^```$", pathlib.Path("README.md").read_text(), re.S | re.M)
assert len(blocks) == 1, "README.md needs exactly one python block that starts with `# readme: client`"
exec(compile(blocks[0], "README.md (client block)", "exec"))
EOF
echo "README examples: all answered"
