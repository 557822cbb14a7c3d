"""Figure 2: the training loader's samples/s against its limit and against a naive per-sample loader.

    .venv/bin/python bench/loader.py [--quick]
    .venv/bin/python bench/loader.py --shards DIR --dataset NAME --size S --samples N --json   # one JSON line

Three ways to produce the same kind of training batch (uint8 image at S x S, mask at S x S, token ids) from
the same generated dataset, same number of samples, same batch size, same worker count (0 = in the main process,
and 2 DataLoader workers), in interleaved rounds, medians:
  train loader : `jrnet.stream.train_loader` as training runs it (shard shuffle, split by worker, tar reading,
                 shuffle buffer, decode + resize, batching);
  bare limit   : a plain loop over the same shard tars (python tarfile) calling the same `decode_image` /
                 `decode_mask` per sample and stacking batches; nothing else (the cost floor of decode+resize);
  naive refer  : `jrnet.prep.refer.ReferDataset` as RIS codebases load data: per sample open the JPEG file and
                 rasterise the polygon/RLE with pycocotools at full resolution, then the same resize/normalise;
                 a map-style DataLoader with shuffle.
Datasets: the generated synthetic set (96-160 px JPEGs) at the demo config's S; in the full run also a COCO-sized
stand-in (640 x 480, ~160 KB JPEGs, 40-vertex polygons; see common.make_coco_like) at the paper's S = 448, its
train split sharded with `--train-size 448` (decoding only, no resize, in the training loader).
--json: the training loader alone as training runs it (0 workers, 1 torch thread) over N train samples of any
shards; prints {"samples_per_s", "cpu_ms_per_sample", ...} (CPU time of this process, so the loader's own cost).
Torch threads: 1 (as each training rank on this 2-core machine). Samples/s counts from loader creation to the
last batch (worker start-up and the shuffle buffer's first fill included, as training pays them every epoch).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tarfile
import tempfile
import time
from itertools import islice
from pathlib import Path

import numpy as np
import torch
from common import coco_like_dataset, header, interleave, median, spread, synthetic_dataset, table
from PIL import Image

from jrnet.config import load_config
from jrnet.samples import decode_image, decode_mask, encode_tokens
from jrnet.shards import ShardSet
from jrnet.stream import LoaderPlan, train_loader


def loader_config(image_size: int, workers: int):
    return load_config("demo", [f"model.image_size={image_size}", f"data.workers={workers}", "log.wandb=disabled"])


# ---------------------------------------------------------------- 1. the training loader


def run_train_loader(shards: Path, image_size: int, workers: int, batches: int):
    cfg = loader_config(image_size, workers)
    shard_set = ShardSet.open(shards, cfg.data.dataset)
    plan = LoaderPlan.make(cfg, shard_set.split(cfg.data.train_split)["samples"], 1)
    for batch in islice(train_loader(cfg, shard_set, plan, epoch=0), batches):
        yield batch["image"].shape[0]


# ---------------------------------------------------------------- 2. the bare decode + resize loop (the limit)


class BareTarLoop(torch.utils.data.IterableDataset):
    """Samples of the shard tars in order, split by DataLoader worker: decode + resize + tokens, nothing else."""

    def __init__(self, urls: list[str], image_size: int, max_words: int, limit: int):
        self.urls, self.size, self.max_words, self.limit = urls, image_size, max_words, limit

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        yield from islice(self._samples(self.urls[worker::workers]), self.limit // workers)

    def _samples(self, urls):
        for url in urls:
            with tarfile.open(url) as tar:
                parts: dict[str, bytes] = {}
                key = None
                for member in tar:
                    name = member.name
                    k, _, ext = name.partition(".")
                    if key is not None and k != key:
                        yield self._decode(parts)
                        parts = {}
                    key = k
                    parts[ext] = tar.extractfile(member).read()
                if parts:
                    yield self._decode(parts)

    def _decode(self, parts: dict[str, bytes]) -> dict:
        meta = json.loads(parts["json"])
        return {
            "image": decode_image(parts["jpg"], self.size),
            "mask": decode_mask(parts["mask.png"], self.size),
            "tokens": encode_tokens(meta["sentences"][0]["tokens"], self.max_words),
        }


def run_bare(shards: Path, image_size: int, workers: int, batches: int):
    cfg = loader_config(image_size, workers)
    shard_set = ShardSet.open(shards, cfg.data.dataset)
    micro = LoaderPlan.make(cfg, shard_set.split(cfg.data.train_split)["samples"], 1).micro_batch
    dataset = BareTarLoop(shard_set.urls(cfg.data.train_split), image_size, cfg.data.max_words, batches * micro)
    if workers == 0:  # the plain loop
        samples = iter(dataset)
        while chunk := list(islice(samples, micro)):
            torch.stack([s["mask"] for s in chunk])
            torch.stack([s["tokens"] for s in chunk])
            yield torch.stack([s["image"] for s in chunk]).shape[0]
        return
    loader = torch.utils.data.DataLoader(dataset, batch_size=micro, num_workers=workers, drop_last=True)
    for batch in loader:
        yield batch["image"].shape[0]


# ---------------------------------------------------------------- 3. the naive per-sample refer loader


class NaiveRefer(torch.utils.data.Dataset):
    """ReferDataset items (file open + full-resolution decode + polygon rasterisation), then the same resize."""

    def __init__(self, data_root: Path, shards: Path, image_size: int, max_words: int):
        from jrnet.prep.refer import ReferDataset

        self.refer = ReferDataset(data_root, "synthetic", "train")
        self.vocab = ShardSet.open(shards, "synthetic").vocab()
        self.size, self.max_words = image_size, max_words

    def __len__(self):
        return len(self.refer)

    def __getitem__(self, index: int) -> dict:
        from jrnet.vocab import tokenize

        item = self.refer[index]
        image = Image.fromarray(item["image"]).resize((self.size, self.size), Image.BILINEAR)
        mask = Image.fromarray(item["mask"].astype(np.uint8) * 255).resize((self.size, self.size), Image.NEAREST)
        sentence = random.Random(index).choice(item["sentences"])
        return {
            "image": torch.from_numpy(np.asarray(image)).permute(2, 0, 1),  # uint8, as the training loader
            "mask": torch.from_numpy(np.asarray(mask) > 127),
            "tokens": encode_tokens(self.vocab.encode_words(tokenize(sentence)), self.max_words),
        }


def run_naive(data_root: Path, shards: Path, image_size: int, workers: int, batches: int):
    cfg = loader_config(image_size, workers)
    shard_set = ShardSet.open(shards, cfg.data.dataset)
    micro = LoaderPlan.make(cfg, shard_set.split(cfg.data.train_split)["samples"], 1).micro_batch
    dataset = NaiveRefer(data_root, shards, image_size, cfg.data.max_words)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=micro,
        shuffle=True,
        num_workers=workers,
        drop_last=True,
        generator=torch.Generator().manual_seed(0),
    )
    for batch in islice(loader, batches):
        yield batch["image"].shape[0]


# ---------------------------------------------------------------- main


def check_same_output(data_root: Path, shards: Path, image_size: int) -> str:
    """The bare loop and the naive loader give the same tensors for the same ref (the first train ref whose
    source file is an RGB JPEG: the shards re-encode grayscale/CMYK ones, so those differ by design)."""
    cfg = loader_config(image_size, 0)
    naive_set = NaiveRefer(data_root, shards, image_size, cfg.data.max_words)
    refer = naive_set.refer.refer
    index = 0
    for index, ref in enumerate(naive_set.refer.refs):  # noqa: B007 (used after the loop)
        with Image.open(refer.image_path(refer.image_of(ref))) as source:
            if source.format == "JPEG" and source.mode == "RGB":
                break
    key = f"{ref['ref_id']:09d}"
    for url in ShardSet.open(shards, cfg.data.dataset).urls("train"):
        with tarfile.open(url) as tar:
            parts = {m.name.partition(".")[2]: tar.extractfile(m).read() for m in tar if m.name.startswith(key + ".")}
        if parts:
            break
    bare = BareTarLoop([], image_size, cfg.data.max_words, 0)._decode(parts)
    naive = naive_set[index]
    image_diff = (bare["image"].int() - naive["image"].int()).abs().max().item()
    mask_equal = torch.equal(bare["mask"], naive["mask"])
    return (
        f"check: ref {ref['ref_id']} through the bare loop and the naive loader: image max |diff| {image_diff:.1e}, "
        f"masks equal {mask_equal}"
    )


def measure(name, data_root, shards, size, n_wanted, rounds) -> list[list[object]]:
    train_refs = ShardSet.open(shards, "synthetic").split("train")["samples"]
    micro = load_config("demo").train.global_batch_size
    batches = min(n_wanted, train_refs) // micro
    n = batches * micro
    print(f"\n{name}: {train_refs} train refs, S={size}, {n} samples per measurement")
    print(check_same_output(data_root, shards, size))
    rows = []
    for workers in (0, 2):
        cases = {
            "train loader": lambda w=workers: run_train_loader(shards, size, w, batches),
            "bare limit": lambda w=workers: run_bare(shards, size, w, batches),
            "naive refer": lambda w=workers: run_naive(data_root, shards, size, w, batches),
        }
        for fn in cases.values():  # warm-up (page cache, imports, first-call costs); not counted
            sum(fn())
        steady: dict[str, list[float]] = {k: [] for k in cases}

        def rate(key, cases=cases, steady=steady):
            t0 = time.perf_counter()
            first, got = None, 0
            for size_of_batch in cases[key]():
                got += size_of_batch
                if first is None:
                    first, after_first = time.perf_counter(), got
            end = time.perf_counter()
            if got != n:
                raise SystemExit(f"{key}: expected {n} samples, got {got}")
            steady[key].append((got - after_first) / (end - first))
            return n / (end - t0)

        result = interleave({k: (lambda k=k: rate(k)) for k in cases}, rounds, label=f"workers={workers} samples/s")
        limit, steady_limit = median(result["bare limit"]), median(steady["bare limit"])
        for key in cases:
            m, ms = median(result[key]), median(steady[key])
            rows.append(
                [
                    name,
                    size,
                    workers,
                    n,
                    key,
                    f"{m:.0f}",
                    spread(result[key]),
                    f"{m / limit:.2f}",
                    f"{ms:.0f}",
                    f"{ms / steady_limit:.2f}",
                ]
            )
        train, naive = median(result["train loader"]), median(result["naive refer"])
        print(f"  -> train loader / naive refer = {train / naive:.2f}, train loader / bare limit = {train / limit:.2f}")
    return rows


def json_mode(shards: Path, dataset: str, size: int, samples: int) -> dict:
    """The training loader over `samples` train samples, 0 workers, as one training rank runs it."""
    shard_set = ShardSet.open(shards, dataset)
    overrides = [f"data.dataset={dataset}", f"model.image_size={size}", "data.workers=0", "log.wandb=disabled"]
    cfg = load_config("demo", [*overrides, f"data.max_words={shard_set.manifest['options']['max_words']}"])
    plan = LoaderPlan.make(cfg, shard_set.split(cfg.data.train_split)["samples"], 1)
    batches = max(1, samples // plan.micro_batch)
    wall, cpu = time.perf_counter(), time.process_time()
    got = sum(batch["image"].shape[0] for batch in islice(loop_epochs(cfg, shard_set, plan), batches))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "dataset": dataset,
        "size": size,
        "train_size": shard_set.manifest["options"].get("train_size"),
        "samples": got,
        "samples_per_s": round(got / wall, 1),
        "cpu_ms_per_sample": round(1000 * cpu / got, 3),
        "torch_threads": torch.get_num_threads(),
    }


def loop_epochs(cfg, shard_set, plan):
    for epoch in range(10**6):
        yield from train_loader(cfg, shard_set, plan, epoch=epoch)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="the synthetic set only, fewer samples and rounds (~1 min)")
    p.add_argument("--json", action="store_true", help="the training loader alone on --shards: one JSON object")
    p.add_argument("--shards", type=Path, help="with --json: a shards folder")
    p.add_argument("--dataset", default="synthetic", help="with --json: the dataset folder under --shards")
    p.add_argument("--size", type=int, default=448, help="with --json: model.image_size")
    p.add_argument("--samples", type=int, default=512, help="with --json: train samples to load")
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.json:
        if args.shards is None:
            p.error("--json needs --shards")
        print(json.dumps(json_mode(args.shards, args.dataset, args.size, args.samples)))
        return 0
    demo = load_config("demo")
    rounds = 2 if args.quick else 3
    header(
        "Figure 2: training loader vs its decode+resize limit vs a naive per-sample refer loader",
        "samples/s of three loaders over the same train split, 0 and 2 workers, batch = the demo config's "
        f"micro-batch for 1 rank ({demo.train.global_batch_size}), {rounds} interleaved rounds, medians; "
        f"torch threads 1. Datasets: the synthetic set at the demo's S={demo.model.image_size}"
        + ("" if args.quick else "; the COCO-sized stand-in (640x480, ~160 KB JPEGs) at the paper's S=448"),
    )
    scratch = Path(tempfile.mkdtemp(prefix="bench-loader-"))
    try:
        data_root, shards, seconds = synthetic_dataset(scratch, 800 if args.quick else 2000)
        print(f"generated + sharded the synthetic set in {seconds:.1f} s (this machine)")
        rows = measure("synthetic", data_root, shards, demo.model.image_size, 512 if args.quick else 2048, rounds)
        if not args.quick:
            data_root, shards, seconds = coco_like_dataset(scratch, 400, extra=("--train-size", "448"))
            print(f"\nwrote + sharded the COCO-sized stand-in in {seconds:.1f} s (this machine)")
            rows += measure("coco-sized", data_root, shards, 448, 512, rounds)  # issue 13 measured 512 refs
        print()
        print(
            table(
                rows,
                [
                    "dataset",
                    "S",
                    "workers",
                    "samples",
                    "loader",
                    "samples/s (median)",
                    "range",
                    "/ bare limit",
                    "after 1st batch samples/s",
                    "/ bare limit",
                ],
            )
        )
        print(
            "\n(samples/s are this machine's, shared with other jobs; ratios compare loaders measured in "
            "interleaved rounds of the same run, same dataset, S and worker count. 'after 1st batch' leaves out "
            "start-up: worker processes, the shuffle buffer's first fill)"
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
