"""Run the real entry points in subprocesses: `torchrun --nproc_per_node N launch.py ...` or plain `python`."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

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
    """`torchrun --nproc_per_node ranks launch.py args` (or `-m module`; one rank through plain python).

    torchrun, not the user's `deepspeed`: DeepSpeed's runner starts its launcher, which starts the ranks, and both
    import torch and DeepSpeed first, 5.4 s more per run (BENCHMARKS.md 11); the ranks run the same DeepSpeed
    engine either way. Tests about DeepSpeed's launcher itself (a rank's death) start `deepspeed` themselves.
    """
    if ranks == 1:
        cmd = [sys.executable, *(["-m", module] if module else [str(ROOT / "launch.py")]), *args]
        e = env() | {"MASTER_PORT": str(free_port())}
    else:
        target = ["--module", module] if module else [str(ROOT / "launch.py")]
        cmd = [str(BIN / "torchrun"), "--nproc_per_node", str(ranks), "--master_port", str(free_port()), *target]
        cmd += args
        e = env()
    proc = run_or_dump(cmd, e, timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def run_or_dump(cmd: list[str], e: dict, timeout: float) -> subprocess.CompletedProcess:
    """subprocess.run, except that a hang fails with every process's Python stack (py-spy) and the output's tail,
    and takes the whole process tree down (the launcher's ranks and their loader workers too)."""
    with subprocess.Popen(cmd, cwd=ROOT, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as p:
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            root = psutil.Process(p.pid)
            family = [root, *root.children(recursive=True)]
            stacks = [stack(process.pid) for process in family]
            for process in family:
                with contextlib.suppress(psutil.NoSuchProcess):
                    process.kill()
            wait_until_dead(family, timeout=30)
            try:
                out, err = p.communicate(timeout=30)
            except subprocess.TimeoutExpired:  # a process outside the tree still holds the pipes
                out, err = "", ""
            raise AssertionError(
                f"{' '.join(cmd)} hung for {timeout} s\n" + "\n".join(stacks) + f"\n{out[-3000:]}\n{err[-3000:]}"
            ) from None
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)


def wait_until_dead(processes: list[psutil.Process], timeout: float) -> None:
    """Until every process has exited (gone, or a zombie left to its new parent): a SIGKILLed process is still
    tearing down for a moment after its pipes close."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if all(not p.is_running() or p.status() == psutil.STATUS_ZOMBIE for p in processes):
                return
        except psutil.NoSuchProcess:
            continue  # exited between the two checks: look again
        time.sleep(0.05)


def stack(pid: int) -> str:
    spy = BIN / "py-spy"
    if not spy.exists():
        return f"pid {pid}: (py-spy not installed)"
    try:
        dump = subprocess.run([str(spy), "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return f"pid {pid}: (py-spy timed out)"
    return f"pid {pid}:\n{dump.stdout}{dump.stderr}"


def wait_for_step(output: Path, step: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Until `metrics.jsonl` logs `step` (the run must still be going)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        metrics = output / "metrics.jsonl"
        if metrics.is_file() and any(f'"step": {step},' in line for line in metrics.read_text().splitlines()):
            return
        assert proc.poll() is None, "training ended before the fault could be injected"
        time.sleep(0.02)
    raise TimeoutError(f"step {step} not reached")


def losses(output: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if "loss" in r}


def run_args(shards: Path, output: Path, *extra: str) -> list[str]:
    """launch.py arguments for the tiny config."""
    return ["--config", "tiny", "--shards", str(shards), "--output", str(output), *extra]


PATCHED_LAUNCH = """
import os, signal, sys, torch
real_save = torch.save
def patched_save(obj, f, *a, **k):
{body}
    return real_save(obj, f, *a, **k)
torch.save = patched_save
sys.argv = ["launch.py", *sys.argv[1:]]
sys.path.insert(0, {root!r})
import launch
sys.exit(launch.main())
"""


def launch_with_patched_save(body: str, args: list[str], workdir: Path) -> subprocess.CompletedProcess:
    """One rank of launch.py whose torch.save first runs `body` (indented code seeing obj and f): a fault at
    an exact point of a checkpoint write, in an otherwise real run."""
    script = workdir / "patched_launch.py"
    script.write_text(PATCHED_LAUNCH.format(body=body, root=str(ROOT)))
    return subprocess.run(
        [sys.executable, str(script), *args],
        cwd=ROOT,
        env=env() | {"MASTER_PORT": str(free_port())},
        capture_output=True,
        text=True,
        timeout=300,
    )


PATCHED_RANK = """
import os, signal, sys
sys.argv = ["launch.py", *sys.argv[1:]]
sys.path.insert(0, {root!r})
{patch}
import launch
sys.exit(launch.main())
"""


def start_ranks_like_srun(args: list[str], workdir: Path, ranks: int = 2, patch: str = "") -> list[subprocess.Popen]:
    """`ranks` processes of launch.py with only the SLURM_* variables `srun` sets (plus the master address),
    each in its own process group like srun's tasks; `patch` is Python run in every rank before launch."""
    script = workdir / "rank.py"
    script.write_text(PATCHED_RANK.format(root=str(ROOT), patch=patch))
    port = str(free_port())
    procs = []
    for rank in range(ranks):
        slurm = {
            "SLURM_PROCID": str(rank),
            "SLURM_NTASKS": str(ranks),
            "SLURM_LOCALID": str(rank),
            "SLURM_NTASKS_PER_NODE": str(ranks),
            "SLURM_JOB_NODELIST": "localhost",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": port,
        }
        log = open(workdir / f"rank{rank}.log", "w")  # noqa: SIM115 (closed when the process ends)
        procs.append(
            subprocess.Popen(
                [sys.executable, str(script), *args],
                cwd=ROOT,
                env=env() | slurm,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
    return procs
