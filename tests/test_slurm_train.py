"""slurm/train.sh and slurm/submit.py on the real local 2-node Slurm cluster (slurm/local_cluster.sh).

Each job trains the tiny config with 2 ranks, one on node1 and one on node2. Skipped only when the cluster
script exits 3 (not root, or the Slurm packages cannot be installed here).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

try:
    from slurm_cluster import TERMINAL_STATES, job_info, sbatch, slurm, slurm_env, wait_job  # noqa: F401 (fixture)
except ImportError:  # tests/ imported as a package
    from tests.slurm_cluster import TERMINAL_STATES, job_info, sbatch, slurm, slurm_env, wait_job  # noqa: F401

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[1]
TRAIN_SH = REPO / "slurm" / "train.sh"
SUBMIT_PY = REPO / "slurm" / "submit.py"
# The local nodes have 2 CPUs and 2 fake GPUs each: one rank per node, one CPU, one (fake) GPU.
TWO_NODES = ["--nodes=2", "--ntasks-per-node=1", "--cpus-per-task=1", "--gpus-per-node=1"]
RESUMED = re.compile(r"resumed from (\S+) at step (\d+)")


@pytest.fixture
def cancel_jobs(slurm_env):
    """Job ids a test submits; any still queued or running at its end are cancelled (only those)."""
    ids: list[int] = []
    yield ids
    if ids:
        subprocess.run(["scancel", *map(str, ids)], env=slurm_env, capture_output=True, timeout=30, check=False)


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else f"(no {path})"


def _train_steps(output: Path) -> list[int]:
    """Steps of the per-step training records in metrics.jsonl (evaluation records have no loss)."""
    path = output / "metrics.jsonl"
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r["step"] for r in records if "loss" in r]


def _wait_for(predicate, timeout: float, what: str, log: Path, ended=lambda: False) -> None:
    """Poll `predicate`; fail after `timeout` or as soon as `ended()` says it can no longer come true."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if ended():
            raise AssertionError(f"the job ended before {what}; log {log}:\n{_read(log)[-4000:]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not seen after {timeout:.0f}s; log {log}:\n{_read(log)[-4000:]}")
        time.sleep(0.5)


def _job_ended(env: dict[str, str], job: int):
    return lambda: job_info(env, job).get("JobState") in TERMINAL_STATES


def _assert_finished(output: Path, total_steps: int, log_text: str) -> None:
    result = json.loads((output / "eval.json").read_text())
    assert result["step"] == total_steps and result["final"] is True, log_text
    latest = (output / "checkpoints" / "latest").read_text().strip()
    assert latest == f"step_{total_steps:08d}", log_text
    assert (output / "checkpoints" / latest / "meta.json").exists(), log_text


def _assert_resumed_and_continued(output: Path, total_steps: int, log_text: str) -> int:
    """The restarted run resumed from a checkpoint at step K > 0 and logged exactly K+1..total after it."""
    resumed = RESUMED.findall(log_text)
    assert len(resumed) == 1, log_text
    k = int(resumed[0][1])
    assert 0 < k < total_steps, log_text
    steps = _train_steps(output)
    cut = len(steps) - (total_steps - k)
    first, second = steps[:cut], steps[cut:]
    assert second == list(range(k + 1, total_steps + 1)), steps
    # The first run logged 1..M with M >= K (steps after its last checkpoint are trained again).
    assert first == list(range(1, len(first) + 1)) and len(first) >= k, steps
    return k


def _train_env(slurm_env: dict[str, str], shards: Path, output: Path) -> dict[str, str]:
    return {
        **slurm_env,
        "CONFIG": "configs/tiny.yaml",
        "SHARDS": str(shards),
        "OUTPUT": str(output),
        "PYTHON": sys.executable,
    }


def test_train_sh_two_nodes(slurm_env, synthetic_shards, tmp_path, cancel_jobs):
    output = tmp_path / "run"
    env = _train_env(slurm_env, synthetic_shards, output)
    job = sbatch(env, *TWO_NODES, f"--output={tmp_path}/%j.out", str(TRAIN_SH), cwd=REPO)
    cancel_jobs.append(job)
    info = wait_job(slurm_env, job, timeout=180)
    log = _read(tmp_path / f"{job}.out")
    assert info["JobState"] == "COMPLETED", log
    assert info["NodeList"] == "node[1-2]", info
    tasks = sorted(line.split(" | ")[0] for line in log.splitlines() if line.startswith("[task "))
    assert tasks == ["[task 0/2] node node1 local rank 0", "[task 1/2] node node2 local rank 0"], log
    assert "[rank 0] world 2 |" in log, log
    assert "master node1:" in log, log
    assert _train_steps(output) == list(range(1, 7)), log
    _assert_finished(output, 6, log)


def test_submitit_usr2_checkpoints_requeues_resumes(slurm_env, synthetic_shards, tmp_path, cancel_jobs):
    total = 40
    output, folder, cli_log = tmp_path / "run", tmp_path / "submitit", tmp_path / "submit.out"
    argv = [
        sys.executable,
        str(SUBMIT_PY),
        "--config=configs/tiny.yaml",
        f"--shards={synthetic_shards}",
        f"--output={output}",
        "--nodes=2",
        "--tasks-per-node=1",
        "--gpus-per-node=1",
        "--cpus-per-task=1",
        "--partition=debug",
        "--time=30",
        "--max-requeues=2",
        f"--folder={folder}",
        "--wait",
        "--wait-timeout=240",
        f"train.total_steps={total}",
        "train.checkpoint_every=1000",  # only the signal's checkpoint can explain a resume at step K
    ]
    with cli_log.open("w") as out:
        proc = subprocess.Popen(argv, env=slurm_env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for(lambda: "submitted job" in _read(cli_log) or proc.poll() is not None, 60, "job id", cli_log)
        match = re.search(r"submitted job (\d+)", _read(cli_log))
        assert match, _read(cli_log)
        job = int(match.group(1))
        cancel_jobs.append(job)
        rank0_err = folder / f"{job}_0_log.err"
        _wait_for(
            lambda: len(_train_steps(output)) >= 3, 150, "3 training steps", rank0_err, lambda: proc.poll() is not None
        )
        slurm(slurm_env, "scancel", "--signal=USR2", str(job))
        proc.wait(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    cli = _read(cli_log)
    log = _read(rank0_err)
    assert proc.returncode == 0, f"{cli}\n{log[-4000:]}"
    assert f"finished at step {total}" in cli, cli
    assert f"logs: {folder / f'{job}_0_log.out'}" in cli, cli
    out0 = _read(folder / f"{job}_0_log.out")
    assert "[task 0] checkpoint written at step" in out0, out0
    assert "Requeued job" in out0 and "restart 1 | requeues 1/2" in out0, out0
    k = _assert_resumed_and_continued(output, total, log)
    assert f"checkpoint written at step {k} after SIGUSR2" in _read(folder / f"{job}_1_log.out")
    assert job_info(slurm_env, job)["Restarts"] == "1"
    _assert_finished(output, total, log)


def test_train_sh_resumes_after_scontrol_requeue(slurm_env, synthetic_shards, tmp_path, cancel_jobs):
    total = 20
    output, log_path = tmp_path / "run", tmp_path / "job.out"
    env = _train_env(slurm_env, synthetic_shards, output)
    job = sbatch(
        env,
        *TWO_NODES,
        f"--output={log_path}",
        str(TRAIN_SH),
        f"train.total_steps={total}",
        "train.checkpoint_every=2",
        cwd=REPO,
    )
    cancel_jobs.append(job)
    latest = output / "checkpoints" / "latest"
    _wait_for(
        lambda: latest.exists() and len(_train_steps(output)) >= 3,
        150,
        "a checkpoint",
        log_path,
        _job_ended(slurm_env, job),
    )
    slurm(slurm_env, "scontrol", "requeue", str(job))
    info = wait_job(slurm_env, job, timeout=180)
    log = _read(log_path)
    assert info["JobState"] == "COMPLETED", log
    assert info["Restarts"] == "1", info
    assert "restart 0 |" in log and "restart 1 |" in log, log
    k = _assert_resumed_and_continued(output, total, log)
    assert f"checkpoints/step_{k:08d} at step {k}" in log, log
    _assert_finished(output, total, log)
