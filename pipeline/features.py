"""Write the frozen-backbone feature cache for already written image shards (see jrnet/features.py).

    python pipeline/shard.py DATASET --features CONFIG [--out shards/]

Every image shard gets a feature shard of the same name and keys, holding the original members plus
`levels.npy`: fp16 [C2 + C3 + C4, H, W], the trunk's layer2/3/4 resized to H x W. Shards are written to a
temporary name and renamed; a rerun keeps the feature shards whose source checksum and fingerprint match.
"""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import webdataset as wds
from tqdm import tqdm

from jrnet.backbone import Backbone
from jrnet.config import Config
from jrnet.data import decode_image
from jrnet.features import cache_root, fingerprint
from jrnet.fileio import file_sha256 as sha256_of
from jrnet.fileio import write_atomic_text

TAR_MTIME = 946684800


@torch.no_grad()
def feature_shard(trunk: Backbone, source: Path, target: Path, image_size: int, batch_size: int) -> int:
    """Read one image shard, add `levels.npy` to each sample, write the feature shard atomically."""
    samples = list(wds.DataPipeline(wds.SimpleShardList([str(source)]), wds.tarfile_to_samples()))
    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
    try:
        with (
            open(tmp, "wb") as stream,
            wds.TarWriter(stream, encoder=False, mtime=TAR_MTIME, user="jrnet", group="jrnet", mode=0o444) as writer,
        ):
            for start in range(0, len(samples), batch_size):
                chunk = samples[start : start + batch_size]
                images = torch.stack([decode_image(s["jpg"], image_size) for s in chunk])
                levels = torch.cat(trunk.trunk_features(images), dim=1).half().numpy()
                for sample, level in zip(chunk, levels, strict=True):
                    buffer = io.BytesIO()
                    np.save(buffer, level)
                    out = {k: v for k, v in sample.items() if not k.startswith("__") or k == "__key__"}
                    writer.write({**out, "levels.npy": buffer.getvalue()})
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return len(samples)


def write_feature_cache(cfg: Config, dataset_root: Path, batch_size: int = 32) -> Path:
    fp = fingerprint(cfg)
    root = cache_root(dataset_root, fp)
    root.mkdir(parents=True, exist_ok=True)
    base = json.loads((dataset_root / "manifest.json").read_text())
    (root / "manifest.json").unlink(missing_ok=True)  # describes a complete cache only
    torch.manual_seed(0)
    trunk = Backbone(cfg.model).eval()
    shards = [s for split in base["splits"].values() for s in split["shards"]]
    started, written = time.perf_counter(), 0
    for shard in tqdm(shards, desc="features", unit="shard"):
        target, state = root / shard["name"], root / f"{shard['name']}.state.json"
        expected = {"source_sha256": shard["sha256"]}
        if target.is_file() and state.is_file() and json.loads(state.read_text()) == expected:
            continue
        written += feature_shard(trunk, dataset_root / shard["name"], target, cfg.model.image_size, batch_size)
        write_atomic_text(state, json.dumps(expected))
    manifest = dict(base)
    manifest["features"] = fp
    manifest["source_shards"] = {s["name"]: s["sha256"] for s in shards}  # re-sharding makes the cache stale
    manifest["splits"] = {
        name: {**split, "shards": [{**s, "sha256": sha256_of(root / s["name"])} for s in split["shards"]]}
        for name, split in base["splits"].items()
    }
    write_atomic_text(root / "manifest.json", json.dumps(manifest, indent=2))
    seconds = time.perf_counter() - started
    print(f"feature cache {root}: {written} images in {seconds:.1f} s ({written / max(seconds, 1e-6):.1f} images/s)")
    return root
