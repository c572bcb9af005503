# Benchmarks, described with their results in docs/performance.md: `make bench` measures the old engine
# (commit BASELINE) against the new one (this working tree) and checks the speed goals; `make bench-smoke`
# (CI) only checks that the new engine, the HTTP floor and LitServe answer correctly under a little load.
BENCH_VENV := bench/.venv-litserve
# The old engine of the A/B: the last commit before the engine of issue 17.
BASELINE ?= 9e3b15f
BENCH_LOCK ?= /tmp/dropserve-cpu.lock
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: bench bench-smoke bench-deps bench-model

# wrk from Debian; LitServe in its own venv, with the CPU build of the torch we use and, of the
# packages the two share (fastapi, uvicorn, numpy...), the releases in constraints.txt.
bench-deps: setup
	@command -v wrk >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq wrk; }
	@test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	@$(BENCH_VENV)/bin/python -c "import litserve, safetensors, torch" 2>/dev/null || \
		$(BENCH_VENV)/bin/pip install --quiet --constraint constraints.txt litserve==0.2.19 safetensors numpy \
			"torch==$$($(BIN)/python -c 'import torch; print(torch.__version__)')"

bench-model: setup
	@if [ -z "$$(ls -d $(ARTIFACTS)/$(MODEL)/[0-9]* 2>/dev/null)" ]; then $(MAKE) train; fi

# Holds the machine's CPU lock so the figures come from a quiet machine.
bench: bench-deps bench-model
	flock $(BENCH_LOCK) $(BIN)/python -m bench.run --baseline $(BASELINE) --artifacts $(ARTIFACTS) --model $(MODEL)

bench-smoke: bench-deps bench-model
	$(BIN)/python -m bench.run --smoke --artifacts $(ARTIFACTS) --model $(MODEL)
