# Two entry points for a fresh machine (see README): `make compare` and `make test`.
# Each creates .venv with pip when missing and installs the project first.
VENV ?= .venv
PY := $(VENV)/bin/python
SEEDS ?= 1
# Optional: train on the first N samples only, for a quick look (e.g. make compare SUBSET=6000).
SUBSET ?=
EPOCHS ?= 10
# ADAPTIVE=1: seeds in rounds until the ranking is resolved (hydra/sweeper=adaptive), at most MAX_SEEDS.
ADAPTIVE ?=
MAX_SEEDS ?= 8
SWEEP ?= seed-table-$(shell date +%Y%m%d-%H%M%S)
export OPTBENCH_DATA_ROOT ?= $(if $(wildcard ../shared/data/MNIST/raw),../shared/data,data)

.PHONY: install compare test test-fast lint system-packages

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# One job per core with one thread each: the fastest layout measured here (scripts/bench_sweep.py,
# docs/benchmarks.md). One thread instead of two changes only the float summation order.
compare: $(VENV)/.installed
	$(VENV)/bin/optbench-train -m experiment=seed_table sweep_id=$(SWEEP) trainer.max_epochs=$(EPOCHS) \
		$(if $(ADAPTIVE),hydra/sweeper=adaptive hydra.sweeper.max_seeds=$(MAX_SEEDS),seed=$(shell seq -s, 1 $(SEEDS))) \
		$(if $(SUBSET),data.subset=$(SUBSET)) \
		hydra/launcher=joblib hydra.launcher.n_jobs=$(shell nproc) threads=1 trainer.enable_progress_bar=false
	$(VENV)/bin/optbench-compare --sweep $(SWEEP) --reference seed --plot reports/$(SWEEP).png \
		--html reports/$(SWEEP).html

# One pytest worker per core; a test file stays on one worker (its module fixtures train once).
test: $(VENV)/.installed system-packages
	$(PY) -m pytest -q -n auto --dist loadfile

# The quick tier (no CLI processes, no long runs): under 2 minutes.
test-fast: $(VENV)/.installed
	$(PY) -m pytest -q -n auto --dist loadfile -m "not slow"

# What the tests use from Debian: Fashion-MNIST's files, Chromium (the HTML report is rendered in it) and
# PostgreSQL (a real tracking database). Installed when missing and when root; the tests say what is missing.
DEBIAN_PACKAGES := dataset-fashion-mnist chromium postgresql
system-packages:
	@missing=""; \
	 test -d /usr/share/datasets/fashion-mnist || missing="$$missing dataset-fashion-mnist"; \
	 command -v chromium >/dev/null || missing="$$missing chromium"; \
	 ls -d /usr/lib/postgresql/*/bin >/dev/null 2>&1 || missing="$$missing postgresql"; \
	 if [ -n "$$missing" ]; then \
	   if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	     export DEBIAN_FRONTEND=noninteractive; \
	     apt-get install -y -q $$missing >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q $$missing >/dev/null; }; \
	   else echo "note: not installed (needs root and apt-get):$$missing"; fi; \
	 fi

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .
