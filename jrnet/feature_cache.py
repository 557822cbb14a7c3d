"""The frozen-backbone feature cache: making it, and deciding whether a run may use it.

The paper freezes the backbone, so its resized level features are a pure function of (trunk, weights,
preprocessing, resolution). A cache stores them once per image (fp16 `levels.npy` beside the image members) in
shards of the same names and keys, under `<shards>/<dataset>/features/<fingerprint id>/`, and training with
`data.feature_cache: true` skips the trunk. Made by `python pipeline/shard.py DATASET --features CONFIG`;
a rerun keeps the feature shards whose source checksum and fingerprint match; re-sharding makes a cache stale.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from jrnet.backbone import LEVEL_CHANNELS, Backbone
from jrnet.config import Config, ConfigError
from jrnet.fileio import file_sha256, write_atomic_text
from jrnet.samples import decode_image
from jrnet.shard_format import IMAGE, LEVELS, MANIFEST, shard_checksums, write_manifest, write_tar
from jrnet.shards import DataError, ShardSet, read_manifest_at

PREPROCESS = "rgb-resize-bilinear-antialias-torchvision-square-imagenet-normalize"  # jrnet.samples.decode_image


def check_cacheable(cfg: Config) -> None:
    """Cached features are only right if the trunk never changes and its weights are known."""
    m = cfg.model
    if not m.freeze_backbone:
        raise ConfigError("model.freeze_backbone is false: the trunk trains, so cached features would go stale")
    if not m.backbone_weights:
        raise ConfigError("a feature cache needs model.backbone_weights (a random trunk is not reproducible)")


def fingerprint(cfg: Config) -> dict:
    """Everything the cached numbers depend on."""
    check_cacheable(cfg)
    m = cfg.model
    return {
        "backbone": m.backbone,
        "weights_sha256": file_sha256(m.backbone_weights),
        "output_stride": m.output_stride,
        "image_size": m.image_size,
        "feature_size": m.feature_size,
        "channels": list(LEVEL_CHANNELS[m.backbone]),
        "preprocess": PREPROCESS,
        "dtype": "float16",
    }


def fingerprint_id(fp: dict) -> str:
    return hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:16]


def cache_root(dataset_root, fp: dict):
    """`<dataset>/features/<id>`: a Path, or a Location when the shards are remote."""
    return dataset_root / "features" / fingerprint_id(fp)


def explain_mismatch(dataset_root: Path | None, fp: dict) -> str:
    """Why no cache fits: which fields differ from each cache that exists (local shards only: a URL cannot be
    listed)."""
    if dataset_root is None:
        return "the shards are remote, so the caches there cannot be listed"
    found = []
    for manifest in sorted((dataset_root / "features").glob("*/manifest.json")):
        other = json.loads(manifest.read_text()).get("features", {})
        diff = [f"{k}: cache {other.get(k)!r} vs run {v!r}" for k, v in fp.items() if other.get(k) != v]
        found.append(f"{manifest.parent.name} differs in " + "; ".join(diff))
    return "; ".join(found) if found else "no feature cache exists yet"


def open_cache(images: ShardSet, cfg: Config) -> ShardSet:
    """The feature cache made for this run's trunk, weights and resolution, refused when missing or stale."""
    fp = fingerprint(cfg)
    root = cache_root(images.root, fp)
    local = images.root.path if images.root.is_local else None
    remake = f"python pipeline/shard.py {images.manifest['dataset']} --out OUT --features CONFIG"
    if local is not None:
        remake = remake.replace("OUT", str(local.parent))
    if not images.reader.fetch.exists(root / MANIFEST):
        raise DataError(
            f"no complete feature cache for this run under {images.root / 'features'} "
            f"({explain_mismatch(local, fp)}); make it with: {remake}"
        )
    cache = read_manifest_at(root, images.reader, "no complete feature cache")
    if cache.get("source_shards") != shard_checksums(images.manifest):
        raise DataError(
            f"feature cache {root} is stale: the image shards were written again after it was made; "
            f"remake it with: {remake}"
        )
    return ShardSet(root, cache, images.root, images.reader)


@torch.no_grad()
def feature_samples(trunk: Backbone, source: ShardSet, entry: dict, image_size: int, batch_size: int):
    """The samples of one image shard, each with its `levels.npy` added."""
    samples = list(source.samples(entry))
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        images = torch.stack([decode_image(s[IMAGE], image_size) for s in chunk])
        levels = torch.cat(trunk.trunk_features(images), dim=1).half().numpy()
        for sample, level in zip(chunk, levels, strict=True):
            buffer = io.BytesIO()
            np.save(buffer, level)
            members = {k: v for k, v in sample.items() if not k.startswith("__") or k == "__key__"}
            yield {**members, LEVELS: buffer.getvalue()}


def write_feature_cache(cfg: Config, dataset_root: Path, batch_size: int = 32, source: ShardSet | None = None) -> Path:
    """The cache under `dataset_root/features/<id>/`, made from the image shards in `dataset_root`, or from
    `source` when they live elsewhere (a URL: the cache is written here, to be copied beside them)."""
    fp = fingerprint(cfg)
    root = cache_root(dataset_root, fp)
    root.mkdir(parents=True, exist_ok=True)
    source = source or ShardSet.open(dataset_root.parent, dataset_root.name)
    base = source.manifest
    (root / MANIFEST).unlink(missing_ok=True)  # describes a complete cache only
    trunk = Backbone(cfg.model).eval()  # check_cacheable: from a weights file, so no seed matters
    sources = [s for split in base["splits"] for s in source.entries(split)]
    started, written = time.perf_counter(), 0
    for shard in tqdm(sources, desc="features", unit="shard", disable=None):
        target, state = root / shard["name"], root / f"{shard['name']}.state.json"
        expected = {"source_sha256": shard["sha256"]}
        if target.is_file() and state.is_file() and json.loads(state.read_text()) == expected:
            continue
        # Streamed into the tar: a shard's levels (up to 1.4 MB a sample at paper_448) never sit in memory at once.
        write_tar(target, feature_samples(trunk, source, shard, cfg.model.image_size, batch_size))
        write_atomic_text(state, json.dumps(expected))
        written += shard["samples"]
    manifest = {**base, "features": fp, "source_shards": shard_checksums(base)}
    manifest["splits"] = {
        name: {**split, "shards": [{**s, "sha256": file_sha256(root / s["name"])} for s in split["shards"]]}
        for name, split in base["splits"].items()
    }
    write_manifest(root, manifest)
    seconds = time.perf_counter() - started
    print(f"feature cache {root}: {written} images in {seconds:.1f} s ({written / max(seconds, 1e-6):.1f} images/s)")
    return root
