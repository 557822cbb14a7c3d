"""DeepSpeed engine from the run config: batch arithmetic, ZeRO stage, precision, AdamW, polynomial LR decay."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import nn

from jrnet.config import CONFIG_DIR, Config, ConfigError
from jrnet.typed_yaml import merge


def resolve_precision(requested: str) -> str:
    """auto: bf16 where the hardware computes in it (GPUs with bf16; CPUs with AVX512-BF16 or AMX), else fp32."""
    if requested != "auto":
        return requested
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def cpu_has_native_bf16() -> bool:
    """Without these instructions oneDNN emulates bf16, slower than fp32 (torch exposes the checks only privately)."""
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def deepspeed_config(cfg: Config, world_size: int, micro_batch: int, load_universal: bool = False) -> dict:
    """Our config decides batch, ZeRO stage, precision and clipping; a user DeepSpeed JSON adds the rest.

    A JSON key that disagrees with the run config is an error naming the file and key, never a silent override.
    """
    t = cfg.train
    precision = resolve_precision(t.precision)
    theirs, path = _read_json(t.deepspeed_config)
    ours = {
        "train_batch_size": t.global_batch_size,
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": t.grad_accum_steps,
        "gradient_clipping": t.grad_clip,
        "zero_optimization": {"stage": zero_stage(cfg, theirs)},
        # bf16: torch autocast around fp32 weights (BatchNorm statistics and the frozen trunk stay fp32);
        # fp16 (GPUs without bf16): DeepSpeed's fp16 weights with dynamic loss scaling.
        "torch_autocast": {"enabled": precision == "bf16", "dtype": "bfloat16"},
        "fp16": {"enabled": precision == "fp16"},
        "bf16": {"enabled": False},  # bf16 is torch autocast above, never DeepSpeed's bf16 weights
        "steps_per_print": 10**9,  # our own logger reports
        "wall_clock_breakdown": False,
    }
    if torch.cuda.is_available():
        ours["optimizer"] = {"type": "AdamW", "params": _adamw(cfg)}  # DeepSpeed's fused kernel
    if load_universal:
        ours["checkpoint"] = {"load_universal": True}
    if path is None:
        return ours
    for key in ("optimizer", "scheduler"):
        if key in theirs and key not in ours:
            raise ConfigError(
                f"{path}: {key} is set by the run config (train.lr, betas, weight_decay, poly_power, warmup_steps), "
                "not by the DeepSpeed JSON: remove it"
            )
    _check_agreement(ours, theirs, path, prefix="")
    return merge(theirs, ours)


def _read_json(file: str | None) -> tuple[dict, Path | None]:
    if file is None:
        return {}, None
    path = Path(file)
    if not path.is_file() and not path.is_absolute() and (CONFIG_DIR / path).is_file():
        path = CONFIG_DIR / path  # a file shipped with the named configs, e.g. deepspeed/zero1.json
    if not path.is_file():
        raise ConfigError(f"train.deepspeed_config: file not found: {path}")
    try:
        return json.loads(path.read_text()), path
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON: {e}") from e


def zero_stage(cfg: Config, ds_json: dict | None = None) -> int:
    """train.zero_stage if set, else the DeepSpeed JSON's, else 1."""
    if cfg.train.zero_stage is not None:
        return cfg.train.zero_stage
    if ds_json is None:
        ds_json, _ = _read_json(cfg.train.deepspeed_config)
    return int(ds_json.get("zero_optimization", {}).get("stage", 1))


def _check_agreement(ours: dict, theirs: dict, path: Path, prefix: str) -> None:
    for key, value in theirs.items():
        if key not in ours or value == "auto":
            continue
        if isinstance(value, dict) and isinstance(ours[key], dict):
            _check_agreement(ours[key], value, path, prefix=f"{prefix}{key}.")
        elif value != ours[key]:
            raise ConfigError(
                f"{path}: {prefix}{key}={value!r} conflicts with the run config, which needs {ours[key]!r} "
                "(set it with train.global_batch_size, grad_accum_steps, zero_stage, precision or grad_clip)"
            )


def _adamw(cfg: Config) -> dict:
    t = cfg.train
    return {"lr": t.lr, "betas": list(t.betas), "weight_decay": t.weight_decay}


def param_groups(model: nn.Module, weight_decay: float, lr: float, trunk_lr_scale: float = 1.0) -> list[dict]:
    """Weight decay on every trainable weight with more than one dimension (convolutions, linears, the LSTM, a
    trained word embedding), none on norms and biases; the trunk's groups at `lr * trunk_lr_scale` (as DETR's
    lr_backbone). Empty groups are left out."""
    groups = []
    for trunk in (False, True):
        decay, no_decay = [], []
        for name, p in model.named_parameters():
            if p.requires_grad and name.startswith("backbone.trunk.") == trunk:
                (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
        group_lr = lr * trunk_lr_scale if trunk else lr
        groups += [
            {"params": decay, "weight_decay": weight_decay, "lr": group_lr},
            {"params": no_decay, "weight_decay": 0.0, "lr": group_lr},
        ]
    return [group for group in groups if group["params"]]


def poly_lr_factor(step: int, total: int, power: float, warmup: int) -> float:
    """Linear warmup, then (1 - progress) ** power down to 0 at `total` (the paper: power 0.5)."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return math.pow(1.0 - progress, power)


def build_engine(cfg: Config, model: nn.Module, world_size: int, micro_batch: int, load_universal: bool = False):
    import deepspeed

    t = cfg.train
    ds_config = deepspeed_config(cfg, world_size, micro_batch, load_universal)
    groups = param_groups(model, t.weight_decay, t.lr, t.trunk_lr_scale)
    optimizer = None
    if "optimizer" not in ds_config:
        # CPU: torch's AdamW (DeepSpeed's CPU Adam would compile an op at first use).
        optimizer = torch.optim.AdamW(groups, lr=t.lr, betas=tuple(t.betas), weight_decay=t.weight_decay)
        ds_config["zero_allow_untested_optimizer"] = True

    def scheduler(opt):
        return torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: poly_lr_factor(step, t.total_steps, t.poly_power, t.warmup_steps)
        )

    engine, _, _, _ = deepspeed.initialize(
        model=model, model_parameters=groups, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config
    )
    return engine
