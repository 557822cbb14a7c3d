"""Crash-safe DeepSpeed checkpoints: `<output>/checkpoints/step_<8-digit step>/`, our own atomic `latest` marker.

DeepSpeed's `latest` file is written by rank 0 with a plain open('w') and no barrier, so a crash can leave it
naming a half-written checkpoint. Here every rank writes and fsyncs its files, then a barrier, then rank 0
writes `meta.json` and replaces `latest` atomically: `latest` only ever names a checkpoint that is complete on
disk, also after a node crash. No checkpoint a user may still want is deleted: pruning only removes the current
timeline's checkpoints older than the one just written, and resuming from an older checkpoint moves the newer
ones aside (`rolled_back_<time>/`) instead of overwriting them later.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from jrnet.distributed import DistEnv, barrier
from jrnet.fileio import fsync_path, write_atomic_text

log = logging.getLogger(__name__)

LATEST = "latest"
STEP_FOLDER = re.compile(r"^step_(\d{8})(_universal)?$")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be written or read; on a failed write `latest` still names the previous one."""


def tag_for(step: int) -> str:
    return f"step_{step:08d}"


def step_of(path: Path) -> int | None:
    match = STEP_FOLDER.match(path.name)
    return int(match.group(1)) if match else None


def rng_state() -> dict:
    """Every RNG a step draws from, as tensors and plain numbers so that `weights_only=True` can load it."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "python": random.getstate(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(state["python"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(engine, folder: Path, step: int, client_state: dict, env: DistEnv, keep: int) -> Path:
    """Called on every rank with the same step. Returns the checkpoint folder."""
    tag = tag_for(step)
    if published(folder) == tag:  # e.g. stopped right after resuming: that exact state is on disk already
        return folder / tag
    if env.is_main:  # a stale rank file or universal copy of an earlier write of this tag must never load
        shutil.rmtree(folder / tag, ignore_errors=True)
        shutil.rmtree(folder / f"{tag}_universal", ignore_errors=True)
    barrier()
    try:
        engine.save_checkpoint(
            str(folder), tag=tag, client_state=client_state, save_latest=False, exclude_frozen_parameters=True
        )
        # Each rank's RNG (DeepSpeed keeps client_state from rank 0 only): dropout continues exactly on resume.
        torch.save(rng_state(), folder / tag / f"rng_rank{env.rank:05d}.pt")
        # Every rank flushes what it wrote (on a shared file system its dirty pages live on its own node).
        for file in (folder / tag).rglob("*"):
            with contextlib.suppress(FileNotFoundError, IsADirectoryError):  # another rank's file, renamed meanwhile
                fsync_path(file)
        fsync_path(folder / tag)
    except (OSError, RuntimeError) as e:  # disk full (torch reports it as a RuntimeError), quota, permissions
        free = shutil.disk_usage(folder).free
        raise CheckpointError(
            f"writing checkpoint {folder / tag} failed ({free} bytes free on that disk): {e}; "
            f"`latest` still names {published(folder) or 'none'}"
        ) from e
    barrier()
    if env.is_main:
        meta = {
            "step": step,
            "world_size": env.world_size,
            "zero_stage": engine.zero_optimization_stage(),
            "config": client_state["config"],
            "trunk": client_state["trunk"],
        }
        write_atomic_text(folder / tag / "meta.json", json.dumps(meta))
        write_atomic_text(folder / LATEST, tag)
        prune(folder, keep, protect=tag)
    barrier()
    return folder / tag


def step_folders(folder: Path) -> list[Path]:
    """This timeline's checkpoint folders (and universal copies), oldest first."""
    return sorted(p for p in folder.glob("step_*") if p.is_dir() and STEP_FOLDER.match(p.name))


def prune(folder: Path, keep: int, protect: str) -> None:
    """Keep the newest `keep` complete checkpoints up to `protect`; older ones and torn writes older than it go.

    Nothing newer than `protect` is touched: at this point it can only be a torn write of a later step, which
    the next save of that step replaces.
    """
    protect_step = step_of(folder / protect)
    older = [p for p in step_folders(folder) if step_of(p) < protect_step]
    complete = sorted({step_of(p) for p in older if is_complete(folder, step_of(p))})
    kept = set(complete[max(0, len(complete) - (keep - 1)) :])
    for path in older:
        if step_of(path) not in kept:
            shutil.rmtree(path, ignore_errors=True)


def is_complete(folder: Path, step: int) -> bool:
    return (folder / tag_for(step) / "meta.json").is_file()


def set_aside_newer(folder: Path, start: Path | None, env: DistEnv) -> None:
    """Before a run continues from `start`, checkpoints of this folder past it belong to an abandoned timeline:
    move them aside (never delete them) so that this run neither prunes nor overwrites them. Torn writes, which
    no one can load, are removed. `start` None or from another folder: every checkpoint here is set aside."""
    if env.is_main:
        own = start is not None and start.parent.resolve() == folder.resolve()
        start_step = step_of(start) if own else -1
        newer = [p for p in step_folders(folder) if step_of(p) > start_step]
        complete = [p for p in newer if is_complete(folder, step_of(p))]
        for path in newer:
            if path not in complete:
                shutil.rmtree(path, ignore_errors=True)
        if complete:
            aside = folder / time.strftime("rolled_back_%Y%m%d-%H%M%S")
            aside.mkdir()
            for path in complete:
                path.rename(aside / path.name)
            what = f"step {start_step}" if own else "a checkpoint outside this run folder"
            log.warning(
                "resuming from %s: moved the newer checkpoints %s aside to %s (kept, not used, never pruned)",
                what,
                ", ".join(p.name for p in complete),
                aside,
            )
        if own and published(folder) != start.name:
            write_atomic_text(folder / LATEST, start.name)
        elif not own and (folder / LATEST).is_file():
            (folder / LATEST).unlink()
    barrier()


def published(folder: Path) -> str | None:
    marker = folder / LATEST
    return marker.read_text().strip() if marker.is_file() else None


def latest(folder: Path) -> Path | None:
    """The checkpoint `latest` names, if it is complete."""
    tag = published(folder)
    if tag is None:
        return None
    path = folder / tag
    if not (path / "meta.json").is_file():
        raise CheckpointError(f"{folder / LATEST} names {tag}, which has no meta.json: checkpoint folder damaged")
    return path


def find(path: str | Path) -> Path:
    """A run folder, its checkpoints/ folder, or one step folder -> that complete step folder."""
    path = Path(path)
    for candidate in (path / "checkpoints", path):
        if (candidate / LATEST).is_file():
            return latest(candidate)
    if (path / "meta.json").is_file():
        return path
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint or run folder")
    raise CheckpointError(f"{path}: not a checkpoint or run folder (no meta.json, no checkpoints/latest)")


def resolve(resume: str, folder: Path) -> Path | None:
    """`auto`: the latest complete checkpoint, if any; `none`: start fresh; else a checkpoint or run folder."""
    if resume == "none":
        return None
    if resume == "auto":
        return latest(folder) if folder.is_dir() else None
    return find(resume)


def meta(path: Path) -> dict:
    return json.loads((path / "meta.json").read_text())


def needs_universal(path: Path, world_size: int) -> bool:
    """ZeRO-1/2/3 optimizer shards are cut for the saving world size; another size needs a universal copy."""
    m = meta(path)
    return m["world_size"] != world_size and m["zero_stage"] > 0


def make_universal(path: Path, env: DistEnv) -> Path:
    """Convert once (rank 0, temp folder + rename); the other ranks wait for it."""
    out = path.with_name(f"{path.name}_universal")
    if env.is_main and not out.is_dir():
        tmp = path.with_name(f".{path.name}_universal.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "deepspeed.checkpoint.ds_to_universal",
                "--input_folder",
                str(path),
                "--output_folder",
                str(tmp),
                "--inject_missing_state",
                "--num_extract_workers",
                "1",
                "--num_merge_workers",
                "1",
            ],
            check=True,
        )
        for extra in path.glob("rng_rank*.pt"):
            shutil.copy2(extra, tmp / extra.name)
        shutil.copy2(path / "meta.json", tmp / "meta.json")
        os.replace(tmp, out)
    barrier()
    return out


def load(engine, path: Path, env: DistEnv) -> dict:
    """Load weights, optimizer, scheduler; restore this rank's RNG. Returns the client state."""
    _, client_state = engine.load_checkpoint(str(path.parent), tag=path.name, load_module_strict=False)
    if client_state is None:
        raise CheckpointError(f"DeepSpeed could not load checkpoint {path}")
    rng = path / f"rng_rank{env.rank:05d}.pt"
    if rng.is_file() and meta(path)["world_size"] == env.world_size:
        set_rng_state(torch.load(rng, weights_only=True))
    return client_state
