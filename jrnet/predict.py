"""Masks for your own image and sentence, or a gallery from the shards like the paper's qualitative figures.

    jrnet-predict --checkpoint CK --image IMG --text "the red circle on the left" [--out DIR]
    jrnet-predict --checkpoint CK --shards DIR --split val --limit 16 [--out DIR]
    jrnet-predict --checkpoint RUN --shards DIR --export FOLDER     # model.safetensors + config.json + vocab.json

CK: a run folder or a checkpoint folder (both need --shards), or an exported folder.
(`python -m jrnet.predict` is the same command.)
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from jrnet.cli import HelpFormatter, skip_final_collection
from jrnet.eval_stream import eval_loader
from jrnet.evaluate import predict_masks
from jrnet.inference import LoadError, Trained, autocast, export, inference_device, load
from jrnet.model import model_kwargs
from jrnet.preemption import EXIT_BAD_INPUT
from jrnet.samples import decode_image, encode_tokens
from jrnet.visualize import gallery, overlay_panel
from jrnet.vocab import tokenize


def unknown_words(trained: Trained, text: str) -> list[str]:
    """The words of `text`, tokenised as the shards were, that the model never saw (read as <unk>)."""
    return [word for word in tokenize(text) if word not in trained.vocab]


@torch.no_grad()
def predict_one(trained: Trained, image_bytes: bytes, text: str, device: torch.device) -> np.ndarray:
    """Boolean mask at the image's own resolution."""
    cfg = trained.cfg
    image = decode_image(image_bytes, cfg.model.image_size)[None].to(device)
    tokens = encode_tokens(trained.vocab.encode(text), cfg.data.max_words)[None].to(device)
    width, height = Image.open(io.BytesIO(image_bytes)).size
    with autocast(device):
        logits = trained.model(tokens, image)
    return predict_masks(logits, [(height, width)])[0].cpu().numpy()


@torch.no_grad()
def shard_gallery(trained: Trained, shards: str, split: str, limit: int, device: torch.device) -> Image.Image:
    cfg = trained.cfg
    cfg.data.eval_limit, cfg.data.workers = limit, 0
    data = trained.datasets(shards)
    # A mix's split is `unc/val`, or `val` for the first dataset that has one.
    targets = data.eval_targets([split.rpartition("/")[2]])
    _, part, tokens, name = next((t for t in targets if t[0] == split), targets[0])
    rows = []
    for batch in eval_loader(cfg, part.shards, name, batch_size=8, tokens=tokens):
        with autocast(device):
            logits = trained.model(**model_kwargs(batch, device))
        preds = predict_masks(logits, [m.shape for m in batch["masks"]])
        for jpg, gt, pred, raw in zip(batch["jpg"], batch["masks"], preds, batch["raw"], strict=True):
            rows.append(overlay_panel(jpg, gt.numpy(), pred.cpu().numpy(), raw))
    return gallery(rows[:limit])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="jrnet-predict", description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--checkpoint", required=True, help="run folder, checkpoint folder or exported folder")
    p.add_argument(
        "--shards", help="needed for a DeepSpeed checkpoint; the source of --split galleries (a folder or URL)"
    )
    p.add_argument("--image", help="an image file (with --text)")
    p.add_argument("--text", help="the referring sentence for --image")
    p.add_argument("--split", help="a gallery of this split's first refs (with --shards)")
    p.add_argument("--limit", type=int, default=16, help="refs in the gallery")
    p.add_argument("--out", default="predictions", help="folder for masks, overlays and galleries")
    p.add_argument("--export", metavar="FOLDER", help="write the model as an exported folder and stop")
    p.add_argument("--device", default="auto", help="auto (a GPU when there is one), cpu, cuda, cuda:1 ...")
    args = p.parse_args(argv)
    skip_final_collection()
    try:
        trained = load(args.checkpoint, args.shards)
    except LoadError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.export:
        print(f"wrote {export(trained, Path(args.export))}")
        return 0
    device = inference_device(args.device)
    trained.model.to(device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.image:
        if not args.text:
            p.error("--image needs --text")
        if unknown := unknown_words(trained, args.text):
            print(f"note: words not in the training vocabulary (read as <unk>): {', '.join(unknown)}")
        data = Path(args.image).read_bytes()
        mask = predict_one(trained, data, args.text, device)
        stem = Path(args.image).stem
        Image.fromarray(mask.astype(np.uint8) * 255).save(out / f"{stem}_mask.png")
        overlay_panel(data, None, mask, args.text).save(out / f"{stem}_overlay.png")
        print(f"wrote {out / f'{stem}_mask.png'} and {out / f'{stem}_overlay.png'} ({int(mask.sum())} pixels)")
    elif args.split:
        if not args.shards:
            p.error("--split needs --shards")
        path = out / f"gallery_{args.split.replace('/', '_')}.png"
        shard_gallery(trained, args.shards, args.split, args.limit, device).save(path)
        print(f"wrote {path}")
    else:
        p.error("give --image and --text, or --shards and --split, or --export")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
