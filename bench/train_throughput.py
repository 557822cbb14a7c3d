"""Figure 5: end-to-end training samples/s per rank at the demo config, and where the step time goes.

    .venv/bin/python bench/train_throughput.py [--quick]

The real command, `deepspeed --num_gpus 2 launch.py --config demo --shards S --output O --max-steps N
log.wandb=disabled`, on the generated synthetic set, in two variants run alternately (2 rounds each; --quick: 1):
  demo      : the demo config as shipped (data.workers = its value: DataLoader worker processes per rank);
  workers=0 : the same with data.workers=0 (each rank decodes its batches itself, between steps).
Both read `O/metrics.jsonl` (written by rank 0: samples/s over all ranks, per-rank samples/s, and per micro-batch
mean seconds of data wait, forward, backward and optimizer step over each log window), leave out the first log
window (warm-up: worker start-up, the shuffle buffer's first fill, first-call allocations) and take medians over
the remaining windows of all rounds. A step's wall time = micro-batch x ranks / samples/s; the part of it not in the
four timed phases (the per-step any-rank stop check, progress bar, logging) is shown as "other".
Extra overrides: train.log_every=5 (more, shorter windows per run), and to keep the runs about the training loop,
data.eval_limit=16 (the end-of-run evaluation is outside the
measured windows anyway), train.checkpoint_every=100000 (only the final checkpoint, also after the last window).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import BIN, ROOT, free_port, header, median, spread, synthetic_dataset, table

from jrnet.config import load_config


def train_env() -> dict:
    env = dict(os.environ)
    env.update(DS_ACCELERATOR="cpu", WANDB_MODE="disabled", PYTHONUNBUFFERED="1")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "SLURM_PROCID", "SLURM_JOB_ID"):
        env.pop(key, None)
    return env


def run_training(
    shards: Path, out: Path, steps: int, log_every: int, overrides: list[str]
) -> tuple[list[dict], float, list[str]]:
    """One training run; (metrics records with samples/s, wall seconds, the command)."""
    cmd = [str(BIN / "deepspeed"), "--num_gpus", "2", "--master_port", str(free_port()), "launch.py"]
    cmd += ["--config", "demo", "--shards", str(shards), "--output", str(out), "--max-steps", str(steps)]
    cmd += ["--resume", "none", "log.wandb=disabled", "data.eval_limit=16", "train.checkpoint_every=100000"]
    cmd += [f"train.log_every={log_every}"]
    cmd += overrides
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=train_env(), capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in records if "samples_per_s" in r], wall, cmd


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="1 round of each variant, 10 steps (about 2 minutes)")
    args = p.parse_args()
    demo = load_config("demo")
    log_every = 5  # train.log_every override: more, shorter windows per run (the demo logs every 10)
    steps = 2 * log_every if args.quick else 4 * log_every
    rounds = 1 if args.quick else 2
    micro = demo.train.global_batch_size // 2 // demo.train.grad_accum_steps
    header(
        "Figure 5: end-to-end training throughput at the demo config (2 ranks) and where the step goes",
        f"metrics.jsonl of `deepspeed --num_gpus 2 launch.py --config demo` runs of {steps} steps "
        f"(train.log_every={log_every}), first window dropped, variants 'demo' (data.workers={demo.data.workers}) "
        "and 'workers=0' "
        f"alternately, {rounds} round(s) each; demo: {demo.model.backbone}, {demo.model.image_size} px, "
        f"C={demo.model.channels}, global batch {demo.train.global_batch_size} = 2 ranks x {micro}, ZeRO-"
        f"{demo.train.zero_stage}, {demo.train.precision}, 1 torch thread per rank (cores / ranks)",
    )
    scratch = Path(tempfile.mkdtemp(prefix="bench-train-"))
    try:
        images = 800 if args.quick else 2000
        # sharded as make demo does: the demo config refuses shards of another --max-words
        _, shards, seconds = synthetic_dataset(scratch, images, extra=("--max-words", str(demo.data.max_words)))
        print(f"generated + sharded the synthetic set ({images} images) in {seconds:.1f} s (this machine)")
        variants = {"demo": [], "workers=0": ["data.workers=0"]}
        windows: dict[str, list[dict]] = {v: [] for v in variants}
        for r in range(rounds):
            order = list(variants) if r % 2 == 0 else list(variants)[::-1]
            for name in order:
                out = scratch / f"run-{name.replace('=', '')}-{r}"
                records, wall, cmd = run_training(shards, out, steps, log_every, variants[name])
                if r == 0 and name == "demo":
                    shown = [os.path.relpath(c, ROOT) if c.startswith(str(ROOT)) else c for c in cmd]
                    print("command: " + " ".join(shown))
                kept = records[1:]
                windows[name] += kept
                rates = ", ".join(f"{k['samples_per_s_per_rank']:.1f}" for k in kept)
                print(f"  round {r + 1} {name}: {wall:.0f} s wall; samples/s per rank per window: {rates}", flush=True)
                shutil.rmtree(out, ignore_errors=True)

        rows, shares = [], []
        for name, recs in windows.items():
            per_rank = [k["samples_per_s_per_rank"] for k in recs]
            total = [k["samples_per_s"] for k in recs]
            phases = {
                "data wait": median([k["time_data_s"] for k in recs]),
                "forward": median([k["time_forward_s"] for k in recs]),
                "backward": median([k["time_backward_s"] for k in recs]),
                "optimizer": median([k["time_optimizer_s"] for k in recs]),
            }
            step = micro * 2 / median(total)  # seconds per step (one micro-batch per rank per step)
            phases["other"] = max(0.0, step - sum(phases.values()))
            rows.append(
                [
                    name,
                    len(recs),
                    f"{median(per_rank):.1f}",
                    spread(per_rank),
                    f"{median(total):.1f}",
                    f"{step * 1e3:.0f}",
                ]
            )
            shares.append([name] + [f"{v * 1e3:.0f} ms ({100 * v / step:.0f}%)" for v in phases.values()])
        print()
        print(
            table(
                rows,
                ["variant", "windows", "samples/s per rank (median)", "range", "samples/s (2 ranks)", "step ms"],
            )
        )
        demo_rate = median([k["samples_per_s_per_rank"] for k in windows["demo"]])
        inline_rate = median([k["samples_per_s_per_rank"] for k in windows["workers=0"]])
        print(f"ratio demo / workers=0 samples/s: {demo_rate / inline_rate:.2f}")
        print("\nwhere a step goes (rank 0, per micro-batch medians; % of the step's wall time):")
        print(table(shares, ["variant", "data wait", "forward", "backward", "optimizer", "other"]))
        print(
            "\n(this machine's numbers, shared with other jobs; the demo variant runs 2 ranks + "
            f"{2 * demo.data.workers} loader worker process(es) on 2 cores, workers=0 runs 2 processes)"
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
