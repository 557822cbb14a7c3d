"""Distributed evaluation over every sentence of a split, at each image's original resolution.

Library use: `evaluate_split(...)` from the training loop. Command line (one or several ranks; each rank
uses its own GPU with bf16 autocast when there is one, else the CPU in fp32):
    jrnet-evaluate --checkpoint CK --shards DIR --split val [--split testA ...]
    deepspeed --num_gpus 8 --module jrnet.evaluate ...
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from jrnet.config import Config
from jrnet.distributed import max_over_ranks
from jrnet.eval_stream import eval_loader
from jrnet.metrics import Breakdown, IoUAccumulator
from jrnet.model import model_kwargs
from jrnet.preemption import EXIT_BAD_INPUT, StopSignal
from jrnet.shards import DataError, ShardSet
from jrnet.visualize import overlay_panel


def predict_masks(logits: torch.Tensor, sizes: list[tuple[int, int]]) -> list[torch.Tensor]:
    """Logits (B, 1, S, S) -> boolean masks at each sample's original (H, W): bilinear, then > 0."""
    return [
        F.interpolate(logits[i : i + 1].float(), size=size, mode="bilinear", align_corners=False)[0, 0] > 0
        for i, size in enumerate(sizes)
    ]


def blank_inputs(cfg: Config, shards: ShardSet, device) -> dict:
    tokens = torch.zeros(1, cfg.data.max_words, dtype=torch.long, device=device)
    if "features" in shards.manifest:
        c, s = sum(shards.manifest["features"]["channels"]), cfg.model.feature_size
        return {"tokens": tokens, "cached": torch.zeros(1, c, s, s, device=device)}
    s = cfg.model.image_size
    return {"tokens": tokens, "image": torch.zeros(1, 3, s, s, device=device, dtype=torch.uint8)}


@torch.no_grad()
def evaluate_split(
    forward,
    cfg: Config,
    shards: ShardSet,
    split: str,
    device,
    batch_size: int,
    overlays: int = 0,
    stop: StopSignal | None = None,
    tokens: torch.Tensor | None = None,
) -> tuple[dict | None, list]:
    """The split's metrics (with `by_length` and `by_kind` breakdowns) and up to `overlays` gallery panels, half
    of them failures (IoU <= 0.5) when there are any.

    Every rank must call this: ranks that run out of data keep pace with dummy batches (ZeRO-3 gathers). A stop
    signal on any rank ends the evaluation at the next batch on every rank: the summary is then None.
    `tokens` maps a mixed run's dataset's token ids into the run's vocabulary (jrnet/mix.py).
    """
    acc, breakdown, gallery = IoUAccumulator(), Breakdown(), GalleryPicker(overlays)
    batches = iter(eval_loader(cfg, shards, split, batch_size, tokens))
    dummy = None  # a rank out of data repeats its last batch, or a blank one if it never had any
    while True:
        batch = next(batches, None)
        more, stopping = max_over_ranks(int(batch is not None), int(stop is not None and stop.received is not None))
        if stopping:
            return None, []
        if not more:
            break
        if batch is None:
            forward(**(dummy or blank_inputs(cfg, shards, device)))
            continue
        dummy = model_kwargs(batch, device)  # also what a rank out of data repeats
        logits = forward(**dummy)
        preds = predict_masks(logits, [tuple(m.shape) for m in batch["masks"]])
        items = zip(preds, batch["masks"], batch["raw"], batch["jpg"], batch["words"], batch["kind"], strict=True)
        for pred, mask, raw, jpg, words, kind in items:
            pred = pred.cpu()
            intersection, union = int((pred & mask).sum()), int((pred | mask).sum())
            iou = acc.add(intersection, union)
            breakdown.add(words, kind, intersection, union)
            if gallery.wants(iou):
                gallery.add(iou, overlay_panel(jpg, mask.numpy(), pred.numpy(), f"{raw}  (IoU {iou:.2f})"), raw)
    return {**acc.all_reduce().summary(), **breakdown.all_reduce().summary()}, gallery.panels()


class GalleryPicker:
    """Failures first (half of the gallery when there are enough), then successes; panels are rendered only
    for sentences that can still be picked."""

    def __init__(self, size: int):
        self.size = size
        self.failures: list = []
        self.successes: list = []

    def _bin(self, iou: float) -> list:
        return self.failures if iou <= 0.5 else self.successes

    def wants(self, iou: float) -> bool:
        return len(self._bin(iou)) < self.size

    def add(self, iou: float, panel, caption: str) -> None:
        self._bin(iou).append((panel, caption))

    def panels(self) -> list:
        failures = self.failures[: max(self.size // 2, self.size - len(self.successes))]
        return failures + self.successes[: self.size - len(failures)]


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json
    import logging
    import sys
    from pathlib import Path

    from jrnet.cli import HelpFormatter, skip_final_collection
    from jrnet.distributed import init_distributed
    from jrnet.inference import LoadError, autocast, load
    from jrnet.metrics import format_table
    from jrnet.visualize import gallery

    p = argparse.ArgumentParser(prog="jrnet-evaluate", description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--checkpoint", required=True, help="run folder, checkpoint folder, or exported folder")
    p.add_argument(
        "--shards", required=True, help="folder written by pipeline/shard.py (holds <dataset>/), or its URL / pipe:"
    )
    p.add_argument(
        "--split", dest="splits", action="append", help="repeatable (a mix: val, or unc/val); default: the config's"
    )
    p.add_argument("--batch-size", type=int, default=16, help="sentences per forward pass")
    p.add_argument("--output", default=None, help="JSON file for the results (default: beside the checkpoint)")
    p.add_argument("--limit", type=int, default=None, help="only the first N refs of each split")
    p.add_argument("--overlays", type=int, default=0, help="write a gallery of the first N sentences per split")
    p.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    skip_final_collection()
    logging.basicConfig(level=logging.WARNING)
    try:
        trained = load(args.checkpoint, args.shards)
    except LoadError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    env = init_distributed()
    cfg = trained.cfg
    cfg.data.eval_limit = args.limit
    model = trained.model.to(env.device)  # one GPU per rank (jrnet.distributed), else the CPU

    def forward(**inputs):
        with autocast(env.device):
            return model(**inputs)

    ck = Path(args.checkpoint)
    out = Path(args.output) if args.output else (ck if ck.is_dir() else ck.parent) / "evaluate.json"
    results = {}
    try:
        targets = trained.datasets(args.shards).eval_targets(args.splits or cfg.data.eval_splits)  # unc/val, ...
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    for label, part, tokens, split in targets:
        overlays = args.overlays if env.is_main else 0
        results[label], panels = evaluate_split(
            forward, cfg, part.shards, split, env.device, args.batch_size, overlays, tokens=tokens
        )
        if panels:
            gallery([panel for panel, _ in panels]).save(out.with_name(f"gallery_{label.replace('/', '_')}.png"))
    if env.is_main:
        print(format_table(results))
        out.write_text(json.dumps({"checkpoint": str(ck), "splits": results}, indent=2))
        print(f"wrote {out}" + (" and gallery_<split>.png beside it" if args.overlays else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
