"""Masks for your own image and sentence, or a gallery from the shards like the paper's qualitative figures.

    python -m jrnet.predict --checkpoint CK --image IMG --text "the red circle on the left" [--out DIR]
    python -m jrnet.predict --checkpoint CK --shards DIR --split val --limit 16 [--out DIR]
    python -m jrnet.predict --checkpoint RUN --shards DIR --export model.pt

CK: a run folder, a checkpoint folder (both need --shards) or an exported model.pt.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from jrnet.data import ShardSet, decode_image, encode_tokens, eval_loader, model_kwargs
from jrnet.evaluate import predict_masks
from jrnet.inference import LoadError, Trained, export, load
from jrnet.preemption import EXIT_BAD_INPUT
from jrnet.visualize import gallery, overlay_panel


@torch.no_grad()
def predict_one(trained: Trained, image_bytes: bytes, text: str) -> np.ndarray:
    """Boolean mask at the image's own resolution."""
    cfg = trained.cfg
    image = decode_image(image_bytes, cfg.model.image_size)[None]
    tokens = encode_tokens(trained.vocab.encode(text), cfg.data.max_words)[None]
    unknown = [w for w in text.lower().split() if w.isalpha() and w not in trained.vocab]
    if unknown:
        print(f"note: words not in the training vocabulary (read as <unk>): {', '.join(unknown)}")
    width, height = Image.open(io.BytesIO(image_bytes)).size
    return predict_masks(trained.model(tokens, image), [(height, width)])[0].numpy()


@torch.no_grad()
def shard_gallery(trained: Trained, shards: str, split: str, limit: int) -> Image.Image:
    cfg = trained.cfg
    cfg.data.eval_limit, cfg.data.workers = limit, 0
    rows = []
    for batch in eval_loader(cfg, ShardSet.open(shards, cfg.data.dataset), split, batch_size=8):
        logits = trained.model(**model_kwargs(batch, "cpu", torch.float32))
        preds = predict_masks(logits, [m.shape for m in batch["masks"]])
        for jpg, gt, pred, raw in zip(batch["jpg"], batch["masks"], preds, batch["raw"], strict=True):
            rows.append(overlay_panel(jpg, gt.numpy(), pred.numpy(), raw))
    return gallery(rows[:limit])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--shards", help="needed for a DeepSpeed checkpoint; the source of --split galleries")
    p.add_argument("--image")
    p.add_argument("--text")
    p.add_argument("--split")
    p.add_argument("--limit", type=int, default=16, help="refs in the gallery")
    p.add_argument("--out", default="predictions")
    p.add_argument("--export", help="write a self-contained model file and stop")
    args = p.parse_args(argv)
    try:
        trained = load(args.checkpoint, args.shards)
    except LoadError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.export:
        print(f"wrote {export(trained, Path(args.export))}")
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.image:
        if not args.text:
            p.error("--image needs --text")
        data = Path(args.image).read_bytes()
        mask = predict_one(trained, data, args.text)
        stem = Path(args.image).stem
        Image.fromarray(mask.astype(np.uint8) * 255).save(out / f"{stem}_mask.png")
        overlay_panel(data, None, mask, args.text).save(out / f"{stem}_overlay.png")
        print(f"wrote {out / f'{stem}_mask.png'} and {out / f'{stem}_overlay.png'} ({int(mask.sum())} pixels)")
    elif args.split:
        if not args.shards:
            p.error("--split needs --shards")
        path = out / f"gallery_{args.split}.png"
        shard_gallery(trained, args.shards, args.split, args.limit).save(path)
        print(f"wrote {path}")
    else:
        p.error("give --image and --text, or --shards and --split, or --export")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
