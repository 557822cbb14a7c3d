"""A trained JRNet for evaluation and prediction, from a DeepSpeed checkpoint (any ZeRO stage, any number of
ranks) or from an exported `model.pt`. Frozen parts left out of checkpoints (the backbone trunk, GloVe vectors)
come back from where the config says they live: the local weights file and the shards' glove.npy.
"""

from __future__ import annotations

from pathlib import Path

import torch

from jrnet import checkpoint
from jrnet.config import Config, config_from_dict
from jrnet.data import ShardSet
from jrnet.model import JRNet


def checkpoint_folder(path: str | Path) -> Path:
    """A run folder, its checkpoints/ folder, or one step folder -> the step folder."""
    path = Path(path)
    for candidate in (path / "checkpoints", path):
        if (candidate / checkpoint.LATEST).is_file():
            return checkpoint.latest(candidate)
    if (path / "meta.json").is_file():
        return path
    raise FileNotFoundError(f"{path}: no complete checkpoint (no meta.json, no latest marker)")


def checkpoint_config(path: str | Path) -> Config:
    path = Path(path)
    if path.is_file():
        return config_from_dict(torch.load(path, map_location="cpu", weights_only=False)["config"])
    return config_from_dict(checkpoint.meta(checkpoint_folder(path))["config"])


def export_model(path: str | Path, shards: ShardSet, out: Path) -> Path:
    """Consolidated fp32 weights + config in one file: no DeepSpeed, shards or backbone file needed to load it."""
    model, cfg = load_model(path, shards)
    torch.save(
        {
            "config": cfg.to_dict(),
            "vocab_size": model.text.embedding.num_embeddings,
            "state_dict": model.state_dict(),
        },
        out,
    )
    return out


def load_model(path: str | Path, shards: ShardSet | None = None, overrides: dict | None = None) -> tuple[JRNet, Config]:
    path = Path(path)
    if path.is_file():
        blob = torch.load(path, map_location="cpu", weights_only=False)
        cfg = config_from_dict(blob["config"])
        model = JRNet(_frozen_free(cfg).model, blob["vocab_size"])
        model.load_state_dict(blob["state_dict"])
        return model.eval(), cfg
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    folder = checkpoint_folder(path)
    cfg = checkpoint_config(folder)
    if shards is None:
        raise ValueError("loading a DeepSpeed checkpoint needs the shards (vocabulary size, GloVe vectors)")
    model = JRNet(cfg.model, shards.vocab_size(), shards.glove())
    state = get_fp32_state_dict_from_zero_checkpoint(str(folder.parent), tag=folder.name)
    missing, unexpected = model.load_state_dict(state, strict=False)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    trunk_buffers = {n for n, _ in model.named_buffers() if n.startswith("backbone.trunk.")}
    lost = sorted(set(missing) - frozen - trunk_buffers)
    if lost or unexpected:
        raise RuntimeError(
            f"{folder}: checkpoint does not fit the model: missing {lost[:3]}, unexpected {unexpected[:3]}"
        )
    return model.eval(), cfg


def _frozen_free(cfg: Config) -> Config:
    """An exported file carries every weight: do not look for the backbone file again."""
    cfg.model.backbone_weights = None
    return cfg
