"""Figure 2: the training loader's samples/s against its limit and against a naive per-sample loader.

    .venv/bin/python bench/loader.py [--quick] [--shards DIR --data-root DIR]

Three ways to produce the same kind of training batch (image normalised at S x S, mask at S x S, token ids) from
the same generated dataset, same number of samples, same batch size, same worker count (0 = in the main process,
and 2 DataLoader workers), in interleaved rounds, medians:
  train loader : `jrnet.data.train_loader` as training runs it (shard shuffle, split by worker, tar reading,
                 shuffle buffer, decode + resize, batching);
  bare limit   : a plain loop over the same shard tars (python tarfile) calling the same `decode_image` /
                 `decode_mask` per sample and stacking batches; nothing else (the cost floor of decode+resize);
  naive refer  : `pipeline.refer.ReferDataset` as RIS codebases load data: per sample open the JPEG file and
                 rasterise the polygon/RLE with pycocotools at full resolution, then the same resize/normalise;
                 a map-style DataLoader with shuffle.
S = the demo config's image_size, and 448 (the paper's) in the full run. Torch threads: 1 (as each training rank
on this 2-core machine). Samples/s counts from loader creation to the last batch (worker start-up included, as
training pays it every epoch).
"""

from __future__ import annotations

import argparse
import io
import json
import random
import shutil
import sys
import tarfile
import tempfile
import time
from itertools import islice
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import header, interleave, median, spread, synthetic_dataset, table  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from jrnet.config import load_config  # noqa: E402
from jrnet.data import MEAN, STD, LoaderPlan, ShardSet, decode_image, decode_mask, encode_tokens, train_loader  # noqa: E402


def loader_config(image_size: int, workers: int):
    return load_config("demo", [f"model.image_size={image_size}", f"data.workers={workers}", "log.wandb=disabled"])


# ---------------------------------------------------------------- 1. the training loader


def run_train_loader(shards: Path, image_size: int, workers: int, batches: int) -> int:
    cfg = loader_config(image_size, workers)
    shard_set = ShardSet.open(shards, cfg.data.dataset)
    plan = LoaderPlan.make(cfg, shard_set.split(cfg.data.train_split)["samples"], 1)
    n = 0
    for batch in islice(train_loader(cfg, shard_set, plan, epoch=0), batches):
        n += batch["image"].shape[0]
    return n


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


def run_bare(shards: Path, image_size: int, workers: int, batches: int) -> int:
    cfg = loader_config(image_size, workers)
    shard_set = ShardSet.open(shards, cfg.data.dataset)
    micro = LoaderPlan.make(cfg, shard_set.split(cfg.data.train_split)["samples"], 1).micro_batch
    dataset = BareTarLoop(shard_set.urls(cfg.data.train_split), image_size, cfg.data.max_words, batches * micro)
    n = 0
    if workers == 0:  # the plain loop
        samples = iter(dataset)
        while chunk := list(islice(samples, micro)):
            n += torch.stack([s["image"] for s in chunk]).shape[0]
            torch.stack([s["mask"] for s in chunk])
            torch.stack([s["tokens"] for s in chunk])
        return n
    loader = torch.utils.data.DataLoader(dataset, batch_size=micro, num_workers=workers, drop_last=True)
    for batch in loader:
        n += batch["image"].shape[0]
    return n


# ---------------------------------------------------------------- 3. the naive per-sample refer loader


class NaiveRefer(torch.utils.data.Dataset):
    """ReferDataset items (file open + full-resolution decode + polygon rasterisation), then the same resize."""

    def __init__(self, data_root: Path, shards: Path, image_size: int, max_words: int):
        from pipeline.refer import ReferDataset

        self.refer = ReferDataset(data_root, "synthetic", "train")
        self.vocab = ShardSet.open(shards, "synthetic").vocab()
        self.size, self.max_words = image_size, max_words

    def __len__(self):
        return len(self.refer)

    def __getitem__(self, index: int) -> dict:
        from jrnet.vocab import tokenize

        item = self.refer[index]
        image = Image.fromarray(item["image"]).resize((self.size, self.size), Image.BILINEAR)
        array = (np.asarray(image, dtype=np.float32) / 255.0 - MEAN) / STD
        mask = Image.fromarray(item["mask"].astype(np.uint8) * 255).resize((self.size, self.size), Image.NEAREST)
        sentence = random.Random(index).choice(item["sentences"])
        return {
            "image": torch.from_numpy(array.transpose(2, 0, 1).copy()),
            "mask": torch.from_numpy(np.asarray(mask) > 127),
            "tokens": encode_tokens(self.vocab.encode_words(tokenize(sentence)), self.max_words),
        }


def run_naive(data_root: Path, shards: Path, image_size: int, workers: int, batches: int) -> int:
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
    n = 0
    for batch in islice(loader, batches):
        n += batch["image"].shape[0]
    return n


# ---------------------------------------------------------------- main


def check_same_output(data_root: Path, shards: Path, image_size: int) -> str:
    """The three produce the same tensors for one ref (same decode, resize and normalisation)."""
    cfg = loader_config(image_size, 0)
    shard_set = ShardSet.open(shards, cfg.data.dataset)
    bare = next(iter(BareTarLoop(shard_set.urls("train")[:1], image_size, cfg.data.max_words, 1)))
    naive = NaiveRefer(data_root, shards, image_size, cfg.data.max_words)[0]  # ref 0 = first in shard order
    with tarfile.open(shard_set.urls("train")[0]) as tar:
        first = json.loads(next(tar.extractfile(m).read() for m in tar if m.name.endswith(".json")))
    same_ref = first["ref_id"] == naive_ref_id(naive, data_root)
    image_diff = (bare["image"] - naive["image"]).abs().max().item()
    mask_equal = torch.equal(bare["mask"], naive["mask"])
    return f"first train ref: same ref {same_ref}, image max |diff| {image_diff:.2e}, masks equal {mask_equal}"


def naive_ref_id(_item, data_root: Path) -> int:
    from pipeline.refer import ReferDataset

    return ReferDataset(data_root, "synthetic", "train").refs[0]["ref_id"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="demo image size only, fewer samples and rounds (~1 min)")
    p.add_argument("--shards", type=Path, help="existing shards folder (with synthetic/); default: generate")
    p.add_argument("--data-root", type=Path, help="the refer-layout data the shards were made from")
    args = p.parse_args()
    torch.set_num_threads(1)
    demo = load_config("demo")
    sizes = [demo.model.image_size] if args.quick else [demo.model.image_size, 448]
    samples = {demo.model.image_size: 512 if args.quick else 2048, 448: 768}
    rounds = 2 if args.quick else 3
    header(
        "Figure 2: training loader vs its decode+resize limit vs a naive per-sample refer loader",
        f"samples/s of three loaders over the same synthetic train split, image sizes {sizes}, 0 and 2 workers, "
        f"batch = the demo config's micro-batch for 1 rank ({demo.train.global_batch_size}), {rounds} interleaved "
        "rounds, medians; torch threads 1",
    )
    scratch = Path(tempfile.mkdtemp(prefix="bench-loader-"))
    try:
        if args.shards:
            if not args.data_root:
                raise SystemExit("--shards needs --data-root (the naive loader reads the original files)")
            data_root, shards = args.data_root, args.shards
        else:
            data_root, shards, seconds = synthetic_dataset(scratch, 800 if args.quick else 2000)
            print(f"generated + sharded the synthetic set in {seconds:.1f} s (this machine): {shards}")
        train_refs = ShardSet.open(shards, "synthetic").split("train")["samples"]
        micro = demo.train.global_batch_size
        print(f"train split: {train_refs} refs; micro-batch {micro}")
        print(check_same_output(data_root, shards, demo.model.image_size))

        rows = []
        for size in sizes:
            batches = min(samples[size], train_refs) // micro
            n = batches * micro
            for workers in (0, 2):
                cases = {
                    "train loader": lambda s=size, w=workers, b=batches: run_train_loader(shards, s, w, b),
                    "bare limit": lambda s=size, w=workers, b=batches: run_bare(shards, s, w, b),
                    "naive refer": lambda s=size, w=workers, b=batches: run_naive(data_root, shards, s, w, b),
                }
                for fn in cases.values():  # warm-up: page cache, imports; not counted
                    fn()

                def rate(fn, n=n):
                    t0 = time.perf_counter()
                    got = fn()
                    if got != n:
                        raise SystemExit(f"expected {n} samples, got {got}")
                    return n / (time.perf_counter() - t0)

                result = interleave(
                    {k: (lambda f=f: rate(f)) for k, f in cases.items()},
                    rounds,
                    label=f"S={size} workers={workers} samples/s",
                )
                limit = median(result["bare limit"])
                for name in cases:
                    m = median(result[name])
                    rows.append(
                        [size, workers, n, name, f"{m:.0f}", spread(result[name]), f"{m / limit:.2f}", f"{1e3 / m:.2f}"]
                    )
                train, naive = median(result["train loader"]), median(result["naive refer"])
                print(f"  -> train loader / naive refer = {train / naive:.2f}x, train loader / limit = {train / limit:.2f}")
        print()
        print(
            table(
                rows,
                ["S", "workers", "samples", "loader", "samples/s (median)", "range", "/ bare limit", "ms/sample wall"],
            )
        )
        print(
            "\n(samples/s are this machine's, shared with other jobs; the ratios within one S and worker count come "
            "from interleaved rounds of the same run)"
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    io  # noqa: B018 (kept for symmetry with decode helpers)
    sys.exit(main())
