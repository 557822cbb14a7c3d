"""The preemption contract: which signals stop a run, who handles them, and the exit codes launchers read.

Slurm signals every process of a job step (the ranks and their DataLoader workers alike): the warning signal
ahead of the time limit (`--signal`, USR1 with slurm/train.sh, USR2 with submitit), and SIGTERM on scancel,
preemption, a node drain or at the time limit. The ranks own all three: the handler only sets a flag, all ranks
agree at the next step boundary (or evaluation batch), save that step together and exit EXIT_REQUEUE. The
workers ignore them: a worker dying of SIGTERM would make the rank fail before it could save.
"""

from __future__ import annotations

import atexit
import ctypes
import functools
import multiprocessing
import signal
import sys

EXIT_BAD_INPUT = 2  # nothing started: fix the command or the data
EXIT_REQUEUE = 75  # EX_TEMPFAIL: checkpointed on a signal, run again with --resume auto to continue
MAX_REQUEUES = 20  # both launchers' default bound (slurm/train.sh MAX_RESTARTS, jrnet-submit --max-requeues)
STOP_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM)
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


class StopSignal:
    """Installs the rank's handlers; `received` is the first stop signal seen, or None."""

    def __init__(self):
        self.received: int | None = None
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._handler)

    def _handler(self, signum, frame):
        if self.received is None:
            self.received = signum


def worker_ignores_stop_signals(_worker_id: int = 0) -> None:
    """DataLoader `worker_init_fn`: leave the stop signals to the rank, and die with it.

    Ignoring SIGTERM also defeats the DataLoader's last-resort `terminate()`, so the worker asks the kernel to
    SIGKILL it when its rank exits: no worker outlives its rank (and holds the job's log pipes open).
    """
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


@functools.cache
def kill_workers_at_exit() -> None:
    """Called by the process that starts workers which ignore SIGTERM, once.

    At exit, multiprocessing's own hook terminate()s daemonic children and then joins them: a worker that
    ignores SIGTERM (still alive when an error ends the rank) would block that join forever. This hook is
    registered after multiprocessing's, so it runs first and SIGKILLs them.
    """
    import multiprocessing.util  # noqa: F401  (registers multiprocessing's exit hook now, before ours)

    atexit.register(_kill_daemonic_children)


def _kill_daemonic_children() -> None:
    for child in multiprocessing.active_children():
        if child.daemon:
            child.kill()
