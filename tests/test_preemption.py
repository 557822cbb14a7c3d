"""Preemption as Slurm does it, rollbacks, torn logs and bad input: real ranks, tiny config."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from distributed_run import ROOT, env, launch, losses, run_args, start_ranks_like_srun, wait_for_step

pytestmark = pytest.mark.slow


def wait_all(procs: list[subprocess.Popen], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    try:
        return [p.wait(timeout=max(0.1, deadline - time.monotonic())) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


def rank_log(workdir: Path, rank: int = 0) -> str:
    return (workdir / f"rank{rank}.log").read_text()


def latest(out: Path) -> str:
    return (out / "checkpoints" / "latest").read_text()


def test_sigterm_to_every_process_of_every_rank_checkpoints_and_resumes_exactly(synthetic_shards, tmp_path):
    """Slurm's scancel / preemption / time limit: SIGTERM to the ranks and their loader workers alike."""
    extra = ("train.total_steps=40", "train.checkpoint_every=1000", "data.eval_limit=4", "data.workers=1")
    reference = tmp_path / "reference"
    launch(run_args(synthetic_shards, reference, *extra))

    out, first = tmp_path / "run", tmp_path / "first"
    first.mkdir()
    procs = start_ranks_like_srun(run_args(synthetic_shards, out, *extra), first)
    wait_for_step(out, 5, procs[0])
    ranks = [psutil.Process(p.pid) for p in procs]
    workers = [child for rank in ranks for child in rank.children(recursive=True)]
    assert all(rank.children() for rank in ranks), "every rank has a loader worker when the signal comes"
    signalled_at = time.monotonic()
    for process in [*ranks, *workers]:
        process.send_signal(signal.SIGTERM)
    assert wait_all(procs, timeout=60) == [75, 75], rank_log(first)[-3000:]
    assert time.monotonic() - signalled_at < 60
    logged = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    stopped = max(logged)
    assert stopped >= 5 and latest(out) == f"step_{stopped:08d}"
    assert f"signal 15: checkpoint at step {stopped} written, stopping" in rank_log(first)

    second = tmp_path / "second"
    second.mkdir()
    assert wait_all(start_ranks_like_srun(run_args(synthetic_shards, out, *extra), second), 300) == [0, 0]
    resumed = f"resumed from {out / 'checkpoints' / f'step_{stopped:08d}'} at step {stopped} (epoch"
    assert resumed in rank_log(second) and "exact data position" in rank_log(second)
    assert losses(out) == losses(reference)


SIGNAL_IN_EVALUATION = """
import jrnet.evaluate as evaluate
real_predict_masks = evaluate.predict_masks
def predict_masks(*args, **kwargs):
    if os.environ["SLURM_PROCID"] == "1" and not hasattr(predict_masks, "sent"):
        predict_masks.sent = True
        os.kill(os.getpid(), signal.SIGUSR1)
    return real_predict_masks(*args, **kwargs)
evaluate.predict_masks = predict_masks
"""


def test_signal_during_evaluation_ends_it_on_every_rank_and_checkpoints(synthetic_shards, tmp_path):
    """Rank 1 alone gets the signal in its first evaluation batch: both ranks stop evaluating at the next
    batch, save step 2 together and exit 75; no result of the abandoned evaluation is written."""
    out = tmp_path / "run"
    args = run_args(synthetic_shards, out, "train.eval_every=2", "train.checkpoint_every=1000", "data.workers=1")
    procs = start_ranks_like_srun(args, tmp_path, patch=SIGNAL_IN_EVALUATION)
    assert wait_all(procs, timeout=300) == [75, 75], rank_log(tmp_path)[-3000:]
    assert latest(out) == "step_00000002"
    assert "signal 10: evaluation of val at step 2 abandoned" in rank_log(tmp_path)
    assert not (out / "eval.json").exists()
    assert not any('"eval/' in line for line in (out / "metrics.jsonl").read_text().splitlines())


SIGNAL_DURING_SETUP = """
import jrnet.train as train
real_build_engine = train.build_engine
def build_engine(*args, **kwargs):
    if os.environ["SLURM_PROCID"] == "0":
        os.kill(os.getpid(), signal.SIGTERM)
    return real_build_engine(*args, **kwargs)
train.build_engine = build_engine
"""


def test_signal_before_the_first_step_exits_75_without_a_checkpoint(synthetic_shards, tmp_path):
    out = tmp_path / "run"
    procs = start_ranks_like_srun(run_args(synthetic_shards, out), tmp_path, patch=SIGNAL_DURING_SETUP)
    assert wait_all(procs, timeout=300) == [75, 75], rank_log(tmp_path)[-3000:]
    assert "signal 15 before the first step: stopping without a new checkpoint" in rank_log(tmp_path)
    assert not (out / "checkpoints" / "latest").exists()


def test_rolling_back_keeps_the_newer_checkpoints(synthetic_shards, tmp_path):
    common = ("train.total_steps=9", "train.checkpoint_every=3", "data.eval_limit=4")
    launch(run_args(synthetic_shards, tmp_path, *common), ranks=1)
    checkpoints = tmp_path / "checkpoints"
    rollback = ["--resume", str(checkpoints / "step_00000003"), "--max-steps", "5"]
    proc = launch(run_args(synthetic_shards, tmp_path, *common, *rollback), ranks=1)
    aside = sorted(checkpoints.glob("rolled_back_*"))
    assert len(aside) == 1 and sorted(p.name for p in aside[0].iterdir()) == ["step_00000006", "step_00000009"]
    assert f"moved the newer checkpoints step_00000006, step_00000009 aside to {aside[0]}" in proc.stderr
    assert latest(tmp_path) == "step_00000005"
    assert sorted(p.name for p in checkpoints.glob("step_*")) == ["step_00000003", "step_00000005"]


def test_torn_metrics_line_does_not_stop_a_resume(synthetic_shards, tmp_path):
    launch(run_args(synthetic_shards, tmp_path, "--max-steps", "3", "data.eval_limit=4"), ranks=1)
    metrics = tmp_path / "metrics.jsonl"
    torn = len(metrics.read_text().splitlines()) + 1
    with open(metrics, "a") as f:
        f.write('{"step": 4, "lo')  # a kill in the middle of a write
    proc = launch(run_args(synthetic_shards, tmp_path, "data.eval_limit=4"), ranks=1)
    assert f'{metrics}: dropped unreadable line {torn}: {{"step": 4, "lo' in proc.stderr
    assert sorted(losses(tmp_path)) == [1, 2, 3, 4, 5, 6]


def test_changed_data_order_restarts_the_epoch_and_says_why(synthetic_shards, tmp_path):
    launch(run_args(synthetic_shards, tmp_path, "--max-steps", "3", "data.eval_limit=4"), ranks=1)
    proc = launch(run_args(synthetic_shards, tmp_path, "data.eval_limit=4", "data.workers=2"), ranks=1)
    restarted = "epoch 0 restarted, 3 batches of it are seen again: the data order changed (workers 1 -> 2)"
    assert restarted in proc.stderr


def test_standalone_evaluation_rebuilds_the_frozen_random_trunk(synthetic_shards, tmp_path):
    """tiny trains a frozen trunk without a weights file: evaluation must rebuild that very trunk."""
    out = tmp_path / "run"
    launch(run_args(synthetic_shards, out), ranks=1)
    trained = json.loads((out / "eval.json").read_text())["splits"]
    result = tmp_path / "evaluate.json"
    cli = ["--checkpoint", str(out), "--shards", str(synthetic_shards), "--batch-size", "8", "--output", str(result)]
    launch(cli, ranks=1, module="jrnet.evaluate")
    assert json.loads(result.read_text())["splits"] == trained

    meta = out / "checkpoints" / "step_00000006" / "meta.json"
    record = json.loads(meta.read_text())
    record["trunk"]["state_sha256"] = "0" * 64  # as if training had built another trunk
    meta.write_text(json.dumps(record))
    refused = launch(cli, ranks=1, module="jrnet.evaluate", check=False)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines()[-1].startswith(f"error: {meta.parent}: the rebuilt frozen trunk")


def bad_launch(shards: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return launch(run_args(shards, out, *extra), ranks=1, check=False)


@pytest.mark.parametrize(
    "extra,message",
    [
        (("train.precision=fp16",), "error: train.precision=fp16 needs a CUDA GPU (no fp16 training on CPU)"),
        (("train.log_every=0",), "error: train.log_every=0 must be >= 1"),
        (("data.workers=-2",), "error: data.workers=-2 must be >= 0"),
        (("data.max_words=5",), "error: data.max_words=5 but {shards}/synthetic/manifest.json was sharded with "
                                "--max-words 25"),
        (("--resume", "{out}"), "error: {out}: not a checkpoint or run folder"),
        (("--resume", "{out}/nothing"), "error: {out}/nothing: no such checkpoint or run folder"),
    ],
)  # fmt: skip
def test_bad_training_input_is_one_error_line_and_exit_2(synthetic_shards, tmp_path, extra, message):
    extra = tuple(e.format(out=tmp_path) for e in extra)
    proc = bad_launch(synthetic_shards, tmp_path / "run", *extra)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and errors == [errors[0]], proc.stderr[-2000:]
    assert errors[0].startswith(message.format(shards=synthetic_shards, out=tmp_path))
    assert not (tmp_path / "run").exists(), "nothing was started"


@pytest.mark.parametrize("module", ["jrnet.evaluate", "jrnet.predict"])
def test_evaluate_and_predict_name_a_missing_checkpoint(synthetic_shards, tmp_path, module):
    missing = tmp_path / "no_run"
    cmd = [sys.executable, "-m", module, "--checkpoint", str(missing), "--shards", str(synthetic_shards)]
    proc = subprocess.run([*cmd, "--split", "val"], cwd=ROOT, env=env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: {missing}: no such checkpoint or run folder"]
