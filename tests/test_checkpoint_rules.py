"""Checkpoint folder rules without DeepSpeed: pruning, rollback, RNG state, trunk identity, config errors."""

from __future__ import annotations

import json
import pickle
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from jrnet import checkpoint
from jrnet.config import ConfigError, load_config
from jrnet.distributed import DistEnv
from jrnet.engine import deepspeed_config
from jrnet.model import JRNet, build_jrnet, check_trunk, trunk_identity
from jrnet.prep.refer import ReferError, load_refs
from jrnet.stream import LoaderPlan
from jrnet.text import TextEncoder

MAIN = DistEnv(rank=0, world_size=1, local_rank=0, local_world_size=1, device=torch.device("cpu"), backend="gloo")


def fake_checkpoints(folder: Path, steps: list[int], torn: tuple[int, ...] = ()) -> None:
    """Step folders as `checkpoint.save` leaves them: complete ones have meta.json, torn ones do not."""
    for step in steps:
        tag = folder / checkpoint.tag_for(step)
        tag.mkdir(parents=True)
        (tag / "rank0.pt").write_bytes(b"x")
        if step not in torn:
            (tag / "meta.json").write_text(json.dumps({"step": step}))
    (folder / checkpoint.LATEST).write_text(checkpoint.tag_for(max(set(steps) - set(torn))))


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir())


def test_prune_keeps_newest_complete_and_never_touches_newer(tmp_path):
    fake_checkpoints(tmp_path, [2, 4, 5, 6, 8, 9], torn=(5,))
    (tmp_path / "step_00000004_universal").mkdir()
    checkpoint.prune(tmp_path, keep=2, protect="step_00000006")
    assert names(tmp_path) == ["step_00000004", "step_00000004_universal", "step_00000006", "step_00000008",
                               "step_00000009"]  # fmt: skip
    checkpoint.prune(tmp_path, keep=1, protect="step_00000006")
    assert names(tmp_path) == ["step_00000006", "step_00000008", "step_00000009"]


def test_resume_from_older_checkpoint_moves_newer_ones_aside(tmp_path, caplog):
    fake_checkpoints(tmp_path, [3, 6, 9, 10], torn=(10,))
    with caplog.at_level("WARNING"):
        checkpoint.set_aside_newer(tmp_path, tmp_path / "step_00000003", MAIN)
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("rolled_back_")]
    assert len(aside) == 1 and names(aside[0]) == ["step_00000006", "step_00000009"]
    assert names(tmp_path) == [aside[0].name, "step_00000003"]  # the torn step 10 is gone: nobody could load it
    assert checkpoint.published(tmp_path) == "step_00000003"
    assert "moved the newer checkpoints step_00000006, step_00000009 aside" in caplog.text


def test_resume_from_latest_moves_nothing(tmp_path):
    fake_checkpoints(tmp_path, [3, 6])
    checkpoint.set_aside_newer(tmp_path, tmp_path / "step_00000006", MAIN)
    assert names(tmp_path) == ["step_00000003", "step_00000006"]


def test_find_names_what_is_not_a_checkpoint(tmp_path):
    with pytest.raises(checkpoint.CheckpointError, match="no such checkpoint or run folder"):
        checkpoint.find(tmp_path / "missing")
    with pytest.raises(checkpoint.CheckpointError, match="not a checkpoint or run folder"):
        checkpoint.find(tmp_path)
    fake_checkpoints(tmp_path / "run" / "checkpoints", [3])
    assert checkpoint.find(tmp_path / "run") == tmp_path / "run" / "checkpoints" / "step_00000003"


def test_rng_state_loads_with_weights_only_and_restores_every_generator(tmp_path):
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    torch.save(checkpoint.rng_state(), tmp_path / "rng.pt")
    expected = (torch.rand(3), np.random.rand(3), random.random())
    checkpoint.set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1]) and expected[2] == again[2]


def test_frozen_random_trunk_is_rebuilt_identically_and_a_different_one_refused():
    cfg = load_config("tiny")
    torch.manual_seed(123)  # the caller's RNG state must not matter
    first = build_jrnet(cfg, 20)
    recorded = trunk_identity(cfg, first.backbone.trunk)
    assert recorded["source"] == "seed" and recorded["seed"] == cfg.train.seed
    torch.manual_seed(456)
    check_trunk(cfg, build_jrnet(cfg, 20).backbone.trunk, recorded, "ck")  # same trunk: accepted
    other = load_config("tiny", ["train.seed=1"])
    with pytest.raises(ValueError, match="differs from the one training used"):
        check_trunk(cfg, build_jrnet(other, 20).backbone.trunk, recorded, "ck")


def test_lstm_is_fed_its_own_dtype():
    """DeepSpeed's fp16 mode casts the LSTM to half; the text encoder must follow the LSTM's dtype (float64
    stands in for half here: CPU has no half LSTM kernel)."""
    cfg = load_config("tiny").model
    text = TextEncoder(cfg, 20, None, use_glove=False)
    text.lstm.double()
    words, valid = text(torch.tensor([[3, 4, 0]]))
    assert words.dtype == torch.float64 and valid.tolist() == [[True, True, False]]


def test_half_model_runs_forward_and_backward_on_cpu():
    """The fp16 dtype path (DeepSpeed's `module.half()`) through every module the CPU has half kernels for."""
    cfg = load_config("tiny")
    model = JRNet(cfg.model, 20).half()
    model.text.lstm.float()  # CPU only: oneDNN has no half LSTM
    logits = model(torch.tensor([[3, 4, 0, 0], [5, 0, 0, 0]]), torch.randn(2, 3, 32, 32).half())
    assert logits.dtype == torch.float16
    logits.float().mean().backward()
    assert model.decoder.parameters().__next__().grad.dtype == torch.float16


@pytest.mark.parametrize("override,message", [
    ("train.log_every=0", "train.log_every=0 must be >= 1"),
    ("train.eval_every=0", "train.eval_every=0 must be >= 1"),
    ("train.checkpoint_every=-1", "train.checkpoint_every=-1 must be >= 1"),
    ("train.keep_checkpoints=0", "train.keep_checkpoints=0 must be >= 1"),
    ("data.workers=-1", "data.workers=-1 must be >= 0"),
    ("train.threads=abc", "command line override 'train.threads=abc': train.threads='abc' must be an integer"),
    ("train.log_every=true", "train.log_every=True must be an integer"),
    ("data.eval_limit=1.5", "data.eval_limit=1.5 must be an integer"),
    ("train.lrr=1", "command line override 'train.lrr=1': unknown config key 'train.lrr'"),
    ("train=1", "'train' is a section, not a key"),
    ("train.lr=[1", "command line override 'train.lr=[1': '[1' is not a valid value"),
])  # fmt: skip
def test_bad_override_is_one_clear_error(override, message):
    with pytest.raises(ConfigError) as error:
        load_config("tiny", [override])
    assert message in str(error.value)


def test_unknown_override_is_blamed_on_the_command_line_not_the_file():
    with pytest.raises(ConfigError) as error:
        load_config("demo", ["model.jrm_layer=2"])
    assert str(error.value).startswith("command line override 'model.jrm_layer=2'") and "demo.yaml" not in str(
        error.value
    )


def test_malformed_yaml_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lr: [1e-3\n")
    with pytest.raises(ConfigError, match=rf"^{bad}: not valid YAML"):
        load_config(bad)


@pytest.mark.parametrize("name", ["paper_448", "paper_576"])
@pytest.mark.parametrize("ranks", [1, 2, 4, 8, 16])
def test_paper_configs_split_on_every_usual_world_size(name, ranks):
    cfg = load_config(name)
    plan = LoaderPlan.make(cfg, 42404, ranks)  # RefCOCO's train refs
    assert plan.micro_batch * ranks * cfg.train.grad_accum_steps == cfg.train.global_batch_size
    assert deepspeed_config(cfg, ranks, plan.micro_batch)["train_batch_size"] == cfg.train.global_batch_size


class _CallsAFunction:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def test_refs_pickle_that_would_run_code_is_refused_without_running_it(tmp_path):
    marker, refs = tmp_path / "ran", tmp_path / "refs(unc).p"
    refs.write_bytes(pickle.dumps([{"ref_id": 1, "payload": _CallsAFunction(marker)}]))
    with pytest.raises(
        ReferError, match=rf"^{re.escape(str(refs))}: not a refs pickle \(refused to load pathlib.*Path.touch"
    ):
        load_refs(refs)
    assert not marker.exists()


def test_duplicate_ref_id_is_an_error_naming_it(tmp_path):
    refs = tmp_path / "refs(unc).p"
    refs.write_bytes(pickle.dumps([{"ref_id": 7}, {"ref_id": 8}, {"ref_id": 7}], protocol=2))
    with pytest.raises(ReferError, match=rf"^{re.escape(str(refs))}: duplicate ref_id 7$"):
        load_refs(refs)
