"""bench/ablations.py end to end at the tiny size: real runs per (row, seed), the paper-format table, reuse."""

from __future__ import annotations

import re
import sys

import pytest
from distributed_run import ROOT, env, run_or_dump

pytestmark = pytest.mark.slow


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
    assert re.search(r"JRNet - baseline, overall IoU, paired by seed: -?\d+\.\d\d ± \d+\.\d\d points", first.stdout)
    again = run_or_dump(cmd, env(), timeout=600)
    assert again.stdout.count("(reused:") == 4 and [r for r in again.stdout.splitlines() if r in rows] == rows
