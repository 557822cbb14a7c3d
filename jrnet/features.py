"""The frozen-backbone feature cache: what a cache was made with, and whether a run may use it.

The paper freezes the backbone, so its resized level features are a pure function of (trunk, weights,
preprocessing, resolution). A cache stores them once per image (fp16) in shards beside the images, under
`<shards>/<dataset>/features/<fingerprint id>/`, and training with `data.feature_cache: true` skips the trunk.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from jrnet.backbone import LEVEL_CHANNELS
from jrnet.config import Config, ConfigError
from jrnet.fileio import file_sha256

PREPROCESS = "rgb-resize-bilinear-square-imagenet-normalize"  # jrnet.data.decode_image


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


def cache_root(dataset_root: Path, fp: dict) -> Path:
    return dataset_root / "features" / fingerprint_id(fp)


def explain_mismatch(dataset_root: Path, fp: dict) -> str:
    """Why no cache fits: which fields differ from each cache that exists."""
    found = []
    for manifest in sorted((dataset_root / "features").glob("*/manifest.json")):
        other = json.loads(manifest.read_text()).get("features", {})
        diff = [f"{k}: cache {other.get(k)!r} vs run {v!r}" for k, v in fp.items() if other.get(k) != v]
        found.append(f"{manifest.parent.name} differs in " + "; ".join(diff))
    return "; ".join(found) if found else "no feature cache exists yet"
