# lightning-gan: `make help` lists the targets. Extra arguments go in ARGS, e.g.
#   make train ARGS="model=cgan data=mnist trainer.max_epochs=20"
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DATA_DIR ?= data
ARGS ?=
PYTEST_ARGS ?=
SEARCH ?= optuna_fid

.DEFAULT_GOAL := help
.PHONY: help install data classifiers train test test-fast lint format bench bench-k tb sweep search clean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed ## Create .venv and install the project with its test extras

data: install ## Provision MNIST and Fashion-MNIST into DATA_DIR (default: data/), offline sources first
	$(PY) -m src.data.provision --data-dir $(DATA_DIR)

classifiers: data ## Verify the pinned classifiers of the quality metrics (FID, cond_acc ...) and measure their test accuracy
	$(PY) -m src.metrics.classifier check --data-dir $(DATA_DIR)

train: data ## Train the default config (gan on Fashion-MNIST: the seed GAN's nets, the searched recipe); ARGS="model=cgan ..." to change it
	$(PY) -m src.train data_dir=$(DATA_DIR) $(ARGS)

test: install ## Run the whole test suite (the slow end-to-end tests included)
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: install ## Run the tests not marked slow
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

lint: install ## Lint and check the formatting (ruff), as CI does
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install ## Format the tree and fix what ruff can (then review the diff)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: data ## Images/s side by side: seed loops vs a plain loop vs the project, and the recipe with and without (lazy) R1 and bf16 (BENCHMARKS.md)
	$(PY) bench/bench.py --data-dir $(DATA_DIR) $(ARGS)

bench-k: data ## Lightning's per-step cost against data.batches_per_step=K, the loops interleaved in one process (BENCHMARKS.md)
	$(PY) bench/batches_per_step.py --data-dir $(DATA_DIR) $(ARGS)

sweep: data ## Sweep the learning rate over 1e-4, 2e-4, 5e-4 (summary.md ranks the jobs by FID); ARGS="seed=1,2,3": mean ± std per lr
	$(PY) -m src.train --multirun data_dir=$(DATA_DIR) model.lr=1e-4,2e-4,5e-4 $(ARGS)

search: data ## Optuna search for the lowest FID; SEARCH=optuna_recipe: for a training recipe (docs/recipes.md)
	$(PY) -m src.train hparams_search=$(SEARCH) data_dir=$(DATA_DIR) $(ARGS)

tb: install ## TensorBoard on outputs/, keeping every epoch's sample grid
	$(VENV)/bin/tensorboard --logdir outputs --samples_per_plugin images=1000

clean: ## Delete everything under outputs/ (keeps data/ and .venv/)
	find outputs -mindepth 1 ! -name .gitkeep -delete
