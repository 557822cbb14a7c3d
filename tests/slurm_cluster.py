"""The local Slurm cluster of ``slurm/local_cluster.sh`` for tests: a context manager, a fixture and helpers.

Use it from a test module (``tests/`` is on ``sys.path`` under pytest's default import mode)::

    from slurm_cluster import slurm_env, sbatch, wait_job  # noqa: F401  (slurm_env is a fixture)

    def test_something(slurm_env, tmp_path):
        job = sbatch(slurm_env, "--nodes=2", "--wrap", "srun hostname", cwd=tmp_path)
        info = wait_job(slurm_env, job)
        assert info["JobState"] == "COMPLETED"

``slurm_env`` is module-scoped; ``cluster_fixture(scope="session")`` makes another one. Outside pytest use
``with local_cluster() as env:`` and pass ``env`` (``os.environ`` plus ``SLURM_CONF``) to ``subprocess``.
The cluster is stopped at the end only if this process started it; a cluster that was already up is
reused and left running. It is skipped (never failed) only when the script exits 3: not root, or the
Debian packages cannot be installed here.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "slurm" / "local_cluster.sh"
EXIT_UNAVAILABLE = 3
# Installing the packages on a fresh machine takes ~15 s; the script's own wait for idle nodes is 90 s.
START_TIMEOUT_S = 600
TERMINAL_STATES = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "BOOT_FAIL",
        "DEADLINE",
    }
)


class ClusterUnavailable(Exception):
    """The script exited 3: no root, or the Slurm packages cannot be installed on this machine."""


def _script(command: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), command], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@contextlib.contextmanager
def local_cluster(state_dir: str | os.PathLike[str] | None = None) -> Iterator[dict[str, str]]:
    """Start the cluster (or reuse a running one); yield an env dict with SLURM_CONF set.

    Raises ClusterUnavailable when the script exits 3, RuntimeError when it fails otherwise.
    """
    env = os.environ.copy()
    if state_dir is not None:
        env["SLURM_LOCAL_DIR"] = str(state_dir)
    started = _script("start", env, START_TIMEOUT_S)
    output = f"{started.stdout}\n{started.stderr}".strip()
    if started.returncode == EXIT_UNAVAILABLE:
        raise ClusterUnavailable(started.stderr.strip().splitlines()[-1] if started.stderr.strip() else output)
    if started.returncode != 0:
        raise RuntimeError(f"{SCRIPT} start exited {started.returncode}:\n{output}")
    match = re.search(r"^export SLURM_CONF=(\S+)$", started.stdout, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no 'export SLURM_CONF=' line from {SCRIPT} start:\n{output}")
    env["SLURM_CONF"] = match.group(1)
    # The script says so when the cluster was up before: then someone else owns it.
    ours = "already running" not in started.stderr
    try:
        yield env
    finally:
        if ours:
            stopped = _script("stop", env, 120)
            if stopped.returncode != 0:
                print(f"{SCRIPT} stop exited {stopped.returncode}:\n{stopped.stdout}{stopped.stderr}")


def cluster_fixture(scope: str = "module", state_dir: str | os.PathLike[str] | None = None):
    """A pytest fixture yielding the env dict of ``local_cluster()``; skips if the cluster is unavailable."""

    @pytest.fixture(scope=scope)
    def _slurm_env() -> Iterator[dict[str, str]]:
        with contextlib.ExitStack() as stack:
            try:
                env = stack.enter_context(local_cluster(state_dir))
            except ClusterUnavailable as exc:
                pytest.skip(f"local Slurm cluster unavailable (slurm/local_cluster.sh exited 3): {exc}")
            yield env

    return _slurm_env


slurm_env = cluster_fixture()


def slurm(env: dict[str, str], *args: str, timeout: float = 30) -> str:
    """Run a Slurm client command (sbatch, scontrol, ...) against the cluster; return its stdout."""
    done = subprocess.run(list(args), env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def sbatch(env: dict[str, str], *args: str, cwd: str | os.PathLike[str] | None = None) -> int:
    """Submit with ``sbatch --parsable ARGS`` (run in ``cwd``); return the job id."""
    done = subprocess.run(
        ["sbatch", "--parsable", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"sbatch {' '.join(args)} exited {done.returncode}: {done.stderr.strip()}")
    return int(done.stdout.strip().split(";")[0])


def job_info(env: dict[str, str], job_id: int) -> dict[str, str]:
    """``scontrol show job`` as a dict (JobState, Restarts, ExitCode, NodeList, ...)."""
    text = slurm(env, "scontrol", "show", "job", "--oneliner", str(job_id))
    return dict(re.findall(r"(\w+)=(\S*)", text))


def wait_job(
    env: dict[str, str], job_id: int, states: frozenset[str] = TERMINAL_STATES, timeout: float = 180
) -> dict[str, str]:
    """Poll until the job's state is one of ``states`` (default: finished); return its ``job_info``."""
    deadline = time.monotonic() + timeout
    while True:
        info = job_info(env, job_id)
        if info.get("JobState") in states:
            return info
        if time.monotonic() > deadline:
            queue = slurm(env, "squeue")
            raise TimeoutError(
                f"job {job_id} not in {sorted(states)} after {timeout:.0f}s: "
                f"JobState={info.get('JobState')} Reason={info.get('Reason')}\n{queue}"
            )
        time.sleep(1)
