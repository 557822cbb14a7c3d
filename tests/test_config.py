"""The config object: files, overrides, and clear errors for keys that do not exist."""

import pytest

from jrnet.config import ConfigError, config_from_dict, load_config


def test_named_configs_load():
    for name in ("paper_448", "paper_576", "demo"):
        cfg = load_config(name)
        assert config_from_dict(cfg.to_dict()) == cfg


def test_overrides_are_typed():
    cfg = load_config("paper_448", ["train.lr=1e-3", "model.jrm_layers=3", "data.eval_splits=[val]"])
    assert cfg.train.lr == 1e-3 and cfg.model.jrm_layers == 3 and cfg.data.eval_splits == ("val",)


def test_unknown_key_names_key_and_file(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("model:\n  jrm_layer: 2\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*model\.jrm_layer"):
        load_config(f)
    with pytest.raises(ConfigError, match="train.learning_rate"):
        load_config("paper_448", ["train.learning_rate=1"])


def test_bad_values():
    with pytest.raises(ConfigError, match="model.variant"):
        load_config("paper_448", ["model.variant=nope"])
    with pytest.raises(ConfigError, match="must be an integer"):
        load_config("paper_448", ["model.jrm_layers=two"])
    with pytest.raises(ConfigError, match="config file not found"):
        load_config("no_such_config")
