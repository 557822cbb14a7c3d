"""Shared fixtures. The session-scoped data is built once: treat it as read-only (copy it to change it)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest


def pytest_configure(config: pytest.Config) -> None:
    # pycocotools 2.0.x under numpy 2 warns on every mask decode; nothing of ours to fix.
    config.addinivalue_line("filterwarnings", "ignore:__array__ implementation doesn't accept a copy keyword")


# The modules of `pytest.mark.slurm` tests: there is one local Slurm cluster, so `make test`'s workers run them as one.
SLURM_MODULES = frozenset({"tests/test_local_cluster.py", "tests/test_slurm_train.py"})


def module_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Checks SLURM_MODULES, and orders the modules by their multi-process runs, most first (modules stay whole):
    under `make test`'s two workers the longest modules then start first and the many quick tests fill the end."""
    runs = Counter()
    for item in items:
        if item.get_closest_marker("slurm") and module_of(item.nodeid) not in SLURM_MODULES:
            raise pytest.UsageError(f"{item.nodeid} is marked slurm: add its module to SLURM_MODULES")
        runs[module_of(item.nodeid)] += bool(item.get_closest_marker("slow") or item.get_closest_marker("slurm"))
    items.sort(key=lambda item: -runs[module_of(item.nodeid)])  # stable: the order within a module is kept


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """Under `--dist loadfile` (`make test`), a worker takes a whole module, so its module-scoped runs are made once,
    and the Slurm modules together. (`--dist loadgroup` with marks would say so, but does not group under pytest 9.2:
    pytest-xdist issue 1386.)"""
    if config.getvalue("dist") != "loadfile":
        return None
    config.option.loadscopereorder = False  # the collection's order (above), not the modules' test counts
    from xdist.scheduler import LoadFileScheduling

    class SlurmTogether(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "slurm" if module_of(nodeid) in SLURM_MODULES else module_of(nodeid)

    return SlurmTogether(config, log)


TINY_IMAGES = 30  # about 80 refs: every split, grayscale/CMYK images and every segmentation kind
TINY_SAMPLES_PER_SHARD = 8


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root holding a tiny generated refer-layout dataset (seed 0)."""
    from jrnet.prep.synthetic import SyntheticOptions, generate

    root = tmp_path_factory.mktemp("data")
    generate(root, SyntheticOptions(num_images=TINY_IMAGES, seed=0))
    return root


@pytest.fixture(scope="session")
def synthetic_shards(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An --out folder holding `synthetic/` shards of `synthetic_root` (one worker, 8 samples per shard)."""
    from jrnet.prep.shard import main

    out = tmp_path_factory.mktemp("shards")
    argv = ["synthetic", "--data-root", str(synthetic_root), "--out", str(out), "--workers", "1"]
    assert main([*argv, "--samples-per-shard", str(TINY_SAMPLES_PER_SHARD)]) == 0
    return out
