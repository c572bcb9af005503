# One command per habit. Every target sets up what it needs; nothing is installed by hand.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ARTIFACTS ?= artifacts
MODEL  ?= mnist-mlp

.PHONY: setup lock run serve train test test-fast test-blas-paths check-cuda lint format typecheck clean browser

setup: $(STAMP)

# Re-install only when the project's dependencies or its C kernels change. constraints.txt holds the
# exact release of every package installed, so a fresh clone tests what was tested here.
$(STAMP): pyproject.toml constraints.txt models/_kernels.c
	deploy/c-toolchain.sh $(PYTHON)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --constraint constraints.txt -e '.[dev]'
	touch $(STAMP)

# Re-resolve pyproject.toml's ranges to today's newest releases, in a scratch environment, into
# constraints.txt; then `make test` and commit both. torch keeps its pin without the build's local
# label (2.13.0 matches 2.13.0+cpu and 2.13.0+cu128 alike), so the CUDA image takes the same file.
LOCK_VENV := .cache/lock-venv
lock:
	rm -rf $(LOCK_VENV) && $(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install --quiet --upgrade pip
	$(LOCK_VENV)/bin/pip install --quiet '.[dev]'
	{ echo "# Every package \`make setup\` installs, at the release tested; \`make lock\` rewrites this file."; \
	  $(LOCK_VENV)/bin/pip freeze | grep -v '^dropserve' | sed 's/^\(torch==[^+]*\)+.*/\1/'; } > constraints.txt
	rm -rf $(LOCK_VENV)

# Train each of MODELS the repository lacks (mnist-mlp on MNIST, fashion-mlp on Fashion-MNIST; the
# seed recipe), then serve every model in the repository on port 8000:
#   make run MODELS="mnist-mlp fashion-mlp"
MODELS ?= $(MODEL)
run: setup
	@for model in $(MODELS); do \
		if [ -n "$$(ls -d $(ARTIFACTS)/$$model/[0-9]* 2>/dev/null)" ]; then continue; fi; \
		case $$model in \
			mnist-mlp) dataset=mnist ;; \
			fashion-mlp) dataset=fashion-mnist; $(MAKE) --no-print-directory data ;; \
			*) echo "make run trains mnist-mlp and fashion-mlp, not $$model; publish it under $(ARTIFACTS)/ yourself"; exit 2 ;; \
		esac; \
		echo "no $$model in $(ARTIFACTS)/: training the seed recipe on $$dataset first"; \
		$(BIN)/python -m training --dataset $$dataset --recipe seed --artifacts $(ARTIFACTS) || exit 1; \
	done
	DROPSERVE_MODEL_REPOSITORY=$(ARTIFACTS) $(BIN)/python -m service

serve: setup
	DROPSERVE_MODEL_REPOSITORY=$(ARTIFACTS) $(BIN)/python -m service

train: setup
	$(BIN)/python -m training --dataset mnist --recipe seed --artifacts $(ARTIFACTS)

test: setup data browser
	$(BIN)/python -m pytest -q

# The reproducibility tests again on other BLAS and ATen kernels than this CPU's best: an answer's
# bytes must not depend on what shares the engine, whatever code path the CPU takes.
BLAS_PATHS ?= AVX2:avx2 SSE4_2:default
test-blas-paths: setup
	@for path in $(BLAS_PATHS); do \
		echo "== MKL_ENABLE_INSTRUCTIONS=$${path%%:*} ATEN_CPU_CAPABILITY=$${path##*:}"; \
		MKL_ENABLE_INSTRUCTIONS=$${path%%:*} ATEN_CPU_CAPABILITY=$${path##*:} \
			$(BIN)/python -m pytest -q tests/models tests/service/test_engine.py || exit 1; \
	done

# Debian's chromium, which the page's browser test drives through Playwright (Playwright's own
# browser download is not used). Installed as root when missing; elsewhere the test would fail, so
# this fails first and says how.
CHROMIUM ?= /usr/bin/chromium
browser:
	@if [ -x $(CHROMIUM) ]; then \
		echo "chromium is installed ($(CHROMIUM))"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium; \
	else \
		echo "chromium is missing: sudo apt-get install chromium (Debian/Ubuntu), then make test again"; \
		echo "(make test-fast runs without it: it leaves out the integration tests, the browser's too)"; \
		exit 1; \
	fi

# On a machine with a GPU: train with --device cuda, serve with DROPSERVE_DEVICE=cuda, and check
# the answers on real MNIST digits (bench/cuda_check.py). CI has no GPU; exits 2 where torch sees none.
check-cuda: setup data
	$(BIN)/python -m bench.cuda_check

test-fast: setup
	$(BIN)/python -m pytest -q -m "not integration"

# Schema fuzzing against the service's own /openapi.json, longer than the bounded run in `make test`:
# FUZZ_EXAMPLES cases per operation, a new seed each time (printed by schemathesis, to replay; from
# /dev/urandom: make runs /bin/sh, which may be dash, without $RANDOM).
FUZZ_EXAMPLES ?= 200
.PHONY: fuzz soak
fuzz: setup
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) FUZZ_SEED=$$(od -An -N4 -tu4 /dev/urandom | tr -d ' ') \
		$(BIN)/python -m pytest -q -s tests/service/test_schema_fuzz.py

# Soak (bench/soak.py): SOAK_SECONDS of mixed traffic on loopback, malformed requests included;
# counts every status and samples the server's resident memory; fails on any 5xx or lost request.
SOAK_SECONDS ?= 180
SOAK_OUT ?= bench/results/soak.json
SOAK_WORKERS ?= 1
soak: setup
	$(BIN)/python -m bench.soak --duration $(SOAK_SECONDS) --workers $(SOAK_WORKERS) --out $(SOAK_OUT)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: setup
	$(BIN)/mypy models training service bench client

clean:
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache

# Topic targets live beside the code they drive; they may use the variables above.
-include training/training.mk deploy/deploy.mk bench/bench.mk
