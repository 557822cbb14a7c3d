"""Training step with the frozen-backbone feature cache vs from images, at the demo and paper configs.

    .venv/bin/python bench/feature_cache.py [--quick]

One optimizer step of JRNet (forward, backward, AdamW) on the same batch, once reading the image through the
frozen trunk and once reading the trunk's cached levels (as `data.feature_cache: true` does), interleaved
round by round. The frozen trunk must be frozen for a cache to be valid, so both configs run with
`freeze_backbone: true` here (the demo config itself trains its trunk and cannot use a cache). Data loading is
not included: reading a cached fp16 array replaces JPEG decoding, measured separately by bench/loader.py.
"""

from __future__ import annotations

import argparse
import warnings

import torch
from common import header, interleave, median, spread, table, timed

from jrnet.config import load_config
from jrnet.model import JRNet, mask_loss


def case(name: str, overrides: list[str], batch: int, rounds: int) -> list[object]:
    cfg = load_config(name, ["model.freeze_backbone=true", *overrides])
    torch.manual_seed(0)
    model = JRNet(cfg.model, vocab_size=1000).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    s = cfg.model.image_size
    image = torch.randn(batch, 3, s, s)
    tokens = torch.randint(2, 1000, (batch, cfg.data.max_words))
    mask = torch.rand(batch, s, s) > 0.8
    with torch.no_grad():
        cached = torch.cat(model.backbone.trunk_features(image), dim=1).half()

    def step(**inputs):
        loss = mask_loss(model(tokens, **inputs), mask)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step(image=image)  # warm-up
    step(cached=cached)
    times = interleave(
        {"images": lambda: timed(lambda: step(image=image)), "cache": lambda: timed(lambda: step(cached=cached))},
        rounds,
        label=name,
    )
    ratio = median(times["images"]) / median(times["cache"])
    return [
        name,
        batch,
        f"{median(times['images']):.3f} ({spread(times['images'])})",
        f"{median(times['cache']):.3f} ({spread(times['cache'])})",
        f"{ratio:.2f}x",
    ]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(2)
    header(
        "Feature cache: training step from images vs from cached trunk levels",
        "seconds per optimizer step (forward + backward + AdamW), median of interleaved rounds, 2 threads",
    )
    rounds = 2 if args.quick else 5
    # The demo's colour maps and decoder skip read the image, which a cache leaves out.
    demo_on_cache = ["model.colour_channels=false", "model.decoder_skip=null"]
    rows = [case("demo", demo_on_cache, 32, rounds * 2), case("paper_448", [], 2, rounds)]
    if not args.quick:
        rows.append(case("paper_576", [], 2, rounds))
    print()
    print(table(rows, ["config", "batch", "images s/step (min..max)", "cache s/step (min..max)", "speed-up"]))


if __name__ == "__main__":
    main()
