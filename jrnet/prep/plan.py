"""What to write: the refs of every split, checked, cut into shards (one sample per ref, sorted by ref_id)."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jrnet.prep.refer import Refer, mask_area
from jrnet.shard_format import FORMAT_VERSION
from jrnet.vocab import Vocab, sentence_words, truncate

SHOW_FIRST = 5  # how many missing files or empty masks a message lists


class InputError(Exception):
    """A problem with the input data or options: reported as one `error:` line, exit code 2."""


# ---------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Sample:
    key: str
    meta: dict[str, Any]  # the sample's json record
    image_path: str
    segmentation: Any
    image_stamp: tuple[int, int]  # (size, mtime_ns): a changed image file invalidates its shard


@dataclass(frozen=True)
class ShardTask:
    path: Path
    split: str
    samples: tuple[Sample, ...]
    resize: int | None = None  # train split with --train-size: image and mask stored at resize x resize

    @property
    def sentences(self) -> int:
        return sum(len(s.meta["sentences"]) for s in self.samples)

    @property
    def truncated_sentences(self) -> int:
        return sum(sentence["truncated"] for s in self.samples for sentence in s.meta["sentences"])

    def digest(self) -> str:
        """Checksum of everything the shard's bytes depend on."""
        inputs = [FORMAT_VERSION, self.resize, [[s.key, s.meta, s.segmentation, s.image_stamp] for s in self.samples]]
        return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


@dataclass
class SplitPlan:
    split: str
    refs: int  # in the source
    tasks: list[ShardTask] = field(default_factory=list)
    missing_images: list[str] = field(default_factory=list)
    empty_masks: list[int] = field(default_factory=list)  # ref ids
    skipped_refs: int = 0  # refs whose image is missing

    @property
    def samples(self) -> int:
        return sum(len(t.samples) for t in self.tasks)


def encode_sentences(ref: dict, vocab: Vocab, max_words: int) -> list[dict]:
    sentences = []
    for sentence in ref["sentences"]:
        words, truncated = truncate(sentence_words(sentence), max_words)
        raw = sentence.get("raw") or sentence.get("sent", "")
        record = {
            "sent_id": sentence["sent_id"],
            "raw": raw,
            "tokens": vocab.encode_words(words),
            "truncated": truncated,
        }
        if "kind" in sentence:  # the generated dataset says what each sentence needs (jrnet/prep/expressions.py)
            record["kind"] = sentence["kind"]
        sentences.append(record)
    return sentences


def sample_meta(ref: dict, image: dict, sentences: list[dict]) -> dict[str, Any]:
    return {
        "ref_id": int(ref["ref_id"]),
        "ann_id": int(ref["ann_id"]),
        "image_id": int(ref["image_id"]),
        "category_id": int(ref["category_id"]),
        "split": ref["split"],
        "file_name": image["file_name"],
        "height": int(image["height"]),
        "width": int(image["width"]),
        "sentences": sentences,
    }


def image_stamp(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


def plan_split(refer: Refer, split: str, vocab: Vocab, args: argparse.Namespace, out_dir: Path) -> SplitPlan:
    """The split's refs (sorted by ref_id) cut into shards, minus missing images and empty masks."""
    refs = refer.split_refs(split)
    plan = SplitPlan(split=split, refs=len(refs))
    missing: set[str] = set()
    samples: list[Sample] = []
    for ref in refs:
        image, ann = refer.image_of(ref), refer.ann_of(ref)
        path = refer.image_path(image)
        stamp = image_stamp(path)
        if stamp is None:
            missing.add(image["file_name"])
            plan.skipped_refs += 1
            continue
        try:
            area = mask_area(ann, image["height"], image["width"])
        except (ValueError, TypeError, KeyError) as error:
            raise InputError(f"ref {ref['ref_id']}: unreadable segmentation of ann {ann['id']} ({error})") from error
        if area == 0:
            plan.empty_masks.append(int(ref["ref_id"]))
            continue
        meta = sample_meta(ref, image, encode_sentences(ref, vocab, args.max_words))
        samples.append(Sample(f"{ref['ref_id']:09d}", meta, str(path), ann["segmentation"], stamp))
    plan.missing_images = sorted(missing)
    resize = args.train_size if split == "train" else None  # evaluation keeps the original resolution
    for index, start in enumerate(range(0, len(samples), args.samples_per_shard)):
        chunk = tuple(samples[start : start + args.samples_per_shard])
        plan.tasks.append(ShardTask(out_dir / f"{split}-{index:06d}.tar", split, chunk, resize))
    return plan


def plan_shards(refer: Refer, vocab: Vocab, args: argparse.Namespace, out_dir: Path) -> list[SplitPlan]:
    plans = [plan_split(refer, split, vocab, args, out_dir) for split in refer.splits()]
    check_missing_images(plans, refer, args.skip_missing)
    for plan in plans:
        warn_empty_masks(plan)
        if not plan.tasks:
            raise InputError(
                f"split {plan.split!r} has no samples left: {plan.refs} refs, {plan.skipped_refs} with "
                f"missing images, {len(plan.empty_masks)} with empty masks; nothing written"
            )
    return plans


def check_missing_images(plans: Sequence[SplitPlan], refer: Refer, skip_missing: bool) -> None:
    missing = sorted({name for plan in plans for name in plan.missing_images})
    if not missing:
        return
    refs = sum(plan.skipped_refs for plan in plans)
    listed = ", ".join(missing[:SHOW_FIRST]) + (", ..." if len(missing) > SHOW_FIRST else "")
    message = f"{len(missing)} images of {refs} refs are missing under {refer.image_root}: {listed}"
    if not skip_missing:
        raise InputError(f"{message} (pass --skip-missing to shard without them)")
    warn(f"{message}; skipped (--skip-missing), listed in the manifest")


def warn_empty_masks(plan: SplitPlan) -> None:
    if plan.empty_masks:
        listed = ", ".join(map(str, plan.empty_masks[:SHOW_FIRST])) + (
            ", ..." if len(plan.empty_masks) > SHOW_FIRST else ""
        )
        warn(f"{plan.split}: {len(plan.empty_masks)} refs have an empty mask, skipped (ref ids {listed})")


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def train_vocab(refer: Refer) -> Vocab:
    train = [ref for ref in refer.refs if ref["split"] == "train"]
    if not train:
        raise InputError(f"{refer.spec.refs_path(refer.data_root)}: no train split to build the vocabulary from")
    return Vocab.build(sentence_words(sentence) for ref in train for sentence in ref["sentences"])
