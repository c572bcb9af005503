# One command per habit. Every target sets up what it needs; nothing is installed by hand.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ARTIFACTS ?= artifacts
MODEL  ?= mnist-mlp

.PHONY: setup run serve train test test-fast test-blas-paths lint format typecheck clean

setup: $(STAMP)

# Re-install only when the project's dependencies or its C kernels change.
$(STAMP): pyproject.toml models/_kernels.c
	deploy/c-toolchain.sh $(PYTHON)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Train the default model when the repository holds none, then serve on port 8000.
run: setup
	@if [ -z "$$(ls -d $(ARTIFACTS)/$(MODEL)/[0-9]* 2>/dev/null)" ]; then \
		echo "no $(MODEL) in $(ARTIFACTS)/: training the seed recipe first"; \
		$(BIN)/python -m training --dataset mnist --recipe seed --artifacts $(ARTIFACTS); \
	fi
	DROPSERVE_MODEL_REPOSITORY=$(ARTIFACTS) $(BIN)/python -m service

serve: setup
	DROPSERVE_MODEL_REPOSITORY=$(ARTIFACTS) $(BIN)/python -m service

train: setup
	$(BIN)/python -m training --dataset mnist --recipe seed --artifacts $(ARTIFACTS)

test: setup data
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

test-fast: setup
	$(BIN)/python -m pytest -q -m "not integration"

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: setup
	$(BIN)/mypy models training service bench

clean:
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache

# Topic targets live beside the code they drive; they may use the variables above.
-include training/training.mk deploy/deploy.mk bench/bench.mk
