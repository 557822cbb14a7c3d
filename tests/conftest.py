"""Shared fixtures. The session-scoped data is built once: treat it as read-only (copy it to change it)."""

from __future__ import annotations

from pathlib import Path

import pytest


def pytest_configure(config: pytest.Config) -> None:
    # pycocotools 2.0.x under numpy 2 warns on every mask decode; nothing of ours to fix.
    config.addinivalue_line("filterwarnings", "ignore:__array__ implementation doesn't accept a copy keyword")


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
