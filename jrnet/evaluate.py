"""Distributed evaluation over every sentence of a split, at each image's original resolution.

Library use: `evaluate(...)` from the training loop. Command line:
    python -m jrnet.evaluate --checkpoint CK --shards DIR --split val [--split testA ...]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from jrnet.config import Config
from jrnet.data import ShardSet, eval_loader
from jrnet.distributed import any_rank
from jrnet.metrics import IoUAccumulator
from jrnet.visualize import overlay_panel


def predict_masks(logits: torch.Tensor, sizes: list[tuple[int, int]]) -> list[torch.Tensor]:
    """Logits (B, 1, S, S) -> boolean masks at each sample's original (H, W): bilinear, then > 0."""
    return [F.interpolate(logits[i : i + 1].float(), size=size, mode="bilinear", align_corners=False)[0, 0] > 0
            for i, size in enumerate(sizes)]


@torch.no_grad()
def evaluate_split(forward, cfg: Config, shards: ShardSet, split: str, device, dtype, batch_size: int,
                   overlays: int = 0) -> tuple[dict, list]:
    """Every rank must call this: ranks that run out of data keep pace with dummy batches (ZeRO-3 gathers)."""
    acc = IoUAccumulator()
    panels = []
    batches = iter(eval_loader(cfg, shards, split, batch_size))
    dummy_tokens = torch.zeros(1, cfg.data.max_words, dtype=torch.long, device=device)
    dummy_image = torch.zeros(1, 3, cfg.model.image_size, cfg.model.image_size, device=device, dtype=dtype)
    while True:
        batch = next(batches, None)
        if not any_rank(batch is not None):
            break
        if batch is None:
            forward(dummy_tokens, dummy_image)
            continue
        logits = forward(batch["tokens"].to(device), batch["image"].to(device, dtype))
        preds = predict_masks(logits, [tuple(m.shape) for m in batch["masks"]])
        for pred, mask, raw, jpg in zip(preds, batch["masks"], batch["raw"], batch["jpg"], strict=True):
            iou = acc.update(pred.cpu(), mask)[0]
            if len(panels) < overlays:
                panels.append((overlay_panel(jpg, mask.numpy(), pred.cpu().numpy(), f"{raw}  (IoU {iou:.2f})"), raw))
    return acc.all_reduce().summary(), panels
