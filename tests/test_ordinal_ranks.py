"""bench/ordinal_ranks.py: reads the rank and the side off every ordinal template, the demo's and the held-out set's."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from jrnet.prep.expressions import DEMO_PHRASING

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import ordinal_ranks  # noqa: E402
import relational_set  # noqa: E402

TEMPLATES = [*DEMO_PHRASING.ordinals, *relational_set.RELATIONAL_PHRASING.ordinals]


@pytest.mark.parametrize("template", TEMPLATES)
def test_rank_and_side_are_read_from_every_ordinal_template(template):
    sentence = template.format(nth="third", np="small red circle", side="right")
    assert ordinal_ranks.RANK.search(sentence).groups() == ("third", "right")


def test_a_sentence_without_an_ordinal_word_is_not_ranked():
    assert ordinal_ranks.RANK.search("the circle on the left") is None
