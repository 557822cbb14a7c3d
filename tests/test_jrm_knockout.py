"""bench/jrm_knockout.py: "as trained" scores the model as it is, "all gates 0" scores the model without JRM, the
single-gate rows differ from both, and the gates are put back afterwards."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from jrnet.config import load_config
from jrnet.evaluate import evaluate_split
from jrnet.mix import Mix
from jrnet.model import build_jrnet

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import jrm_knockout  # noqa: E402

PIXEL, WORD = torch.tensor([0.5, 1.0, -0.7]), torch.tensor([1.0, -0.5, 0.8])  # tanh 0.46 .. 0.76: JRM half open


def half_open_model(shards_dir):
    """A tiny gated JRNet in eval mode with its gates set to PIXEL and WORD, its config and its val shards.
    mask_prior 0.5: logits start near 0, so the masks of an untrained model move with every change of its gates."""
    cfg = load_config("tiny", ["model.jrm_gate=true", "model.mask_prior=0.5"])
    data = Mix.open(shards_dir, cfg)
    model = build_jrnet(cfg, data.vocab_size()).eval()
    with torch.no_grad():
        model.jrm.pixel_gates.copy_(PIXEL)
        model.jrm.word_gates.copy_(WORD)
    return model, cfg, data.parts[0].shards


def test_knockout_rows_score_the_model_as_set_and_the_model_without_jrm(synthetic_shards):
    model, cfg, shards = half_open_model(synthetic_shards)
    rows = jrm_knockout.knockouts(model, cfg, shards, "val")
    with torch.no_grad():
        as_set, _ = evaluate_split(model, cfg, shards, "val", "cpu", batch_size=64)
        model.jrm = None  # JRNet.forward without JRM: the levels and the words go straight to CMMLF
        without, _ = evaluate_split(model, cfg, shards, "val", "cpu", batch_size=64)

    def scores(summary):
        return summary["overall_iou"], summary["mean_iou"]

    assert scores(rows["as trained"]) == scores(as_set)
    assert scores(rows[jrm_knockout.NO_JRM]) == scores(without)
    one_gate = {scores(rows["pixel gates 0"]), scores(rows["word gates 0"])}
    assert len({scores(as_set), scores(without), *one_gate}) == 4  # each knockout is a change here


def test_knockouts_put_the_gates_back(synthetic_shards):
    model, cfg, shards = half_open_model(synthetic_shards)
    jrm_knockout.knockouts(model, cfg, shards, "val")
    assert torch.equal(model.jrm.pixel_gates.detach(), PIXEL) and torch.equal(model.jrm.word_gates.detach(), WORD)
