"""The shard format, defined once: what a sample holds, what the manifest says, how a shard file is written.

Under `<shards>/<dataset>/` (dataset = unc, unc+, gref, gref_google, referit, synthetic):
    <split>-<6 digits>.tar  one sample per ref, keyed f"{ref_id:09d}", members:
        jpg         the image file's bytes when it is an RGB JPEG, else the image re-encoded as RGB JPEG
        mask.png    1-bit mask at the image's resolution (S x S for a --train-size train split), refer API semantics
        json        ref_id, ann_id, image_id, category_id, split, file_name, height, width,
                    sentences: [{sent_id, raw, tokens (vocabulary ids), truncated, kind (generated set only:
                    attribute | spatial | ordinal | comparative)}]
        levels.npy  feature caches only: fp16 [C2 + C3 + C4, H, W], the frozen trunk's resized levels
    vocab.json      {"words": [...]}: <pad>, <unk>, then train-split words by frequency (ties alphabetical)
    glove.npy       float32 [vocab, dim] when sharded with --glove (pad and words GloVe lacks: zero rows)
    manifest.json   written last: a `Manifest`
A feature cache is the same layout under `<shards>/<dataset>/features/<fingerprint id>/`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypedDict

import webdataset as wds

from jrnet.fileio import atomic_file, file_sha256, write_atomic_text

FORMAT_VERSION = 2  # part of every shard's input digest: bump when the sample encoding changes (2: 1-bit masks)
IMAGE, MASK, META, LEVELS = "jpg", "mask.png", "json", "levels.npy"  # tar member suffixes of a sample
MANIFEST, VOCAB, GLOVE = "manifest.json", "vocab.json", "glove.npy"
KINDS = ("attribute", "spatial", "ordinal", "comparative")  # a generated sentence's `kind`: what it takes to resolve
TAR_MTIME = 946684800  # 2000-01-01: a fixed, plausible timestamp for every tar member
TAR_OWNER = "jrnet"


class ShardEntry(TypedDict):
    name: str
    sha256: str
    samples: int
    sentences: int


class SplitEntry(TypedDict):
    shards: list[ShardEntry]
    samples: int
    sentences: int
    truncated_sentences: int
    missing_images: list[str]
    empty_masks: list[int]  # ref ids skipped because their mask is empty


class Manifest(TypedDict, total=False):
    dataset: str
    source: dict[str, str]  # refs, instances, image_root: the files the shards were made from
    options: dict[str, Any]  # split_by, max_words, samples_per_shard, skip_missing (and the generator's)
    vocab_size: int
    glove: dict | None  # file, dim, coverage; None without --glove
    splits: dict[str, SplitEntry]
    features: dict  # feature caches only: the fingerprint of the trunk that made them (jrnet/features.py)
    source_shards: dict[str, str]  # feature caches only: name -> sha256 of the image shards they were made from


def read_manifest(folder: Path) -> Manifest:
    return json.loads((folder / MANIFEST).read_text())


def write_manifest(folder: Path, manifest: Manifest) -> None:
    write_atomic_text(folder / MANIFEST, json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")


def shard_checksums(manifest: Manifest) -> dict[str, str]:
    return {s["name"]: s["sha256"] for split in manifest["splits"].values() for s in split["shards"]}


def write_tar(path: Path, samples: Iterable[dict[str, Any]]) -> str:
    """Write encoded samples (`__key__` plus member bytes) as one tar, atomically; returns its sha256.

    Fixed mtime, owner and mode make the bytes depend on the samples only.
    """
    with (
        atomic_file(path) as stream,
        wds.TarWriter(stream, user=TAR_OWNER, group=TAR_OWNER, mode=0o444, encoder=False, mtime=TAR_MTIME) as tar,
    ):
        for sample in samples:
            tar.write(sample)
    return file_sha256(path)
