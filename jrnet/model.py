"""JRNet, top to bottom: backbone levels + words -> JRM -> CMMLF -> ASPP decoder -> mask logits.

The ablations of the paper (Tables 2 and 3) are the same class with other `model.variant` / `jrm_layers`.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn
from torchvision.io import ImageReadMode, decode_jpeg

from jrnet.backbone import Backbone
from jrnet.cmmlf import build_fusion, masked_mean
from jrnet.config import Config, ModelConfig, config_from_dict
from jrnet.decoder import MaskDecoder
from jrnet.fileio import file_sha256
from jrnet.jrm import JRM
from jrnet.text import TextEncoder

CONFIG, VOCAB, WEIGHTS = "config.json", "vocab.json", "model.safetensors"  # an exported model's folder


class JRNet(nn.Module):
    def __init__(self, cfg: ModelConfig, vocab_size: int, glove: np.ndarray | None = None):
        super().__init__()
        reasoning, fusion, use_glove, positional_encoding = cfg.variant_flags()
        self.image_size = cfg.image_size
        self.backbone = Backbone(cfg)
        self.text = TextEncoder(cfg, vocab_size, glove, use_glove)
        self.jrm = JRM(cfg, positional_encoding) if reasoning == "jrm" else None
        self.fusion = build_fusion(fusion, cfg)
        self.decoder = MaskDecoder(cfg)

    def forward(self, tokens: torch.Tensor, image: torch.Tensor | None = None, cached: torch.Tensor | None = None):
        """Logits (B, 1, S, S) at the input size S; `cached`: feature-cache levels instead of the image."""
        levels, skip = self.backbone(image, cached)
        words, valid = self.text(tokens)
        words = words.to(levels[0].dtype)
        if self.jrm is not None:
            visual, word_out = zip(*self.jrm(levels, words, valid), strict=True)
        else:
            visual, word_out = levels, [words] * len(levels)
        sentence = [masked_mean(x, valid) for x in word_out]
        logits = self.decoder(self.fusion(list(visual), sentence), skip)
        return F.interpolate(logits, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> JRNet:
        """An exported model (`jrnet-predict --export`), in eval mode, with its run config as `.config`."""
        folder = Path(folder)
        config = config_from_dict(json.loads((folder / CONFIG).read_text()))
        config.model.backbone_weights = None  # every weight is in the folder
        vocab_size = len(json.loads((folder / VOCAB).read_text())["words"])
        with warnings.catch_warnings():  # "random trunk" and "no GloVe" warnings: the weights come next
            warnings.simplefilter("ignore")
            model = cls(config.model, vocab_size)
        model.load_state_dict(load_file(folder / WEIGHTS))
        model.config = config
        return model.eval()


def build_jrnet(cfg: Config, vocab_size: int, glove: np.ndarray | None = None) -> JRNet:
    """JRNet initialised from `train.seed`: training (every rank), evaluation and prediction build the same
    random parts, which matters for the one part checkpoints leave out: a frozen trunk without a weights file."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.train.seed)
        return JRNet(cfg.model, vocab_size, glove)


def trunk_identity(cfg: Config, trunk: nn.Module) -> dict:
    """What the frozen trunk was, recorded in every checkpoint so that a rebuilt trunk can be checked.

    A trainable trunk is inside the checkpoint itself; a frozen one comes from a weights file or, without one,
    from the seed, and `state_sha256` pins its exact values either way.
    """
    m = cfg.model
    if not m.freeze_backbone:
        return {"source": "checkpoint"}
    digest = hashlib.sha256()
    for name, tensor in sorted(trunk.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    if m.backbone_weights:
        source = {"source": "weights", "weights": m.backbone_weights, "weights_sha256": file_sha256(m.backbone_weights)}
    else:
        source = {"source": "seed", "seed": cfg.train.seed}
    return {**source, "state_sha256": digest.hexdigest()}


def check_trunk(cfg: Config, trunk: nn.Module, recorded: dict, where: str) -> None:
    """Refuse a rebuilt trunk that is not the one training used, saying why."""
    if recorded.get("source") in (None, "checkpoint"):
        return
    if recorded["source"] == "weights":
        path = cfg.model.backbone_weights
        if not path or not Path(path).is_file():
            raise ValueError(f"{where}: trained with the frozen trunk {recorded['weights']}, which is not found here")
        if file_sha256(path) != recorded["weights_sha256"]:
            raise ValueError(f"{where}: {path} is not the trunk weights file training used (sha256 differs)")
    if trunk_identity(cfg, trunk)["state_sha256"] != recorded["state_sha256"]:
        raise ValueError(
            f"{where}: the rebuilt frozen trunk ({recorded['source']} {recorded.get('seed', '')}) differs from the "
            "one training used (another torch version initialises differently?): export the model where it trained"
        )


def model_kwargs(batch: dict, device) -> dict:
    """Keyword arguments of JRNet.forward for a batch from image shards or from the feature cache."""
    kwargs = {"tokens": batch["tokens"].to(device, non_blocking=True)}
    if "levels" in batch:
        kwargs["cached"] = batch["levels"].to(device, non_blocking=True)
    elif "jpeg" in batch:  # data.gpu_decode: one batched nvJPEG call on a GPU (images all stored at one size)
        kwargs["image"] = torch.stack(decode_jpeg(batch["jpeg"], mode=ImageReadMode.RGB, device=device))
    else:  # uint8 as decoded: the model normalises it on the device
        kwargs["image"] = batch["image"].to(device, non_blocking=True)
    return kwargs


def mask_loss(logits: torch.Tensor, target: torch.Tensor, dice_weight: float = 0.0) -> torch.Tensor:
    """Per-pixel binary cross entropy (the paper's loss), plus `dice_weight` times the soft Dice loss averaged over
    samples; in fp32 (safe under bf16/fp16 autocast). Dice scores each object as a whole, so a mask that misses
    its object costs as much for a small object as for a large one, where the per-pixel loss barely notices."""
    logits, target = logits.float().squeeze(1), target.float()
    loss = F.binary_cross_entropy_with_logits(logits, target)
    if dice_weight:
        prob = logits.sigmoid().flatten(1)
        target = target.flatten(1)
        dice = (2 * (prob * target).sum(1) + 1) / (prob.sum(1) + target.sum(1) + 1)
        loss = loss + dice_weight * (1 - dice).mean()
    return loss
