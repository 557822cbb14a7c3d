"""Crash-safe DeepSpeed checkpoints: `<output>/checkpoints/step_<8-digit step>/`, our own atomic `latest` marker.

DeepSpeed's `latest` file is written by rank 0 with a plain open('w') and no barrier, so a crash can leave it
naming a half-written checkpoint. Here every rank writes its shards, then a barrier, then rank 0 writes
`meta.json` and replaces `latest` atomically: `latest` only ever names a checkpoint that is complete.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from jrnet.distributed import DistEnv, barrier

LATEST = "latest"


class CheckpointError(RuntimeError):
    """A checkpoint that could not be written; `latest` still names the previous complete one."""


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def tag_for(step: int) -> str:
    return f"step_{step:08d}"


def rng_state() -> dict:
    return {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(engine, folder: Path, step: int, client_state: dict, env: DistEnv, keep: int) -> Path:
    """Called on every rank with the same step. Returns the checkpoint folder."""
    tag = tag_for(step)
    try:
        engine.save_checkpoint(
            str(folder), tag=tag, client_state=client_state, save_latest=False, exclude_frozen_parameters=True
        )
        # Each rank's RNG (DeepSpeed keeps client_state from rank 0 only): dropout continues exactly on resume.
        torch.save(rng_state(), folder / tag / f"rng_rank{env.rank:05d}.pt")
    except (OSError, RuntimeError) as e:  # disk full (torch reports it as a RuntimeError), quota, permissions
        previous = folder / LATEST
        kept = previous.read_text().strip() if previous.is_file() else "none"
        free = shutil.disk_usage(folder).free
        raise CheckpointError(
            f"writing checkpoint {folder / tag} failed ({free} bytes free on that disk): {e}; "
            f"`latest` still names {kept}"
        ) from e
    barrier()
    if env.is_main:
        meta = {
            "step": step,
            "world_size": env.world_size,
            "zero_stage": engine.zero_optimization_stage(),
            "config": client_state["config"],
        }
        atomic_write_text(folder / tag / "meta.json", json.dumps(meta))
        atomic_write_text(folder / LATEST, tag)
        prune(folder, keep, protect=tag)
    barrier()
    return folder / tag


def prune(folder: Path, keep: int, protect: str) -> None:
    """Keep the newest `keep` checkpoints; older ones and leftovers of crashed writes go."""
    tags = sorted(p.name for p in folder.glob("step_*") if p.is_dir() and not p.name.endswith("_universal"))
    complete = [t for t in tags if (folder / t / "meta.json").is_file() and t <= protect]
    keep_tags = set(complete[-keep:]) | {protect}
    for tag in tags:
        if tag not in keep_tags:
            shutil.rmtree(folder / tag, ignore_errors=True)
            shutil.rmtree(folder / f"{tag}_universal", ignore_errors=True)


def latest(folder: Path) -> Path | None:
    """The checkpoint `latest` names, if it is complete."""
    marker = folder / LATEST
    if not marker.is_file():
        return None
    path = folder / marker.read_text().strip()
    if not (path / "meta.json").is_file():
        raise RuntimeError(f"{marker} names {path.name}, which has no meta.json: checkpoint folder damaged")
    return path


def resolve(resume: str, folder: Path) -> Path | None:
    """`auto`: the latest complete checkpoint, if any; `none`: start fresh; else a checkpoint folder."""
    if resume == "none":
        return None
    if resume == "auto":
        return latest(folder)
    path = Path(resume)
    if (path / LATEST).is_file():
        return latest(path)
    if not (path / "meta.json").is_file():
        raise FileNotFoundError(f"--resume {resume}: not a complete checkpoint (no meta.json)")
    return path


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
        raise RuntimeError(f"DeepSpeed could not load checkpoint {path}")
    rng = path / f"rng_rank{env.rank:05d}.pt"
    if rng.is_file() and meta(path)["world_size"] == env.world_size:
        set_rng_state(torch.load(rng, weights_only=False))
    return client_state


def export_fp32(path: Path, out: Path) -> None:
    """A consolidated fp32 state dict of the trainable weights, for inference (any ZeRO stage)."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    state = get_fp32_state_dict_from_zero_checkpoint(str(path.parent), tag=path.name)
    torch.save(state, out)
