"""The frozen-backbone feature cache: same loss as the image path, and refusals when it would be wrong."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from distributed_run import launch, losses
from shard_server import ShardServer

from jrnet.backbone import build_trunk
from jrnet.config import ConfigError, load_config
from jrnet.feature_cache import open_cache, write_feature_cache
from jrnet.model import JRNet, mask_loss, model_kwargs
from jrnet.prep.shard import main as shard_main
from jrnet.shards import DataError, ShardSet
from jrnet.stream import LoaderPlan, train_loader


@pytest.fixture(scope="module")
def cached(synthetic_shards, tmp_path_factory):
    """A copy of the tiny shards with a feature cache for the tiny config and a saved trunk."""
    root = tmp_path_factory.mktemp("cached")
    shards = root / "shards"
    shutil.copytree(synthetic_shards, shards)
    weights = root / "trunk.pth"
    torch.manual_seed(1)
    torch.save(build_trunk(load_config("tiny").model).state_dict(), weights)
    cfg = load_config("tiny", [f"model.backbone_weights={weights}", "data.workers=0"])
    write_feature_cache(cfg, shards / "synthetic")
    return shards, weights, cfg


def test_cached_loss_equals_image_loss(cached):
    shards, _, cfg = cached
    images = ShardSet.open(shards, "synthetic")
    features = open_cache(images, cfg)
    plan = LoaderPlan.make(cfg, images.split("train")["samples"], 1)
    torch.manual_seed(0)
    model = JRNet(cfg.model, images.vocab_size()).eval()  # eval: dropout off, so only the inputs differ
    batches = 0
    for a, b in zip(train_loader(cfg, images, plan, 0), train_loader(cfg, features, plan, 0), strict=True):
        assert torch.equal(a["tokens"], b["tokens"]) and torch.equal(a["mask"], b["mask"])
        assert "image" in a and "levels" in b and "image" not in b
        with torch.no_grad():
            from_images = mask_loss(model(**model_kwargs(a, "cpu")), a["mask"])
            from_cache = mask_loss(model(**model_kwargs(b, "cpu")), b["mask"])
        assert from_cache.item() == pytest.approx(from_images.item(), rel=2e-3)  # fp16 storage
        batches += 1
    assert batches == plan.batches_per_epoch


def test_cache_refuses_what_would_make_it_wrong(cached, tmp_path):
    shards, weights, cfg = cached
    images = ShardSet.open(shards, "synthetic")
    with pytest.raises(ConfigError, match="freeze_backbone is false"):
        open_cache(images, load_config("tiny", [f"model.backbone_weights={weights}", "model.freeze_backbone=false"]))
    with pytest.raises(ConfigError, match="needs model.backbone_weights"):
        open_cache(images, load_config("tiny"))
    other = tmp_path / "other.pth"
    torch.save(build_trunk(cfg.model).state_dict(), other)  # a new random init: other weights
    with pytest.raises(DataError, match="weights_sha256"):
        open_cache(images, load_config("tiny", [f"model.backbone_weights={other}"]))
    with pytest.raises(DataError, match="image_size: cache 32 vs run 48"):
        open_cache(images, load_config("tiny", [f"model.backbone_weights={weights}", "model.image_size=48"]))


def test_training_from_the_cache(cached, tmp_path):
    shards, weights, _ = cached
    args = [
        "--config",
        "tiny",
        "--shards",
        str(shards),
        "--output",
        str(tmp_path),
        "data.feature_cache=true",
        f"model.backbone_weights={weights}",
        "--max-steps",
        "3",
    ]
    launch(args, ranks=1)
    assert sorted(losses(tmp_path)) == [1, 2, 3]
    assert json.loads((tmp_path / "eval.json").read_text())["splits"]["val"]["samples"] > 0


def test_resharding_makes_the_cache_stale(cached, synthetic_root, tmp_path):
    shards, _, cfg = cached
    copy = tmp_path / "shards"
    shutil.copytree(shards, copy)
    argv = ["synthetic", "--data-root", str(synthetic_root), "--out", str(copy), "--workers", "1"]
    assert shard_main([*argv, "--samples-per-shard", "5"]) == 0  # other shards, same images
    with pytest.raises(DataError, match=r"feature cache .* is stale: the image shards were written again"):
        open_cache(ShardSet.open(copy, "synthetic"), cfg)
    assert open_cache(ShardSet.open(shards, "synthetic"), cfg).manifest["features"]  # the untouched copy still fits


def test_cache_made_from_shards_over_http_equals_the_local_one(cached, synthetic_shards, tmp_path):
    """`pipeline/shard.py synthetic --features CONFIG --shards URL`: byte for byte the cache made beside local
    shards; copied beside the served shards, a run reading them over HTTP finds it."""
    shards, weights, cfg = cached
    config_file = tmp_path / "features.yaml"
    config_file.write_text(f"extends: tiny\nmodel:\n  backbone_weights: {weights}\n")
    with ShardServer(synthetic_shards) as s:
        argv = ["synthetic", "--features", str(config_file), "--shards", s.url, "--out", str(tmp_path / "out")]
        assert shard_main(argv) == 0
    made, local = tmp_path / "out" / "synthetic" / "features", shards / "synthetic" / "features"
    tars = sorted(p.relative_to(made) for p in made.rglob("*.tar"))
    assert tars and tars == sorted(p.relative_to(local) for p in local.rglob("*.tar"))
    assert all((made / tar).read_bytes() == (local / tar).read_bytes() for tar in tars)
    with ShardServer(shards) as s:  # the local copy holds the cache beside the image shards
        features = open_cache(ShardSet.open(s.url, "synthetic", cfg.data), cfg)
        assert features.manifest["features"] == open_cache(ShardSet.open(shards, "synthetic"), cfg).manifest["features"]
        assert len(list(features.samples(features.entries("val")[0]))) > 0
