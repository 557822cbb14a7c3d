"""Distributed training end to end with real DeepSpeed ranks on CPU (gloo): ZeRO stages, precision,
exact resume, resume on another number of ranks, crash-safe checkpoints, rank-independent evaluation."""

from __future__ import annotations

import json
import re
import shutil
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from distributed_run import (
    BIN,
    ROOT,
    env,
    free_port,
    launch,
    launch_with_patched_save,
    losses,
    run_args,
    run_or_dump,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def straight_runs(synthetic_shards, tmp_path_factory):
    """Uninterrupted 6-step fp32 runs on 2 ranks, one per ZeRO stage (stage 2 with 2 loader workers).

    What the launched ranks printed is kept beside each run folder (`launch_output`)."""
    runs = {}
    for stage in (1, 2, 3):
        out = tmp_path_factory.mktemp(f"zero{stage}")
        proc = launch(run_args(synthetic_shards, out, f"train.zero_stage={stage}", "data.workers=2"))
        out.with_name(f"{out.name}.log").write_text(proc.stdout + proc.stderr)
        runs[stage] = out
    return runs


def test_zero_stages_agree(straight_runs):
    reference = losses(straight_runs[1])
    assert sorted(reference) == [1, 2, 3, 4, 5, 6]
    for stage in (2, 3):
        other = losses(straight_runs[stage])
        for step, loss in reference.items():
            assert other[step] == pytest.approx(loss, rel=1e-5, abs=1e-6), f"ZeRO-{stage} step {step}"
    for out in straight_runs.values():
        assert (out / "checkpoints" / "latest").read_text() == "step_00000006"
        assert json.loads((out / "eval.json").read_text())["splits"]["val"]["samples"] > 0


def test_evaluations_do_not_change_training(straight_runs, synthetic_shards, tmp_path):
    """Evaluated at steps 2 and 4 (mode switches, BatchNorm buffers averaged over ranks), the tiny run's losses are
    those of the run evaluated only at the end, bit for bit: its frozen trunk runs in eval mode from the first step."""
    launch(run_args(synthetic_shards, tmp_path, "train.zero_stage=1", "data.workers=2", "train.eval_every=2"))
    evaluated = [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines() if '"eval/' in x]
    assert evaluated == [2, 4, 6]
    assert losses(tmp_path) == losses(straight_runs[1])


def launch_output(run: Path) -> str:
    return run.with_name(f"{run.name}.log").read_text()


TIMESTAMP = r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \[rank 0\] "


def log_time(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def assert_train_seconds_add_up_the_windows(records: list[dict], global_batch: int) -> None:
    """`train_seconds` of step k is the sum of the training windows of steps 1..k (each global_batch / samples_per_s),
    across a resume too; an evaluation's record carries the clock of its step's training record."""
    total, clock = 0.0, {}
    for r in records:
        if "loss" in r:
            total += global_batch / r["samples_per_s"]
            assert r["train_seconds"] == pytest.approx(total, rel=1e-9), r
            clock[r["step"]] = r["train_seconds"]
    evaluations = [r for r in records if "loss" not in r]
    assert evaluations and all(r["train_seconds"] == clock[r["step"]] for r in evaluations), evaluations


def check_batch_arithmetic(
    output: str, run: Path, shards: Path, world: int, accumulation: int, precision: str, zero: int
) -> list[int]:
    """The first log line states the batch arithmetic of the tiny config exactly; every metrics.jsonl training record
    agrees with it: epoch, LR schedule, samples/s, per-rank samples/s, the time_* split of each step and the training
    clock, from which checkpoints are left out. Returns the steps of the mid-run checkpoints checked."""
    global_batch, total_steps, lr = 8, 6, 1.0e-3  # configs/tiny.yaml (log_every 1, poly_power 0.5, no warmup)
    micro = global_batch // (world * accumulation)
    assert global_batch == world * micro * accumulation
    train_samples = json.loads((shards / "synthetic" / "manifest.json").read_text())["splits"]["train"]["samples"]
    steps_per_epoch = max(1, train_samples // global_batch)
    line = (
        f"world {world} | global batch {global_batch} = {world} ranks x micro-batch {micro} x accumulation "
        f"{accumulation} | {steps_per_epoch} steps/epoch | precision {precision} | ZeRO-{zero} | cpu"
    )
    first = re.findall(TIMESTAMP + r"(world .*)", output)
    assert [text for _, text in first] == [line], output[-3000:]

    # Step k's log line is written after its window's clock stopped and before the next window's clock starts:
    # the window time the record implies (samples / samples_per_s) fits between two log lines' timestamps.
    stamps = {0: log_time(first[0][0])}
    stamps |= {int(step): log_time(stamp) for stamp, step in re.findall(TIMESTAMP + r"step (\d+) \|", output)}
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if "loss" in r]
    steps = [r["step"] for r in train]
    assert steps == list(range(1, len(train) + 1)) and sorted(stamps) == [0, *steps]
    for r in train:
        k = r["step"]
        assert r["epoch"] == (k - 1) // steps_per_epoch, r
        assert r["lr"] == pytest.approx(lr * (1 - k / total_steps) ** 0.5, rel=1e-9, abs=1e-15), r
        assert r["samples_per_s"] == pytest.approx(world * r["samples_per_s_per_rank"], rel=1e-12), r
        assert r["skipped_samples"] == 0, r
        parts = [r["time_data_s"], r["time_forward_s"], r["time_backward_s"], r["time_optimizer_s"]]
        assert all(t >= 0 for t in parts) and r["time_forward_s"] > 0 and r["time_backward_s"] > 0, r
        window = global_batch / r["samples_per_s"]  # one step = global_batch samples = `accumulation` micro-batches
        assert accumulation * sum(parts) <= window * (1 + 1e-9), r  # time_* are means per micro-batch
        assert window <= stamps[k] - stamps[k - 1] + 0.005, (r, stamps)  # log timestamps: ms, truncated
    assert_train_seconds_add_up_the_windows(records, global_batch)
    # The window after a checkpoint starts once it is written: its saving time is not training time.
    saved = {
        int(step): log_time(stamp) for stamp, step in re.findall(TIMESTAMP + r"checkpoint \S*step_0*(\d+)", output)
    }
    mid_run = sorted(step for step in saved if step < steps[-1])
    for step in mid_run:
        window = global_batch / train[step]["samples_per_s"]  # the record of step + 1
        assert window <= stamps[step + 1] - saved[step] + 0.005, (train[step], saved)
    return mid_run


def test_log_line_and_metrics_pin_batch_arithmetic(straight_runs, synthetic_shards):
    for stage, run in straight_runs.items():
        mid_run = check_batch_arithmetic(launch_output(run), run, synthetic_shards, 2, 1, "fp32", stage)
        assert mid_run == [3]  # configs/tiny.yaml: checkpoint_every 3 of 6 steps


DTYPE_PROBE = """
import atexit, json, os, sys, torch
sys.argv = ["launch.py", *sys.argv[1:]]
sys.path.insert(0, {root!r})
seen = {{}}
def record(module, args, output):  # training forwards only: the frozen trunk and evaluation run in eval mode
    if module.training and isinstance(module, (torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Linear)):
        seen.setdefault(type(module).__name__, set()).add(str(output.dtype))
torch.nn.modules.module.register_module_forward_hook(record)
def dump():
    with open(os.path.join({folder!r}, "dtypes_rank" + os.environ.get("RANK", "0") + ".json"), "w") as f:
        json.dump({{name: sorted(dtypes) for name, dtypes in seen.items()}}, f)
atexit.register(dump)
import launch
sys.exit(launch.main())
"""


def test_bf16_autocasts_every_trained_conv_and_linear(synthetic_shards, tmp_path):
    """precision=bf16 on 2 ranks (with accumulation 2): the log says bf16 and, in the training forward passes of
    both ranks, every trainable-mode Conv2d, Conv3d and Linear output really is torch.bfloat16."""
    script = tmp_path / "dtype_probe.py"
    script.write_text(DTYPE_PROBE.format(root=str(ROOT), folder=str(tmp_path)))
    out = tmp_path / "run"
    args = run_args(synthetic_shards, out, "train.precision=bf16", "train.grad_accum_steps=2", "--max-steps", "2")
    cmd = [str(BIN / "deepspeed"), "--num_gpus", "2", "--master_port", str(free_port()), str(script), *args]
    proc = run_or_dump(cmd, env(), timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    check_batch_arithmetic(proc.stdout + proc.stderr, out, synthetic_shards, 2, 2, "bf16", 1)
    values = losses(out)
    assert sorted(values) == [1, 2] and all(0 < v < 10 for v in values.values())
    for rank in (0, 1):
        dtypes = json.loads((tmp_path / f"dtypes_rank{rank}.json").read_text())
        assert {"Conv2d", "Conv3d", "Linear"} <= set(dtypes), dtypes  # CMMLF's Conv3d, decoder convs, JRM linears
        assert all(seen == ["torch.bfloat16"] for seen in dtypes.values()), dtypes


def test_stop_and_resume_equals_straight_run(straight_runs, synthetic_shards, tmp_path):
    """Stop at 3 (odd, so the 2 loader workers swap roles on resume), resume to 6: identical losses."""
    common = run_args(synthetic_shards, tmp_path, "train.zero_stage=2", "data.workers=2")
    launch([*common, "--max-steps", "3"])
    assert sorted(losses(tmp_path)) == [1, 2, 3]
    second = launch([*common, "--resume", "auto"])
    assert "resumed from" in second.stdout + second.stderr
    assert losses(tmp_path) == losses(straight_runs[2])  # bit-identical in fp32 with fixed threads
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert_train_seconds_add_up_the_windows(records, global_batch=8)  # the clock went on from the checkpoint's


def test_two_rank_checkpoint_resumes_on_one_rank(straight_runs, synthetic_shards, tmp_path):
    """ZeRO-2 optimizer shards of 2 ranks -> universal checkpoint -> 1 rank continues."""
    out = tmp_path / "run"
    shutil.copytree(straight_runs[2], out)
    (out / "checkpoints" / "latest").write_text("step_00000003")  # pretend the run stopped at 3
    proc = launch(run_args(synthetic_shards, out, "train.zero_stage=2", "train.total_steps=6"), ranks=1)
    assert "resumed from" in proc.stderr + proc.stdout
    assert (out / "checkpoints" / "step_00000003_universal").is_dir()
    assert (out / "checkpoints" / "latest").read_text() == "step_00000006"
    resumed = losses(out)
    straight = losses(straight_runs[2])
    assert resumed[4] == pytest.approx(straight[4], rel=0.05)  # same weights, other batch split: close


def test_crash_while_writing_checkpoint_keeps_previous(synthetic_shards, tmp_path):
    crash = """
    if "step_00000006" in str(f) and "optim" in str(f):
        open(f, "wb").write(b"partial")
        raise OSError(28, "No space left on device (injected)")"""
    out = tmp_path / "run"
    proc = launch_with_patched_save(crash, run_args(synthetic_shards, out), tmp_path)
    assert proc.returncode != 0 and "injected" in proc.stderr
    assert (out / "checkpoints" / "latest").read_text() == "step_00000003"
    assert not (out / "checkpoints" / "step_00000006" / "meta.json").exists()
    again = launch(run_args(synthetic_shards, out), ranks=1)
    assert "resumed from" in again.stderr + again.stdout and "step_00000003" in again.stderr + again.stdout
    assert (out / "checkpoints" / "latest").read_text() == "step_00000006"


def test_evaluation_identical_on_one_and_two_ranks(straight_runs, synthetic_shards, tmp_path):
    # Batch size 1: each sentence's logits then come from the same kernels whatever the partition, so any
    # difference could only come from duplicated, dropped or inexactly reduced samples.
    args = [
        "--checkpoint",
        str(straight_runs[3]),
        "--shards",
        str(synthetic_shards),
        "--split",
        "val",
        "--split",
        "train",
        "--batch-size",
        "1",
    ]
    launch([*args, "--output", str(tmp_path / "one.json")], ranks=1, module="jrnet.evaluate")
    launch([*args, "--output", str(tmp_path / "two.json")], ranks=2, module="jrnet.evaluate")
    one = json.loads((tmp_path / "one.json").read_text())["splits"]
    two = json.loads((tmp_path / "two.json").read_text())["splits"]
    assert one == two
    manifest = json.loads((synthetic_shards / "synthetic" / "manifest.json").read_text())
    assert one["train"]["samples"] == manifest["splits"]["train"]["sentences"]  # every sentence, once


@pytest.mark.parametrize(
    "extra,message",
    [
        (["train.learning_rate=1"], "unknown config key 'train.learning_rate'"),
        (["train.deepspeed_config=BAD"], "train_batch_size=999 conflicts"),
        (["train.global_batch_size=7", "train.grad_accum_steps=2"], "not divisible by world size"),
    ],
)
def test_bad_input_fails_before_training(synthetic_shards, tmp_path, extra, message):
    bad = tmp_path / "ds.json"
    bad.write_text(json.dumps({"train_batch_size": 999}))
    extra = [e.replace("BAD", str(bad)) for e in extra]
    proc = launch(run_args(synthetic_shards, tmp_path / "out", *extra), ranks=1, check=False)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_missing_shards_folder(tmp_path):
    proc = launch(run_args(tmp_path / "nope", tmp_path / "out"), ranks=1, check=False)
    assert proc.returncode == 2 and "shards folder not found" in proc.stderr


def test_exported_folder_predicts_what_the_checkpoint_predicts(
    straight_runs, synthetic_shards, synthetic_root, tmp_path
):
    import torch
    from PIL import Image

    from jrnet.inference import load
    from jrnet.model import JRNet
    from jrnet.predict import main as predict
    from jrnet.predict import predict_one

    run, exported = straight_runs[1], tmp_path / "exported"
    assert predict(["--checkpoint", str(run), "--shards", str(synthetic_shards), "--export", str(exported)]) == 0
    assert sorted(p.name for p in exported.iterdir()) == ["config.json", "model.safetensors", "vocab.json"]
    model = JRNet.from_pretrained(exported)  # one call: no shards, no DeepSpeed, no backbone file
    from_checkpoint = load(run, synthetic_shards)
    state, reference = model.state_dict(), from_checkpoint.model.state_dict()
    assert state.keys() == reference.keys() and all(torch.equal(state[k], reference[k]) for k in state)
    image = next((synthetic_root / "images" / "synthetic").glob("*.jpg"))
    cpu = torch.device("cpu")
    from_export = predict_one(load(exported), image.read_bytes(), "the big red circle", cpu)
    assert (from_export == predict_one(from_checkpoint, image.read_bytes(), "the big red circle", cpu)).all()

    out = tmp_path / "pred"
    argv = ["--checkpoint", str(exported), "--image", str(image), "--text", "the big red circle", "--out", str(out)]
    assert predict(argv) == 0
    mask = Image.open(out / f"{image.stem}_mask.png")
    assert mask.size == Image.open(image).size and mask.mode == "L"
    assert ((np.asarray(mask) > 0) == from_export).all()
    assert Image.open(out / f"{image.stem}_overlay.png").width == 2 * mask.width  # image | prediction
    gallery = ["--checkpoint", str(run), "--shards", str(synthetic_shards), "--split", "val", "--limit", "3"]
    assert predict([*gallery, "--out", str(out)]) == 0
    assert Image.open(out / "gallery_val.png").height > 3 * mask.height // 2


def test_unknown_words_are_found_with_the_shards_tokenizer(straight_runs, synthetic_shards):
    from jrnet.inference import load
    from jrnet.predict import unknown_words

    trained = load(straight_runs[1], synthetic_shards)
    assert unknown_words(trained, "The man's red circle, 2nd from the left!") == ["man", "s"]
