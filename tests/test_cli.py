"""What every command line shares: the objects of a finished command are frozen before the interpreter's last
garbage collections, which would otherwise walk them all at exit (BENCHMARKS.md 11)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from distributed_run import ROOT, env

# Registered before the command's own atexit callback, so it runs after it (atexit runs last-in, first-out).
OBSERVE_EXIT = """
import atexit, gc, sys
atexit.register(lambda: print("frozen at exit:", gc.get_freeze_count()))
from {module} import main
code = main({argv!r})
print("exit code:", code)
sys.exit(code)
"""


@pytest.mark.parametrize(
    ("module", "argv"),
    [
        ("jrnet.launch", ["--config", "tiny", "--shards", "missing-shards", "--output", "out"]),
        ("jrnet.evaluate", ["--checkpoint", "missing-run", "--shards", "missing-shards"]),
        ("jrnet.predict", ["--checkpoint", "missing-run"]),
    ],
)
def test_commands_freeze_their_objects_before_the_last_collection(module, argv, tmp_path):
    script = OBSERVE_EXIT.format(module=module, argv=argv)
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=env() | {"PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = proc.stdout.splitlines()
    assert lines[-2] == "exit code: 2" and proc.returncode == 2, proc.stdout + proc.stderr[-2000:]
    frozen = int(lines[-1].removeprefix("frozen at exit: "))
    assert frozen > 50_000  # torch alone makes over 100,000 objects; nothing frozen without the command's callback
