"""The test harness's own promise: a hung run fails with every process's stack and leaves no process behind."""

from __future__ import annotations

import re
import sys

import psutil
import pytest
from distributed_run import env, run_or_dump

HANG = """
import subprocess, sys, time
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])  # like a rank's loader worker
time.sleep(600)
"""


def test_a_hung_run_fails_with_every_processs_stack_and_kills_the_whole_tree():
    with pytest.raises(AssertionError) as failure:
        run_or_dump([sys.executable, "-c", HANG], env(), timeout=5)
    text = str(failure.value)
    pids = [int(pid) for pid in re.findall(r"^pid (\d+):", text, flags=re.M)]
    assert "hung for 5 s" in text and len(pids) == 2  # the run and its child
    assert len(re.findall(r"<module> \(<string>:\d+\)", text)) == 2  # a Python stack of each
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in pids)
