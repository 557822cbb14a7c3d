"""Submit JRNet training to Slurm through submitit; timeouts and preemptions checkpoint, requeue and resume.

    jrnet-submit --config configs/paper_448.yaml --shards shards --output runs/p448 \\
        --nodes 2 --tasks-per-node 4 --gpus-per-node 4 --partition gpu --time 24:00:00 [train.lr=2e-4 ...]
    jrnet-submit ... --wait          # block until the job is done and print its result

The training runs in-process in every task (one task per GPU). How a stop works (submitit 1.5.4):

* Slurm sends SIGUSR2 to every task `--signal-delay-s` seconds before the time limit (submitit's sbatch
  line is `--signal=USR2@<delay>`, no `B:`), or when someone runs `scancel --signal=USR2 JOB`.
* submitit installs its USR2 handler before the callable runs; it would call `checkpoint()` on task 0
  only, inside the signal handler, in the middle of a step: no collective DeepSpeed save is possible there.
  So `TrainJob.__call__` saves that handler first, then `jrnet.train.train` installs its own StopSignal on
  every task: all ranks finish the step and save it together, and `train` returns `stopped_by_signal`.
* Then global rank 0 calls the saved submitit handler itself: submitit calls `TrainJob.checkpoint()`
  (a fresh `TrainJob` with `resume="auto"`), dumps it as the job's new pickle, runs `scontrol requeue`
  and exits. The requeued job (same id, SLURM_RESTART_COUNT + 1) resumes at the saved step.
* Bounded: submitit counts timeouts against `slurm_max_num_timeout`; `TrainJob` also counts every
  requeue (submitit does not count preemptions) and stops requeueing after `--max-requeues`.
* SIGTERM (scancel, an outside `scontrol requeue`, preemption by requeue): the same collective checkpoint
  if the cluster's KillWait allows, and no result is written; Slurm ends or requeues the job itself and
  the next run resumes from the latest complete checkpoint.

Logs: `<folder>/<job id>_<task>_log.out|err` (appended across requeues). Exit codes: 0 submitted (or, with
--wait, finished), 1 the job failed or ended without a result, 2 bad input (nothing submitted).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from jrnet.location import Location
from jrnet.preemption import EXIT_BAD_INPUT, EXIT_REQUEUE, MAX_REQUEUES

# A non-zero rank that checkpointed waits this long for rank 0's `scontrol requeue` to end it.
REQUEUE_WAIT_S = 120
TERMINAL_STATES = {
    "BOOT_FAIL",
    "CANCELLED",
    "COMPLETED",
    "DEADLINE",
    "FAILED",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "PREEMPTED",
    "TIMEOUT",
}

try:
    import submitit
except ImportError:  # pragma: no cover - submitit is a project dependency
    submitit = None


def _checkpointable_base():
    return submitit.helpers.Checkpointable if submitit is not None else object


@dataclasses.dataclass
class TrainJob(_checkpointable_base()):
    """The training as a submitit callable: `launch.py`'s arguments, plus how many times it was requeued."""

    config: str
    shards: str
    output: str
    overrides: list[str] = dataclasses.field(default_factory=list)
    max_steps: int | None = None
    resume: str = "auto"
    max_requeues: int = MAX_REQUEUES
    requeues: int = 0

    def argv(self) -> list[str]:
        argv = ["--config", self.config, "--shards", self.shards, "--output", self.output, "--resume", self.resume]
        if self.max_steps is not None:
            argv += ["--max-steps", str(self.max_steps)]
        return argv + list(self.overrides)

    def __call__(self) -> dict:
        # Before anything else: the handler submitit installed for its preemption signal (USR2).
        preempt_sig = getattr(signal, "SIG" + submitit.JobEnvironment.USR_SIG)
        submitit_handler = signal.getsignal(preempt_sig)

        from jrnet import launch
        from jrnet.distributed import any_rank, shutdown_distributed
        from jrnet.train import train

        if os.environ.get("SLURM_RESTART_COUNT", "0") != "0" and self.resume != "auto":
            # Requeued by Slurm itself (preemption, `scontrol requeue`): the pickle is the first run's, but the
            # run must continue from its own latest checkpoint, not start over from `--resume`.
            self.resume = "auto"
        logging.getLogger("submitit").propagate = False  # training's root handler would print it twice
        env = submitit.JobEnvironment()
        rank = env.global_rank
        print(
            f"[task {rank}/{env.num_tasks}] node {os.environ.get('SLURMD_NODENAME', env.hostname)} local rank "
            f"{env.local_rank} | host {env.hostname} | job {env.job_id} restart "
            f"{os.environ.get('SLURM_RESTART_COUNT', '0')} | requeues {self.requeues}/{self.max_requeues} | "
            f"gpus {os.environ.get('CUDA_VISIBLE_DEVICES', 'none')} | resume {self.resume}",
            flush=True,
        )
        args = launch.parse_args(self.argv())
        cfg = launch.preflight(args)  # ConfigError/DataError: submitit records the error as the job's result
        result = train(cfg, args.shards, args.output, args.max_steps, args.resume)
        sig = result.stopped_by_signal
        # submitit's signal asks us to requeue; a SIGTERM is Slurm ending the job itself.
        requeue = sig is not None and sig != signal.SIGTERM and _is_submitit_handler(submitit_handler)
        # Every rank learns rank 0's decision, so that all of them end the same way: the last collective.
        give_up = requeue and any_rank(rank == 0 and self.requeues >= self.max_requeues)
        shutdown_distributed()
        if sig is None:
            return {
                "rank": rank,
                "step": result.step,
                "final": result.step >= cfg.train.total_steps,
                "output": self.output,
                "eval": result.eval,
            }

        print(f"[task {rank}] checkpoint written at step {result.step} after {signal.Signals(sig).name}", flush=True)
        if not requeue:
            # Slurm is ending this run (scancel, outside requeue, preemption): it cancels or requeues the job
            # itself. No result file, so a waiting caller keeps waiting for the requeued run.
            raise SystemExit(EXIT_REQUEUE)
        if give_up:
            raise submitit.core.utils.UncompletedJobError(
                f"checkpoint at step {result.step} written, but not requeued: {self.requeues} requeues "
                f"reached --max-requeues {self.max_requeues}; submit again with --resume auto to continue"
            )
        if rank == 0:
            # submitit: checkpoint() -> new pickle, `scontrol requeue`, sys.exit (or an error if it refuses).
            submitit_handler(preempt_sig, None)
            raise SystemExit(EXIT_REQUEUE)  # not reached with submitit 1.5.4
        # Wait for rank 0's requeue to end this task; exiting first could end rank 0 (srun --kill-on-bad-exit).
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        time.sleep(REQUEUE_WAIT_S)
        raise submitit.core.utils.UncompletedJobError(
            f"rank 0 did not requeue job {env.job_id} within {REQUEUE_WAIT_S} s after the checkpoint at step "
            f"{result.step}; see task 0's log"
        )

    def checkpoint(self, *args, **kwargs):
        """Called by submitit on rank 0 before it requeues: the same training, resumed from its latest checkpoint."""
        if self.requeues >= self.max_requeues:
            return None  # submitit does not requeue and records an error
        fresh = dataclasses.replace(self, resume="auto", requeues=self.requeues + 1)
        return submitit.helpers.DelayedSubmission(fresh, *args, **kwargs)


def _is_submitit_handler(handler) -> bool:
    owner = getattr(handler, "__self__", None)
    return owner is not None and type(owner).__module__.startswith("submitit.")


# ---------------------------------------------------------------- submission


def parse_minutes(text: str) -> int:
    """Slurm-style time: minutes, MM:SS is not accepted; H:MM:SS, D-HH[:MM[:SS]] -> whole minutes (>= 1)."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if m is None:
        raise argparse.ArgumentTypeError(f"bad time {text!r}: use minutes, H:MM:SS or D-HH:MM:SS")
    days, a, b, c = m.groups()
    if days is None and b is None:
        minutes = int(a)
    else:
        hours, mins, secs = int(a), int(b or 0), int(c or 0)
        minutes = (int(days or 0) * 24 + hours) * 60 + mins + (secs + 59) // 60
    if minutes < 1:
        raise argparse.ArgumentTypeError("time must be at least 1 minute")
    return minutes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    t = p.add_argument_group("training (as launch.py)")
    t.add_argument("--config", required=True, help="YAML file or a name in configs/")
    t.add_argument("--shards", required=True, help="folder written by pipeline/shard.py, or its URL / pipe:")
    t.add_argument("--output", required=True, help="run folder; keep it to resume a run")
    t.add_argument("--max-steps", type=int, default=None)
    t.add_argument("--resume", default="auto", help="first run: auto, none or a checkpoint (requeues: auto)")
    t.add_argument("overrides", nargs="*", help="section.key=value")
    s = p.add_argument_group("Slurm")
    s.add_argument("--nodes", type=int, default=1)
    s.add_argument("--tasks-per-node", type=int, default=4, help="one rank per GPU (default 4)")
    s.add_argument("--gpus-per-node", type=int, default=4, help="0 on CPU-only nodes (default 4)")
    s.add_argument("--cpus-per-task", type=int, default=8)
    s.add_argument("--partition", default=None, help="default: the cluster's default partition")
    s.add_argument("--time", type=parse_minutes, default=24 * 60, help="minutes or H:MM:SS (default 24:00:00)")
    s.add_argument("--signal-delay-s", type=int, default=300, help="USR2 this long before the time limit")
    s.add_argument(
        "--max-requeues",
        type=int,
        default=MAX_REQUEUES,
        help=f"requeues after timeouts/preemptions (default {MAX_REQUEUES})",
    )
    s.add_argument("--folder", default="runs/submitit/%j", help="submitit logs and pickles (%%j: job id)")
    s.add_argument("--job-name", default="jrnet")
    s.add_argument("--slurm", action="append", default=[], metavar="KEY=VALUE", help="extra sbatch option")
    s.add_argument("--no-check", action="store_true", help="skip the config/shards check before submitting")
    s.add_argument("--wait", action="store_true", help="block until the job is done and print its result")
    s.add_argument("--wait-timeout", type=float, default=None, help="with --wait: give up after this many s")
    args = p.parse_args(argv)
    for name in ("nodes", "tasks_per_node", "cpus_per_task"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.gpus_per_node < 0 or args.signal_delay_s < 0 or args.max_requeues < 0:
        p.error("--gpus-per-node, --signal-delay-s and --max-requeues must be >= 0")
    return args


def _absolute(path: str) -> str:
    return str(Path(path).expanduser().resolve())


def make_job(args: argparse.Namespace) -> TrainJob:
    """Paths made absolute (the job may start elsewhere); a config name stays a name."""
    config = _absolute(args.config) if Path(args.config).exists() else args.config
    resume = args.resume if args.resume in ("auto", "none") else _absolute(args.resume)
    return TrainJob(
        config=config,
        shards=_absolute(args.shards) if Location(args.shards).is_local else args.shards,  # a URL stays a URL
        output=_absolute(args.output),
        overrides=list(args.overrides),
        max_steps=args.max_steps,
        resume=resume,
        max_requeues=args.max_requeues,
    )


def check(job: TrainJob, world_size: int) -> None:
    """launch.py's preflight for the job's world size, on this machine, before anything is submitted."""
    from jrnet import launch

    launch.preflight(launch.parse_args(job.argv()), world_size)


def make_executor(args: argparse.Namespace):
    executor = submitit.AutoExecutor(folder=args.folder, slurm_max_num_timeout=args.max_requeues)
    params = {
        "name": args.job_name,
        "nodes": args.nodes,
        "tasks_per_node": args.tasks_per_node,
        "cpus_per_task": args.cpus_per_task,
        "timeout_min": args.time,
        "slurm_signal_delay_s": args.signal_delay_s,
    }
    if args.gpus_per_node:
        params["gpus_per_node"] = args.gpus_per_node
    if args.partition:
        params["slurm_partition"] = args.partition
    extra = {}
    for item in args.slurm:
        key, sep, value = item.partition("=")
        extra[key.strip().lstrip("-")] = value if sep else True
    if extra:
        params["slurm_additional_parameters"] = extra
    executor.update_parameters(**params)
    return executor


def task_paths(job, task: int):
    return submitit.core.utils.JobPaths(job.paths.folder, job_id=job.job_id, task_id=task)


def slurm_state(job_id: str) -> str | None:
    """JobState from `scontrol show job` (works without accounting); None when Slurm no longer knows the job."""
    done = subprocess.run(
        ["scontrol", "show", "job", "--oneliner", str(job_id)], capture_output=True, text=True, timeout=60
    )
    m = re.search(r"\bJobState=(\S+)", done.stdout)
    return m.group(1) if done.returncode == 0 and m else None


def wait(job, num_tasks: int, timeout: float | None, poll_s: float = 5.0) -> tuple[bool, str]:
    """Until every task wrote its result, or Slurm says the job ended without one. (ok, message)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    ended_since = None
    while True:
        if all(task_paths(job, t).result_pickle.exists() for t in range(num_tasks)):
            return True, ""
        state = slurm_state(job.job_id)
        if state is None or state in TERMINAL_STATES:
            # A result file may land a moment after the job ends (shared file systems).
            ended_since = ended_since or time.monotonic()
            if time.monotonic() - ended_since > 30 or (state is None and task_paths(job, 0).result_pickle.exists()):
                return task_paths(job, 0).result_pickle.exists(), f"job {job.job_id} ended: {state or 'gone'}"
        else:
            ended_since = None
        if deadline is not None and time.monotonic() > deadline:
            return False, f"still {state} after {timeout:.0f} s (not cancelled)"
        time.sleep(poll_s)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if submitit is None:
        print("error: submitit is not installed (pip install submitit)", file=sys.stderr)
        return EXIT_BAD_INPUT
    job_spec = make_job(args)
    num_tasks = args.nodes * args.tasks_per_node
    if not args.no_check:
        from jrnet.checkpoint import CheckpointError
        from jrnet.config import ConfigError
        from jrnet.shards import DataError

        try:
            check(job_spec, num_tasks)
        except (ConfigError, DataError, CheckpointError) as e:
            print(f"error: {e}", file=sys.stderr)
            return EXIT_BAD_INPUT
    try:
        executor = make_executor(args)
    except (RuntimeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    job = executor.submit(job_spec)
    print(f"submitted job {job.job_id}: {num_tasks} task(s) on {args.nodes} node(s), output {job_spec.output}")
    print(f"logs: {task_paths(job, 0).stdout} and {task_paths(job, 0).stderr} (rank 0; <job>_<rank>_log.*)")
    print(f"follow: tail -F {task_paths(job, 0).stderr}", flush=True)
    if not args.wait:
        return 0

    ok, message = wait(job, num_tasks, args.wait_timeout)
    if not ok:
        print(f"error: no result: {message}; see {task_paths(job, 0).stderr}", file=sys.stderr)
        return 1
    try:
        result = job.task(0).result()
    except Exception as e:  # the job's own error, with its traceback
        print(f"error: job {job.job_id} failed: {e}", file=sys.stderr)
        return 1
    print(f"result: {result}")
    if result.get("eval"):
        splits = ", ".join(
            f"{s} overall IoU {100 * m.get('overall_iou', float('nan')):.2f}%" for s, m in result["eval"].items()
        )
        print(f"finished at step {result['step']}: {splits}; eval.json in {result['output']}")
    else:
        print(f"finished at step {result['step']}; outputs in {result['output']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
