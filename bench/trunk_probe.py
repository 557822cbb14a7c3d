"""How much colour and shape the trunk's levels still hold: linear probes before and after training.

    .venv/bin/python bench/trunk_probe.py --checkpoint runs/demo --shards shards --data-root data [--images 600]

For every object of the generated set's first `--images` val/test images (colour read from its pixels, shape
from its category), the trunk's three levels at the object's centre cell are the features of two linear
classifiers (colour: 5 classes, shape: 4), trained on 70 % of the objects and scored on the rest. The same probe
runs on the trunk as initialised (the run's seed) and as trained. A trunk trained from scratch with the mask loss
alone can lose colour before any sentence asks for it (BENCHMARKS.md section 8).
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from PIL import Image

from jrnet.inference import load
from jrnet.model import build_jrnet
from jrnet.prep.refer import Refer, dataset_spec, ref_mask
from jrnet.prep.scenes import COLOURS, SHAPES

COLOUR_NAMES = list(COLOURS)
PALETTE = np.array([COLOURS[name] for name in COLOUR_NAMES], dtype=float)


def objects(data_root: str, images: int, size: int):
    """(image uint8 (3, S, S), [(centre cell fraction (y, x), colour index, shape index)]) per colour image."""
    refer = Refer.load(data_root, dataset_spec("synthetic"))
    by_image: dict[int, list[dict]] = {}
    for ann in refer.anns.values():
        by_image.setdefault(ann["image_id"], []).append(ann)
    held_out = sorted({ref["image_id"] for ref in refer.refs if ref["split"] != "train"})
    for image_id in held_out[:images]:
        info = refer.images[image_id]
        picture = Image.open(refer.image_path(info))
        if picture.mode != "RGB":
            continue  # grayscale and CMYK images: no colour to probe
        pixels = np.array(picture)
        found = []
        for ann in by_image[image_id]:
            mask = ref_mask(ann, info["height"], info["width"])
            ys, xs = np.nonzero(mask)
            colour = int(np.argmin(((PALETTE - pixels[mask].mean(0)) ** 2).sum(1)))
            found.append(((ys.mean() / mask.shape[0], xs.mean() / mask.shape[1]), colour, ann["category_id"] - 1))
        resized = Image.fromarray(pixels).resize((size, size), Image.BILINEAR)
        yield torch.from_numpy(np.array(resized)).permute(2, 0, 1), found


@torch.no_grad()
def features(model, scenes) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    model.eval()
    per_level, colours, shapes = [[], [], []], [], []
    for image, found in scenes:
        levels = model.backbone.trunk_features(image[None])
        h = levels[0].shape[-1]
        for (fy, fx), colour, shape in found:
            y, x = min(int(fy * h), h - 1), min(int(fx * h), h - 1)
            for i, level in enumerate(levels):
                per_level[i].append(level[0, :, y, x].numpy())
            colours.append(colour)
            shapes.append(shape)
    return [np.array(f) for f in per_level], np.array(colours), np.array(shapes)


def probe_accuracy(x: np.ndarray, y: np.ndarray, classes: int, seed: int = 0) -> float:
    """Held-out accuracy of a softmax classifier on standardised features (full-batch Adam, 500 steps)."""
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = torch.tensor(x[order], dtype=torch.float32), torch.tensor(y[order])
    cut = int(0.7 * len(x))
    x = (x - x[:cut].mean(0)) / (x[:cut].std(0) + 1e-5)
    torch.manual_seed(seed)
    linear = torch.nn.Linear(x.shape[1], classes)
    opt = torch.optim.Adam(linear.parameters(), lr=1e-2)
    for _ in range(500):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(linear(x[:cut]), y[:cut]).backward()
        opt.step()
    return (linear(x[cut:]).argmax(1) == y[cut:]).float().mean().item()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--shards", required=True)
    p.add_argument("--data-root", required=True, help="the generated set's refer layout (pipeline/shard.py synthetic)")
    p.add_argument("--images", type=int, default=600)
    args = p.parse_args()
    torch.set_num_threads(1)
    trained = load(args.checkpoint, args.shards)
    initial = build_jrnet(trained.cfg, len(trained.vocab.words))
    scenes = list(objects(args.data_root, args.images, trained.cfg.model.image_size))
    print(f"{sum(len(f) for _, f in scenes)} objects in {len(scenes)} colour images; chance: colour 0.20, shape 0.25")
    print("| trunk | level | colour probe accuracy | shape probe accuracy |")
    print("| --- | --- | ---: | ---: |")
    for name, model in (("initial", initial), ("trained", trained.model)):
        levels, colours, shapes = features(model, scenes)
        for i, x in enumerate(levels):
            row = f"| {name} | layer{i + 2} | {probe_accuracy(x, colours, len(COLOUR_NAMES)):.2f} |"
            print(f"{row} {probe_accuracy(x, shapes, len(SHAPES)):.2f} |", flush=True)
    print(json.dumps({"checkpoint": args.checkpoint, "objects": int(len(colours))}))


if __name__ == "__main__":
    main()
