"""The local 2-node Slurm cluster (slurm/local_cluster.sh) runs real multi-node jobs.

Needs root and the Debian Slurm packages (installed by the script when missing); skipped only when the
script exits 3 (it cannot run here).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

try:
    from slurm_cluster import TERMINAL_STATES, sbatch, slurm, slurm_env, wait_job  # noqa: F401 (fixture)
except ImportError:  # tests/ imported as a package
    from tests.slurm_cluster import TERMINAL_STATES, sbatch, slurm, slurm_env, wait_job  # noqa: F401

pytestmark = pytest.mark.slurm


def _write_job(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/bash\nset -euo pipefail\n" + body)
    return script


def _output(path: Path) -> str:
    return path.read_text() if path.exists() else "(no output file)"


def test_two_node_srun(slurm_env, tmp_path):
    script = _write_job(
        tmp_path,
        "srun bash -c 'echo \"task node=$SLURMD_NODENAME procid=$SLURM_PROCID nodeid=$SLURM_NODEID\"'\n"
        # What a launcher does for MASTER_ADDR: the first node's name must resolve.
        'master=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)\n'
        'echo "master=$master addr=$(getent hosts "$master" | awk \'{print $1}\')"\n',
    )
    job = sbatch(slurm_env, "--nodes=2", "--ntasks-per-node=1", "--output=%j.out", str(script), cwd=tmp_path)
    info = wait_job(slurm_env, job)
    out = _output(tmp_path / f"{job}.out")
    assert info["JobState"] == "COMPLETED", out
    tasks = {line for line in out.splitlines() if line.startswith("task ")}
    assert tasks == {"task node=node1 procid=0 nodeid=0", "task node=node2 procid=1 nodeid=1"}, out
    assert "master=node1 addr=127.0.0.1" in out, out


def test_fake_gpus_per_node(slurm_env, tmp_path):
    job = sbatch(
        slurm_env,
        "--nodes=2",
        "--ntasks-per-node=1",
        "--gpus-per-node=2",
        "--output=%j.out",
        "--wrap",
        "srun bash -c 'echo gpus $SLURMD_NODENAME $CUDA_VISIBLE_DEVICES'",
        cwd=tmp_path,
    )
    info = wait_job(slurm_env, job)
    out = _output(tmp_path / f"{job}.out")
    assert info["JobState"] == "COMPLETED", out
    assert sorted(line for line in out.splitlines() if line.startswith("gpus ")) == [
        "gpus node1 0,1",
        "gpus node2 0,1",
    ], out


def test_requeue_restarts_job(slurm_env, tmp_path):
    script = _write_job(
        tmp_path,
        'echo "run restart=${SLURM_RESTART_COUNT:-0}"\n'
        'if [ "${SLURM_RESTART_COUNT:-0}" -ge 1 ]; then echo finished; exit 0; fi\n'
        "sleep 300\n",
    )
    out_file = tmp_path / "requeue.out"
    job = sbatch(slurm_env, "--nodes=1", "--open-mode=append", f"--output={out_file}", str(script), cwd=tmp_path)
    wait_job(slurm_env, job, states=frozenset({"RUNNING"}) | TERMINAL_STATES)
    deadline = time.monotonic() + 60
    while "run restart=0" not in _output(out_file):
        assert time.monotonic() < deadline, f"first run printed nothing: {_output(out_file)}"
        time.sleep(0.5)

    slurm(slurm_env, "scontrol", "requeue", str(job))
    info = wait_job(slurm_env, job)
    out = _output(out_file)
    assert info["JobState"] == "COMPLETED", out
    assert info["Restarts"] == "1", info
    runs = [line for line in out.splitlines() if line.startswith("run ") or line == "finished"]
    assert runs == ["run restart=0", "run restart=1", "finished"], out
