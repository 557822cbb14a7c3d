"""The streaming loader: disjoint shares per (rank, worker), equal batch counts, no hang with few shards,
exact mid-epoch resume, and evaluation that sees every sentence exactly once."""

from __future__ import annotations

import io
import json
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from jrnet.config import load_config
from jrnet.eval_stream import eval_loader
from jrnet.shard_format import IMAGE, MASK, META, VOCAB, Manifest, ShardEntry, SplitEntry, write_manifest, write_tar
from jrnet.shards import ShardSet
from jrnet.stream import LoaderPlan, train_loader
from jrnet.vocab import PAD, UNK, Vocab


def write_shards(
    root,
    shards: int,
    per_shard: int,
    split: str = "train",
    dataset: str = "synthetic",
    words=("red", "circle"),
    kinds: list[tuple[str, str]] | None = None,
) -> None:
    """Tiny hand-made shards through the shard format's own writers (two sentences per ref, both `words`).
    `kinds`: ref r's two sentences are of the expression kinds kinds[r % len(kinds)], and sentence k is the one
    word of id 2 + k (a generated set's shards)."""
    folder = root / dataset
    folder.mkdir(parents=True, exist_ok=True)
    entries, ref = [], 0
    for s in range(shards):
        samples = []
        for _ in range(per_shard):
            jpg, png = io.BytesIO(), io.BytesIO()
            Image.fromarray(np.full((12, 10, 3), ref % 255, np.uint8)).save(jpg, "JPEG")
            Image.fromarray(np.eye(12, 10, dtype=np.uint8) * 255).save(png, "PNG")
            sentences = [{"sent_id": 2 * ref + k, "raw": "x", "tokens": [2, 3], "truncated": False} for k in (0, 1)]
            for k, sentence in enumerate(sentences if kinds else []):
                sentence.update(tokens=[2 + k], kind=kinds[ref % len(kinds)][k])
            meta = {"ref_id": ref, "image_id": ref, "split": split, "sentences": sentences}
            samples.append({"__key__": f"{ref:09d}", IMAGE: jpg.getvalue(), MASK: png.getvalue(), META: dumps(meta)})
            ref += 1
        name = f"{split}-{s:06d}.tar"
        sha256 = write_tar(folder / name, samples)
        entries.append(ShardEntry(name=name, sha256=sha256, samples=per_shard, sentences=2 * per_shard))
    split_entry = SplitEntry(
        shards=entries, samples=ref, sentences=2 * ref, truncated_sentences=0, missing_images=[], empty_masks=[]
    )
    options = {"max_words": 8}
    write_manifest(folder, Manifest(dataset=dataset, options=options, vocab_size=4, splits={split: split_entry}))
    (folder / VOCAB).write_text(Vocab([PAD, UNK, *words]).to_json())


def dumps(meta: dict) -> bytes:
    return json.dumps(meta).encode()


def config(*overrides):
    return load_config("tiny", ["data.workers=2", "train.global_batch_size=8", "model.image_size=16", *overrides])


def rank_batches(monkeypatch, shards, cfg, rank, world, epoch=0, skip=0):
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("WORLD_SIZE", str(world))
    shard_set = ShardSet.open(shards, "synthetic")
    plan = LoaderPlan.make(cfg, shard_set.split("train")["samples"], world)
    return [b["ref_id"].tolist() for b in train_loader(cfg, shard_set, plan, epoch, skip)], plan


def test_two_ranks_two_workers_disjoint_and_equal(tmp_path, monkeypatch):
    write_shards(tmp_path, shards=16, per_shard=4)  # 64 refs; 4 consumers x 4 shards
    cfg = config()
    seen = {}
    for rank in (0, 1):
        batches, plan = rank_batches(monkeypatch, tmp_path, cfg, rank, 2)
        assert len(batches) == plan.batches_per_epoch == 8 and all(len(b) == 4 for b in batches)
        seen[rank] = [r for b in batches for r in b]
    counts = Counter(seen[0] + seen[1])
    assert max(counts.values()) == 1  # no ref twice in an epoch
    assert sorted(counts) == list(range(64))  # and every ref once
    again, _ = rank_batches(monkeypatch, tmp_path, cfg, 0, 2, epoch=1)
    assert [r for b in again for r in b] != seen[0]  # another epoch, another order


def test_fewer_shards_than_consumers_never_hangs(tmp_path, monkeypatch):
    write_shards(tmp_path, shards=1, per_shard=20)
    cfg = config()
    lengths = []
    for rank in (0, 1):
        batches, plan = rank_batches(monkeypatch, tmp_path, cfg, rank, 2)
        lengths.append(len(batches))
    assert lengths == [plan.batches_per_epoch] * 2 == [2, 2]


@pytest.mark.parametrize("skip", [1, 3, 5])
def test_resume_mid_epoch_continues_the_same_stream(tmp_path, monkeypatch, skip):
    write_shards(tmp_path, shards=16, per_shard=4)
    cfg = config()
    full, _ = rank_batches(monkeypatch, tmp_path, cfg, 1, 2)
    resumed, _ = rank_batches(monkeypatch, tmp_path, cfg, 1, 2, skip=skip)
    assert resumed == full[skip:]


def test_eval_sees_every_sentence_once_across_ranks_and_workers(tmp_path, monkeypatch):
    for shards in (1, 16):  # split by ref (few shards) and by shard (enough shards)
        root = tmp_path / str(shards)
        write_shards(root, shards=shards, per_shard=64 // shards, split="val")
        cfg = config()
        sentences = []
        for rank in (0, 1):
            monkeypatch.setenv("RANK", str(rank))
            monkeypatch.setenv("WORLD_SIZE", "2")
            for batch in eval_loader(cfg, ShardSet.open(root, "synthetic"), "val", batch_size=5):
                sentences += batch["sent_id"]
                assert all(m.shape == (12, 10) for m in batch["masks"])  # original resolution
        assert sorted(sentences) == list(range(128))
