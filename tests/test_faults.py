"""Fault injection, small and real: a rank killed with SIGKILL, SIGTERM during a checkpoint write, broken
shards in the middle of training, and a full disk under shards and checkpoints."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import signal
import subprocess
import tarfile
import time
from contextlib import contextmanager
from pathlib import Path

import psutil
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
    wait_for_step,
)

pytestmark = pytest.mark.slow


def test_sigkill_one_rank_exits_fast_and_resume_matches(synthetic_shards, tmp_path):
    extra = ("train.total_steps=30", "train.checkpoint_every=5", "data.eval_limit=4")
    reference = tmp_path / "reference"
    launch(run_args(synthetic_shards, reference, *extra))

    out = tmp_path / "killed"
    cmd = [
        str(BIN / "deepspeed"),
        "--num_gpus",
        "2",
        "--master_port",
        str(free_port()),
        str(ROOT / "launch.py"),
        *run_args(synthetic_shards, out, *extra),
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    family = psutil.Process(proc.pid)
    try:
        wait_for_step(out, 12, proc)
        rank1 = next(p for p in family.children(recursive=True) if "--local_rank=1" in " ".join(p.cmdline()))
        everyone = family.children(recursive=True)
        killed_at = time.monotonic()
        rank1.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=60) != 0
        gone, alive = psutil.wait_procs(everyone, timeout=max(1, 60 - (time.monotonic() - killed_at)))
        assert not alive, f"still running 60 s after the kill: {[p.pid for p in alive]}"
    finally:
        for p in [family, *family.children(recursive=True)] if proc.poll() is None else []:
            p.kill()
    assert (out / "checkpoints" / "latest").read_text().startswith("step_0000001")  # 10 (or 15)
    launch(run_args(synthetic_shards, out, *extra))  # --resume auto by default
    assert losses(out) == losses(reference)


def test_sigterm_during_checkpoint_write(synthetic_shards, tmp_path):
    """The write in progress completes; the run stops at the next step with a checkpoint and exit code 75."""
    signal_mid_write = """
    if "step_00000003" in str(f) and "optim" in str(f):
        os.kill(os.getpid(), signal.SIGTERM)"""
    out = tmp_path / "run"
    proc = launch_with_patched_save(signal_mid_write, run_args(synthetic_shards, out), tmp_path)
    assert proc.returncode == 75, proc.stderr[-3000:]
    checkpoints = out / "checkpoints"
    assert (checkpoints / "latest").read_text() == "step_00000004"
    for tag in ("step_00000003", "step_00000004"):
        assert json.loads((checkpoints / tag / "meta.json").read_text())["step"] == int(tag[5:])
    again = launch(run_args(synthetic_shards, out), ranks=1)
    assert "resumed from" in again.stderr and (checkpoints / "latest").read_text() == "step_00000006"


def broken_copy(shards: Path, dest: Path) -> tuple[str, str]:
    """Copy the shards; cut one train shard in half and put an invalid JPEG inside another."""
    shutil.copytree(shards, dest)
    train = sorted((dest / "synthetic").glob("train-*.tar"))
    truncated, corrupt = train[1], train[3]
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2 + 123])
    members = []
    with tarfile.open(corrupt) as tar:
        for member in tar.getmembers():
            members.append((member, tar.extractfile(member).read()))
    with tarfile.open(corrupt, "w") as tar:
        for k, (member, payload) in enumerate(members):
            if k == 3 and member.name.endswith(".jpg"):
                payload = b"\xff\xd8 this is not a JPEG"
            member.size = len(payload)
            tar.addfile(member, io.BytesIO(payload))
    assert any(m.name.endswith(".jpg") for m, _ in members[3:4])
    return truncated.name, corrupt.name


def test_broken_shards_skipped_and_counted_or_strict(synthetic_shards, tmp_path):
    truncated, corrupt = broken_copy(synthetic_shards, tmp_path / "shards")
    extra = ("train.total_steps=14", "data.eval_limit=4")
    proc = launch(run_args(tmp_path / "shards", tmp_path / "warn", *extra), ranks=1)
    assert truncated in proc.stderr and corrupt in proc.stderr
    last = [json.loads(x) for x in (tmp_path / "warn" / "metrics.jsonl").read_text().splitlines() if '"loss"' in x][-1]
    assert last["step"] == 14 and last["skipped_samples"] >= 2

    strict = launch(
        run_args(tmp_path / "shards", tmp_path / "strict", *extra, "data.on_error=strict"), ranks=1, check=False
    )
    assert strict.returncode == 1
    error = [line for line in strict.stderr.splitlines() if line.startswith("error: ")]
    assert error and "broken data in" in error[0], strict.stderr[-3000:]
    assert truncated in error[0] or corrupt in error[0]


@contextmanager
def small_disk(path: Path, size: str):
    path.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a size-limited tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_disk_full_while_sharding(synthetic_root, tmp_path, capsys):
    from jrnet.prep.shard import main

    with small_disk(tmp_path / "disk", "200k") as out:
        code = main(
            [
                "synthetic",
                "--data-root",
                str(synthetic_root),
                "--out",
                str(out),
                "--workers",
                "1",
                "--samples-per-shard",
                "8",
            ]
        )
        assert code == 1 and "No space left on device" in capsys.readouterr().err
        folder = out / "synthetic"
        assert not (folder / "manifest.json").exists()
        for state in folder.glob("*.state.json"):  # a shard with a state file is complete and verifiable
            tar = folder / state.name.removesuffix(".state.json")
            assert hashlib.sha256(tar.read_bytes()).hexdigest() == json.loads(state.read_text())["sha256"]
        assert not [p for p in folder.glob("*.tar") if not (folder / f"{p.name}.state.json").exists()]
        assert not list(folder.glob("*.tmp*"))  # no partial file left behind


def test_disk_full_while_checkpointing(synthetic_shards, tmp_path):
    with small_disk(tmp_path / "disk", "5m") as out:
        proc = launch(run_args(synthetic_shards, out / "run"), ranks=1, check=False)
        assert proc.returncode == 1
        error = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
        assert error and "writing checkpoint" in error[0] and "bytes free" in error[0], proc.stderr[-2000:]
        assert "latest` still names step_00000003" in error[0]
        assert (out / "run" / "checkpoints" / "latest").read_text() == "step_00000003"
        assert not (out / "run" / "checkpoints" / "step_00000006" / "meta.json").exists()
