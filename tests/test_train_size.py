"""`pipeline/shard.py --train-size S`: the train split stored at the model's input size, so training only decodes."""

from __future__ import annotations

import pytest
import torch

from jrnet.config import load_config
from jrnet.model import build_jrnet, mask_loss, model_kwargs
from jrnet.prep.shard import main as shard_main
from jrnet.shards import DataError, ShardSet
from jrnet.stream import LoaderPlan, train_loader

SIZE = 32  # the tiny config's model.image_size


@pytest.fixture(scope="module")
def resized_shards(synthetic_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("resized")
    argv = ["synthetic", "--data-root", str(synthetic_root), "--out", str(out), "--workers", "1"]
    assert shard_main([*argv, "--samples-per-shard", "8", "--train-size", str(SIZE)]) == 0
    return out


def sizes(shards, split: str) -> int:
    return sum(
        (shards / "synthetic" / s["name"]).stat().st_size
        for s in ShardSet.open(shards, "synthetic").split(split)["shards"]
    )


def test_train_split_is_stored_small_and_evaluation_splits_untouched(synthetic_shards, resized_shards):
    manifest = ShardSet.open(resized_shards, "synthetic").manifest
    assert manifest["options"]["train_size"] == SIZE
    assert sizes(resized_shards, "train") < sizes(synthetic_shards, "train") / 2
    original = ShardSet.open(synthetic_shards, "synthetic").manifest["splits"]["val"]["shards"]
    assert manifest["splits"]["val"]["shards"] == original  # byte-identical evaluation shards


def test_pre_resized_shards_train_like_resizing_at_load_time(synthetic_shards, resized_shards):
    """Same masks and tokens exactly; images differ only by the JPEG re-encoding of the small copy."""
    cfg = load_config("tiny", ["data.workers=0"])
    model = build_jrnet(cfg, ShardSet.open(synthetic_shards, "synthetic").vocab_size()).eval()
    losses = {}
    for name, root in (("load time", synthetic_shards), ("shard time", resized_shards)):
        shards = ShardSet.open(root, "synthetic")
        plan = LoaderPlan.make(cfg, shards.split("train")["samples"], 1)
        batches = list(train_loader(cfg, shards, plan, epoch=0))
        with torch.no_grad():
            losses[name] = [mask_loss(model(**model_kwargs(b, "cpu")), b["mask"]).item() for b in batches]
        losses[name + " batches"] = batches
    for a, b in zip(losses["load time batches"], losses["shard time batches"], strict=True):
        assert torch.equal(a["mask"], b["mask"]) and torch.equal(a["tokens"], b["tokens"])
        assert (a["image"].int() - b["image"].int()).abs().float().mean() < 6.0  # JPEG q90 4:2:0: mean |diff| < 6 / 255
    assert losses["shard time"] == pytest.approx(losses["load time"], rel=1e-2)


def test_a_model_size_other_than_the_stored_one_is_named_with_its_cost(resized_shards):
    shards = ShardSet.open(resized_shards, "synthetic")
    assert shards.resize_warning(load_config("tiny")) is None
    warning = shards.resize_warning(load_config("tiny", ["model.image_size=48"]))
    assert warning.startswith(f"{resized_shards / 'synthetic' / 'manifest.json'}: train images are stored at 32 x 32")
    assert warning.endswith("shard with --train-size 48 to save that")


def test_gpu_decode_batches_decode_in_the_input_step_to_the_loaders_pixels(resized_shards):
    """data.gpu_decode hands the model JPEG bytes and decodes them as one batch in `model_kwargs`; here on the
    CPU device (the nvJPEG kernel itself needs a GPU: untested on this machine)."""
    shards = ShardSet.open(resized_shards, "synthetic")
    plain = load_config("tiny", ["data.workers=0"])
    on_device = load_config("tiny", ["data.workers=0", "data.gpu_decode=true"])
    plan = LoaderPlan.make(plain, shards.split("train")["samples"], 1)
    first = next(iter(train_loader(plain, shards, plan, epoch=0)))
    encoded = next(iter(train_loader(on_device, shards, plan, epoch=0)))
    assert "image" not in encoded and len(encoded["jpeg"]) == plan.micro_batch
    assert torch.equal(model_kwargs(encoded, "cpu")["image"], first["image"])


def test_gpu_decode_needs_images_stored_at_the_models_size(synthetic_shards):
    with pytest.raises(DataError, match="data.gpu_decode needs the train images stored at model.image_size=32"):
        ShardSet.open(synthetic_shards, "synthetic").check_gpu_decode(load_config("tiny", ["data.gpu_decode=true"]))
