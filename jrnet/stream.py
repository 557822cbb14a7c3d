"""The training stream: every rank's micro-batches, epoch after epoch, in an order that a resume reproduces.

Shard list -> shuffle seeded by epoch -> split by node -> split by worker -> tar to samples -> shuffle buffer
-> (skip to the resume position) -> decode + resize -> batch. The shard list cycles into the next epoch's
permutation, so no rank or worker ever runs dry: every rank yields exactly the same number of batches per epoch,
whatever the number of shards. One sentence per ref, drawn at random (seeded by epoch and ref, so it does not
depend on worker timing). A mix of datasets (jrnet/mix.py) runs this per dataset and draws, sample by sample,
which one the next comes from. `data.oversample` draws the same way between a dataset's uniform stream and a
stream of only its refs of one expression kind (with only that kind's sentences): an epoch is still as many
samples as the train split holds, some refs of the kind seen more than once in it and others not at all.

Shards are read wherever they live (jrnet/location.py). One that breaks off in the middle (a connection cut, a
truncated tar) costs the rest of it, counted as skipped samples, and the endless shard stream refills the batch:
every rank still yields the same number of batches.

Exact resume: a DataLoader hands out batches round-robin over its workers, so batch j of an epoch comes from
worker j % W. Resuming at batch k, physical worker p plays the logical worker (p + k) % W and drops the raw
samples of its batches before k, before anything is decoded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import zlib
from dataclasses import dataclass
from functools import partial
from itertools import chain, count, islice

import torch
import webdataset as wds
from torch.utils.data import default_collate

from jrnet.config import Config
from jrnet.mirror import Mirrors
from jrnet.mix import Mix, Part
from jrnet.preemption import kill_workers_at_exit, worker_ignores_stop_signals
from jrnet.samples import ErrorPolicy, train_sample
from jrnet.shard_format import META
from jrnet.shards import DataError, ShardSet

MAX_BARREN = 3  # shards in a row that failed before their first sample: then the source is gone, not flaky

log = logging.getLogger(__name__)


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


def data_order(cfg: Config, data: Mix, world_size: int) -> dict:
    """Everything the order of training batches depends on: a resume continues mid-epoch only if none changed.
    Not where the shards are read from: the same shards over HTTP continue a run begun on a local copy."""
    d, t = cfg.data, cfg.train
    sums = {p.name: [s["sha256"] for s in p.shards.split(d.train_split)["shards"]] for p in data.parts}
    checksums = next(iter(sums.values())) if not data.mixed else sums
    return {
        "dataset": d.dataset,
        "datasets": d.datasets,
        "oversample": d.oversample,
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


class TrainStream:
    """This rank's micro-batches, epoch after epoch. `state_dict()` is the position a resume continues from:
    exactly, when the data order is unchanged; else from the start of the epoch (`load_state_dict` says why)."""

    def __init__(self, cfg: Config, data: Mix, plan: LoaderPlan, world_size: int):
        self.cfg, self.data, self.plan = cfg, data, plan
        self.order = data_order(cfg, data, world_size)
        self.epoch = self.batch_in_epoch = 0

    def __iter__(self):
        while True:
            for batch in train_loader(self.cfg, self.data, self.plan, self.epoch, skip=self.batch_in_epoch):
                self.batch_in_epoch += 1
                yield batch
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch, "order": self.order}

    def load_state_dict(self, state: dict) -> str:
        """Restore the position; returns how exact it is, for the log."""
        self.epoch, self.batch_in_epoch = state["epoch"], state["batch_in_epoch"]
        saved = state.get("order", {})
        changed = [f"{k} {saved.get(k)!r} -> {v!r}" for k, v in self.order.items() if saved.get(k) != v]
        if not changed:
            return f"epoch {self.epoch}, batch {self.batch_in_epoch}: exact data position"
        lost, self.batch_in_epoch = self.batch_in_epoch, 0
        return (
            f"epoch {self.epoch} restarted, {lost} batches of it are seen again: the data order changed "
            f"({'; '.join(changed)})"
        )


class ConsumerSamples(torch.utils.data.IterableDataset):
    """This (rank, worker)'s endless, shuffled sample stream.

    Epoch by epoch: a permutation of the shards seeded by (seed, epoch), webdataset's split by node, then by
    logical worker (so the shares of one epoch are disjoint), tar to samples, and a shuffle buffer that is
    drained at the end of the epoch's share (so no sample of the next epoch leaks in). With fewer shards than
    consumers, the epochs' permutations are chained before the split, so every consumer still gets shards:
    sampling with replacement instead of a hang.

    `kind`: only the refs with a sentence of that expression kind, in a shard order and shuffle of their own.
    """

    def __init__(self, shards: ShardSet, split: str, seed: int, epoch: int, skip: int, bufsize: int, policy, kind=None):
        self.shards, self.entries, self.seed, self.epoch, self.skip = shards, shards.entries(split), seed, epoch, skip
        self.bufsize, self.policy, self.kind = bufsize, policy, kind

    def permutation(self, epoch: int) -> list[dict]:
        order = [dict(entry) for entry in self.entries]
        random.Random(f"shards-{self.seed}-{epoch}" + (f"-{self.kind}" if self.kind else "")).shuffle(order)
        return order

    def samples(self, shards, epoch: int):
        rank, _, worker, _ = logical_worker(self.skip)
        mine = split_by_logical_worker(wds.split_by_node(shards), self.skip)
        seed = hash((self.seed, epoch, rank, worker)) & 0xFFFFFFFF
        samples = read_shards(mine, self.shards, self.policy)
        if self.kind:
            seed ^= zlib.crc32(self.kind.encode())  # crc32, not hash(): str hashes differ from process to process
            samples = of_kind(samples, self.kind, refs=sum(entry["samples"] for entry in self.entries))
        return wds.shuffle(self.bufsize, initial=self.bufsize, seed=seed)(samples)

    def __iter__(self):
        _, world, _, workers = logical_worker(self.skip)
        if len(self.entries) < world * workers:
            yield from self.samples(chain.from_iterable(map(self.permutation, count(self.epoch))), self.epoch)
            return
        for epoch in count(self.epoch):
            yield from self.samples(iter(self.permutation(epoch)), epoch)


class DrawnSamples(torch.utils.data.IterableDataset):
    """A (rank, worker)'s samples drawn one by one from several streams by weight, seeded by (name, seed, epoch,
    rank, logical worker), so the draws do not depend on timing and a resume replays them. A mix of datasets
    (`tag` records which one each sample is from), or a dataset's uniform stream and its oversampled kinds."""

    def __init__(self, parts: list, weights: list[float], name: str, seed: int, epoch: int, skip: int, tag=None):
        self.parts, self.weights, self.name, self.seed, self.epoch, self.skip = parts, weights, name, seed, epoch, skip
        self.tag = tag

    def __iter__(self):
        rank, _, worker, _ = logical_worker(self.skip)
        streams = [iter(part) for part in self.parts]  # lazy: a stream never drawn is never read
        draw = random.Random(f"{self.name}-{self.seed}-{self.epoch}-{rank}-{worker}")
        which = range(len(streams))
        while True:
            part = draw.choices(which, self.weights)[0]
            sample = next(streams[part])
            yield {**sample, self.tag: part} if self.tag else sample


def read_shards(entries, shards: ShardSet, policy: ErrorPolicy):
    """The samples of each shard in turn (as webdataset's tarfile_to_samples makes them).

    A shard that breaks off costs the rest of it: `policy` counts the samples lost, or (strict) fails naming the
    shard. `MAX_BARREN` shards in a row that failed before giving a single sample (unavailable after their
    retries, or stalled until the read timeout) end the stream with a DataError naming the last: the source is
    gone, and going on would spin forever while the other ranks wait.
    """
    barren = 0
    for entry in entries:
        read = 0
        try:
            for sample in shards.samples(entry):
                read += 1
                yield sample
            barren = 0
        except Exception as exn:
            barren = 0 if read else barren + 1
            if barren >= MAX_BARREN:
                raise DataError(
                    f"{barren} shards in a row failed before their first sample, the last {entry['url']}: {exn}"
                ) from exn
            if not any(isinstance(arg, str) and entry["url"] in arg for arg in exn.args):
                exn.args = (*exn.args, entry["url"])  # the policy names the shard
            policy(exn, samples=max(1, entry["samples"] - read))


def of_kind(samples, kind: str, refs: int):
    """The samples with a sentence of `kind`, keeping only those sentences (the one drawn for training is of
    `kind`). `refs` (the split's size) in a row without one: the kind is not in these shards."""
    missed = 0
    for sample in samples:
        meta = json.loads(sample[META])
        sentences = [sentence for sentence in meta["sentences"] if sentence.get("kind") == kind]
        if sentences:
            missed = 0
            yield {**sample, META: json.dumps({**meta, "sentences": sentences}).encode()}
            continue
        missed += 1
        if missed >= refs:
            raise DataError(
                f"data.oversample: no sentence of kind {kind!r} in {refs} refs, the last in {sample['__url__']}"
            )


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


def mixed_train_sample(sample: dict, cfg: Config, epoch: int, tokens: tuple[torch.Tensor, ...]) -> dict:
    """A training sample of a mix: its token ids mapped into the mix's vocabulary, and which dataset it is."""
    out, part = train_sample(sample, cfg, epoch), sample["__part__"]
    return {**out, "tokens": tokens[part][out["tokens"]], "part": part}


def collate_train(samples: list[dict], policy: ErrorPolicy, skip: int) -> dict:
    keys = [k for k in ("image", "levels", "mask", "tokens", "ref_id") if k in samples[0]]
    # default_collate stacks straight into shared memory inside a worker: one copy fewer on the way to the rank
    batch = {k: default_collate([s[k] for s in samples]) for k in keys}
    if "jpeg" in samples[0]:
        batch["jpeg"] = [s["jpeg"] for s in samples]  # encoded, of different lengths
    if "part" in samples[0]:
        batch["part"] = torch.tensor([s["part"] for s in samples])  # a mix: which dataset each sample is from
    batch["skipped"] = torch.tensor(policy.skipped)  # cumulative in this worker
    batch["worker"] = torch.tensor(logical_worker(skip)[2])
    return batch


def dataset_samples(part: Part, cfg: Config, epoch: int, skip: int, policy: ErrorPolicy):
    """One dataset's samples: uniform over its refs, or with `data.oversample`'s shares drawn from its refs of
    those expression kinds."""
    d, seed = cfg.data, cfg.train.seed
    consumer = partial(ConsumerSamples, part.shards, d.train_split, seed, epoch, skip, d.shuffle_buffer, policy)
    if not d.oversample:
        return consumer()
    kinds, shares = zip(*sorted(d.oversample.items()), strict=True)
    streams = [consumer(), *(consumer(kind=kind) for kind in kinds)]
    return DrawnSamples(streams, [max(0.0, 1 - sum(shares)), *shares], f"oversample-{part.name}", seed, epoch, skip)


def train_pipeline(cfg: Config, data: Mix, plan: LoaderPlan, epoch: int, skip: int) -> wds.DataPipeline:
    d, seed = cfg.data, cfg.train.seed
    policy = ErrorPolicy(d.on_error)
    parts = [dataset_samples(p, cfg, epoch, skip, policy) for p in data.parts]
    source, sample = parts[0], partial(train_sample, cfg=cfg, epoch=epoch)
    if data.mixed:
        source = DrawnSamples(parts, data.weights, "mix", seed, epoch, skip, tag="__part__")
        sample = partial(mixed_train_sample, cfg=cfg, epoch=epoch, tokens=data.tokens)
    mirror = [wds.map(partial(Mirrors(d.flips, data.vocab, seed), epoch=epoch))] if d.flips else []
    return wds.DataPipeline(
        source,
        partial(skip_done, plan=plan, skip=skip),
        wds.map(sample, handler=policy),
        *mirror,
        wds.batched(plan.micro_batch, collation_fn=partial(collate_train, policy=policy, skip=skip), partial=False),
        partial(take_remaining, plan=plan, skip=skip),
    )


def train_loader(cfg: Config, data: Mix | ShardSet, plan: LoaderPlan, epoch: int, skip: int = 0):
    """Batches skip..batches_per_epoch-1 of `epoch` for this rank, in the same order as an uninterrupted run."""
    data = data if isinstance(data, Mix) else Mix.of(data)
    _, world, _, _ = wds.utils.pytorch_worker_info()
    workers = max(1, cfg.data.workers)
    for part in data.parts:
        shards = len(part.shards.urls(cfg.data.train_split))
        if shards < world * workers:
            log.warning(
                "%s: %d shards < %d ranks x %d workers: consumers read overlapping shards this epoch "
                "(sampling with replacement); shard with a smaller --samples-per-shard",
                part.name,
                shards,
                world,
                workers,
            )
    return make_loader(train_pipeline(cfg, data, plan, epoch, skip), cfg.data.workers)


def make_loader(pipeline, workers: int):
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
        pin_memory=torch.cuda.is_available(),  # page-locked batches: the copy to the GPU overlaps compute
    )
