"""One typed config object for the whole run, read from a YAML file plus `key=value` overrides.

Every section is a dataclass; an unknown key (in the file or on the command line) is an error that names
the key, the file and the valid choices, so a typo never silently trains the wrong model.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from jrnet.mirror import FLIPS
from jrnet.shard_format import KINDS
from jrnet.typed_yaml import ConfigError, build, merge, parse_override

CONFIG_DIR = Path(__file__).resolve().parent / "configs"  # named configs, shipped as package data

# Paper Table 2 / Table 3 rows as presets: (reasoning, fusion, use_glove, positional_encoding).
VARIANTS: dict[str, tuple[str, str, bool, bool]] = {
    "jrnet": ("jrm", "cmmlf", True, True),
    "baseline": ("none", "concat", True, True),
    "only_cmmlf": ("none", "cmmlf", True, True),
    "only_jrm": ("jrm", "concat", True, True),
    "jrm_convlstm": ("jrm", "convlstm", True, True),
    "jrm_conv3d": ("jrm", "conv3d", True, True),
    "no_glove": ("jrm", "cmmlf", False, True),
    "no_pe": ("jrm", "cmmlf", True, False),
}


@dataclass
class ModelConfig:
    variant: str = "jrnet"  # a key of VARIANTS
    backbone: str = "resnet101"  # resnet18 | resnet34 | resnet50 | resnet101 | resnet_cpu (small, stride 8)
    backbone_weights: str | None = None  # local torchvision deeplabv3_resnet101 or ResNet state dict
    freeze_backbone: bool = True  # paper: frozen, eval mode, no grad
    output_stride: int = 16  # 8 | 16 | 32 (dilation in the trunk's last stages)
    image_size: int = 448  # square input side in pixels
    feature_size: int = 14  # H = W of every level after resizing (paper: 14 at 448, 18 at 576)
    channels: int = 512  # C = C_v = C_l
    word_dim: int = 300  # GloVe 840B-300d
    glove: str | None = None  # vectors file; shards carry the vocabulary's vectors (vocab.json)
    jrm_layers: int = 2
    jrm_heads: int = 8
    jrm_ffn: int = 512
    jrm_dropout: float = 0.2
    jrm_shared: bool = False  # one encoder for the three levels instead of one per level
    # Not in the paper: JRM's outputs enter as X + tanh(alpha) * JRM(X), alpha = 0 at the start (Flamingo's gated
    # cross-attention), so that JRNet starts as "only CMMLF" and takes from JRM what helps (BENCHMARKS.md 8i).
    jrm_gate: bool = False
    attention: str = "sdpa"  # sdpa (fused) | eager (explicit softmax, for benchmark/equality test only)
    cmmlf_gate_source: str = "paper"  # paper: Lambda_ij * X_v^i (eq. 4) | authors: Lambda_ij * X_v^j
    cmmlf_sentence: bool = False  # not in the paper: the Conv3D fusion also reads each level's tiled sentence
    cmmlf_product: bool = False  # not in the paper: ... and each level times its sentence vector, elementwise
    fusion_dropout: float = 0.1
    aspp_rates: tuple[int, ...] = (6, 12, 24)
    aspp_dropout: float = 0.5  # after the ASPP projection (DeepLabv3, torchvision's fixed value)
    decoder_channels: int = 512
    decoder_upsamples: int = 2  # bilinear x2 steps in the decoder
    # Not in the paper (DeepLabv3+'s decoder): a trunk layer at a finer stride (resnet_cpu: stem; a ResNet: relu or
    # layer1) whose features (read, not trained through) refine the mask after the last upsampling, so that its
    # edges follow the image's.
    decoder_skip: str | None = None
    mask_prior: float = 0.1  # initial foreground probability of the logits (RefCOCO objects cover ~10-15%)
    # Not in the paper, for a trunk trained from scratch (the CPU demo, BENCHMARKS.md 8h): maps concatenated to each
    # level before its projection, so that every feature, not only JRM's queries and keys, can read them.
    coord_channels: bool = False  # x and y of each cell
    colour_channels: bool = False  # the image's mean colour in each cell (needs the image: no feature cache)

    def variant_flags(self) -> tuple[str, str, bool, bool]:
        return VARIANTS[self.variant]


@dataclass
class DataConfig:
    dataset: str | None = "synthetic"  # subfolder of --shards (one dataset; None when `datasets` names a mix)
    datasets: dict[str, float] | None = None  # a weighted mix instead, e.g. {unc: 1, unc+: 1, gref: 0.5} (mix.py)
    oversample: dict[str, float] | None = None  # share of samples drawn from one expression kind, {attribute: 0.3}
    flips: tuple[str, ...] = ()  # mirrored training samples, side words swapped: horizontal, vertical (mirror.py)
    train_split: str = "train"
    eval_splits: tuple[str, ...] = ("val",)
    max_words: int = 25  # words per sentence: must equal the shards' (pipeline/shard.py --max-words)
    workers: int = 2  # DataLoader workers per rank
    shuffle_buffer: int = 1000
    on_error: str = "warn"  # warn (skip, log and count broken samples) | strict (fail naming the shard)
    gpu_decode: bool = False  # training images decoded on the GPU in the model's input step (needs --train-size)
    feature_cache: bool = False  # read cached frozen-trunk features (pipeline/shard.py --features) instead of images
    eval_limit: int | None = None  # evaluate only the first N refs of each split (None: all)
    cache_dir: str | None = None  # local copies of remote shards, checked against the manifest (README: the cost)
    read_timeout: float = 60.0  # seconds without a byte from a remote file before that read fails
    retries: int = 5  # attempts to open a remote file (0.5 s, 1 s, 2 s, ... apart) before it counts as unavailable

    def mix(self) -> dict[str, float]:
        """The datasets this run reads, with their weights (one dataset: weight 1)."""
        return dict(self.datasets) if self.datasets else {self.dataset: 1.0}

    def validate_mix(self) -> None:
        if self.datasets is None:
            if self.dataset is None:
                raise ConfigError("no data: set data.dataset (one dataset) or data.datasets (a weighted mix)")
            return
        if self.dataset is not None:
            raise ConfigError(
                f"data.dataset={self.dataset!r} and data.datasets={self.datasets} are mutually exclusive: "
                "name one dataset, or a mix"
            )
        if not self.datasets:
            raise ConfigError("data.datasets is empty: name at least one dataset, e.g. {unc: 1, gref: 0.5}")
        for name, weight in self.datasets.items():
            if not weight > 0:
                raise ConfigError(f"data.datasets: weight of {name!r} is {weight}; weights must be > 0")

    def validate_flips(self) -> None:
        for flip in self.flips:
            _choice("data.flips", flip, FLIPS)
        if self.flips and (self.feature_cache or self.gpu_decode):
            source = "data.feature_cache" if self.feature_cache else "data.gpu_decode"
            raise ConfigError(f"data.flips mirrors decoded images, which {source} does not give the loader: set one")

    def validate_oversample(self) -> None:
        for kind, share in (self.oversample or {}).items():
            if kind not in KINDS:
                raise ConfigError(f"data.oversample: unknown expression kind {kind!r}; kinds are {', '.join(KINDS)}")
            if not 0 < share <= 1:
                raise ConfigError(f"data.oversample: share of {kind!r} is {share}; shares must be in (0, 1]")
        if sum((self.oversample or {}).values()) > 1:
            raise ConfigError(f"data.oversample: shares {self.oversample} add up to more than 1")


@dataclass
class TrainConfig:
    global_batch_size: int = 48  # across all ranks and accumulation steps (paper: 50, which 4/8/16 ranks cannot split)
    grad_accum_steps: int = 1
    total_steps: int = 20000  # length of the LR schedule; --max-steps only stops early
    lr: float = 2.5e-4
    weight_decay: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.999)
    poly_power: float = 0.5
    warmup_steps: int = 0
    grad_clip: float = 1.0
    dice_weight: float = 0.0  # soft Dice added to the per-pixel loss (not in the paper)
    # The trunk's LR relative to `lr` (DETR's lr_backbone). A trunk trained from scratch at the full LR forgets
    # colour before the sentence can use it (BENCHMARKS.md, demo recipe).
    trunk_lr_scale: float = 1.0
    precision: str = "auto"  # auto (bf16 where the GPU or CPU computes in it, else fp32) | fp32 | bf16 | fp16
    zero_stage: int | None = None  # None: the DeepSpeed JSON's stage, else 1
    deepspeed_config: str | None = None  # a DeepSpeed JSON for tunables; batch keys must agree with the above
    seed: int = 0
    log_every: int = 10
    eval_every: int = 1000
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    threads: int | None = None  # torch threads per rank on CPU; None: cores / local ranks


@dataclass
class LogConfig:
    wandb: str = "offline"  # offline | online | disabled
    project: str = "jrnet"
    overlays: int = 4  # prediction overlays written per evaluation


@dataclass
class Config:
    name: str = "jrnet"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def validate(self) -> None:
        m, t = self.model, self.train
        _choice("model.variant", m.variant, VARIANTS)
        _choice("model.backbone", m.backbone, ("resnet18", "resnet34", "resnet50", "resnet101", "resnet_cpu"))
        if m.backbone == "resnet_cpu" and m.output_stride != 8:
            raise ConfigError(f"model.backbone=resnet_cpu has output stride 8, not {m.output_stride}: set it to 8")
        _choice("model.attention", m.attention, ("sdpa", "eager"))
        _choice("model.cmmlf_gate_source", m.cmmlf_gate_source, ("paper", "authors"))
        _choice("model.output_stride", m.output_stride, (8, 16, 32))
        _choice("train.precision", t.precision, ("auto", "fp32", "bf16", "fp16"))
        _choice("train.zero_stage", t.zero_stage, (None, 0, 1, 2, 3))
        _choice("data.on_error", self.data.on_error, ("warn", "strict"))
        _choice("log.wandb", self.log.wandb, ("offline", "online", "disabled"))
        if m.channels % m.jrm_heads:
            raise ConfigError(f"model.channels={m.channels} is not divisible by model.jrm_heads={m.jrm_heads}")
        if not 0 < m.mask_prior < 1:
            raise ConfigError(f"model.mask_prior={m.mask_prior} must be in (0, 1)")
        if not 0 <= t.trunk_lr_scale <= 1:
            raise ConfigError(
                f"train.trunk_lr_scale={t.trunk_lr_scale} must be in [0, 1] (freeze it: model.freeze_backbone)"
            )
        if m.colour_channels and self.data.feature_cache:
            raise ConfigError("model.colour_channels reads the image, which data.feature_cache leaves out: set one")
        if m.decoder_skip is not None:
            from jrnet.backbone import SKIP_CHANNELS  # the trunks' layer names live with the trunks

            if m.decoder_skip not in SKIP_CHANNELS[m.backbone]:
                raise ConfigError(
                    f"model.decoder_skip={m.decoder_skip!r} is not a skip layer of {m.backbone}: "
                    f"one of {sorted(SKIP_CHANNELS[m.backbone])}"
                )
            if self.data.feature_cache:
                raise ConfigError(
                    "model.decoder_skip reads the trunk's early layers, which data.feature_cache leaves out"
                )
        if not 1 <= m.jrm_layers <= 12:
            raise ConfigError(f"model.jrm_layers={m.jrm_layers} must be in 1..12")
        for key in (
            "global_batch_size",
            "grad_accum_steps",
            "total_steps",
            "log_every",
            "eval_every",
            "checkpoint_every",
            "keep_checkpoints",
        ):
            _at_least(f"train.{key}", getattr(t, key), 1)
        _at_least("data.workers", self.data.workers, 0)
        _at_least("data.shuffle_buffer", self.data.shuffle_buffer, 1)
        _at_least("data.retries", self.data.retries, 1)
        if not self.data.read_timeout > 0:
            raise ConfigError(f"data.read_timeout={self.data.read_timeout} must be > 0")
        self.data.validate_mix()
        self.data.validate_oversample()
        self.data.validate_flips()
        for key, value in (
            ("data.max_words", self.data.max_words),
            ("data.eval_limit", self.data.eval_limit),
            ("train.threads", t.threads),
        ):
            if value is not None:
                _at_least(key, value, 1)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def dumps(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def to_yaml(self) -> str:
        return yaml.safe_dump(json.loads(json.dumps(self.to_dict())), sort_keys=False)


def _choice(key: str, value: Any, choices) -> None:
    if value not in choices:
        raise ConfigError(f"{key}={value!r} is not one of {sorted(choices, key=str)}")


def _at_least(key: str, value: int, minimum: int) -> None:
    if value < minimum:
        raise ConfigError(f"{key}={value} must be >= {minimum}")


def resolve_config_path(path: str | Path) -> Path:
    """A path as given, or a name from configs/ (`demo` -> configs/demo.yaml)."""
    p = Path(path)
    if p.exists():
        return p
    named = CONFIG_DIR / f"{p.name}.yaml"
    if named.exists():
        return named
    raise ConfigError(
        f"config file not found: {path} (named configs: {sorted(c.stem for c in CONFIG_DIR.glob('*.yaml'))})"
    )


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Config from a YAML file (or defaults) with dotted `section.key=value` overrides applied on top.

    Every error names where the bad value came from: the file, or the command line override.
    """
    raw: dict[str, Any] = {}
    source = "<defaults>"
    if path is not None:
        file = resolve_config_path(path)
        source = str(file)
        raw = _read_yaml(file)
    origins: dict[str, str] = {}
    for item in overrides:
        key, value = parse_override(item, Config)
        *parents, leaf = key.split(".")
        node = raw
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
        origins[key] = f"command line override {item!r}"
    prefer_data_source(raw, {k.removeprefix("data.") for k in origins if k.startswith("data.")}, "the command line")
    config = build(Config, raw, source, prefix="", origins=origins)
    config.validate()
    return config


def _read_yaml(file: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A config file's mapping; `extends: NAME` first reads that config (a name or a path beside this file)."""
    try:
        raw = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{file}: not valid YAML: {' '.join(str(e).split())}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{file}: top level must be a mapping")
    base_name = raw.pop("extends", None)
    if base_name is None:
        prefer_data_source(raw, set(raw.get("data") or {}), str(file))
        return raw
    beside = file.parent / f"{base_name}.yaml"
    base = beside if beside.is_file() else resolve_config_path(base_name)
    if base.resolve() in seen:
        raise ConfigError(f"{file}: extends {base_name}, which extends it again")
    merged = merge(_read_yaml(base, (*seen, file.resolve())), raw)
    prefer_data_source(merged, set(raw.get("data") or {}), str(file))
    return merged


def prefer_data_source(raw: dict[str, Any], given: set[str], where: str) -> None:
    """`data.dataset` (one) and `data.datasets` (a mix) exclude each other: the layer that names one of them
    (a file over the file it extends, the command line over the file) drops the other; naming both is an error."""
    data = raw.get("data")
    if not isinstance(data, dict):
        return
    named = {key for key in ("dataset", "datasets") if key in given and data.get(key) is not None}
    if len(named) == 2:
        raise ConfigError(f"{where}: data.dataset and data.datasets are mutually exclusive: name one dataset, or a mix")
    if named == {"datasets"}:
        data["dataset"] = None
    elif named == {"dataset"}:
        data.pop("datasets", None)


def config_from_dict(raw: dict[str, Any]) -> Config:
    """Rebuild a Config saved with `to_dict` (for example inside a checkpoint)."""
    config = build(Config, raw, "<dict>", prefix="", origins={})
    config.validate()
    return config
