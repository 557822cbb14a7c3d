"""What a run costs besides training: a process's start and exit, against another revision of the code.

    .venv/bin/python bench/startup.py [--baseline REV] [--rounds 5]

Three cases, interleaved round by round, medians: REV (default HEAD, checked out with `git worktree`) and the
working tree under `deepspeed`, and the working tree under `torchrun` (the test suite's launcher), all run by
this venv's Python, DeepSpeed and torch. In each round, each case runs
  train   : `LAUNCHER 2 ranks launch.py --config tiny` (6 steps of a tiny model, checkpoints at 3 and 6, evaluation
            of 35 sentences) on a generated set; its output lines are timestamped as they arrive: start -> "world"
            line (launchers, imports, model, DeepSpeed engine), "world" line -> the evaluation's last line
            (training, checkpoints, evaluation), and that line -> the launcher's exit (ranks' and launchers' exit);
  evaluate: `python -m jrnet.evaluate` of that run's checkpoint on 16 refs, start to exit.
The tiny model trains in about a second: these are the fixed costs every run and every test of the suite pays.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import BIN, PYTHON, ROOT, free_port, header, interleave, median, spread, synthetic_dataset, table
from train_throughput import train_env

PHASES = ("start -> world line", "world line -> evaluated", "evaluated -> exit", "train, all", "evaluate, all")
RANKS_FLAG = {"deepspeed": "--num_gpus", "torchrun": "--nproc_per_node"}


def timestamped_run(cmd: list[str], cwd: Path) -> tuple[list[tuple[float, str]], float]:
    """(seconds since start, line) for each output line, and the seconds to the process's exit."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=train_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    lines = [(time.perf_counter() - t0, line.rstrip()) for line in proc.stdout]
    wall = time.perf_counter() - t0
    if proc.wait() != 0:
        tail = "\n".join(line for _, line in lines[-15:])
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}\n{tail}")
    return lines, wall


def one_round(tree: Path, launcher: str, shards: Path, out: Path, phases: dict[str, list[float]]) -> float:
    shutil.rmtree(out, ignore_errors=True)
    train = [str(BIN / launcher), RANKS_FLAG[launcher], "2", "--master_port", str(free_port()), str(tree / "launch.py")]
    train += ["--config", "tiny", "--shards", str(shards), "--output", str(out), "--resume", "none"]
    lines, wall = timestamped_run(train, tree)
    world = next(t for t, line in lines if "[rank 0] world 2 |" in line)
    last = max(t for t, line in lines if line.startswith("prec@X = "))  # the footnote of the evaluation's table
    evaluate = [str(PYTHON), "-m", "jrnet.evaluate", "--checkpoint", str(out), "--shards", str(shards)]
    _, eval_wall = timestamped_run([*evaluate, "--limit", "16", "--output", str(out / "bench_eval.json")], tree)
    for name, value in zip(PHASES, (world, last - world, wall - last, wall, eval_wall), strict=True):
        phases[name].append(value)
    return wall + eval_wall


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--baseline", default="HEAD", help="the git revision to compare the working tree with")
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    rev = subprocess.run(
        ["git", "rev-parse", "--short", args.baseline], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    header(
        "Fixed costs of a run: start and exit of `launch.py` (2 ranks, tiny config) and of `jrnet.evaluate`",
        f"wall seconds of each phase, {args.rounds} interleaved rounds of {rev} (git worktree) and the working "
        "tree under deepspeed, and the working tree under torchrun; medians and ranges; one venv runs all",
    )
    scratch = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    baseline = scratch / "baseline"
    try:
        subprocess.run(["git", "worktree", "add", "--detach", str(baseline), rev], cwd=ROOT, check=True)
        _, shards, _ = synthetic_dataset(scratch, 60)
        runs = {
            f"{rev}, deepspeed": (baseline, "deepspeed"),
            "working tree, deepspeed": (ROOT, "deepspeed"),
            "working tree, torchrun": (ROOT, "torchrun"),
        }
        phases = {name: {phase: [] for phase in PHASES} for name in runs}
        cases = {name: (lambda n=name: one_round(*runs[n], shards, scratch / "run", phases[n])) for name in runs}
        interleave(cases, args.rounds, label="train + evaluate seconds")
        rows = [
            [phase] + [f"{median(phases[n][phase]):.2f} ({spread(phases[n][phase])})" for n in runs] for phase in PHASES
        ]
        print()
        print(table(rows, ["phase (seconds)", *runs]))
        base, new, torchrun = (median(phases[n]["train, all"]) for n in runs)
        evaluate_base, evaluate_new, _ = (median(phases[n]["evaluate, all"]) for n in runs)
        print(
            f"\n{rev} - working tree, both under deepspeed: train {base - new:+.2f} s, evaluate "
            f"{evaluate_base - evaluate_new:+.2f} s; deepspeed - torchrun (working tree): train {new - torchrun:+.2f} s"
        )
        print("\n(this machine's seconds, shared with other jobs; the 2 ranks run side by side on its 2 cores)")
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(baseline)], cwd=ROOT, check=False)
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
