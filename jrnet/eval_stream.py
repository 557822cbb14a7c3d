"""The evaluation stream: every sentence of every ref of a split exactly once across all ranks and workers,
with the mask at the image's original resolution."""

from __future__ import annotations

from functools import partial
from itertools import islice

import torch
import webdataset as wds

from jrnet.config import Config
from jrnet.samples import ErrorPolicy, collate_eval, eval_items
from jrnet.shards import ShardSet
from jrnet.stream import make_loader, read_shards


def expand(src, fn, handler):
    for sample in src:
        try:
            yield from fn(sample)
        except Exception as exn:
            if handler(exn):
                continue
            break


def first_refs(src, limit: int):
    yield from islice(src, limit)


def split_refs(src, by_shard: bool):
    """Every ref to exactly one (rank, worker): whole shards when there are enough, else every n-th ref."""
    if by_shard:
        yield from src
        return
    rank, world, worker, workers = wds.utils.pytorch_worker_info()
    yield from islice(src, rank * workers + worker, None, world * workers)


class ShardEntries(torch.utils.data.IterableDataset):
    def __init__(self, entries: list[dict]):
        self.entries = entries

    def __iter__(self):
        yield from (dict(entry) for entry in self.entries)


def map_tokens(src, table: torch.Tensor):
    """A mix's evaluation: the dataset's token ids into the run's vocabulary (jrnet/mix.py)."""
    for item in src:
        yield {**item, "tokens": table[item["tokens"]]}


def eval_loader(cfg: Config, shards: ShardSet, split: str, batch_size: int, tokens: torch.Tensor | None = None):
    entries = shards.entries(split)
    _, world, _, _ = wds.utils.pytorch_worker_info()
    limit = cfg.data.eval_limit
    # Whole shards per consumer when there are enough; a ref limit needs the global order, so it splits by ref.
    by_shard = limit is None and len(entries) >= world * max(1, cfg.data.workers)
    policy = ErrorPolicy(cfg.data.on_error)
    stages = [ShardEntries(entries)]
    if by_shard:
        stages += [wds.split_by_node, wds.split_by_worker]
    stages.append(partial(read_shards, shards=shards, policy=policy))
    if limit:
        stages.append(partial(first_refs, limit=limit))
    stages += [
        partial(split_refs, by_shard=by_shard),
        partial(expand, fn=partial(eval_items, cfg=cfg), handler=policy),
    ]
    if tokens is not None:
        stages.append(partial(map_tokens, table=tokens))
    stages.append(wds.batched(batch_size, collation_fn=collate_eval, partial=True))
    return make_loader(wds.DataPipeline(*stages), cfg.data.workers)
