# Two entry points for a fresh machine (see README): `make compare` and `make test`.
# Each creates .venv with pip when missing and installs the project first.
VENV ?= .venv
PY := $(VENV)/bin/python
SEEDS ?= 1
# Optional: train on the first N samples only, for a quick look (e.g. make compare SUBSET=6000).
SUBSET ?=
EPOCHS ?= 10
SWEEP ?= seed-table-$(shell date +%Y%m%d-%H%M%S)
export OPTBENCH_DATA_ROOT ?= $(if $(wildcard ../shared/data/MNIST/raw),../shared/data,data)

.PHONY: install compare test lint fashion-mnist

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

compare: $(VENV)/.installed
	$(VENV)/bin/optbench-train -m experiment=seed_table sweep_id=$(SWEEP) trainer.max_epochs=$(EPOCHS) \
		seed=$(shell seq -s, 1 $(SEEDS)) $(if $(SUBSET),data.subset=$(SUBSET))
	$(VENV)/bin/optbench-compare --sweep $(SWEEP) --reference seed --plot reports/$(SWEEP).png

test: $(VENV)/.installed fashion-mnist
	$(PY) -m pytest -q

# Debian's copy of Fashion-MNIST, for data=fashion_mnist offline (its test is skipped without it).
fashion-mnist:
	@test -d /usr/share/datasets/fashion-mnist || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		{ apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
		  { apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null; }; }; } || \
		echo "note: Debian's dataset-fashion-mnist is not installed; the Fashion-MNIST test will be skipped"

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .
