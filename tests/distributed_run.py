"""Run the real entry points in subprocesses: `deepspeed --num_gpus N launch.py ...` or plain `python`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env() -> dict:
    e = dict(os.environ)
    e.update(DS_ACCELERATOR="cpu", WANDB_MODE="disabled", PYTHONUNBUFFERED="1")
    for key in (
        "RANK",
        "WORLD_SIZE",
        "LOCAL_RANK",
        "MASTER_ADDR",
        "MASTER_PORT",
        "SLURM_PROCID",
        "SLURM_JOB_ID",
    ):
        e.pop(key, None)
    return e


def launch(args: list[str], ranks: int = 2, timeout: int = 300, check: bool = True, module: str | None = None):
    """`deepspeed --num_gpus ranks launch.py args` (or `-m module` with one rank through plain python)."""
    target = ["--module", module] if module else [str(ROOT / "launch.py")]
    if ranks == 1:
        cmd = [sys.executable, *(["-m", module] if module else [str(ROOT / "launch.py")]), *args]
        e = env() | {"MASTER_PORT": str(free_port())}
    else:
        cmd = [
            str(BIN / "deepspeed"),
            "--num_gpus",
            str(ranks),
            "--master_port",
            str(free_port()),
            *target,
            *args,
        ]
        e = env()
    proc = subprocess.run(cmd, cwd=ROOT, env=e, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def losses(output: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if "loss" in r}
