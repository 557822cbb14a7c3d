"""Shards from elsewhere: what reading them over HTTP or a `pipe:` command costs, and what the cache costs.

    .venv/bin/python bench/remote_shards.py [--images 120] [--rounds 5]

The COCO-sized stand-in (640 x 480, ~160 KB JPEGs, 100 refs per shard, train split stored at 448 px with
`--train-size 448`) served by Python's http.server on loopback (a thread of this process). In interleaved
rounds, medians:
  bytes : every train shard read to the end through `ShardSet.open_shard`, MB/s, from
          local (the folder), http (streamed), pipe (pipe:cat), cache cold (http into an emptied data.cache_dir:
          download, sha256, fsync, rename, then read) and cache warm (the cached files: sha256 check, then read);
  loader: `train_loader` (0 workers, 1 torch thread) over one epoch of the train split, samples/s, from local,
          http and cache warm: does the source matter once images are decoded?
Loopback has no latency and ~GB/s: these are the costs of this code, not of a network.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import torch
from common import coco_like_dataset, free_port, header, interleave, median, spread, table, timed

from jrnet.config import load_config
from jrnet.shards import ShardSet
from jrnet.stream import LoaderPlan, train_loader


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def serve(folder: Path) -> tuple[ThreadingHTTPServer, str]:
    port = free_port()
    httpd = ThreadingHTTPServer(("127.0.0.1", port), partial(QuietHandler, directory=str(folder)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{port}"


def config(cache: Path | None = None):
    extra = [f"data.cache_dir={cache}"] if cache else []
    return load_config("demo", ["model.image_size=448", "data.workers=0", "data.max_words=25", *extra])


def read_all(shards: str, cache: Path | None = None) -> None:
    shard_set = ShardSet.open(shards, "synthetic", config(cache).data)
    for entry in shard_set.entries("train"):
        with shard_set.open_shard(entry) as stream:
            while stream.read(1 << 20):
                pass


def cold(url: str, cache: Path) -> None:
    shutil.rmtree(cache, ignore_errors=True)
    read_all(url, cache)


def one_epoch(shards: str, cache: Path | None = None) -> int:
    cfg = config(cache)
    shard_set = ShardSet.open(shards, "synthetic", cfg.data)
    plan = LoaderPlan.make(cfg, shard_set.split("train")["samples"], 1)
    return sum(len(b["ref_id"]) for b in train_loader(cfg, shard_set, plan, 0))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=120, help="COCO-sized images (2.5 refs each)")
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    header("Shards over HTTP / pipe: and the local cache", "MB/s reading every train shard; loader samples/s")
    torch.set_num_threads(1)
    scratch = Path(tempfile.mkdtemp(prefix="bench_remote_"))
    try:
        _, shards, _ = coco_like_dataset(scratch, args.images, extra=("--train-size", "448"))
        httpd, url = serve(shards)
        cache, warm = scratch / "cache", scratch / "warm"
        read_all(url, warm)
        train = ShardSet.open(shards, "synthetic").split("train")
        megabytes = sum((shards / "synthetic" / s["name"]).stat().st_size for s in train["shards"]) / 1e6
        print(f"train split: {train['samples']} refs in {len(train['shards'])} shards, {megabytes:.1f} MB\n")
        cases = {
            "local": lambda: timed(lambda: read_all(str(shards))),
            "http": lambda: timed(lambda: read_all(url)),
            "pipe": lambda: timed(lambda: read_all(f"pipe:cat {shards}/{{path}}")),
            "cache cold": lambda: timed(lambda: cold(url, cache)),
            "cache warm": lambda: timed(lambda: read_all(url, warm)),
        }
        seconds = interleave(cases, args.rounds, "bytes")
        rows = [[n, f"{megabytes / median(s):.0f}", spread([megabytes / x for x in s])] for n, s in seconds.items()]
        print("\n" + table(rows, ["read every train shard from", "MB/s (median)", "range"]) + "\n")
        loaders = {
            "local": lambda: timed(lambda: one_epoch(str(shards))),
            "http": lambda: timed(lambda: one_epoch(url)),
            "cache warm": lambda: timed(lambda: one_epoch(url, warm)),
        }
        seconds = interleave(loaders, max(3, args.rounds // 2), "loader")
        n = one_epoch(str(shards))  # samples in an epoch's whole batches
        rows = [[name, f"{n / median(s):.1f}", spread([n / x for x in s])] for name, s in seconds.items()]
        print("\n" + table(rows, ["train_loader epoch from", "samples/s (median)", "range"]))
        httpd.shutdown()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
