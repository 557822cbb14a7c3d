"""Process-group setup for every launcher: `deepspeed`, `torchrun`, and Slurm `srun` (SLURM_* -> torch env)."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from datetime import timedelta

import torch


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    device: torch.device
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def slurm_to_torch_env(environ=os.environ) -> None:
    """Under `srun` only SLURM_* is set; torch and DeepSpeed read RANK/WORLD_SIZE/LOCAL_RANK/MASTER_*."""
    if "RANK" in environ or "SLURM_PROCID" not in environ:
        return
    environ["RANK"] = environ["SLURM_PROCID"]
    environ["WORLD_SIZE"] = environ["SLURM_NTASKS"]
    environ["LOCAL_RANK"] = environ.get("SLURM_LOCALID", "0")
    tasks_per_node = environ.get("SLURM_NTASKS_PER_NODE", environ.get("SLURM_TASKS_PER_NODE", "1"))
    environ["LOCAL_WORLD_SIZE"] = str(tasks_on_node(tasks_per_node, int(environ.get("SLURM_NODEID", "0"))))
    if "MASTER_ADDR" not in environ:
        nodes = subprocess.run(
            ["scontrol", "show", "hostnames", environ["SLURM_JOB_NODELIST"]],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        environ["MASTER_ADDR"] = nodes[0]
    environ.setdefault("MASTER_PORT", str(20000 + int(environ.get("SLURM_JOB_ID", "0")) % 20000))


def tasks_on_node(spec: str, node: int) -> int:
    """Slurm's compressed tasks-per-node list ("4(x2),3" is 4, 4, 3) read at one node's index."""
    counts = []
    for part in spec.split(","):
        count, _, repeat = part.partition("(x")
        counts += [int(count)] * int(repeat.rstrip(")") or 1)
    return counts[min(node, len(counts) - 1)]


def local_world_size() -> int:
    return int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))


def cpu_threads_per_rank() -> int:
    """Cores / local ranks: oversubscribing 2 cores with 2 ranks x 2 threads doubles the step time."""
    cores = len(os.sched_getaffinity(0))
    return max(1, cores // max(1, local_world_size()))


def init_distributed(threads: int | None = None, timeout_s: int = 600) -> DistEnv:
    """CUDA + NCCL when GPUs exist, CPU + gloo otherwise; a single process works without any launcher."""
    import deepspeed

    slurm_to_torch_env()
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29500")
    local_rank = int(os.environ["LOCAL_RANK"])
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device, backend = torch.device("cuda", local_rank), "nccl"
    else:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
        torch.set_num_threads(threads or cpu_threads_per_rank())
        import deepspeed.ops as ops

        ops.__compatible_ops__["deepspeed_shm_comm"] = False  # skips a 44 s compile of an op training never uses
        device, backend = torch.device("cpu"), "gloo"
    # A short timeout: when a peer dies, survivors fail in minutes instead of blocking for 30.
    deepspeed.init_distributed(dist_backend=backend, timeout=timedelta(seconds=timeout_s))
    return DistEnv(
        rank=torch.distributed.get_rank(),
        world_size=torch.distributed.get_world_size(),
        local_rank=local_rank,
        local_world_size=local_world_size(),
        device=device,
        backend=backend,
    )


def shutdown_distributed() -> None:
    """Destroy the process group before the interpreter exits. Left to exit-time destructors, gloo's threads can
    still be running, and a rank that stops right after a collective (a signal before the first step) then aborts
    with "terminate called without an active exception" instead of its exit code (seen once in CI)."""
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def comm_device() -> torch.device:
    """NCCL reduces CUDA tensors only; gloo reduces CPU tensors."""
    if torch.distributed.is_initialized() and torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.barrier()


def any_rank(flag: bool) -> bool:
    """True on every rank when `flag` is true on at least one (e.g. a stop signal seen by one rank)."""
    return bool(max_over_ranks(int(flag))[0])


def max_over_ranks(*values: int) -> list[int]:
    """Element-wise maximum over all ranks, several values in one collective."""
    if not torch.distributed.is_initialized():
        return list(values)
    t = torch.tensor(values, dtype=torch.int64, device=comm_device())
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return t.tolist()


def average_buffers(module: torch.nn.Module) -> None:
    """Make every rank's floating-point buffers (BatchNorm running statistics) their mean over the ranks.

    Data parallelism keeps weights equal but not buffers: each rank's BatchNorm tracks its own batches, so without
    this the ranks would evaluate with different statistics, and a checkpoint (rank 0's buffers) would not
    reproduce the evaluation it was saved with. (DDP broadcasts rank 0's buffers at every forward; DeepSpeed does
    not.)"""
    if not torch.distributed.is_initialized() or torch.distributed.get_world_size() == 1:
        return
    for buffer in module.buffers():
        if buffer.is_floating_point():
            reduced = buffer.detach().to(comm_device(), torch.float64)
            torch.distributed.all_reduce(reduced)
            buffer.copy_(reduced / torch.distributed.get_world_size())


def mean_over_ranks(value: float) -> float:
    if not torch.distributed.is_initialized():
        return value
    t = torch.tensor([value], dtype=torch.float64, device=comm_device())
    torch.distributed.all_reduce(t)
    return t.item() / torch.distributed.get_world_size()
