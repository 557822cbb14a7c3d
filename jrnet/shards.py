"""A sharded dataset as written by `pipeline/shard.py`: its manifest, shard files, vocabulary and GloVe rows,
wherever they live (a local folder, an http(s) prefix or a `pipe:` command: jrnet/location.py)."""

from __future__ import annotations

import io
import json
import os
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
from webdataset.tariterators import group_by_keys, tar_file_iterator

from jrnet.config import Config, DataConfig
from jrnet.location import Fetch, Location
from jrnet.shard_cache import open_cached
from jrnet.shard_format import GLOVE, MANIFEST, META, VOCAB, Manifest, ShardEntry, SplitEntry
from jrnet.vocab import Vocab, load_glove_text


class DataError(RuntimeError):
    """Shards that cannot be read as configured (missing folder, manifest, split; a strict-mode failure)."""


@dataclass(frozen=True)
class Reader:
    """How this run reads shard files: timeouts and retries for remote ones, and the local cache of them."""

    fetch: Fetch = field(default_factory=Fetch)
    cache_dir: Path | None = None

    @classmethod
    def of(cls, data: DataConfig | None) -> Reader:
        if data is None:
            return cls()
        cache = Path(data.cache_dir) if data.cache_dir else None
        return cls(Fetch(read_timeout=data.read_timeout, attempts=data.retries), cache)


@dataclass(frozen=True)
class ShardSet:
    root: Location  # the tars and their manifest: <shards>/<dataset>, or a feature cache below it
    manifest: Manifest
    meta_root: Location | None = None  # vocab.json and glove.npy, when not in `root`
    reader: Reader = field(default_factory=Reader)

    @classmethod
    def open(cls, shards: str | Path, dataset: str, data: DataConfig | None = None) -> ShardSet:
        """`shards`: a folder, an http(s) prefix or a `pipe:` command (jrnet/location.py); `data`: the run's
        data section (timeouts, retries, cache), defaults otherwise."""
        try:
            top = Location.parse(shards)
        except ValueError as e:
            raise DataError(str(e)) from None
        root, reader = top / dataset, Reader.of(data)
        if top.is_local and not top.path.is_dir():
            raise DataError(f"shards folder not found: {shards} (run `python pipeline/shard.py {dataset}` first)")
        manifest = read_manifest_at(root, reader, f"no complete sharding of {dataset!r} under {shards}")
        return cls(root, manifest, None, reader)

    def split(self, name: str) -> SplitEntry:
        splits = self.manifest["splits"]
        if name not in splits:
            raise DataError(f"{self.root}: no split {name!r} (have {sorted(splits)})")
        return splits[name]

    def urls(self, split: str) -> list[str]:
        """Where each shard of the split is read from; local ones are checked to exist (remote ones are not
        asked before they are read: their errors name them)."""
        urls = [str(self.root / s["name"]) for s in self.split(split)["shards"]]
        missing = [u for u in urls if self.root.is_local and not os.path.exists(u)]
        if missing:
            raise DataError(f"shard listed in {self.root / MANIFEST} is missing: {missing[0]}")
        return urls

    def entries(self, split: str) -> list[dict]:
        """The split's shards as the streams take them: url, name, sha256 and sample count (manifest order)."""
        return [{"url": url, **entry} for url, entry in zip(self.urls(split), self.split(split)["shards"], strict=True)]

    def samples(self, entry: dict):
        """One shard's samples (as webdataset's tarfile_to_samples makes them); a read error propagates."""
        with self.open_shard(entry) as stream:
            yield from group_by_keys({**member, "__url__": entry["url"]} for member in tar_file_iterator(stream))

    def open_shard(self, entry: ShardEntry) -> BinaryIO:
        """One shard's bytes: from the local cache when `data.cache_dir` is set and the shards are remote."""
        where = self.root / entry["name"]
        if self.reader.cache_dir is not None and not where.is_local:
            return open_cached(self.reader.fetch, where, entry["sha256"], self.reader.cache_dir)
        return self.reader.fetch.open(where)

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

    def check_oversample(self, cfg: Config) -> None:
        """`data.oversample` draws by each sentence's `kind`, which only generated shards record: checked on the
        train split's first ref, so a run on other shards stops at once instead of searching them all."""
        if not cfg.data.oversample:
            return
        first = self.entries(cfg.data.train_split)[0]
        try:
            with closing(self.samples(first)) as samples:
                sentences = json.loads(next(samples)[META])["sentences"]
        except (OSError, ValueError, KeyError, StopIteration) as e:
            raise DataError(f"data.oversample: cannot read the first ref of {first['url']} ({e!r})") from None
        if not any("kind" in sentence for sentence in sentences):
            raise DataError(
                f"data.oversample needs sentences that record their expression kind (generated shards), but the "
                f"first ref of {first['url']} has none"
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

    def read(self, name: str) -> bytes:
        """A small file beside the manifest (vocab.json, glove.npy), or of the images' folder for a feature cache."""
        where = (self.meta_root or self.root) / name
        try:
            return self.reader.fetch.read_bytes(where)
        except OSError as e:  # Unavailable included: retried already
            raise DataError(f"cannot read {where}: {e}") from None

    def vocab(self) -> Vocab:
        return Vocab.from_json(self.read(VOCAB).decode("utf-8"), str((self.meta_root or self.root) / VOCAB))

    def glove(self, text_file: str | None = None) -> np.ndarray | None:
        """Vectors for the vocabulary: from a GloVe text file when given, else the shards' baked glove.npy."""
        if text_file:
            return load_glove_text(text_file, self.vocab().words)
        where = (self.meta_root or self.root) / GLOVE
        baked = where.path.is_file() if where.is_local else bool(self.manifest.get("glove"))
        return np.load(io.BytesIO(self.read(GLOVE))) if baked else None


def read_manifest_at(root: Location, reader: Reader, missing: str) -> Manifest:
    """The manifest of a dataset folder (or a feature cache) wherever it lives; DataError naming it if absent."""
    where = root / MANIFEST
    try:
        return json.loads(reader.fetch.read_bytes(where))
    except FileNotFoundError:
        raise DataError(f"{where} not found: {missing}") from None
    except OSError as e:  # Unavailable included: retried already
        raise DataError(f"{where} not readable ({e}): {missing}") from None
    except ValueError as e:
        raise DataError(f"{where}: not a manifest ({e})") from None
