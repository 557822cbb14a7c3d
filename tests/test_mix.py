"""Weighted dataset mixes: each dataset's share follows its weight, one vocabulary for the mix, exact mid-epoch
resume (in the loader and in a 2-rank run), one evaluation table row per dataset and split, and the config
rules for `data.dataset` / `data.datasets`."""

from __future__ import annotations

import json
import shutil

import pytest
from distributed_run import launch, losses, run_args
from test_data import write_shards

from jrnet.config import ConfigError, load_config
from jrnet.mix import Mix
from jrnet.stream import LoaderPlan, TrainStream, train_loader

MIX = "data.datasets={a: 1, b: 1}"


@pytest.fixture(scope="module")
def two_sets(tmp_path_factory):
    """Datasets a and b, 256 refs each in 32 shards, whose vocabularies share one word ('circle')."""
    root = tmp_path_factory.mktemp("two_sets")
    write_shards(root, shards=32, per_shard=8, dataset="a", words=("red", "circle"))
    write_shards(root, shards=32, per_shard=8, dataset="b", words=("blue", "circle"))
    return root


def config(*overrides):
    base = ["data.workers=2", "train.global_batch_size=8", "model.image_size=16", "data.max_words=8"]
    return load_config("tiny", [*base, *overrides])


def mix_batches(monkeypatch, root, cfg, rank, world, skip=0):
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("WORLD_SIZE", str(world))
    data = Mix.open(root, cfg)
    plan = LoaderPlan.make(cfg, data.train_samples("train"), world)
    return [(b["part"].tolist(), b["tokens"][:, :2].tolist()) for b in train_loader(cfg, data, plan, 0, skip)], plan


@pytest.mark.parametrize("weights,share_a", [("{a: 1, b: 1}", 0.5), ("{a: 3, b: 1}", 0.75)])
def test_share_of_each_dataset_follows_the_weights(two_sets, monkeypatch, weights, share_a):
    """Over the first 64 batches of both ranks (512 samples) the share of `a` is within 0.07 of its weight's
    share: about 3 standard deviations of 512 independent draws."""
    cfg = config(f"data.datasets={weights}")
    parts = []
    for rank in (0, 1):
        batches, plan = mix_batches(monkeypatch, two_sets, cfg, rank, 2)
        assert len(batches) == plan.batches_per_epoch == 64
        parts += [p for part, _ in batches for p in part]
    assert len(parts) == 512
    assert abs(parts.count(0) / len(parts) - share_a) < 0.07, parts.count(0)


def test_one_vocabulary_for_the_mix(two_sets, monkeypatch):
    cfg = config(MIX)
    data = Mix.open(two_sets, cfg)
    assert data.vocab.words == ["<pad>", "<unk>", "red", "circle", "blue"]  # a's words, then b's new ones
    batches, _ = mix_batches(monkeypatch, two_sets, cfg, 0, 2)
    rows = [(p, t) for parts, tokens in batches for p, t in zip(parts, tokens, strict=True)]
    assert {tuple(t) for p, t in rows if p == 0} == {(2, 3)}  # red circle
    assert {tuple(t) for p, t in rows if p == 1} == {(4, 3)}  # blue circle, b's ids 2, 3 mapped to 4, 3
    assert [label for label, *_ in data.eval_targets(["train"])] == ["a/train", "b/train"]


@pytest.mark.parametrize("skip", [1, 5])
def test_mix_resumes_mid_epoch_with_the_same_draws(two_sets, monkeypatch, skip):
    cfg = config(MIX)
    full, _ = mix_batches(monkeypatch, two_sets, cfg, 1, 2)
    resumed, _ = mix_batches(monkeypatch, two_sets, cfg, 1, 2, skip=skip)
    assert resumed == full[skip:]


def test_changed_mix_restarts_the_epoch_and_says_so(two_sets):
    old, new = config(MIX), config("data.datasets={a: 1, b: 2}")
    plan = LoaderPlan.make(old, 512, 2)
    before = TrainStream(old, Mix.open(two_sets, old), plan, 2)
    before.batch_in_epoch = 5
    after = TrainStream(new, Mix.open(two_sets, new), plan, 2)
    message = after.load_state_dict(before.state_dict())
    assert after.batch_in_epoch == 0 and "datasets" in message and "'b': 2.0" in message


def test_dataset_and_datasets_exclude_each_other(tmp_path):
    with pytest.raises(ConfigError, match="mutually exclusive"):
        load_config("tiny", ["data.dataset=unc", "data.datasets={unc: 1, gref: 0.5}"])
    with pytest.raises(ConfigError, match="weights must be > 0"):
        load_config("tiny", ["data.datasets={unc: 1, gref: 0}"])
    mixed = load_config("tiny", ["data.datasets={unc: 1, unc+: 1, gref: 0.5}"])  # the command line beats the file
    assert mixed.data.dataset is None and mixed.data.mix() == {"unc": 1.0, "unc+": 1.0, "gref": 0.5}
    both = tmp_path / "both.yaml"
    both.write_text("data:\n  dataset: unc\n  datasets: {unc: 1, gref: 1}\n")
    with pytest.raises(ConfigError, match=f"{both}: data.dataset and data.datasets are mutually exclusive"):
        load_config(both)


@pytest.fixture(scope="module")
def mixed_shards(synthetic_shards, tmp_path_factory):
    """`synthetic` (seed 0) and `shapes` (another generated set, seed 1: another vocabulary order) side by side."""
    from jrnet.prep.shard import main

    root = tmp_path_factory.mktemp("mixed")
    shutil.copytree(synthetic_shards / "synthetic", root / "synthetic")
    other = tmp_path_factory.mktemp("other")
    argv = ["synthetic", "--data-root", str(other / "data"), "--out", str(other), "--num-images", "30", "--seed", "1"]
    assert main([*argv, "--workers", "1", "--samples-per-shard", "8"]) == 0
    shutil.copytree(other / "synthetic", root / "shapes")
    return root


@pytest.mark.slow
def test_mix_stop_and_resume_equals_straight_run(mixed_shards, tmp_path):
    mix = "data.datasets={synthetic: 1, shapes: 1}"
    launch(run_args(mixed_shards, tmp_path / "straight", mix))
    common = run_args(mixed_shards, tmp_path / "resumed", mix)
    launch([*common, "--max-steps", "3"])
    second = launch([*common, "--resume", "auto"])
    assert "exact data position" in second.stdout + second.stderr
    straight = losses(tmp_path / "straight")
    assert sorted(straight) == [1, 2, 3, 4, 5, 6] and losses(tmp_path / "resumed") == straight
    table = json.loads((tmp_path / "straight" / "eval.json").read_text())["splits"]
    assert sorted(table) == ["shapes/val", "synthetic/val"]  # every dataset's eval split, one table
    args = ["--checkpoint", str(tmp_path / "straight"), "--shards", str(mixed_shards), "--split", "val"]
    evaluated = launch([*args, "--split", "shapes/testA"], ranks=1, module="jrnet.evaluate")
    rows = [line.split()[0] for line in evaluated.stdout.splitlines() if line.startswith(("shapes/", "synthetic/"))]
    assert rows == ["shapes/val", "synthetic/val", "shapes/testA"], evaluated.stdout
    saved = json.loads((tmp_path / "straight" / "evaluate.json").read_text())["splits"]
    assert saved["synthetic/val"]["samples"] == table["synthetic/val"]["samples"]  # every sentence, as in training
