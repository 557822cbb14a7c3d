"""Screen a demo-recipe candidate quickly: JRNet on preloaded tensors in one process, with val overall IoU per
expression kind along the way.

    .venv/bin/python bench/recipe_screen.py --shards shards [--config demo] [--steps 1600] [--eval-every 400]
        [--seed 0] [--val-refs N] [--kinds attribute ...] ['data.oversample={attribute: 0.3}'] [section.key=value ...]

The model, loss, optimizer groups and LR schedule are the training run's (`jrnet.model`, `jrnet.engine`); what
differs is only the plumbing: one process with 2 torch threads instead of 2 DeepSpeed ranks, the train split
decoded once into memory, batches drawn uniformly with replacement (seeded), and val scored at the model's input
size (S x S masks) instead of the original resolution. `--kinds` trains and scores only sentences of those
expression kinds; `data.oversample={KIND: SHARE}` (one kind) draws that share of every batch from refs of KIND, as
the training loader does (BENCHMARKS.md 8f); `data.flips` mirrors samples as the training loader does.
Same samples per second as `make demo` on this machine, within noise, so a curve here reads as minutes of the
demo. The figures in BENCHMARKS.md section 8 came from it.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict

import torch
import webdataset as wds

from jrnet.config import load_config
from jrnet.engine import param_groups, poly_lr_factor
from jrnet.mirror import Mirrors
from jrnet.model import build_jrnet, mask_loss
from jrnet.samples import decode_image, decode_mask, encode_tokens
from jrnet.shard_format import IMAGE, MASK, META
from jrnet.shards import ShardSet


def preload(shards: ShardSet, split: str, size: int, max_words: int, kinds: set[str] | None = None) -> list[tuple]:
    """(image uint8, mask at S x S, [(tokens, kind) per sentence]) per ref; only sentences of `kinds` if given."""
    refs = []
    for sample in wds.WebDataset(shards.urls(split), shardshuffle=False):
        meta = json.loads(sample[META])
        sentences = [
            (encode_tokens(s["tokens"], max_words), s.get("kind"))
            for s in meta["sentences"]
            if kinds is None or s.get("kind") in kinds
        ]
        if sentences:
            refs.append((decode_image(sample[IMAGE], size), decode_mask(sample[MASK], size), sentences))
    return refs


def batch_indices(refs: int, batch: int, draw: torch.Generator, pool: list[int], share: float) -> list[int]:
    """Uniform over the refs, except that about `share` of the batch is drawn from `pool` (oversampling)."""
    indices = torch.randint(refs, (batch,), generator=draw).tolist()
    if not share:
        return indices  # the draws of a screen without oversampling, unchanged
    picks = torch.rand(batch, generator=draw) < share
    return [
        pool[int(torch.randint(len(pool), (), generator=draw))] if pick else index
        for index, pick in zip(indices, picks.tolist(), strict=True)
    ]


@torch.no_grad()
def evaluate(model, refs: list[tuple], batch: int = 64) -> dict[str, float]:
    """Overall IoU (%) over every sentence, and per expression kind."""
    model.eval()
    items = [(image, mask, tokens, kind) for image, mask, sentences in refs for tokens, kind in sentences]
    inter, union = defaultdict(int), defaultdict(int)
    for start in range(0, len(items), batch):
        chunk = items[start : start + batch]
        logits = model(torch.stack([i[2] for i in chunk]), torch.stack([i[0] for i in chunk]))
        for pred, (_, mask, _, kind) in zip(logits[:, 0] > 0, chunk, strict=True):
            for key in ("all", kind):
                inter[key] += int((pred & mask).sum())
                union[key] += int((pred | mask).sum())
    model.train()
    return {key: round(100 * inter[key] / max(union[key], 1), 1) for key in inter}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shards", required=True)
    p.add_argument("--config", default="demo")
    p.add_argument("--steps", type=int, default=None, help="default: the config's train.total_steps")
    p.add_argument("--eval-every", type=int, default=400)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-refs", type=int, default=None, help="score only the first N val refs")
    p.add_argument("--kinds", nargs="+", default=None, help="train and score only these expression kinds")
    p.add_argument("overrides", nargs="*", help="section.key=value")
    args = p.parse_args()
    torch.set_num_threads(2)
    cfg = load_config(args.config, [*args.overrides, f"train.seed={args.seed}"])
    if len(cfg.data.oversample or {}) > 1:
        p.error(f"data.oversample={cfg.data.oversample}: a screen oversamples one kind")
    kind, share = next(iter((cfg.data.oversample or {"": 0.0}).items()))
    t = cfg.train
    steps = args.steps or t.total_steps
    shards = ShardSet.open(args.shards, cfg.data.dataset)
    kinds = set(args.kinds) if args.kinds else None
    train = preload(shards, cfg.data.train_split, cfg.model.image_size, cfg.data.max_words, kinds)
    val = preload(shards, cfg.data.eval_splits[0], cfg.model.image_size, cfg.data.max_words, kinds)[: args.val_refs]
    pool = [i for i, (_, _, sentences) in enumerate(train) if sentences[0][1] == kind]  # a ref's sentences share a kind
    if share and not pool:
        p.error(f"data.oversample: no {args.shards} {cfg.data.train_split} refs of kind {kind!r}")
    model = build_jrnet(cfg, shards.vocab_size())
    groups = param_groups(model, t.weight_decay, t.lr, t.trunk_lr_scale)
    optimizer = torch.optim.AdamW(groups, lr=t.lr, betas=tuple(t.betas), weight_decay=t.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: poly_lr_factor(step, steps, t.poly_power, t.warmup_steps)
    )
    draw = torch.Generator().manual_seed(args.seed)
    mirrors = Mirrors(cfg.data.flips, shards.vocab(), args.seed)  # `data.flips`, as the training loader applies it
    start = time.perf_counter()
    for step in range(1, steps + 1):
        images, masks, tokens = [], [], []
        for index in batch_indices(len(train), t.global_batch_size, draw, pool, share):
            image, mask, sentences = train[index]
            sentence = sentences[int(torch.randint(len(sentences), (1,), generator=draw))][0]
            sample = mirrors({"image": image, "mask": mask, "tokens": sentence, "ref_id": index}, epoch=step)
            images.append(sample["image"])
            masks.append(sample["mask"])
            tokens.append(sample["tokens"])
        loss = mask_loss(model(torch.stack(tokens), torch.stack(images)), torch.stack(masks), t.dice_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
        optimizer.step()
        schedule.step()
        if step % args.eval_every == 0 or step == steps:
            minutes = (time.perf_counter() - start) / 60
            print(json.dumps({"step": step, "minutes": round(minutes, 2), "overall_iou": evaluate(model, val)}))


if __name__ == "__main__":
    main()
