"""The paper's ablations at demo scale: Table 2 (baseline, only CMMLF, only JRM, JRNet) and Table 3 (JRM depth),
several seeds each, printed in the paper's format with the mean and spread over seeds.

    .venv/bin/python bench/ablations.py --shards shards [--config demo] [--seeds 0 1] [--ranks 2]
        [--rows baseline only_cmmlf only_jrm jrnet jrm2 jrm3] [--out runs/ablations] [section.key=value ...]

Every (row, seed) is a real training run (`launch.py`, `--resume auto`) in `<out>/<row>_seed<seed>/`; a run whose
`eval.json` is final is reused, so the table can be built over several sessions. The spread is half the range
over seeds; "JRNet - baseline" pairs the runs by seed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from statistics import mean

from common import free_port

ROOT = Path(__file__).resolve().parent.parent
COLUMNS = ("prec@0.5", "prec@0.6", "prec@0.7", "prec@0.8", "prec@0.9", "overall_iou")
# row -> (Table, model overrides). Table 2 uses one JRM layer, as the paper's does (and the demo); jrnet is also
# Table 3's 1-layer row.
ROWS = {
    "baseline": ("Table 2", ["model.variant=baseline"]),
    "only_cmmlf": ("Table 2", ["model.variant=only_cmmlf"]),
    "only_jrm": ("Table 2", ["model.variant=only_jrm", "model.jrm_layers=1"]),
    "jrnet": ("Table 2 / 3 (1 layer)", ["model.variant=jrnet", "model.jrm_layers=1"]),
    "jrm2": ("Table 3 (2 layers)", ["model.variant=jrnet", "model.jrm_layers=2"]),
    "jrm3": ("Table 3 (3 layers)", ["model.variant=jrnet", "model.jrm_layers=3"]),
}


def train(args: argparse.Namespace, row: str, seed: int) -> tuple[Path, bool]:
    """The run's folder, and whether it was reused (a final eval.json already there)."""
    out = args.out / f"{row}_seed{seed}"
    report = out / "eval.json"
    if report.is_file() and json.loads(report.read_text()).get("final"):
        return out, True
    run = ["--config", args.config, "--shards", str(args.shards), "--output", str(out), "--resume", "auto"]
    run += [*ROWS[row][1], f"train.seed={seed}", "log.wandb=disabled", *args.overrides]
    bin_dir = Path(sys.executable).parent
    if args.ranks == 1:
        cmd = [sys.executable, str(ROOT / "launch.py"), *run]
    else:
        port = ["--master_port", str(free_port())]
        cmd = [str(bin_dir / "deepspeed"), "--num_gpus", str(args.ranks), *port, str(ROOT / "launch.py"), *run]
    env = dict(os.environ, MASTER_PORT=str(free_port()))
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    (args.out / f"{row}_seed{seed}.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"{row} seed {seed}: exited {proc.returncode}; see {args.out / f'{row}_seed{seed}.log'}")
    return out, False


def results(out: Path, split: str) -> dict[str, float]:
    return json.loads((out / "eval.json").read_text())["splits"][split]


def cell(values: list[float]) -> str:
    """mean ± half the range, in percent."""
    return f"{100 * mean(values):.2f} ± {50 * (max(values) - min(values)):.2f}"


def table(measured: dict[str, dict[int, dict]], seeds: list[int]) -> str:
    head = ["row", "", *COLUMNS, "seeds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row, by_seed in measured.items():
        cells = [cell([by_seed[s][c] for s in seeds]) for c in COLUMNS]
        lines.append("| " + " | ".join([row, ROWS[row][0], *cells, str(len(seeds))]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shards", type=Path, required=True)
    p.add_argument("--config", default="demo")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    p.add_argument("--split", default="val", help="the evaluation split the table reports")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "ablations")
    p.add_argument("overrides", nargs="*", help="section.key=value for every run (e.g. train.total_steps=800)")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    measured: dict[str, dict[int, dict]] = {}
    for row in args.rows:
        for seed in args.seeds:
            out, reused = train(args, row, seed)
            measured.setdefault(row, {})[seed] = results(out, args.split)
            overall = measured[row][seed]["overall_iou"]
            print(f"{row} seed {seed}: overall IoU {100 * overall:.2f} ({'reused' if reused else 'trained'}: {out})")
    print(
        f"\n{args.split}, {args.config} {' '.join(args.overrides)}, {args.ranks} rank(s); mean ± half range over seeds"
    )
    print(table(measured, args.seeds))
    if "baseline" in measured:
        print()
        for row in (r for r in measured if r != "baseline"):
            gains = [measured[row][s]["overall_iou"] - measured["baseline"][s]["overall_iou"] for s in args.seeds]
            name = "JRNet" if row == "jrnet" else row
            print(f"{name} - baseline, overall IoU, paired by seed: {cell(gains)} points")
    return 0


if __name__ == "__main__":
    sys.exit(main())
