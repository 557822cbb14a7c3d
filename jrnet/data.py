"""Streaming loader over the WebDataset shards written by `pipeline/shard.py`.

Training: shard list -> shuffle seeded by epoch -> split by node -> split by worker -> tar to samples ->
shuffle buffer -> (skip to the resume position) -> decode + resize -> batch. The shard list cycles into the
next epoch's permutation, so no rank or worker ever runs dry: every rank yields exactly the same number of
batches per epoch, whatever the number of shards. One sentence per ref, drawn at random (seeded by epoch and
ref, so it does not depend on worker timing).

Exact resume: a DataLoader hands out batches round-robin over its workers, so batch j of an epoch comes from
worker j % W. Resuming at batch k, physical worker p plays the logical worker (p + k) % W and drops the raw
samples of its batches before k, before anything is decoded.

Evaluation: every sentence of every ref exactly once across all ranks and workers, with the mask at the
image's original resolution.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import random
from dataclasses import dataclass
from functools import partial
from itertools import chain, count, islice
from pathlib import Path

import numpy as np
import torch
import webdataset as wds
from PIL import Image

from jrnet.config import Config
from jrnet.preemption import kill_workers_at_exit, worker_ignores_stop_signals
from jrnet.vocab import Vocab, load_glove_text

log = logging.getLogger(__name__)

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


class DataError(RuntimeError):
    """Shards that cannot be read as configured (missing folder, manifest, split; a strict-mode failure)."""


@dataclass(frozen=True)
class ShardSet:
    root: Path  # the tars and their manifest: <shards>/<dataset>, or a feature cache below it
    manifest: dict
    meta_root: Path | None = None  # vocab.json and glove.npy, when not in `root`

    @classmethod
    def open(cls, shards: str | Path, dataset: str) -> ShardSet:
        root = Path(shards) / dataset
        manifest = root / "manifest.json"
        if not Path(shards).is_dir():
            raise DataError(f"shards folder not found: {shards} (run `python pipeline/shard.py {dataset}` first)")
        if not manifest.is_file():
            raise DataError(f"{manifest} not found: no complete sharding of {dataset!r} under {shards}")
        return cls(root, json.loads(manifest.read_text()))

    def split(self, name: str) -> dict:
        splits = self.manifest["splits"]
        if name not in splits:
            raise DataError(f"{self.root}: no split {name!r} (have {sorted(splits)})")
        return splits[name]

    def urls(self, split: str) -> list[str]:
        urls = [str(self.root / s["name"]) for s in self.split(split)["shards"]]
        missing = [u for u in urls if not os.path.exists(u)]
        if missing:
            raise DataError(f"shard listed in {self.root / 'manifest.json'} is missing: {missing[0]}")
        return urls

    def features(self, cfg: Config) -> ShardSet:
        """The feature cache made for this run's trunk, weights and resolution (jrnet/features.py)."""
        from jrnet.features import cache_root, explain_mismatch, fingerprint

        fp = fingerprint(cfg)
        root = cache_root(self.root, fp)
        if not (root / "manifest.json").is_file():
            raise DataError(
                f"no complete feature cache for this run under {self.root / 'features'} "
                f"({explain_mismatch(self.root, fp)}); make it with: python pipeline/shard.py "
                f"{self.manifest['dataset']} --out {self.root.parent} --features CONFIG"
            )
        cache = json.loads((root / "manifest.json").read_text())
        if cache.get("source_shards") != self.shard_checksums():
            raise DataError(
                f"feature cache {root} is stale: the image shards were written again after it was made; remake it "
                f"with: python pipeline/shard.py {self.manifest['dataset']} --out {self.root.parent} --features CONFIG"
            )
        return ShardSet(root, cache, self.root)

    def shard_checksums(self) -> dict[str, str]:
        return {s["name"]: s["sha256"] for split in self.manifest["splits"].values() for s in split["shards"]}

    def check_max_words(self, cfg: Config) -> None:
        """Sentences were cut at shard time: a run reading them as longer or shorter would pad or cut again."""
        sharded = self.manifest["options"]["max_words"]
        if cfg.data.max_words != sharded:
            raise DataError(
                f"data.max_words={cfg.data.max_words} but {self.root / 'manifest.json'} was sharded with "
                f"--max-words {sharded}: set data.max_words={sharded}, or shard again with --max-words "
                f"{cfg.data.max_words}"
            )

    def vocab_size(self) -> int:
        return int(self.manifest["vocab_size"])

    def vocab(self) -> Vocab:
        return Vocab.from_file((self.meta_root or self.root) / "vocab.json")

    def glove(self, text_file: str | None = None) -> np.ndarray | None:
        """Vectors for the vocabulary: from a GloVe text file when given, else the shards' baked glove.npy."""
        if text_file:
            return load_glove_text(text_file, self.vocab().words)
        path = (self.meta_root or self.root) / "glove.npy"
        return np.load(path) if path.is_file() else None


@dataclass(frozen=True)
class LoaderPlan:
    """How one epoch is cut: every rank yields `batches_per_epoch` micro-batches of `micro_batch` samples."""

    micro_batch: int
    batches_per_epoch: int  # per rank, micro-batches (optimizer steps x accumulation)
    steps_per_epoch: int

    @classmethod
    def make(cls, cfg: Config, train_samples: int, world_size: int) -> LoaderPlan:
        t = cfg.train
        per_step = world_size * t.grad_accum_steps
        if t.global_batch_size % per_step:
            raise DataError(
                f"train.global_batch_size={t.global_batch_size} is not divisible by world size {world_size} x "
                f"train.grad_accum_steps={t.grad_accum_steps}"
            )
        steps = max(1, train_samples // t.global_batch_size)
        return cls(t.global_batch_size // per_step, steps * t.grad_accum_steps, steps)


def data_order(cfg: Config, shards: ShardSet, world_size: int) -> dict:
    """Everything the order of training batches depends on: a resume continues mid-epoch only if none changed."""
    d, t = cfg.data, cfg.train
    checksums = [s["sha256"] for s in shards.split(d.train_split)["shards"]]
    return {
        "dataset": d.dataset,
        "train_split": d.train_split,
        "shards_sha256": hashlib.sha256(json.dumps(checksums).encode()).hexdigest(),
        "world_size": world_size,
        "workers": max(1, d.workers),  # 0 workers reads like 1
        "shuffle_buffer": d.shuffle_buffer,
        "global_batch_size": t.global_batch_size,
        "grad_accum_steps": t.grad_accum_steps,
        "max_words": d.max_words,
        "seed": t.seed,
    }


# ---------------------------------------------------------------- stages (run inside DataLoader workers)


class ErrorPolicy:
    """`warn`: log the shard and reason, skip, and count; `strict`: stop with an error naming the shard."""

    def __init__(self, mode: str):
        self.strict = mode == "strict"
        self.skipped = 0

    def __call__(self, exn: Exception) -> bool:
        where = next((a for a in reversed(exn.args) if isinstance(a, str) and ".tar" in a), "unknown shard")
        if self.strict:
            raise DataError(f"broken data in {where}: {exn}") from exn
        self.skipped += 1
        log.warning(
            "skipping broken data in %s (%s: %s); %d skipped in this worker",
            where,
            type(exn).__name__,
            exn.args[0] if exn.args else "",
            self.skipped,
        )
        return True


class ConsumerSamples(torch.utils.data.IterableDataset):
    """This (rank, worker)'s endless, shuffled sample stream.

    Epoch by epoch: a permutation of the shards seeded by (seed, epoch), webdataset's split by node, then by
    logical worker (so the shares of one epoch are disjoint), tar to samples, and a shuffle buffer that is
    drained at the end of the epoch's share (so no sample of the next epoch leaks in). With fewer shards than
    consumers, the epochs' permutations are chained before the split, so every consumer still gets shards:
    sampling with replacement instead of a hang.
    """

    def __init__(self, urls: list[str], seed: int, epoch: int, skip: int, bufsize: int, policy: ErrorPolicy):
        self.urls, self.seed, self.epoch, self.skip = list(urls), seed, epoch, skip
        self.bufsize, self.policy = bufsize, policy

    def permutation(self, epoch: int) -> list[dict]:
        order = list(self.urls)
        random.Random(f"shards-{self.seed}-{epoch}").shuffle(order)
        return [{"url": url} for url in order]

    def samples(self, shards, epoch: int):
        rank, _, worker, _ = logical_worker(self.skip)
        mine = split_by_logical_worker(wds.split_by_node(shards), self.skip)
        seed = hash((self.seed, epoch, rank, worker)) & 0xFFFFFFFF
        samples = wds.tarfile_to_samples(handler=self.policy)(mine)
        return wds.shuffle(self.bufsize, initial=self.bufsize, seed=seed)(samples)

    def __iter__(self):
        _, world, _, workers = logical_worker(self.skip)
        if len(self.urls) < world * workers:
            yield from self.samples(chain.from_iterable(map(self.permutation, count(self.epoch))), self.epoch)
            return
        for epoch in count(self.epoch):
            yield from self.samples(iter(self.permutation(epoch)), epoch)


def logical_worker(skip: int) -> tuple[int, int, int, int]:
    """(rank, world, logical worker, workers) of the calling DataLoader worker, rotated by the resume skip."""
    rank, world, worker, workers = wds.utils.pytorch_worker_info()
    return rank, world, (worker + skip) % workers, workers


def split_by_logical_worker(src, skip: int):
    _, _, worker, workers = logical_worker(skip)
    yield from islice(src, worker, None, workers)


def skip_done(src, plan: LoaderPlan, skip: int):
    """Drop the raw samples of this worker's batches before `skip`, before anything is decoded.

    Exact when no sample was broken; a broken sample in the skipped part shifts the stream by one sample.
    """
    _, _, worker, workers = logical_worker(skip)
    yield from islice(src, _count_for_worker(skip, worker, workers) * plan.micro_batch, None)


def take_remaining(src, plan: LoaderPlan, skip: int):
    """Exactly this worker's share of the epoch's batches: the shard stream never ends, so broken samples
    cost a refill, never a short rank (which would hang the others in the gradient all-reduce)."""
    _, _, worker, workers = logical_worker(skip)
    remaining = _count_for_worker(plan.batches_per_epoch, worker, workers) - _count_for_worker(skip, worker, workers)
    yield from islice(src, max(0, remaining))


def _count_for_worker(batches: int, worker: int, workers: int) -> int:
    """How many of batches 0..batches-1 fall on `worker` when batch j goes to worker j % workers."""
    return max(0, math.ceil((batches - worker) / workers))


def decode_image(data: bytes, size: int) -> torch.Tensor:
    image = Image.open(io.BytesIO(data)).convert("RGB").resize((size, size), Image.BILINEAR)
    array = (np.asarray(image, dtype=np.float32) / 255.0 - MEAN) / STD
    return torch.from_numpy(array.transpose(2, 0, 1).copy())


def decode_levels(data: bytes) -> torch.Tensor:
    """Feature-cache levels, fp16 (C2 + C3 + C4, H, W)."""
    return torch.from_numpy(np.load(io.BytesIO(data)))


def model_input(sample: dict, size: int) -> dict:
    """What the model reads from a sample: the cached trunk levels when the shard has them, else the image."""
    if "levels.npy" in sample:
        return {"levels": decode_levels(sample["levels.npy"])}
    return {"image": decode_image(sample["jpg"], size)}


def decode_mask(data: bytes, size: int | None = None) -> torch.Tensor:
    mask = Image.open(io.BytesIO(data)).convert("L")
    if size is not None:
        mask = mask.resize((size, size), Image.NEAREST)
    return torch.from_numpy(np.asarray(mask) > 127)


def encode_tokens(tokens: list[int], max_words: int) -> torch.Tensor:
    out = torch.zeros(max_words, dtype=torch.long)
    tokens = tokens[:max_words]
    out[: len(tokens)] = torch.tensor(tokens, dtype=torch.long)
    return out


def train_sample(sample: dict, cfg: Config, epoch: int) -> dict:
    meta = json.loads(sample["json"])
    if not meta["sentences"]:
        raise ValueError(f"ref {meta['ref_id']} has no sentences", sample.get("__url__", ""))
    sentence = random.Random(f"sentence-{cfg.train.seed}-{epoch}-{meta['ref_id']}").choice(meta["sentences"])
    try:
        inputs = model_input(sample, cfg.model.image_size)
        mask = decode_mask(sample["mask.png"], cfg.model.image_size)
    except Exception as exn:  # a corrupt JPEG or PNG inside an intact tar
        raise ValueError(f"{sample['__key__']}: cannot decode image or mask: {exn}", sample["__url__"]) from exn
    tokens = encode_tokens(sentence["tokens"], cfg.data.max_words)
    return {**inputs, "mask": mask, "tokens": tokens, "ref_id": torch.tensor(meta["ref_id"])}


def collate_train(samples: list[dict], policy: ErrorPolicy, skip: int) -> dict:
    keys = [k for k in ("image", "levels", "mask", "tokens", "ref_id") if k in samples[0]]
    batch = {k: torch.stack([s[k] for s in samples]) for k in keys}
    batch["skipped"] = torch.tensor(policy.skipped)  # cumulative in this worker
    batch["worker"] = torch.tensor(logical_worker(skip)[2])
    return batch


def model_kwargs(batch: dict, device, dtype) -> dict:
    """Keyword arguments of JRNet.forward for a batch from image shards or from the feature cache."""
    kwargs = {"tokens": batch["tokens"].to(device)}
    if "levels" in batch:
        kwargs["cached"] = batch["levels"].to(device)
    else:
        kwargs["image"] = batch["image"].to(device, dtype)
    return kwargs


def train_pipeline(cfg: Config, urls: list[str], plan: LoaderPlan, epoch: int, skip: int) -> wds.DataPipeline:
    policy = ErrorPolicy(cfg.data.on_error)
    return wds.DataPipeline(
        ConsumerSamples(urls, cfg.train.seed, epoch, skip, cfg.data.shuffle_buffer, policy),
        partial(skip_done, plan=plan, skip=skip),
        wds.map(partial(train_sample, cfg=cfg, epoch=epoch), handler=policy),
        wds.batched(plan.micro_batch, collation_fn=partial(collate_train, policy=policy, skip=skip), partial=False),
        partial(take_remaining, plan=plan, skip=skip),
    )


def train_loader(cfg: Config, shards: ShardSet, plan: LoaderPlan, epoch: int, skip: int = 0):
    """Batches skip..batches_per_epoch-1 of `epoch` for this rank, in the same order as an uninterrupted run."""
    urls = shards.urls(cfg.data.train_split)
    _, world, _, _ = wds.utils.pytorch_worker_info()
    workers = max(1, cfg.data.workers)
    if len(urls) < world * workers:
        log.warning(
            "%d shards < %d ranks x %d workers: consumers read overlapping shards this epoch "
            "(sampling with replacement); shard with a smaller --samples-per-shard",
            len(urls),
            world,
            workers,
        )
    return _loader(train_pipeline(cfg, urls, plan, epoch, skip), cfg.data.workers)


def _loader(pipeline, workers: int):
    kill_workers_at_exit()
    # Its own generator: creating an iterator must not draw from the global RNG that dropout uses, or a
    # resumed run (new iterator mid-epoch) would drift from an uninterrupted one.
    return wds.WebLoader(
        pipeline,
        batch_size=None,
        num_workers=workers,
        persistent_workers=False,
        generator=torch.Generator().manual_seed(0),
        worker_init_fn=worker_ignores_stop_signals,
    )


# ---------------------------------------------------------------- evaluation


def eval_items(sample: dict, cfg: Config):
    meta = json.loads(sample["json"])
    try:
        inputs = model_input(sample, cfg.model.image_size)
        mask = decode_mask(sample["mask.png"])
    except Exception as exn:
        raise ValueError(f"{sample['__key__']}: cannot decode image or mask: {exn}", sample["__url__"]) from exn
    for sentence in meta["sentences"]:
        yield {
            **inputs,
            "mask": mask,  # original resolution
            "tokens": encode_tokens(sentence["tokens"], cfg.data.max_words),
            "ref_id": meta["ref_id"],
            "sent_id": sentence["sent_id"],
            "raw": sentence["raw"],
            "jpg": sample["jpg"],
        }


def expand(src, fn, handler):
    for sample in src:
        try:
            yield from fn(sample)
        except Exception as exn:
            if handler(exn):
                continue
            break


def collate_eval(items: list[dict]) -> dict:
    return {
        **{k: torch.stack([i[k] for i in items]) for k in ("image", "levels") if k in items[0]},
        "tokens": torch.stack([i["tokens"] for i in items]),
        "masks": [i["mask"] for i in items],
        "ref_id": [i["ref_id"] for i in items],
        "sent_id": [i["sent_id"] for i in items],
        "raw": [i["raw"] for i in items],
        "jpg": [i["jpg"] for i in items],
    }


def first_refs(src, limit: int):
    yield from islice(src, limit)


def split_refs(src, by_shard: bool):
    """Every ref to exactly one (rank, worker): whole shards when there are enough, else every n-th ref."""
    if by_shard:
        yield from src
        return
    rank, world, worker, workers = wds.utils.pytorch_worker_info()
    yield from islice(src, rank * workers + worker, None, world * workers)


def eval_loader(cfg: Config, shards: ShardSet, split: str, batch_size: int):
    urls = shards.urls(split)
    _, world, _, _ = wds.utils.pytorch_worker_info()
    limit = cfg.data.eval_limit
    # Whole shards per consumer when there are enough; a ref limit needs the global order, so it splits by ref.
    by_shard = limit is None and len(urls) >= world * max(1, cfg.data.workers)
    policy = ErrorPolicy(cfg.data.on_error)
    stages = [wds.SimpleShardList(urls)]
    if by_shard:
        stages += [wds.split_by_node, wds.split_by_worker]
    stages.append(wds.tarfile_to_samples(handler=policy))
    if limit:
        stages.append(partial(first_refs, limit=limit))
    stages += [
        partial(split_refs, by_shard=by_shard),
        partial(expand, fn=partial(eval_items, cfg=cfg), handler=policy),
        wds.batched(batch_size, collation_fn=collate_eval, partial=True),
    ]
    return _loader(wds.DataPipeline(*stages), cfg.data.workers)
