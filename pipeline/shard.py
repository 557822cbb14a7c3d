"""Write a refer-layout dataset as WebDataset shards, one sample per ref.

    python pipeline/shard.py {unc,unc+,gref,referit,synthetic} [--data-root data/] [--out shards/]
        [--workers N] [--max-words 25] [--glove glove.840B.300d.txt] [--samples-per-shard 500]
        [--skip-missing] [--split-by google] [--num-images 2000 --seed 0 (synthetic)] [--features CONFIG]

Output under <out>/<dataset>/ (dataset = unc, unc+, gref, gref_google, referit, synthetic):
    <split>-<6 digits>.tar  samples keyed f"{ref_id:09d}" with
        jpg       the image file's bytes when it is an RGB JPEG, else the image re-encoded as RGB JPEG
        mask.png  8-bit single-channel mask (0/255) at the image's resolution, refer API semantics
        json      ref_id, ann_id, image_id, category_id, split, file_name, height, width,
                  sentences: [{sent_id, raw, tokens (vocabulary ids), truncated}]
    vocab.json     {"words": [...]}: <pad>, <unk>, then train-split words by frequency (ties alphabetical)
    glove.npy      float32 [vocab, dim] when --glove is given (pad and words GloVe lacks: zero rows)
    manifest.json  written last: sources, options, vocabulary size, GloVe coverage, per-split shards
                   with sha256 and counts, missing images and empty masks that were skipped

Shards are byte-identical whatever --workers is. Each shard is written to a temporary file, fsynced and
renamed; a `<shard>.state.json` sidecar written after the rename records its checksum and a digest of its
inputs, so a rerun after an interruption keeps the finished shards and writes only the rest.
Input problems end with one line `error: ...` on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import webdataset as wds
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from jrnet.config import ConfigError, load_config
from jrnet.features import check_cacheable
from jrnet.fileio import file_sha256, fsync_path, write_atomic
from jrnet.vocab import PAD, UNK, GloveFormatError, GloveMatch, Vocab, read_glove, sentence_words, truncate
from pipeline import synthetic
from pipeline.features import write_feature_cache
from pipeline.refer import DATASETS, Refer, ReferError, dataset_spec, mask_area, ref_mask

FORMAT_VERSION = 1  # part of every shard's input digest: bump when the sample encoding changes
TAR_MTIME = 946684800  # 2000-01-01: a fixed, plausible timestamp for every tar member
TAR_USER = "jrnet"
JPEG_QUALITY = 95  # re-encoding of non-RGB-JPEG sources only (4:4:4 chroma); libjpeg output is deterministic
PNG_COMPRESS_LEVEL = 6
DEFAULT_SAMPLES_PER_SHARD = 500
SHOW_FIRST = 5  # how many missing files or empty masks a message lists
OUR_FILE = re.compile(r".+-\d{6}\.tar(\.state\.json)?$")
TEMPORARY_FILE = re.compile(r".+\.tmp\d*$")


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

    @property
    def sentences(self) -> int:
        return sum(len(s.meta["sentences"]) for s in self.samples)

    @property
    def truncated_sentences(self) -> int:
        return sum(sentence["truncated"] for s in self.samples for sentence in s.meta["sentences"])

    def digest(self) -> str:
        """Checksum of everything the shard's bytes depend on."""
        inputs = [FORMAT_VERSION, [[s.key, s.meta, s.segmentation, s.image_stamp] for s in self.samples]]
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


@dataclass(frozen=True)
class ShardResult:
    name: str
    sha256: str
    kept: bool  # finished by an earlier run
    started: float = 0.0
    finished: float = 0.0


def encode_sentences(ref: dict, vocab: Vocab, max_words: int) -> list[dict]:
    sentences = []
    for sentence in ref["sentences"]:
        words, truncated = truncate(sentence_words(sentence), max_words)
        raw = sentence.get("raw") or sentence.get("sent", "")
        sentences.append(
            {
                "sent_id": sentence["sent_id"],
                "raw": raw,
                "tokens": vocab.encode_words(words),
                "truncated": truncated,
            }
        )
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
    for index, start in enumerate(range(0, len(samples), args.samples_per_shard)):
        chunk = tuple(samples[start : start + args.samples_per_shard])
        plan.tasks.append(ShardTask(out_dir / f"{split}-{index:06d}.tar", split, chunk))
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


# ---------------------------------------------------------------- writing one shard (in a worker)


def rgb_jpeg(path: Path) -> tuple[bytes, tuple[int, int]]:
    """(JPEG bytes, (width, height)): the file itself when it is an RGB JPEG, else an RGB re-encoding.

    Every image is decoded once here, so a file cut short fails now, naming itself, not mid-training.
    """
    data = path.read_bytes()
    try:
        with Image.open(io.BytesIO(data)) as image:
            size = image.size
            if image.format == "JPEG" and image.mode == "RGB":
                image.draft("RGB", (size[0] // 8, size[1] // 8))  # DCT-scaled decode: reads all data, fast
                image.load()
                return data, size
            rgb = image.convert("RGB")  # grayscale, CMYK, palette, PNG ...
    except (UnidentifiedImageError, OSError) as error:
        raise InputError(f"{path}: cannot read the image ({error})") from error
    buffer = io.BytesIO()
    rgb.save(buffer, "JPEG", quality=JPEG_QUALITY, subsampling=0, optimize=False, progressive=False)
    return buffer.getvalue(), rgb.size


def png_mask(mask: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255).save(buffer, "PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def encode_sample(sample: Sample) -> dict[str, Any]:
    meta = sample.meta
    jpeg, size = rgb_jpeg(Path(sample.image_path))
    if size != (meta["width"], meta["height"]):
        expected = f"{meta['width']}x{meta['height']}"
        raise InputError(f"{sample.image_path}: image is {size[0]}x{size[1]}, instances.json says {expected}")
    mask = ref_mask({"segmentation": sample.segmentation}, meta["height"], meta["width"])
    return {
        "__key__": sample.key,
        "jpg": jpeg,
        "mask.png": png_mask(mask),
        "json": json.dumps(meta, ensure_ascii=False, separators=(",", ":")).encode("utf-8"),
    }


def state_path(shard: Path) -> Path:
    return shard.with_name(shard.name + ".state.json")


def write_tar(task: ShardTask, temporary: Path) -> None:
    with open(temporary, "wb") as stream:
        # Fixed mtime, owner and mode make the bytes depend on the samples only.
        writer = wds.TarWriter(stream, user=TAR_USER, group=TAR_USER, mode=0o444, encoder=False, mtime=TAR_MTIME)
        with writer:
            for sample in task.samples:
                writer.write(encode_sample(sample))
        stream.flush()
        os.fsync(stream.fileno())


def write_shard(task: ShardTask) -> ShardResult:
    """Write one shard atomically, then its state sidecar (the proof that it is complete)."""
    started = time.time()
    state_path(task.path).unlink(missing_ok=True)
    temporary = task.path.with_name(f"{task.path.name}.tmp{os.getpid()}")
    try:
        write_tar(task, temporary)
        os.replace(temporary, task.path)
    finally:
        temporary.unlink(missing_ok=True)
    fsync_path(task.path.parent)
    sha256 = file_sha256(task.path)
    state = {"sha256": sha256, "input": task.digest(), "samples": len(task.samples)}
    write_atomic(state_path(task.path), json.dumps(state).encode())
    return ShardResult(task.path.name, sha256, kept=False, started=started, finished=time.time())


def finished_shard(task: ShardTask) -> ShardResult | None:
    """The shard an earlier run completed for exactly these inputs, if its bytes still match."""
    try:
        state = json.loads(state_path(task.path).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or state.get("input") != task.digest() or not task.path.is_file():
        return None
    sha256 = file_sha256(task.path)
    return ShardResult(task.path.name, sha256, kept=True) if sha256 == state.get("sha256") else None


def run_tasks(tasks: Sequence[ShardTask], workers: int, desc: str) -> dict[str, ShardResult]:
    """Write the shards not already finished, `workers` shards at a time; results by shard name."""
    results: dict[str, ShardResult] = {}
    pending = []
    for task in tasks:
        kept = finished_shard(task)
        if kept:
            results[kept.name] = kept
        else:
            pending.append(task)
    sizes = {task.path.name: len(task.samples) for task in tasks}
    total, done = sum(sizes.values()), sum(sizes[name] for name in results)
    try:
        with tqdm(total=total, initial=done, unit="ref", desc=desc, dynamic_ncols=True) as progress:
            for result in _map(write_shard, pending, workers):
                results[result.name] = result
                progress.update(sizes[result.name])
    except BaseException:
        for directory in {task.path.parent for task in pending}:
            remove_temporaries(directory)  # a worker killed from outside leaves its temporary file
        raise
    return results


def _map(function, tasks: Sequence[ShardTask], workers: int) -> Iterator[ShardResult]:
    """Results in completion order, one process task per shard; in-process for a single worker.

    A ProcessPoolExecutor rather than multiprocessing.Pool: Pool.terminate() after a worker's error can
    deadlock while its feeder thread is blocked writing a large shard task into the pipe (seen here), and a
    worker killed from outside (OOM) hangs Pool forever where the executor raises. On an error the shards not
    started are cancelled and the running ones finish whole, so no half-written file is left behind.
    """
    if workers == 1 or len(tasks) <= 1:
        yield from map(function, tasks)
        return
    with ProcessPoolExecutor(max_workers=min(workers, len(tasks))) as executor:
        futures = [executor.submit(function, task) for task in tasks]
        try:
            for future in as_completed(futures):
                yield future.result()
        finally:
            for future in futures:
                future.cancel()


# ---------------------------------------------------------------- the output folder


def prepare_out_dir(out_dir: Path, plans: Sequence[SplitPlan]) -> None:
    """Drop the old manifest first (it would describe shards about to change), temporaries of killed runs,
    and shards of an earlier plan that this one no longer has."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "manifest.json").unlink(missing_ok=True)
    planned = {task.path.name for plan in plans for task in plan.tasks}
    planned |= {state_path(Path(name)).name for name in planned}
    remove_temporaries(out_dir)
    for path in out_dir.iterdir():
        if OUR_FILE.match(path.name) and path.name not in planned:
            path.unlink()


def remove_temporaries(directory: Path) -> None:
    for path in directory.iterdir():
        if TEMPORARY_FILE.match(path.name):
            path.unlink(missing_ok=True)


def read_glove_file(glove_file: Path | None, vocab: Vocab) -> GloveMatch | None:
    if glove_file is None:
        return None
    if not glove_file.is_file():
        raise InputError(f"GloVe file not found: {glove_file}")
    try:
        return read_glove(glove_file, vocab.words)
    except GloveFormatError as error:
        raise InputError(str(error)) from error


def write_glove(glove_file: Path | None, match: GloveMatch | None, vocab: Vocab, out_dir: Path) -> dict | None:
    """glove.npy with the vocabulary's rows; the manifest entry (coverage counts real words only)."""
    target = out_dir / "glove.npy"
    if glove_file is None or match is None:
        target.unlink(missing_ok=True)  # a stale matrix would contradict the manifest
        return None
    buffer = io.BytesIO()
    np.save(buffer, match.vectors, allow_pickle=False)
    write_atomic(target, buffer.getvalue())
    words = [i for i, word in enumerate(vocab.words) if word not in (PAD, UNK)]
    found = int(match.found[words].sum())
    dim = int(match.vectors.shape[1])
    return {"file": str(glove_file.resolve()), "dim": dim, "found": found, "missing": len(words) - found}


def build_manifest(
    folder: str,
    refer: Refer,
    options: dict,
    vocab: Vocab,
    glove: dict | None,
    plans: Sequence[SplitPlan],
    results: dict[str, ShardResult],
) -> dict:
    spec, root = refer.spec, refer.data_root
    splits = {}
    for plan in plans:
        shards = [
            {
                "name": task.path.name,
                "sha256": results[task.path.name].sha256,
                "samples": len(task.samples),
                "sentences": task.sentences,
            }
            for task in plan.tasks
        ]
        splits[plan.split] = {
            "shards": shards,
            "samples": plan.samples,
            "sentences": sum(t.sentences for t in plan.tasks),
            "truncated_sentences": sum(t.truncated_sentences for t in plan.tasks),
            "missing_images": plan.missing_images,
            "empty_masks": plan.empty_masks,
        }
    return {
        "dataset": folder,
        "source": {
            "refs": str(spec.refs_path(root).resolve()),
            "instances": str(spec.instances_path(root).resolve()),
            "image_root": str(spec.image_root(root).resolve()),
        },
        "options": options,
        "vocab_size": len(vocab),
        "glove": glove,
        "splits": splits,
    }


# ---------------------------------------------------------------- summary


SUMMARY_COLUMNS = (
    ("split", -8),
    ("refs", 8),
    ("sentences", 11),
    ("shards", 8),
    ("truncated", 11),
    ("missing", 9),
    ("empty", 7),
    ("refs/s", 9),
)  # width < 0: left-aligned


def _table_row(values: Sequence[object]) -> str:
    return "".join(
        f"{value!s:<{-width}}" if width < 0 else f"{value!s:>{width}}"
        for value, (_, width) in zip(values, SUMMARY_COLUMNS, strict=True)
    )


def split_rate(plan: SplitPlan, results: dict[str, ShardResult]) -> str:
    """refs/s of the shards this run wrote for the split, over the wall-clock window they took."""
    written = [(task, results[task.path.name]) for task in plan.tasks if not results[task.path.name].kept]
    if not written:
        return "-"
    window = max(r.finished for _, r in written) - min(r.started for _, r in written)
    return f"{sum(len(task.samples) for task, _ in written) / max(window, 1e-6):.0f}"


def summary(plans: Sequence[SplitPlan], results: dict[str, ShardResult], elapsed: float, workers: int) -> str:
    header = _table_row([name for name, _ in SUMMARY_COLUMNS])
    rows = [header, "-" * len(header)]
    for plan in plans:
        sentences = sum(task.sentences for task in plan.tasks)
        truncated = sum(task.truncated_sentences for task in plan.tasks)
        counts = [plan.samples, sentences, len(plan.tasks), truncated, plan.skipped_refs]
        counts.append(len(plan.empty_masks))
        rows.append(_table_row([plan.split, *counts, split_rate(plan, results)]))
    kept = sum(result.kept for result in results.values())
    written_refs = sum(len(t.samples) for p in plans for t in p.tasks if not results[t.path.name].kept)
    rows.append(
        f"{len(results)} shards ({len(results) - kept} written, {kept} kept from an earlier run); "
        f"{written_refs} refs in {elapsed:.1f} s = {written_refs / max(elapsed, 1e-6):.0f} refs/s "
        f"with {workers} worker{'s' if workers > 1 else ''}"
    )
    return "\n".join(rows)


# ---------------------------------------------------------------- command line


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="shard.py", description="Write a refer-layout dataset as WebDataset shards (see the module doc)."
    )
    parser.add_argument(
        "dataset",
        choices=list(DATASETS),
        help="unc = refcoco, unc+ = refcoco+, gref = refcocog (umd), referit = refclef (berkeley), synthetic",
    )
    parser.add_argument("--data-root", type=Path, default=Path("data"), help="refer layout root (default data/)")
    parser.add_argument("--out", type=Path, default=Path("shards"), help="output root (default shards/)")
    parser.add_argument("--workers", type=positive_int, default=os.cpu_count() or 1, help="parallel shard writers")
    parser.add_argument("--max-words", type=positive_int, default=25, help="truncate sentences (default 25)")
    parser.add_argument("--glove", type=Path, help="GloVe text file: bake the vocabulary's vectors into glove.npy")
    parser.add_argument(
        "--samples-per-shard",
        type=positive_int,
        default=DEFAULT_SAMPLES_PER_SHARD,
        help="refs per tar (default 500)",
    )
    parser.add_argument("--skip-missing", action="store_true", help="skip refs whose image is missing")
    parser.add_argument("--split-by", help="refs(<split-by>).p, e.g. google for gref (default: the dataset's)")
    parser.add_argument(
        "--features",
        metavar="CONFIG",
        help="also cache the frozen backbone's features for this training config (jrnet/features.py)",
    )
    generator = parser.add_argument_group("synthetic (generated under --data-root when absent)")
    generator.add_argument("--num-images", type=positive_int, help=f"default {synthetic.SyntheticOptions.num_images}")
    generator.add_argument("--seed", type=int, help=f"default {synthetic.SyntheticOptions.seed}")
    return parser.parse_args(argv)


def ensure_synthetic(data_root: Path, num_images: int | None, seed: int | None) -> synthetic.SyntheticOptions:
    """Options of the synthetic set under `data_root`, generating it first when there is none."""
    existing = synthetic.existing_options(data_root)
    if existing is None:
        defaults = synthetic.SyntheticOptions()
        options = synthetic.SyntheticOptions(num_images or defaults.num_images, defaults.seed if seed is None else seed)
        started = time.perf_counter()
        try:
            folder = synthetic.generate(data_root, options)
        except ValueError as error:
            raise InputError(str(error)) from error
        seconds = time.perf_counter() - started
        print(f"generated {options.num_images} synthetic images in {folder} ({seconds:.1f} s)")
        return options
    conflicts = [
        f"--{name.replace('_', '-')} {getattr(existing, name)}"
        for name, wanted in (("num_images", num_images), ("seed", seed))
        if wanted is not None and wanted != getattr(existing, name)
    ]
    if conflicts:
        raise InputError(
            f"{synthetic.generator_path(data_root).parent} already holds a synthetic set made with "
            f"{' '.join(conflicts)}; pass those, another --data-root, or delete it to regenerate"
        )
    return existing


def train_vocab(refer: Refer) -> Vocab:
    train = [ref for ref in refer.refs if ref["split"] == "train"]
    if not train:
        raise InputError(f"{refer.spec.refs_path(refer.data_root)}: no train split to build the vocabulary from")
    return Vocab.build(sentence_words(sentence) for ref in train for sentence in ref["sentences"])


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    features_config = load_config(args.features) if args.features else None
    if features_config is not None:
        check_cacheable(features_config)  # before anything is written
    spec = dataset_spec(args.dataset, args.split_by)
    options: dict[str, Any] = {
        "split_by": spec.split_by,
        "max_words": args.max_words,
        "samples_per_shard": args.samples_per_shard,
        "skip_missing": args.skip_missing,
    }
    if args.dataset == "synthetic":
        options["synthetic"] = asdict(ensure_synthetic(args.data_root, args.num_images, args.seed))
    refer = Refer.load(args.data_root, spec)
    vocab = train_vocab(refer)
    out_dir = args.out / spec.folder
    plans = plan_shards(refer, vocab, args, out_dir)
    glove_match = read_glove_file(args.glove, vocab)  # every input check before the output is touched
    prepare_out_dir(out_dir, plans)
    glove = write_glove(args.glove, glove_match, vocab, out_dir)
    write_atomic(out_dir / "vocab.json", vocab.to_json().encode("utf-8"))
    tasks = [task for plan in plans for task in plan.tasks]
    writing = time.perf_counter()
    results = run_tasks(tasks, args.workers, desc=spec.folder)
    writing = time.perf_counter() - writing
    manifest = build_manifest(spec.folder, refer, options, vocab, glove, plans, results)
    write_atomic(out_dir / "manifest.json", (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode())
    print(summary(plans, results, writing, args.workers))
    seconds = time.perf_counter() - started
    print(f"wrote {out_dir / 'manifest.json'} ({len(vocab)} words in the vocabulary) in {seconds:.1f} s")
    if features_config is not None:
        write_feature_cache(features_config, out_dir)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except (InputError, ReferError, ConfigError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # disk full, quota, permissions: finished shards stay valid, a rerun resumes
        print(f"error: writing shards under {args.out} failed: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
