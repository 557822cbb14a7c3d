"""A trained JRNet for evaluation and prediction, from a DeepSpeed checkpoint (any ZeRO stage, any number of
ranks) or from an exported `model.pt`. Frozen parts left out of checkpoints (the backbone trunk, GloVe vectors)
come back from where the config says they live: the local weights file and the shards' glove.npy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from jrnet import checkpoint
from jrnet.config import Config, config_from_dict
from jrnet.data import DataError, ShardSet
from jrnet.model import JRNet, build_jrnet, check_trunk
from jrnet.vocab import Vocab


class LoadError(ValueError):
    """A model that cannot be loaded as asked: missing or damaged checkpoint, wrong shards, another trunk."""


@dataclass
class Trained:
    model: JRNet
    cfg: Config
    vocab: Vocab


def load(path: str | Path, shards: str | Path | None = None) -> Trained:
    """From an exported file (self-contained) or a checkpoint (needs the shards: vocabulary, GloVe vectors).

    A frozen trunk left out of the checkpoint is rebuilt as training built it (weights file or seed) and checked
    against the checkpoint's record of it; a mismatch is refused, never evaluated silently.
    """
    try:
        return _load(Path(path), shards)
    except (checkpoint.CheckpointError, DataError, ValueError) as e:
        raise LoadError(str(e)) from e


def _load(path: Path, shards: str | Path | None) -> Trained:
    if path.is_file():
        blob = torch.load(path, map_location="cpu", weights_only=True)
        cfg = config_from_dict(blob["config"])
        cfg.model.backbone_weights = None  # every weight is in the file
        model = JRNet(cfg.model, len(blob["vocab"]))
        model.load_state_dict(blob["state_dict"])
        return Trained(model.eval(), cfg, Vocab(blob["vocab"]))
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    folder = checkpoint.find(path)
    meta = checkpoint.meta(folder)
    cfg = config_from_dict(meta["config"])
    if shards is None:
        raise ValueError(f"{path} is a DeepSpeed checkpoint: pass --shards (vocabulary and GloVe vectors)")
    shard_set = ShardSet.open(shards, cfg.data.dataset)
    model = build_jrnet(cfg, shard_set.vocab_size(), shard_set.glove(cfg.model.glove))
    check_trunk(cfg, model.backbone.trunk, meta.get("trunk", {}), str(folder))
    state = get_fp32_state_dict_from_zero_checkpoint(str(folder.parent), tag=folder.name)
    missing, unexpected = model.load_state_dict(state, strict=False)
    restored_elsewhere = {n for n, p in model.named_parameters() if not p.requires_grad}
    restored_elsewhere |= {n for n, _ in model.named_buffers() if n.startswith("backbone.trunk.")}
    lost = sorted(set(missing) - restored_elsewhere)
    if lost or unexpected:
        raise ValueError(f"{folder}: checkpoint does not fit the model: missing {lost[:3]}, extra {unexpected[:3]}")
    return Trained(model.eval(), cfg, shard_set.vocab())


def export(trained: Trained, out: Path) -> Path:
    """Consolidated fp32 weights, config and vocabulary in one file: no DeepSpeed, shards or backbone file."""
    blob = {"config": trained.cfg.to_dict(), "vocab": trained.vocab.words, "state_dict": trained.model.state_dict()}
    tmp = out.with_name(f".{out.name}.tmp")
    torch.save(blob, tmp)
    tmp.replace(out)
    return out
