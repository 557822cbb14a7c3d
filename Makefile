# Two entry points for a fresh machine: `make demo` and `make test`. Both create .venv when missing.
PY      ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: setup demo test test-fast lint slurm-start slurm-stop

setup: $(STAMP)

# torch and torchvision first: pip takes them from this machine's disk (see /etc/xdg/pip).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The main job on the embedded default: generate -> shard -> train on 2 DeepSpeed ranks -> evaluate.
# 137 refs per shard: the 4384 train refs make 32 equal shards, 16 per rank, so each rank sees its own refs
# once per epoch (with unequal shares a rank tops up from the next epoch).
DEMO_DATA   ?= data
DEMO_SHARDS ?= shards
DEMO_OUT    ?= runs/demo

demo: setup
	@set -e; start=$$(date +%s); \
	$(BIN)/python pipeline/shard.py synthetic --data-root $(DEMO_DATA) --out $(DEMO_SHARDS) --workers 2 --max-words 12 \
		--samples-per-shard 137; \
	$(BIN)/deepspeed --num_gpus 2 launch.py --config configs/demo.yaml --shards $(DEMO_SHARDS) \
		--output $(DEMO_OUT) --resume auto; \
	$(BIN)/python -m jrnet.evaluate --checkpoint $(DEMO_OUT) --shards $(DEMO_SHARDS) \
		--split val --split testA --split testB --overlays 12 --output $(DEMO_OUT)/evaluate.json; \
	echo "demo done in $$(( $$(date +%s) - start )) s: $(DEMO_OUT)/evaluate.json, $(DEMO_OUT)/gallery_val.png," \
		"training curves in $(DEMO_OUT)/metrics.jsonl, wandb (offline) in $(DEMO_OUT)/wandb"

# Two pytest-xdist workers: the tests wait on subprocesses (launchers, ranks, Slurm) much of the time, and two keep
# both cores busy. A worker takes whole modules, the Slurm modules together, the longest first (tests/conftest.py).
test: setup
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest -q -n 2 --dist loadfile

# The pure-function and single-process tests: about 2 minutes, no DeepSpeed ranks, no Slurm.
test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow and not slurm"

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

slurm-start:
	bash slurm/local_cluster.sh start

slurm-stop:
	bash slurm/local_cluster.sh stop
