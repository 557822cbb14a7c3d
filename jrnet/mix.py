"""What a run reads: one dataset, or several mixed by weight (`data.datasets={unc: 1, unc+: 1, gref: 0.5}`).

One vocabulary for the mix, made at load time: `<pad>`, `<unk>`, then the words of each dataset's vocabulary
in its own order, datasets taken by name, each word once. Every dataset's token ids are mapped into it as
their samples are read (`tokens`), and its GloVe rows are those of the datasets' baked glove.npy (or the
`model.glove` text file). The shards themselves stay as they were sharded: a dataset can be in several mixes.
A run of one dataset is unchanged: its own vocabulary, no mapping.

The training stream draws, for every sample of a (rank, worker), which dataset it comes from, seeded by
(seed, epoch, rank, worker): independent of timing, so an exact resume replays the same draws
(jrnet/stream.py). An epoch of a mix is as many samples as the train splits of all its datasets hold together.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from jrnet.config import Config
from jrnet.feature_cache import open_cache
from jrnet.shards import DataError, ShardSet
from jrnet.vocab import PAD, UNK, Vocab, load_glove_text


@dataclass(frozen=True)
class Part:
    name: str
    shards: ShardSet
    weight: float


@dataclass(frozen=True)
class Mix:
    parts: tuple[Part, ...]  # by name

    @classmethod
    def open(cls, shards: str | Path, cfg: Config, features: bool = True) -> Mix:
        """The run's datasets, each checked against the config (and switched to its feature cache when the config
        asks for it and `features`)."""
        parts = []
        for name, weight in sorted(cfg.data.mix().items()):
            shard_set = ShardSet.open(shards, name, cfg.data)
            shard_set.check_max_words(cfg)
            shard_set.check_gpu_decode(cfg)
            shard_set.check_oversample(cfg)
            if cfg.data.feature_cache and features:
                shard_set = open_cache(shard_set, cfg)
            parts.append(Part(name, shard_set, weight))
        return cls(tuple(parts))

    @classmethod
    def of(cls, shards: ShardSet) -> Mix:
        return cls((Part(shards.manifest.get("dataset", "dataset"), shards, 1.0),))

    @property
    def mixed(self) -> bool:
        return len(self.parts) > 1

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.parts]

    @property
    def weights(self) -> list[float]:
        return [p.weight for p in self.parts]

    def train_samples(self, split: str) -> int:
        return sum(p.shards.split(split)["samples"] for p in self.parts)

    @cached_property
    def vocab(self) -> Vocab:
        if not self.mixed:
            return self.parts[0].shards.vocab()
        words = {PAD: None, UNK: None}
        for part in self.parts:
            words.update(dict.fromkeys(part.shards.vocab().words))
        return Vocab(list(words))

    def vocab_size(self) -> int:
        return self.parts[0].shards.vocab_size() if not self.mixed else len(self.vocab)

    @cached_property
    def tokens(self) -> tuple[torch.Tensor | None, ...]:
        """Per part: its token id -> the mix's token id (None: the part's own ids are the run's)."""
        if not self.mixed:
            return (None,)
        return tuple(torch.tensor(self.vocab.encode_words(p.shards.vocab().words)) for p in self.parts)

    def glove(self, text_file: str | None = None) -> np.ndarray | None:
        if not self.mixed:
            return self.parts[0].shards.glove(text_file)
        if text_file:
            return load_glove_text(text_file, self.vocab.words)
        rows = None
        for part, ids in zip(self.parts, self.tokens, strict=True):
            baked = part.shards.glove()
            if baked is None:
                continue
            rows = np.zeros((len(self.vocab), baked.shape[1]), np.float32) if rows is None else rows
            if baked.shape[1] != rows.shape[1]:
                dims = f"{baked.shape[1]} dimensions, another dataset's {rows.shape[1]}"
                raise DataError(f"{part.name}: glove.npy has {dims}")
            rows[ids.numpy()] = baked
        return rows

    def eval_targets(self, splits) -> list[tuple[str, Part, torch.Tensor | None, str]]:
        """(label, part, token map, split) for every split of every dataset that has it: `val` for one dataset,
        `unc/val` in a mix (where `unc/val` also names one). A split no dataset has is an error."""
        targets = []
        for wanted in splits:
            name, _, split = wanted.rpartition("/")
            candidates = [(p, t) for p, t in zip(self.parts, self.tokens, strict=True) if name in ("", p.name)]
            if not candidates:
                raise DataError(f"split {wanted}: no dataset {name!r} in this run (it reads {self.names})")
            have = [(p, t) for p, t in candidates if split in p.shards.manifest["splits"]]
            if not have:
                candidates[0][0].shards.split(split)  # raises, naming the splits there are
            targets += [(f"{p.name}/{split}" if self.mixed else split, p, t, split) for p, t in have]
        return targets
