"""`data.oversample`: a share of every rank's samples drawn from the refs of one expression kind, with a sentence of
that kind; exact mid-epoch resume; the config and shard checks, each one error naming what is wrong."""

from __future__ import annotations

import pytest
from test_data import write_shards

from jrnet.config import ConfigError, load_config
from jrnet.launch import main as launch_main
from jrnet.mix import Mix
from jrnet.shards import DataError
from jrnet.stream import LoaderPlan, TrainStream, train_loader

ONE_IN_FIVE = [("attribute", "attribute"), *[("spatial", "spatial")] * 4]  # refs 0, 5, 10, ...: attribute


@pytest.fixture(scope="module")
def kind_shards(tmp_path_factory):
    """256 refs in 32 shards, one in five of them attribute-only."""
    root = tmp_path_factory.mktemp("kinds")
    write_shards(root, shards=32, per_shard=8, kinds=ONE_IN_FIVE)
    return root


def config(*overrides):
    base = ["data.workers=2", "train.global_batch_size=8", "model.image_size=16", "data.max_words=8"]
    return load_config("tiny", [*base, *overrides])


def rank_batches(monkeypatch, root, cfg, rank, world=2, skip=0):
    """(ref ids, first token ids) of every batch of this rank's epoch 0."""
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("WORLD_SIZE", str(world))
    data = Mix.open(root, cfg)
    plan = LoaderPlan.make(cfg, data.train_samples("train"), world)
    batches = [(b["ref_id"].tolist(), b["tokens"][:, 0].tolist()) for b in train_loader(cfg, data, plan, 0, skip)]
    assert len(batches) == plan.batches_per_epoch - skip
    return batches


def epoch_refs(monkeypatch, root, cfg) -> list[int]:
    return [ref for rank in (0, 1) for refs, _ in rank_batches(monkeypatch, root, cfg, rank) for ref in refs]


def test_oversampled_kind_takes_its_share_of_the_epoch(kind_shards, monkeypatch):
    """Without oversampling an epoch holds every ref once (a fifth attribute); with {attribute: 0.3} a sample is
    attribute with probability 0.3 + 0.7 x 0.2 = 0.44: over the 256 samples of both ranks within 0.09 (about 3
    standard deviations)."""
    uniform = epoch_refs(monkeypatch, kind_shards, config())
    assert sorted(uniform) == list(range(256))
    oversampled = epoch_refs(monkeypatch, kind_shards, config("data.oversample={attribute: 0.3}"))
    share = sum(ref % 5 == 0 for ref in oversampled) / len(oversampled)
    assert len(oversampled) == 256 and abs(share - 0.44) < 0.09, share


def test_a_ref_drawn_for_its_kind_is_read_with_a_sentence_of_that_kind(tmp_path, monkeypatch):
    """Every ref has a spatial sentence (token 2) and an attribute one (token 3): drawn only for the attribute
    kind, every sample reads token 3; drawn uniformly, both sentences are read."""
    write_shards(tmp_path, shards=8, per_shard=8, kinds=[("spatial", "attribute")])
    only = [
        t
        for _, tokens in rank_batches(monkeypatch, tmp_path, config("data.oversample={attribute: 1}"), 0)
        for t in tokens
    ]
    assert set(only) == {3} and len(only) == 32
    uniform = [t for _, tokens in rank_batches(monkeypatch, tmp_path, config(), 0) for t in tokens]
    assert set(uniform) == {2, 3}


@pytest.mark.parametrize("skip", [1, 5])
def test_oversampled_stream_resumes_mid_epoch_with_the_same_draws(kind_shards, monkeypatch, skip):
    cfg = config("data.oversample={attribute: 0.3}")
    full = rank_batches(monkeypatch, kind_shards, cfg, 1)
    assert rank_batches(monkeypatch, kind_shards, cfg, 1, skip=skip) == full[skip:]


def test_changed_oversampling_restarts_the_epoch_and_says_so(kind_shards):
    old, new = config(), config("data.oversample={attribute: 0.3}")
    plan = LoaderPlan.make(old, 256, 2)
    before = TrainStream(old, Mix.open(kind_shards, old), plan, 2)
    before.batch_in_epoch = 5
    after = TrainStream(new, Mix.open(kind_shards, new), plan, 2)
    message = after.load_state_dict(before.state_dict())
    assert after.batch_in_epoch == 0 and "oversample None -> {'attribute': 0.3}" in message


@pytest.mark.parametrize(
    "value,message",
    [
        ("{colour: 0.3}", "unknown expression kind 'colour'; kinds are attribute, spatial, ordinal, comparative"),
        ("{attribute: 0}", "share of 'attribute' is 0.0; shares must be in (0, 1]"),
        ("{attribute: 0.6, ordinal: 0.5}", "add up to more than 1"),
    ],
)
def test_bad_oversampling_is_a_config_error_naming_the_field(value, message):
    with pytest.raises(ConfigError, match=f"data.oversample: .*{message}".replace("(", r"\(").replace("]", r"\]")):
        load_config("tiny", [f"data.oversample={value}"])


def test_shards_without_kinds_are_refused_before_training_in_one_error_line(tmp_path, capsys):
    """refer-layout shards (unc, gref, ...) record no expression kind: oversampling them is an error at start,
    naming the shard it looked at, not a search through every shard."""
    write_shards(tmp_path / "shards", shards=2, per_shard=4)
    argv = ["--config", "tiny", "--shards", str(tmp_path / "shards"), "--output", str(tmp_path / "run")]
    code = launch_main([*argv, "data.max_words=8", "data.oversample={attribute: 0.3}"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("error: data.oversample needs sentences that record their expression kind") and (
        "synthetic/train-000000.tar has none" in err
    )


def test_a_kind_missing_from_generated_shards_ends_the_stream_naming_it(tmp_path):
    write_shards(tmp_path, shards=4, per_shard=4, kinds=ONE_IN_FIVE)
    cfg = config("data.workers=0", "data.oversample={ordinal: 0.5}")
    data = Mix.open(tmp_path, cfg)
    with pytest.raises(DataError, match="data.oversample: no sentence of kind 'ordinal' in 16 refs, the last in "):
        list(train_loader(cfg, data, LoaderPlan.make(cfg, 16, 1), 0))
