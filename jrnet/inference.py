"""A trained JRNet for evaluation and prediction, from a DeepSpeed checkpoint (any ZeRO stage, any number of
ranks) or from an exported folder. Frozen parts left out of checkpoints (the backbone trunk, GloVe vectors)
come back from where the config says they live: the local weights file (or the seed) and the shards' glove.npy.

An export is a folder anyone can load without DeepSpeed, shards or a backbone file: `model.safetensors` (every
weight, fp32), `config.json` and `vocab.json`, read back by `JRNet.from_pretrained(folder)`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from jrnet import checkpoint
from jrnet.config import Config, config_from_dict
from jrnet.fileio import write_atomic_text
from jrnet.mix import Mix
from jrnet.model import CONFIG, VOCAB, WEIGHTS, JRNet, build_jrnet, check_trunk
from jrnet.shards import DataError
from jrnet.vocab import Vocab


class LoadError(ValueError):
    """A model that cannot be loaded as asked: missing or damaged checkpoint, wrong shards, another trunk."""


@dataclass
class Trained:
    model: JRNet
    cfg: Config
    vocab: Vocab
    data: Mix | None = None  # the run's datasets (a checkpoint loaded with shards); None for an exported folder

    def datasets(self, shards: str | Path) -> Mix:
        """The run's datasets: those it was loaded with, or (an exported model) read from `shards`."""
        return self.data or Mix.open(shards, self.cfg, features=False)


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
    if (path / WEIGHTS).is_file():
        model = JRNet.from_pretrained(path)
        return Trained(model, model.config, Vocab.from_file(path / VOCAB))
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    folder = checkpoint.find(path)
    meta = checkpoint.meta(folder)
    cfg = config_from_dict(meta["config"])
    if shards is None:
        raise ValueError(f"{path} is a DeepSpeed checkpoint: pass --shards (vocabulary and GloVe vectors)")
    data = Mix.open(shards, cfg, features=False)  # evaluation reads the images: the trunk is in the model
    model = build_jrnet(cfg, data.vocab_size(), data.glove(cfg.model.glove))
    check_trunk(cfg, model.backbone.trunk, meta.get("trunk", {}), str(folder))
    state = get_fp32_state_dict_from_zero_checkpoint(str(folder.parent), tag=folder.name)
    missing, unexpected = model.load_state_dict(state, strict=False)
    restored_elsewhere = {n for n, p in model.named_parameters() if not p.requires_grad}
    restored_elsewhere |= {n for n, _ in model.named_buffers() if n.startswith("backbone.trunk.")}
    lost = sorted(set(missing) - restored_elsewhere)
    if lost or unexpected:
        raise ValueError(f"{folder}: checkpoint does not fit the model: missing {lost[:3]}, extra {unexpected[:3]}")
    return Trained(model.eval(), cfg, data.vocab, data)


def export(trained: Trained, folder: Path) -> Path:
    """Every weight (fp32) with its config and vocabulary; the weights file is written last."""
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic_text(folder / CONFIG, trained.cfg.dumps())
    write_atomic_text(folder / VOCAB, trained.vocab.to_json())
    tensors = {name: t.detach().float().contiguous() for name, t in trained.model.state_dict().items()}
    temporary = folder / f".{WEIGHTS}.tmp"
    save_file(tensors, temporary)
    temporary.replace(folder / WEIGHTS)
    return folder


def inference_device(requested: str) -> torch.device:
    """`auto`: the first GPU when there is one, else the CPU."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def autocast(device: torch.device):
    """bf16 autocast on GPUs that have it (fp16 on older ones), none on the CPU: fp32 there."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
