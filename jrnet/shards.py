"""A sharded dataset as written by `pipeline/shard.py`: its manifest, shard files, vocabulary and GloVe rows."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jrnet.config import Config
from jrnet.shard_format import GLOVE, MANIFEST, VOCAB, Manifest, SplitEntry, read_manifest
from jrnet.vocab import Vocab, load_glove_text


class DataError(RuntimeError):
    """Shards that cannot be read as configured (missing folder, manifest, split; a strict-mode failure)."""


@dataclass(frozen=True)
class ShardSet:
    root: Path  # the tars and their manifest: <shards>/<dataset>, or a feature cache below it
    manifest: Manifest
    meta_root: Path | None = None  # vocab.json and glove.npy, when not in `root`

    @classmethod
    def open(cls, shards: str | Path, dataset: str) -> ShardSet:
        root = Path(shards) / dataset
        if not Path(shards).is_dir():
            raise DataError(f"shards folder not found: {shards} (run `python pipeline/shard.py {dataset}` first)")
        if not (root / MANIFEST).is_file():
            raise DataError(f"{root / MANIFEST} not found: no complete sharding of {dataset!r} under {shards}")
        return cls(root, read_manifest(root))

    def split(self, name: str) -> SplitEntry:
        splits = self.manifest["splits"]
        if name not in splits:
            raise DataError(f"{self.root}: no split {name!r} (have {sorted(splits)})")
        return splits[name]

    def urls(self, split: str) -> list[str]:
        urls = [str(self.root / s["name"]) for s in self.split(split)["shards"]]
        missing = [u for u in urls if not os.path.exists(u)]
        if missing:
            raise DataError(f"shard listed in {self.root / MANIFEST} is missing: {missing[0]}")
        return urls

    def check_max_words(self, cfg: Config) -> None:
        """Sentences were cut at shard time: a run reading them as longer or shorter would pad or cut again."""
        sharded = self.manifest["options"]["max_words"]
        if cfg.data.max_words != sharded:
            raise DataError(
                f"data.max_words={cfg.data.max_words} but {self.root / MANIFEST} was sharded with "
                f"--max-words {sharded}: set data.max_words={sharded}, or shard again with --max-words "
                f"{cfg.data.max_words}"
            )

    def check_gpu_decode(self, cfg: Config) -> None:
        """Decoding a batch on the GPU stacks the images as decoded: they must be stored at the model's size."""
        stored = self.manifest["options"].get("train_size")
        if cfg.data.gpu_decode and stored != cfg.model.image_size:
            raise DataError(
                f"data.gpu_decode needs the train images stored at model.image_size={cfg.model.image_size}, but "
                f"{self.root / MANIFEST} has train_size={stored}: shard with --train-size {cfg.model.image_size}"
            )

    def resize_warning(self, cfg: Config) -> str | None:
        """What it costs when the train images were stored at another size than the model takes (or None)."""
        stored = self.manifest["options"].get("train_size")
        if stored is None or stored == cfg.model.image_size:
            return None
        return (
            f"{self.root / MANIFEST}: train images are stored at {stored} x {stored} but model.image_size is "
            f"{cfg.model.image_size}: every training sample is resized again on the CPU, which costs more than "
            f"decoding it (see BENCHMARKS.md); shard with --train-size {cfg.model.image_size} to save that"
        )

    def vocab_size(self) -> int:
        return int(self.manifest["vocab_size"])

    def vocab(self) -> Vocab:
        return Vocab.from_file((self.meta_root or self.root) / VOCAB)

    def glove(self, text_file: str | None = None) -> np.ndarray | None:
        """Vectors for the vocabulary: from a GloVe text file when given, else the shards' baked glove.npy."""
        if text_file:
            return load_glove_text(text_file, self.vocab().words)
        path = (self.meta_root or self.root) / GLOVE
        return np.load(path) if path.is_file() else None
