"""Mirrored training samples (`data.flips`, not in the paper): image and mask mirrored, the sentence's side words
swapped, so "the second circle from the left" of a mirrored scene becomes "... from the right" and stays true.

Horizontal mirroring with left/right swapped is the usual RIS augmentation; vertical (top/bottom, above/below, ...)
suits generated scenes, not photographs. A sentence holding a side word whose mirror word is not in the vocabulary
cannot be mirrored that way and is left as it is. Each listed mirror is applied with probability 1/2, drawn from
(seed, epoch, ref_id) like the sentence choice, so an exact resume draws the same.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from jrnet.vocab import Vocab

FLIPS = ("horizontal", "vertical")
# Each side word and its mirror word; a pair read both ways unless the word already has a mirror listed.
SIDE_WORDS = {
    "horizontal": [("left", "right"), ("leftmost", "rightmost")],
    "vertical": [
        ("top", "bottom"),
        ("topmost", "bottommost"),
        ("uppermost", "lowermost"),
        ("upper", "lower"),
        ("higher", "lower"),
        ("highest", "lowest"),
        ("above", "below"),
        ("beneath", "above"),
        ("over", "under"),
        ("up", "down"),
    ],
}
IMAGE_AXIS = {"horizontal": -1, "vertical": -2}  # (C, H, W) images and (H, W) masks alike


def mirror_words(flip: str) -> dict[str, str]:
    """Side word -> its mirror word for one flip; the first listed pair decides a word's mirror."""
    words: dict[str, str] = {}
    for a, b in SIDE_WORDS[flip]:
        words.setdefault(a, b)
        words.setdefault(b, a)
    return words


@dataclass(frozen=True)
class TokenMirror:
    """One flip on token ids: `ids[t]` is t's mirror word's id; `blocked[t]`: t's mirror word is not in the vocab."""

    ids: torch.Tensor
    blocked: torch.Tensor

    @classmethod
    def build(cls, vocab: Vocab, flip: str) -> TokenMirror:
        ids, blocked = torch.arange(len(vocab.words)), torch.zeros(len(vocab.words), dtype=torch.bool)
        for word, mirror in mirror_words(flip).items():
            if word in vocab.ids:
                if mirror in vocab.ids:
                    ids[vocab.ids[word]] = vocab.ids[mirror]
                else:
                    blocked[vocab.ids[word]] = True
        return cls(ids, blocked)


class Mirrors:
    """The run's flips over its vocabulary, applied to decoded training samples."""

    def __init__(self, flips: tuple[str, ...], vocab: Vocab, seed: int):
        self.tokens = {flip: TokenMirror.build(vocab, flip) for flip in flips}
        self.seed = seed

    def __call__(self, sample: dict, epoch: int) -> dict:
        draw = random.Random(f"mirror-{self.seed}-{epoch}-{int(sample['ref_id'])}")
        for flip, mirror in self.tokens.items():
            if draw.random() < 0.5 and not mirror.blocked[sample["tokens"]].any():
                axis = IMAGE_AXIS[flip]
                sample = {
                    **sample,
                    "image": sample["image"].flip(axis),
                    "mask": sample["mask"].flip(axis),
                    "tokens": mirror.ids[sample["tokens"]],
                }
        return sample
