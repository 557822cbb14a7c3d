"""Visual features (section 3.1): a frozen ResNet trunk, layers 2/3/4 resized to H x W and projected to C.

`resnet_cpu` is the CPU demo's trunk: a narrow BasicBlock ResNet (one block per stage) with output stride 8,
so its three levels are at S/8 (12 x 12 at 96 px) instead of ResNet-18's S/8, S/16, S/32. Optionally each level
gets the cells' x / y and mean colour beside it before its projection (`model.coord_channels`, `colour_channels`).
"""

import warnings
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet
from torchvision.models._utils import IntermediateLayerGetter

from jrnet.config import ModelConfig

# layer2/3/4 channels per trunk.
LEVEL_CHANNELS = {
    "resnet18": (128, 256, 512),
    "resnet34": (128, 256, 512),
    "resnet50": (512, 1024, 2048),
    "resnet101": (512, 1024, 2048),
    "resnet_cpu": (64, 96, 128),
}
LEVELS = ("layer2", "layer3", "layer4")
# Channels of the finer layers `model.decoder_skip` may name (stride 2: stem / relu; stride 4: layer1).
SKIP_CHANNELS = {
    "resnet18": {"relu": 64, "layer1": 64},
    "resnet34": {"relu": 64, "layer1": 64},
    "resnet50": {"relu": 64, "layer1": 256},
    "resnet101": {"relu": 64, "layer1": 256},
    "resnet_cpu": {"stem": 32, "layer1": 32},
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # the trunk's preprocessing (torchvision's ImageNet weights)
IMAGENET_STD = (0.229, 0.224, 0.225)


class WeightsError(RuntimeError):
    """A backbone weights file that does not fit the configured trunk."""


def cpu_trunk() -> nn.Module:
    """Stem (conv s2) -> layer1 (s2) -> layer2 (s2) -> layer3, layer4 (s1): one BasicBlock each, output stride 8."""

    def block(cin: int, cout: int, stride: int) -> resnet.BasicBlock:
        down = None
        if stride != 1 or cin != cout:
            down = nn.Sequential(resnet.conv1x1(cin, cout, stride), nn.BatchNorm2d(cout))
        return resnet.BasicBlock(cin, cout, stride, down)

    c2, c3, c4 = LEVEL_CHANNELS["resnet_cpu"]
    stem = nn.Sequential(resnet.conv3x3(3, 32, stride=2), nn.BatchNorm2d(32), nn.ReLU(inplace=True))
    return nn.Sequential(
        OrderedDict(
            stem=stem,
            layer1=block(32, 32, 2),
            layer2=block(32, c2, 2),
            layer3=block(c2, c3, 1),
            layer4=block(c3, c4, 1),
        )
    )


def build_trunk(cfg: ModelConfig) -> nn.Module:
    """The trunk as a module returning {layer name: features} for the three levels and the decoder's skip."""
    names = LEVELS if cfg.decoder_skip is None else (cfg.decoder_skip, *LEVELS)
    if cfg.backbone == "resnet_cpu":
        return IntermediateLayerGetter(cpu_trunk(), return_layers={name: name for name in names})
    # Output stride by dilating the last stages, as DeepLab does (only Bottleneck ResNets support it).
    dilate = {8: [False, True, True], 16: [False, False, True], 32: [False, False, False]}[cfg.output_stride]
    kwargs = {}
    if cfg.backbone in ("resnet50", "resnet101"):
        kwargs["replace_stride_with_dilation"] = dilate
    elif cfg.output_stride != 32:
        warnings.warn(f"{cfg.backbone} has no dilation: output stride stays 32", stacklevel=2)
    net = getattr(resnet, cfg.backbone)(weights=None, **kwargs)
    return IntermediateLayerGetter(net, return_layers={name: name for name in names})


def load_trunk_weights(trunk: nn.Module, path: str | Path) -> None:
    """Load a torchvision deeplabv3_resnet101 state dict (`backbone.*` keys) or a plain ResNet one, exactly."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"backbone weights file not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("model", state) if isinstance(state, dict) else state
    if any(k.startswith("backbone.") for k in state):
        state = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    own = trunk.state_dict()
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}  # the classifier is not part of the trunk
    for key, value in own.items():
        if key not in state:
            raise WeightsError(f"{path}: missing key {key!r} for the {type(trunk).__name__} trunk")
        if state[key].shape != value.shape:
            raise WeightsError(
                f"{path}: key {key!r} has shape {tuple(state[key].shape)}, expected {tuple(value.shape)}"
            )
    extra = sorted(set(state) - set(own))
    if extra:
        raise WeightsError(f"{path}: unexpected key {extra[0]!r} (is this a {len(own)}-tensor ResNet trunk?)")
    trunk.load_state_dict(state)


class LevelProjection(nn.Sequential):
    """conv3x3 + BN + LeakyReLU to C channels, as the authors' code does per level."""

    def __init__(self, in_channels: int, channels: int):
        super().__init__(
            nn.Conv2d(in_channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.LeakyReLU(inplace=True),
        )


class Backbone(nn.Module):
    """Image (B, 3, S, S) -> three levels (B, C, H, W) and, optionally, the decoder's skip features. The trunk
    stays in eval mode when frozen."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.frozen = cfg.freeze_backbone
        self.feature_size = cfg.feature_size
        self.trunk = build_trunk(cfg)
        if cfg.backbone_weights:
            load_trunk_weights(self.trunk, cfg.backbone_weights)
        elif self.frozen:
            warnings.warn("frozen backbone with random weights: set model.backbone_weights", stacklevel=2)
        if self.frozen:  # eval mode from the start: the trainer does not call train() before its first step
            self.trunk.requires_grad_(False).eval()
        self.level_channels = list(LEVEL_CHANNELS[cfg.backbone])
        self.coords, self.colours = cfg.coord_channels, cfg.colour_channels
        self.skip = cfg.decoder_skip
        extra = 2 * self.coords + 3 * self.colours
        self.project = nn.ModuleList(LevelProjection(c + extra, cfg.channels) for c in self.level_channels)
        # Not saved: constants of the preprocessing, not weights.
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.trunk.eval()  # BN statistics of a frozen trunk never move
        return self

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        """The input step, on the model's device: uint8 pixels -> ImageNet-normalised floats in the trunk's dtype.
        A floating-point image is taken as normalised already."""
        if image.dtype == torch.uint8:
            image = (image.float() / 255.0 - self.mean.float()) / self.std.float()
        return image.to(self.mean.dtype)

    def trunk_features(self, image: torch.Tensor) -> list[torch.Tensor]:
        """Trunk levels resized to H x W: deterministic given the weights, so they can be cached."""
        return self.resized_levels(self.run_trunk(image))

    def run_trunk(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            return self.trunk(self.normalize(image))

    def resized_levels(self, feats: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        size = (self.feature_size, self.feature_size)
        return [F.interpolate(feats[name], size=size, mode="bilinear", align_corners=False) for name in LEVELS]

    def forward(
        self, image: torch.Tensor | None = None, cached: torch.Tensor | None = None
    ) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """The three levels (B, C, H, W), and the trunk's `model.decoder_skip` features (None without it).
        `cached`: trunk levels from the feature cache, (B, C2 + C3 + C4, H, W), instead of the image."""
        dtype = self.project[0][0].weight.dtype
        if cached is None:
            feats = self.run_trunk(image)
            levels, skip = self.resized_levels(feats), feats.get(self.skip)
        elif self.skip is not None:
            raise ValueError("model.decoder_skip needs the image; a feature cache holds only the trunk levels")
        else:
            levels, skip = cached.split(self.level_channels, dim=1), None
        levels = [level.to(dtype) for level in levels]
        if self.colours:
            if image is None:
                raise ValueError("model.colour_channels needs the image; a feature cache holds only the trunk levels")
            colours = F.adaptive_avg_pool2d(self.normalize(image), levels[0].shape[-2:])
            levels = [torch.cat([level, colours], dim=1) for level in levels]
        if self.coords:
            levels = [torch.cat([level, coordinate_maps(level)], dim=1) for level in levels]
        levels = [proj(level) for proj, level in zip(self.project, levels, strict=True)]
        return levels, None if skip is None else skip.to(dtype)


def coordinate_maps(like: torch.Tensor) -> torch.Tensor:
    """(B, 2, H, W): x and y of each cell centre in [-1, 1] (CoordConv; RIS models since Hu et al. 2016 give their
    features such maps). JRM's sinusoids reach only its queries and keys; these reach every feature."""
    b, _, h, w = like.shape
    y = torch.linspace(-1 + 1 / h, 1 - 1 / h, h, device=like.device, dtype=like.dtype)
    x = torch.linspace(-1 + 1 / w, 1 - 1 / w, w, device=like.device, dtype=like.dtype)
    grid = torch.stack(torch.meshgrid(x, y, indexing="xy"))  # (2, H, W): channel 0 = x, channel 1 = y
    return grid.expand(b, 2, h, w)
