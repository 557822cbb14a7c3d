"""bench/ablations.py end to end at the tiny size: real runs per (row, seed), the paper-format table, the
difference to the baseline paired by seed, reuse."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from distributed_run import ROOT, env, run_or_dump

pytestmark = pytest.mark.slow


def val_overall_iou(run: Path) -> float:
    return json.loads((run / "eval.json").read_text())["splits"]["val"]["overall_iou"]


def test_ablation_table_over_seeds_and_reuse(synthetic_shards, tmp_path):
    cmd = [sys.executable, str(ROOT / "bench" / "ablations.py"), "--shards", str(synthetic_shards), "--config",
           "tiny", "--ranks", "1", "--seeds", "0", "1", "--rows", "baseline", "jrnet", "--out", str(tmp_path),
           "train.total_steps=2", "data.eval_limit=4"]  # fmt: skip
    first = run_or_dump(cmd, env(), timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    assert first.stdout.count("(trained:") == 4
    rows = [line for line in first.stdout.splitlines() if line.startswith(("| baseline", "| jrnet"))]
    assert len(rows) == 2 and all(line.endswith("| 2 |") for line in rows)
    cells = re.findall(r"(\d+\.\d\d) ± (\d+\.\d\d)", rows[0])
    assert len(cells) == 6  # prec@0.5..0.9 and overall IoU, each mean ± half range
    overall = {(r, s): val_overall_iou(tmp_path / f"{r}_seed{s}") for r in ("baseline", "jrnet") for s in (0, 1)}
    gains = [overall["jrnet", s] - overall["baseline", s] for s in (0, 1)]
    expected = f"{100 * (gains[0] + gains[1]) / 2:.2f} ± {50 * abs(gains[0] - gains[1]):.2f}"
    assert f"JRNet - baseline, overall IoU, paired by seed: {expected} points" in first.stdout
    again = run_or_dump(cmd, env(), timeout=600)
    assert again.stdout.count("(reused:") == 4 and [r for r in again.stdout.splitlines() if r in rows] == rows
