"""SLURM_* -> the torch launcher variables (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_*)."""

from __future__ import annotations

import subprocess

import pytest

import jrnet.distributed as distributed
from jrnet.distributed import slurm_to_torch_env


@pytest.fixture
def no_scontrol(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"scontrol must not be called: {args}")

    monkeypatch.setattr(distributed.subprocess, "run", refuse)


def srun_task() -> dict:
    """What srun sets for task 5 of 8, 4 per node on 2 nodes (the second task on node 2)."""
    return {
        "SLURM_PROCID": "5",
        "SLURM_NTASKS": "8",
        "SLURM_LOCALID": "1",
        "SLURM_NTASKS_PER_NODE": "4(x2)",
        "SLURM_JOB_ID": "123456",
        "SLURM_JOB_NODELIST": "node[01-02]",
        "MASTER_ADDR": "node01",
        "PATH": "/usr/bin",
    }


def test_slurm_task_maps_to_exact_torch_env(no_scontrol):
    environ = srun_task()
    slurm_to_torch_env(environ)
    assert environ == srun_task() | {
        "RANK": "5",
        "WORLD_SIZE": "8",
        "LOCAL_RANK": "1",
        "LOCAL_WORLD_SIZE": "4",  # "4(x2)": 4 tasks on each of 2 nodes
        "MASTER_PORT": str(20000 + 123456 % 20000),  # "23456": derived from the job id, same on every task
    }
    assert environ["MASTER_PORT"] == "23456"


def test_slurm_tasks_per_node_fallback_and_preset_port_kept(no_scontrol):
    environ = srun_task()
    del environ["SLURM_NTASKS_PER_NODE"]
    environ["SLURM_TASKS_PER_NODE"] = "2(x4)"  # always set by srun, unlike SLURM_NTASKS_PER_NODE
    environ["MASTER_PORT"] = "29999"
    slurm_to_torch_env(environ)
    assert environ["LOCAL_WORLD_SIZE"] == "2" and environ["MASTER_PORT"] == "29999"
    assert environ["MASTER_ADDR"] == "node01"


def test_master_addr_is_first_host_of_the_nodelist(monkeypatch):
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, stdout="node01\nnode02\n", stderr="")

    monkeypatch.setattr(distributed.subprocess, "run", fake_run)
    environ = srun_task()
    del environ["MASTER_ADDR"]
    slurm_to_torch_env(environ)
    assert calls == [["scontrol", "show", "hostnames", "node[01-02]"]]
    assert environ["MASTER_ADDR"] == "node01"


def test_environ_with_rank_already_set_is_left_alone(no_scontrol):
    environ = srun_task() | {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}  # torchrun/deepspeed under srun
    before = dict(environ)
    slurm_to_torch_env(environ)
    assert environ == before


def test_environ_without_slurm_is_left_alone(no_scontrol):
    environ = {"PATH": "/usr/bin", "MASTER_ADDR": "127.0.0.1"}
    slurm_to_torch_env(environ)
    assert environ == {"PATH": "/usr/bin", "MASTER_ADDR": "127.0.0.1"}


@pytest.mark.parametrize("spec,node,tasks", [("4", 0, 4), ("4(x2)", 1, 4), ("3(x2),1", 2, 1), ("2,1", 1, 1)])
def test_local_world_size_is_read_at_this_node_of_slurms_list(spec, node, tasks):
    environ = {"SLURM_PROCID": "0", "SLURM_NTASKS": "9", "SLURM_TASKS_PER_NODE": spec, "SLURM_NODEID": str(node)}
    environ |= {"MASTER_ADDR": "h0", "SLURM_JOB_ID": "1"}
    slurm_to_torch_env(environ)
    assert environ["LOCAL_WORLD_SIZE"] == str(tasks)


def _average_on_rank(rank: int, port: int, results) -> None:
    import torch

    from jrnet.distributed import average_buffers

    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    bn = torch.nn.BatchNorm1d(3)
    bn.running_mean.fill_(float(rank))  # as if each rank had tracked its own batches
    bn.running_var.fill_(1.0 + 2 * rank)
    bn.num_batches_tracked.fill_(7)
    average_buffers(bn)
    results[rank] = (bn.running_mean.tolist(), bn.running_var.tolist(), int(bn.num_batches_tracked))
    torch.distributed.destroy_process_group()


def test_batchnorm_statistics_are_averaged_over_the_ranks():
    """Before every evaluation and save: each rank's BatchNorm statistics become their mean over the ranks, so all
    ranks evaluate, and the checkpoint (rank 0's buffers) holds, the same statistics."""
    import multiprocessing

    import torch.multiprocessing as mp
    from distributed_run import free_port

    results = multiprocessing.Manager().dict()
    mp.spawn(_average_on_rank, args=(free_port(), results), nprocs=2, join=True)
    assert results[0] == results[1] == ([0.5] * 3, [2.0] * 3, 7)
