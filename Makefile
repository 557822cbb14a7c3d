# Two entry points for a fresh machine: `make demo` and `make test`. Both create .venv when missing.
PY      ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: setup demo test lint bench clean-demo slurm-start slurm-stop

setup: $(STAMP)

# torch and torchvision first: pip takes them from this machine's disk (see /etc/xdg/pip).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: setup
	PATH=$(CURDIR)/$(BIN):$$PATH bash scripts/demo.sh

test: setup
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .

slurm-start:
	bash slurm/local_cluster.sh start

slurm-stop:
	bash slurm/local_cluster.sh stop
