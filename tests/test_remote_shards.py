"""Shards read from a real HTTP server on loopback and through a `pipe:` command: the same losses as from the
local folder, exact resume, the local cache (no second download, a damaged copy fetched again), and failures:
a server that goes down in the middle of a shard, a stalled transfer, a source gone for good, bad `--shards`."""

from __future__ import annotations

import json
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from distributed_run import launch, losses, run_args
from shard_server import ShardServer
from test_data import config, write_shards

from jrnet.launch import main as launch_main
from jrnet.preemption import STOP_SIGNALS
from jrnet.shards import DataError, ShardSet
from jrnet.stream import LoaderPlan, train_loader

FAST_FAILURE = ("data.retries=3", "data.read_timeout=5")  # backoff 0.5 s + 1 s: a dead server fails in seconds


@pytest.fixture(scope="module")
def local_folder_run(synthetic_shards, tmp_path_factory):
    """The reference: the tiny 2-rank fp32 run (6 steps) from the local folder."""
    out = tmp_path_factory.mktemp("local")
    launch(run_args(synthetic_shards, out))
    return out


@pytest.fixture(scope="module")
def local_run(local_folder_run):
    return losses(local_folder_run)


@pytest.fixture
def server(synthetic_shards):
    with ShardServer(synthetic_shards) as s:
        yield s


@pytest.mark.slow
def test_http_run_matches_local_run_step_for_step(local_run, server, tmp_path):
    launch(run_args(server.url, tmp_path))
    assert sorted(local_run) == [1, 2, 3, 4, 5, 6] and losses(tmp_path) == local_run
    assert server.shard_requests() > 0


@pytest.mark.slow
def test_http_stop_and_resume_is_exact(local_run, server, tmp_path):
    launch([*run_args(server.url, tmp_path), "--max-steps", "3"])
    second = launch([*run_args(server.url, tmp_path), "--resume", "auto"])
    assert "exact data position" in second.stdout + second.stderr
    assert losses(tmp_path) == local_run


@pytest.mark.slow
def test_evaluation_from_http_equals_evaluation_from_the_folder(local_folder_run, synthetic_shards, server, tmp_path):
    args = ["--checkpoint", str(local_folder_run), "--split", "val", "--split", "testA"]
    for name, shards in (("http", server.url), ("local", synthetic_shards)):
        launch(
            [*args, "--shards", str(shards), "--output", str(tmp_path / f"{name}.json")],
            ranks=1,
            module="jrnet.evaluate",
        )
    http = json.loads((tmp_path / "http.json").read_text())["splits"]
    assert http == json.loads((tmp_path / "local.json").read_text())["splits"] and http["val"]["samples"] > 0


@pytest.mark.slow
def test_pipe_command_run_matches_local_run(local_run, synthetic_shards, tmp_path):
    launch(run_args(f"pipe:cat {synthetic_shards}/{{path}}", tmp_path))
    assert losses(tmp_path) == local_run


def last_record(run) -> dict:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if '"loss"' in x][-1]


@pytest.mark.slow
def test_server_down_mid_shard_warn_finishes_with_the_lost_samples_counted(synthetic_shards, tmp_path):
    """The 3rd shard transfer is cut halfway and the server is gone for 1.5 s: that shard's rest is skipped and
    counted, the retries wait for the server, and both ranks run all 6 steps (a short rank would hang the
    other in the all-reduce, and the launch would time out)."""
    with ShardServer(synthetic_shards, cut_at=3, back_after=1.5) as s:
        started = time.monotonic()
        proc = launch(run_args(s.url, tmp_path, *FAST_FAILURE), timeout=120)
    assert time.monotonic() - started < 120
    assert "connection closed after" in proc.stderr and f"{s.url}/synthetic/train-" in proc.stderr
    last = last_record(tmp_path)
    assert last["step"] == 6 and last["skipped_samples"] > 0


@pytest.mark.slow
def test_server_down_strict_fails_naming_the_url_in_bounded_time(synthetic_shards, tmp_path):
    with ShardServer(synthetic_shards, cut_at=3) as s:
        started = time.monotonic()
        proc = launch(run_args(s.url, tmp_path, *FAST_FAILURE, "data.on_error=strict"), check=False, timeout=120)
        seconds = time.monotonic() - started
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert proc.returncode != 0 and errors, proc.stderr[-3000:]
    assert f"broken data in {s.url}/synthetic/train-" in errors[0]
    assert seconds < 60, seconds


def epoch_refs(shards, cfg, epoch=0) -> list[list[int]]:
    shard_set = ShardSet.open(shards, "synthetic", cfg.data)
    plan = LoaderPlan.make(cfg, shard_set.split("train")["samples"], 1)
    return [b["ref_id"].tolist() for b in train_loader(cfg, shard_set, plan, epoch)]


def test_cache_serves_the_second_epoch_and_refetches_a_damaged_copy(tmp_path):
    write_shards(tmp_path / "shards", shards=4, per_shard=4)
    cfg = config("data.workers=0", "data.max_words=8", f"data.cache_dir={tmp_path / 'cache'}")
    local = epoch_refs(tmp_path / "shards", cfg)
    with ShardServer(tmp_path / "shards") as s:
        assert epoch_refs(s.url, cfg) == local
        first = s.shard_requests()
        assert first == 4 and sorted((tmp_path / "cache" / "synthetic").glob("*.tar"))
        epoch_refs(s.url, cfg, epoch=1)  # another epoch (or a requeued job): nothing downloaded again
        assert s.shard_requests() == first
        damaged = tmp_path / "cache" / "synthetic" / "train-000002.tar"
        data = bytearray(damaged.read_bytes())
        data[len(data) // 2] ^= 0xFF
        damaged.write_bytes(bytes(data))
        assert epoch_refs(s.url, cfg) == local  # the damaged copy is not read: fetched again, checked, used
        assert s.requests["/synthetic/train-000002.tar"] == 2 and s.shard_requests() == first + 1


def test_ranks_racing_for_one_shard_download_it_once(tmp_path):
    """Four loader processes of a node (threads here: the lock is per open file, as between processes) want the
    same uncached shard at once: one downloads, the others wait and read the checked file."""
    write_shards(tmp_path / "shards", shards=1, per_shard=4)
    cfg = config("data.max_words=8", f"data.cache_dir={tmp_path / 'cache'}")
    with ShardServer(tmp_path / "shards") as s:
        shard_set = ShardSet.open(s.url, "synthetic", cfg.data)
        entry = shard_set.entries("train")[0]
        with ThreadPoolExecutor(4) as pool:
            contents = list(pool.map(lambda _: read_whole(shard_set, entry), range(4)))
        assert s.shard_requests() == 1
    assert contents == [(tmp_path / "shards" / "synthetic" / entry["name"]).read_bytes()] * 4


def read_whole(shard_set, entry) -> bytes:
    with shard_set.open_shard(entry) as stream:
        return stream.read()


def test_pipe_command_failing_mid_shard_is_an_error_not_a_short_shard(tmp_path):
    """A command that writes part of a shard and exits non-zero: strict names the command and its exit status;
    warn reads what came, counts the rest and still fills the epoch."""
    write_shards(tmp_path / "shards", shards=4, per_shard=4)
    folder = tmp_path / "shards"
    broken = f"pipe:f={{path}}; case $f in *.tar) head -c 15000 {folder}/$f; exit 3;; *) cat {folder}/$f;; esac"
    strict = config("data.workers=0", "data.max_words=8", "data.on_error=strict")
    with pytest.raises(DataError, match=r"broken data in pipe:f=synthetic/train-00000\d\.tar;.*exited 3"):
        epoch_refs(broken, strict)
    warn = config("data.workers=0", "data.max_words=8")
    shard_set = ShardSet.open(broken, "synthetic", warn.data)
    plan = LoaderPlan.make(warn, 16, 1)
    batches = list(train_loader(warn, shard_set, plan, 0))
    assert len(batches) == plan.batches_per_epoch and int(batches[-1]["skipped"]) > 0


def test_stalled_transfer_times_out_instead_of_hanging(tmp_path):
    """Every shard stops halfway and the connection stays silent: each read gives up after data.read_timeout.
    strict: an error naming the shard; warn: three shards in a row without a sample end the stream, naming the
    last (it would otherwise spin forever)."""
    write_shards(tmp_path / "shards", shards=4, per_shard=4)
    warn = config("data.workers=0", "data.max_words=8", "data.read_timeout=1")
    strict = config("data.workers=0", "data.max_words=8", "data.read_timeout=1", "data.on_error=strict")
    with ShardServer(tmp_path / "shards", stall=True) as s:
        started = time.monotonic()
        with pytest.raises(DataError, match=f"broken data in {s.url}/synthetic/train-.*timed out"):
            epoch_refs(s.url, strict)
        with pytest.raises(DataError, match=f"3 shards in a row failed before their first sample, the last {s.url}"):
            epoch_refs(s.url, warn)
        assert time.monotonic() - started < 20


def test_source_gone_for_good_ends_the_stream_naming_it(tmp_path):
    write_shards(tmp_path / "shards", shards=4, per_shard=4)
    cfg = config("data.workers=0", "data.max_words=8", "data.retries=2")
    s = ShardServer(tmp_path / "shards").start()
    shard_set = ShardSet.open(s.url, "synthetic", cfg.data)
    s.stop()
    plan = LoaderPlan.make(cfg, 16, 1)
    started = time.monotonic()
    with pytest.raises(DataError, match=f"3 shards in a row failed before their first sample, the last {s.url}/"):
        list(train_loader(cfg, shard_set, plan, 0))
    assert time.monotonic() - started < 10


@pytest.mark.parametrize(
    "shards,message",
    [
        ("s3://bucket/shards", "pipe:aws s3 cp s3://bucket/shards/{path} -"),
        ("pipe:cat /data/shards", "needs {path}"),
        ("http://127.0.0.1:9/shards", "http://127.0.0.1:9/shards/synthetic/manifest.json not readable"),
    ],
)
def test_bad_shards_location_is_one_error_line(shards, message, tmp_path, capsys):
    handlers = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}  # launch's main installs its own
    try:
        code = launch_main(["--config", "tiny", "--shards", shards, "--output", str(tmp_path), "data.retries=1"])
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and message in err, err
