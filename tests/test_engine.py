"""Pure functions of the engine setup: the LR schedule, weight-decay groups, the DeepSpeed JSON agreement check."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
from torch import nn

from jrnet.config import Config, ConfigError, load_config
from jrnet.engine import deepspeed_config, param_groups, poly_lr_factor, resolve_precision
from jrnet.model import JRNet


@pytest.mark.parametrize(
    "step,expected",
    [
        (0, 0.25),  # warmup: (step + 1) / warmup
        (1, 0.50),
        (2, 0.75),
        (3, 1.00),
        (4, 1.00),  # first step after warmup: progress 0
        (9, math.sqrt(0.5)),  # (9 - 4) / (14 - 4) = 0.5 -> (1 - 0.5) ** 0.5
        (11, math.sqrt(0.3)),  # 7 / 10 -> 0.3 ** 0.5
        (14, 0.0),  # 0 at total
        (20, 0.0),  # and stays 0 past it (never negative, never NaN)
    ],
)
def test_poly_lr_factor_linear_warmup_then_power_decay_to_zero(step, expected):
    assert poly_lr_factor(step, total=14, power=0.5, warmup=4) == pytest.approx(expected, abs=1e-12)


def test_poly_lr_factor_without_warmup_uses_power():
    factors = [poly_lr_factor(s, total=10, power=0.9, warmup=0) for s in range(11)]
    assert factors[0] == 1.0
    assert factors[5] == pytest.approx(0.5**0.9, abs=1e-12)
    assert factors[8] == pytest.approx(0.2**0.9, abs=1e-12)
    assert factors[10] == 0.0
    assert all(a > b for a, b in zip(factors, factors[1:], strict=False))  # strictly decreasing to 0


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)  # weight 4-D (decay), bias (no decay)
        self.bn = nn.BatchNorm2d(4)  # weight and bias 1-D (no decay)
        self.fc = nn.Linear(4, 2)  # weight 2-D (decay), bias (no decay)
        self.norm = nn.LayerNorm(2)  # 1-D (no decay)
        self.scale = nn.Parameter(torch.ones(1))  # 1-D, not named bias (no decay)
        self.frozen = nn.Linear(2, 2)  # requires_grad False: in no group at all
        self.frozen.requires_grad_(False)


def test_param_groups_decay_only_trainable_multi_dim_weights():
    model = Toy()
    decay, no_decay = param_groups(model, weight_decay=5e-4, lr=1e-3)
    assert decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0.0
    assert decay["lr"] == no_decay["lr"] == 1e-3
    names = {id(p): n for n, p in model.named_parameters()}
    assert sorted(names[id(p)] for p in decay["params"]) == ["conv.weight", "fc.weight"]
    assert sorted(names[id(p)] for p in no_decay["params"]) == [
        "bn.bias",
        "bn.weight",
        "conv.bias",
        "fc.bias",
        "norm.bias",
        "norm.weight",
        "scale",
    ]
    assert len(decay["params"]) + len(no_decay["params"]) == 9  # each trainable parameter exactly once


def test_trunk_parameters_train_at_the_scaled_lr_and_everything_else_at_train_lr():
    cfg = load_config("demo", ["train.trunk_lr_scale=0.1"])
    model = JRNet(cfg.model, vocab_size=20)
    groups = param_groups(model, cfg.train.weight_decay, lr=2e-3, trunk_lr_scale=cfg.train.trunk_lr_scale)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    for name, p in model.named_parameters():
        expected = 2e-4 if name.startswith("backbone.trunk.") else 2e-3
        assert lr_of[id(p)] == pytest.approx(expected), name
    assert len(lr_of) == sum(1 for p in model.parameters() if p.requires_grad)


def ds_json(tmp_path, content: dict):
    path = tmp_path / "ds_config.json"
    path.write_text(json.dumps(content))
    return path


def run_config(deepspeed_json=None) -> Config:
    cfg = Config()
    cfg.train.global_batch_size = 16
    cfg.train.grad_accum_steps = 2
    cfg.train.zero_stage = 2
    cfg.train.precision = "fp32"
    cfg.train.grad_clip = 1.0
    cfg.train.deepspeed_config = None if deepspeed_json is None else str(deepspeed_json)
    return cfg


def test_deepspeed_config_without_json_is_the_run_config():
    ds = deepspeed_config(run_config(), world_size=2, micro_batch=4)
    assert ds["train_batch_size"] == 16
    assert ds["train_micro_batch_size_per_gpu"] == 4
    assert ds["gradient_accumulation_steps"] == 2
    assert ds["gradient_clipping"] == 1.0
    assert ds["zero_optimization"] == {"stage": 2}
    assert ds["torch_autocast"]["enabled"] is False and ds["fp16"] == {"enabled": False}


@pytest.mark.parametrize(
    "content,key",
    [
        ({"train_batch_size": 32}, "train_batch_size=32"),
        ({"train_micro_batch_size_per_gpu": 8}, "train_micro_batch_size_per_gpu=8"),
        ({"gradient_accumulation_steps": 1}, "gradient_accumulation_steps=1"),
        ({"zero_optimization": {"stage": 3}}, "zero_optimization.stage=3"),
        ({"fp16": {"enabled": True}}, "fp16.enabled=True"),
    ],
)
def test_deepspeed_json_disagreeing_key_is_error_naming_file_and_key(tmp_path, content, key):
    path = ds_json(tmp_path, content)
    with pytest.raises(ConfigError) as error:
        deepspeed_config(run_config(path), world_size=2, micro_batch=4)
    message = str(error.value)
    assert message.startswith(f"{path}: {key} conflicts with the run config"), message


def test_deepspeed_json_auto_and_equal_values_accepted_extra_tunables_merged(tmp_path):
    path = ds_json(
        tmp_path,
        {
            "train_batch_size": "auto",
            "train_micro_batch_size_per_gpu": "auto",
            "gradient_accumulation_steps": 2,  # agrees
            "zero_optimization": {"stage": 2, "reduce_bucket_size": 50000000, "overlap_comm": True},
            "communication_data_type": "fp32",
        },
    )
    ds = deepspeed_config(run_config(path), world_size=2, micro_batch=4)
    assert ds["train_batch_size"] == 16 and ds["train_micro_batch_size_per_gpu"] == 4  # "auto" -> ours
    assert ds["gradient_accumulation_steps"] == 2
    assert ds["zero_optimization"] == {"stage": 2, "reduce_bucket_size": 50000000, "overlap_comm": True}
    assert ds["communication_data_type"] == "fp32"


def test_deepspeed_json_stage_used_when_run_config_leaves_it_unset(tmp_path):
    cfg = run_config(ds_json(tmp_path, {"zero_optimization": {"stage": 3}}))
    cfg.train.zero_stage = None
    assert deepspeed_config(cfg, world_size=2, micro_batch=4)["zero_optimization"] == {"stage": 3}


def test_deepspeed_json_missing_or_invalid_file_is_config_error(tmp_path):
    with pytest.raises(ConfigError, match="train.deepspeed_config: file not found: .*nope.json"):
        deepspeed_config(run_config(tmp_path / "nope.json"), world_size=2, micro_batch=4)
    broken = tmp_path / "broken.json"
    broken.write_text("{train_batch_size: 16")
    with pytest.raises(ConfigError, match=r"broken\.json: not valid JSON"):
        deepspeed_config(run_config(broken), world_size=2, micro_batch=4)


@pytest.mark.parametrize(
    "content,message",
    [
        ({"bf16": {"enabled": True}}, "bf16.enabled=True conflicts with the run config"),
        ({"optimizer": {"type": "Adam", "params": {"lr": 1}}}, "optimizer is set by the run config"),
        ({"scheduler": {"type": "WarmupLR"}}, "scheduler is set by the run config"),
    ],
)
def test_deepspeed_json_cannot_replace_precision_optimizer_or_schedule(tmp_path, content, message):
    path = ds_json(tmp_path, content)
    with pytest.raises(ConfigError, match=f"^{re.escape(str(path))}: {re.escape(message)}"):
        deepspeed_config(run_config(path), world_size=2, micro_batch=4)


@pytest.mark.parametrize(
    "avx512_bf16,amx,expected",
    [(True, False, "bf16"), (False, True, "bf16"), (False, False, "fp32")],
)
def test_auto_precision_on_cpu_is_bf16_only_with_native_bf16_instructions(monkeypatch, avx512_bf16, amx, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert resolve_precision("auto") == expected
    assert resolve_precision("fp32") == "fp32"  # an explicit choice is never second-guessed
    cfg = run_config()
    cfg.train.precision = "auto"
    assert deepspeed_config(cfg, 2, 4)["torch_autocast"] == {"enabled": expected == "bf16", "dtype": "bfloat16"}


@pytest.mark.parametrize("bf16_gpu,expected", [(True, "bf16"), (False, "fp32")])
def test_auto_precision_on_a_gpu_follows_the_gpu_not_the_cpu(monkeypatch, bf16_gpu, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: bf16_gpu)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert resolve_precision("auto") == expected
