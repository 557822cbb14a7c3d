"""Does a trained model read a word? Swap it for another of its kind and see whether the prediction moves.

    .venv/bin/python bench/word_swap.py --checkpoint runs/demo --shards shards [--split val] [--refs 250]

For every sentence of the generated set's split that names a colour (or a shape), the first such word is replaced
by the next colour (shape) in a fixed order: "the red square on the left" -> "the green square on the left".
A model that reads the word changes its prediction (to another object, or to nothing); one that ignores it keeps
it. Printed per expression kind and word class: mean IoU against the ground truth with the original and with the
swapped sentence, and the share of sentences whose two predictions agree (IoU > 0.8 between them).

Then, from the generator itself (no model): of the extreme-position expressions it can write with a colour or
shape word ("the red square on the left"), the share whose target is also the extreme without those words (the
leftmost of everything of its size class), i.e. where a model that ignores colour and shape is still right.
"""

from __future__ import annotations

import json
from collections import defaultdict
from itertools import islice

import numpy as np
import torch
import webdataset as wds
from common import trained_model_parser

from jrnet.inference import load
from jrnet.prep.expressions import DIRECTIONS, attribute_sets, is_extreme, matches
from jrnet.prep.scenes import ATTRIBUTES, COLOURS, SHAPES, sample_scene
from jrnet.samples import decode_image, decode_mask, encode_tokens
from jrnet.shard_format import IMAGE, MASK, META
from jrnet.shards import ShardSet

WORD_CLASSES = {"colour": list(COLOURS), "shape": list(SHAPES)}


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return int((a & b).sum()) / max(int((a | b).sum()), 1)


def swapped(words: list[str], group: list[str]) -> list[str] | None:
    """The sentence with its first word of `group` replaced by the next one of the group, or None."""
    for i, word in enumerate(words):
        if word in group:
            return [*words[:i], group[(group.index(word) + 1) % len(group)], *words[i + 1 :]]
    return None


def redundant_share(scenes: int = 3000, seed: int = 1) -> tuple[int, float]:
    """(candidates, share) of generated extreme-position expressions whose colour/shape words are redundant."""
    rng = np.random.default_rng(seed)
    total = redundant = 0
    for _ in range(scenes):
        things = sample_scene(rng, 128, 128, list(COLOURS))
        for target in things:
            for attrs in attribute_sets(ATTRIBUTES):
                group = matches(things, target, attrs)
                if len(group) < 2 or not {"colour", "shape"} & set(attrs):
                    continue
                without = matches(things, target, [a for a in attrs if a not in ("colour", "shape")])
                for direction in DIRECTIONS:
                    if is_extreme(group, target, direction):
                        total += 1
                        redundant += is_extreme(without, target, direction)
    return total, redundant / total


@torch.no_grad()
def main() -> None:
    p = trained_model_parser(__doc__)
    p.add_argument("--refs", type=int, default=250, help="the split's first N refs")
    args = p.parse_args()
    torch.set_num_threads(1)
    trained = load(args.checkpoint, args.shards)
    model, vocab, cfg = trained.model, trained.vocab, trained.cfg
    size, max_words = cfg.model.image_size, cfg.data.max_words
    totals = defaultdict(lambda: [0.0, 0.0, 0, 0])  # (kind, class) -> IoU original, IoU swapped, same, count
    shards = ShardSet.open(args.shards, cfg.data.dataset)
    for sample in islice(wds.WebDataset(shards.urls(args.split), shardshuffle=False), args.refs):
        image, truth = decode_image(sample[IMAGE], size), decode_mask(sample[MASK], size)
        for sentence in json.loads(sample[META])["sentences"]:
            words = [vocab.words[i] for i in sentence["tokens"]]
            for name, group in WORD_CLASSES.items():
                other = swapped(words, group)
                if other is None:
                    continue
                tokens = torch.stack([encode_tokens(vocab.encode_words(w), max_words) for w in (words, other)])
                original, changed = model(tokens, image[None].expand(2, -1, -1, -1))[:, 0] > 0
                total = totals[(sentence.get("kind"), name)]
                total[0] += iou(original, truth)
                total[1] += iou(changed, truth)
                total[2] += iou(original, changed) > 0.8
                total[3] += 1
    print(f"{args.checkpoint}, {args.split}, first {args.refs} refs, at {size} x {size}")
    print("| kind | word swapped | sentences | mean IoU, original | mean IoU, swapped | prediction unchanged |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for (kind, name), (before, after, same, n) in sorted(totals.items()):
        print(f"| {kind} | {name} | {n} | {before / n:.2f} | {after / n:.2f} | {same / n:.0%} |")
    candidates, share = redundant_share()
    print(
        f"generator: {share:.0%} of {candidates} extreme-position expressions naming a colour or shape are right "
        "without those words"
    )


if __name__ == "__main__":
    main()
