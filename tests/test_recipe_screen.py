"""bench/recipe_screen.py's batch draw: uniform over refs, or with one kind's refs oversampled."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import recipe_screen  # noqa: E402


def test_without_oversampling_the_draw_is_the_plain_uniform_one():
    drawn = recipe_screen.batch_indices(100, 32, torch.Generator().manual_seed(3), pool=[], share=0.0)
    assert drawn == torch.randint(100, (32,), generator=torch.Generator().manual_seed(3)).tolist()


def test_oversampling_draws_about_its_share_from_the_pool():
    pool = list(range(10))  # refs 0-9 are the oversampled kind: 10 % of 100 refs
    draw = torch.Generator().manual_seed(0)
    drawn = [i for _ in range(200) for i in recipe_screen.batch_indices(100, 32, draw, pool, share=0.5)]
    from_pool = sum(i < 10 for i in drawn) / len(drawn)
    assert abs(from_pool - (0.5 + 0.5 * 0.1)) < 0.02  # the share, plus the pool's part of the uniform half
    assert all(i < 10 for i in recipe_screen.batch_indices(100, 32, draw, pool, share=1.0))
