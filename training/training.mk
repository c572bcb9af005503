# Training targets (included by the Makefile; uses its BIN and ARTIFACTS).
PAPER_THREADS ?= 2
FASHION_PACKAGE := dataset-fashion-mnist
FASHION_DIR := /usr/share/datasets/fashion-mnist

.PHONY: train-paper train-fashion data datasets study study-quick

# Srivastava et al. 2014's dropout + max-norm MLP (recipe `paper`): about 16 min of training on
# 2 CPU cores, then the full evaluation (MC T up to 300, OOD, rotation) and the model card.
train-paper: setup
	$(BIN)/python -m training --dataset mnist --recipe paper --threads $(PAPER_THREADS) --artifacts $(ARTIFACTS)

train-fashion: setup
	$(BIN)/python -m training --dataset fashion-mnist --recipe seed --artifacts $(ARTIFACTS)

# The dropout study (issue 22): the seed architecture against the dropout rate, L2, L1 and max-norm,
# 3 seeds, full and small training split; about 16 min on 2 idle CPU cores (36 min measured on 2
# busy ones). Writes docs/dropout-study/.
study: setup data
	$(BIN)/python -m training study --out docs/dropout-study

# The same driver on a tiny grid (a minute or less): CI checks the outputs' shape, not their values.
study-quick: setup data
	$(BIN)/python -m training study --quick --out .cache/study-quick --no-progress

# MNIST and Fashion-MNIST verified and cached in DATASETS_CACHE by the project's own loader, as the
# training job reads them (the Docker stack's train job gets this cache: deploy/deploy.mk). MNIST
# must load; Fashion-MNIST, which only adds the out-of-distribution evaluation, may be missing.
DATASETS_CACHE ?= .cache/datasets
datasets: setup data
	DROPSERVE_DATA_CACHE=$(DATASETS_CACHE) $(BIN)/python -c 'from training.datasets import load_dataset; load_dataset("mnist")'
	@DROPSERVE_DATA_CACHE=$(DATASETS_CACHE) $(BIN)/python -c 'from training.datasets import load_dataset; load_dataset("fashion-mnist")' \
		2>/dev/null || echo "datasets: no Fashion-MNIST (see \`make data\`): models will have no OOD evaluation"

# Fashion-MNIST (the out-of-distribution set of MNIST models) offline: Debian's package.
data:
	@if [ -d $(FASHION_DIR) ]; then \
		echo "$(FASHION_PACKAGE) is installed ($(FASHION_DIR))"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		apt-get update && apt-get install -y --no-install-recommends $(FASHION_PACKAGE); \
	else \
		echo "Fashion-MNIST is not installed and cannot be installed here automatically."; \
		echo "  Debian/Ubuntu: sudo apt-get install $(FASHION_PACKAGE)"; \
		echo "  elsewhere: put the four Fashion-MNIST IDX files in FOLDER and run once"; \
		echo "    $(BIN)/python -m training --dataset fashion-mnist --data-dir FOLDER"; \
		echo "  (the verified copy is cached under .cache/datasets/ for every later run),"; \
		echo "  or let the job fetch it from the official mirror when the network allows."; \
		echo "Without it, artifacts are published without the out-of-distribution evaluation."; \
	fi
