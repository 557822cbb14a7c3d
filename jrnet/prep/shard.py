"""Write a refer-layout dataset as WebDataset shards, one sample per ref.

    python pipeline/shard.py {unc,unc+,gref,referit,synthetic} [--data-root data/] [--out shards/]
        [--workers N] [--max-words 25] [--glove glove.840B.300d.txt] [--samples-per-shard 500]
        [--skip-missing] [--split-by google] [--num-images 2000 --seed 0 (synthetic)] [--features CONFIG]
    python pipeline/shard.py DATASET --features CONFIG --shards FOLDER_OR_URL [--out DIR]
        (no sharding: the feature cache of shards that exist, wherever they live, written under DIR)

Output under <out>/<dataset>/ (dataset = unc, unc+, gref, gref_google, referit, synthetic): the layout of
jrnet/shard_format.py, `manifest.json` written last.

Shards are byte-identical whatever --workers is. Each shard is written to a temporary file, fsynced and
renamed; a `<shard>.state.json` sidecar written after the rename records its checksum and a digest of its
inputs, so a rerun after an interruption keeps the finished shards and writes only the rest.
Input problems end with one line `error: ...` on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from jrnet.config import ConfigError, load_config
from jrnet.feature_cache import check_cacheable, write_feature_cache
from jrnet.fileio import write_atomic
from jrnet.prep import synthetic
from jrnet.prep.plan import InputError, SplitPlan, plan_shards, train_vocab
from jrnet.prep.refer import DATASETS, Refer, ReferError, dataset_spec
from jrnet.prep.write import ShardResult, build_manifest, prepare_out_dir, read_glove_file, run_tasks, write_glove
from jrnet.shard_format import MANIFEST, VOCAB, write_manifest
from jrnet.shards import DataError, ShardSet

DEFAULT_SAMPLES_PER_SHARD = 500


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
    parser.add_argument(
        "--train-size",
        type=positive_int,
        metavar="S",
        help="store the train split's images and masks resized to S x S (the model's input size), so training "
        "only decodes; evaluation splits keep the original resolution",
    )
    parser.add_argument("--split-by", help="refs(<split-by>).p, e.g. google for gref (default: the dataset's)")
    parser.add_argument(
        "--features",
        metavar="CONFIG",
        help="also cache the frozen backbone's features for this training config (jrnet/feature_cache.py)",
    )
    parser.add_argument(
        "--shards",
        metavar="FOLDER_OR_URL",
        help="with --features: no sharding; make the feature cache of the shards already at this folder, http(s) "
        "prefix or pipe: command (README), written under --out/<dataset>/features/ to be copied beside them",
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
    if synthetic.splits_outdated(data_root):
        raise InputError(
            f"{synthetic.generator_path(data_root)}: made by generator version 1, whose val/testA/testB grow with "
            f"--num-images; delete {synthetic.generator_path(data_root).parent} to regenerate"
        )
    if conflicts:
        raise InputError(
            f"{synthetic.generator_path(data_root).parent} already holds a synthetic set made with "
            f"{' '.join(conflicts)}; pass those, another --data-root, or delete it to regenerate"
        )
    return existing


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    features_config = load_config(args.features) if args.features else None
    if features_config is not None:
        check_cacheable(features_config)  # before anything is written
    spec = dataset_spec(args.dataset, args.split_by)
    if args.shards:
        return features_of_existing_shards(args, features_config, spec.folder)
    options: dict[str, Any] = {
        "split_by": spec.split_by,
        "max_words": args.max_words,
        "train_size": args.train_size,
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
    write_atomic(out_dir / VOCAB, vocab.to_json().encode("utf-8"))
    tasks = [task for plan in plans for task in plan.tasks]
    writing = time.perf_counter()
    results = run_tasks(tasks, args.workers, desc=spec.folder)
    writing = time.perf_counter() - writing
    manifest = build_manifest(spec.folder, refer, options, vocab, glove, plans, results)
    write_manifest(out_dir, manifest)
    print(summary(plans, results, writing, args.workers))
    seconds = time.perf_counter() - started
    print(f"wrote {out_dir / MANIFEST} ({len(vocab)} words in the vocabulary) in {seconds:.1f} s")
    if features_config is not None:
        write_feature_cache(features_config, out_dir)
    return 0


def features_of_existing_shards(args: argparse.Namespace, cfg, dataset: str) -> int:
    if cfg is None:
        raise InputError("--shards is for making a feature cache of existing shards: give --features CONFIG too")
    source = ShardSet.open(args.shards, dataset, cfg.data)
    root = write_feature_cache(cfg, args.out / dataset, source=source)
    if not source.root.is_local:
        print(f"copy {root} to {source.root / root.relative_to(args.out / dataset).as_posix()} to train from there")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except (InputError, ReferError, ConfigError, DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # disk full, quota, permissions: finished shards stay valid, a rerun resumes
        print(f"error: writing shards under {args.out} failed: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
