"""Does a trained model count? Overall IoU of the ordinal sentences ("the third circle from the left") by rank.

    .venv/bin/python bench/ordinal_ranks.py --checkpoint runs/demo --shards shards [--split val]

The split is scored as `jrnet.evaluate` scores it (every sentence, masks at the original resolution); the ordinal
sentences are then grouped by their ordinal word and by the side counted from. "The first X from the left" is the
leftmost X, which the spatial extremes teach; every later rank needs the objects on one side counted.
"""

from __future__ import annotations

import re
from collections import defaultdict

import torch
from common import trained_model_parser

from jrnet.eval_stream import eval_loader
from jrnet.evaluate import predict_masks
from jrnet.inference import load
from jrnet.model import model_kwargs
from jrnet.prep.scenes import ORDINALS

RANK = re.compile(r"\b(" + "|".join(ORDINALS) + r")\b.* from the (\w+)")


@torch.no_grad()
def main() -> None:
    args = trained_model_parser(__doc__).parse_args()
    torch.set_num_threads(1)
    trained = load(args.checkpoint, args.shards)
    shards = trained.datasets(args.shards).parts[0].shards
    totals = defaultdict(lambda: [0, 0, 0])  # group -> intersection, union, sentences
    for batch in eval_loader(trained.cfg, shards, args.split, batch_size=64):
        preds = predict_masks(trained.model(**model_kwargs(batch, "cpu")), [tuple(m.shape) for m in batch["masks"]])
        for pred, mask, raw, kind in zip(preds, batch["masks"], batch["raw"], batch["kind"], strict=True):
            found = RANK.search(raw.lower()) if kind == "ordinal" else None
            if found is None:
                continue
            rank, side = found.groups()
            for group in (("rank", rank), ("side", side)):
                total = totals[group]
                total[0] += int((pred & mask).sum())
                total[1] += int((pred | mask).sum())
                total[2] += 1
    print(f"{args.checkpoint}, {args.split}: ordinal sentences, overall IoU by group")
    print("| group | value | sentences | overall IoU |")
    print("| --- | --- | ---: | ---: |")
    order = {word: i for i, word in enumerate(ORDINALS)}  # ranks in counting order, sides alphabetically
    rows = sorted(totals.items(), key=lambda kv: (kv[0][0], order.get(kv[0][1], len(ORDINALS)), kv[0][1]))
    for (group, value), (inter, union, n) in rows:
        print(f"| {group} | {value} | {n} | {100 * inter / max(union, 1):.2f} |")


if __name__ == "__main__":
    main()
