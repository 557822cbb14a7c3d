"""Mask generation (section 3.4): ASPP, then conv blocks with bilinear x2 upsampling, then one logit channel."""

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.segmentation.deeplabv3 import ASPP

from jrnet.config import ModelConfig


def conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class Upsample2x(nn.Module):
    def forward(self, x):
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


class SideContext(nn.Module):
    """(B, C, H, W) -> (B, C + 4K, H, W): beside each cell, K features (1x1 conv + ReLU) summed over every cell
    strictly left of it, right of it, above it and below it, divided by H * W (not in the paper).

    ASPP's image pooling gives every cell the same global mean; these sums say what lies on each side of it, which
    "the leftmost one" (nothing of its kind to its left) and "the second from the top" (one above) are about.
    """

    def __init__(self, channels: int, k: int):
        super().__init__()
        self.reduce = nn.Sequential(nn.Conv2d(channels, k, 1), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.reduce(x)
        h, w = f.shape[-2:]
        columns, rows = f.sum(2, keepdim=True), f.sum(3, keepdim=True)  # (B, K, 1, W), (B, K, H, 1)
        left, above = columns.cumsum(3) - columns, rows.cumsum(2) - rows  # exclusive: the cell itself is not in
        right = columns.sum(3, keepdim=True) - columns - left
        below = rows.sum(2, keepdim=True) - rows - above
        sides = torch.cat([s.expand(-1, -1, h, w) for s in (left, right, above, below)], dim=1)
        return torch.cat([x, sides / (h * w)], dim=1)


class MaskDecoder(nn.Module):
    """(B, C, H, W) -> logits (B, 1, H * 2**upsamples, W * 2**upsamples)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        c, d = cfg.channels, cfg.decoder_channels
        self.sides = SideContext(c, cfg.side_context) if cfg.side_context else nn.Identity()
        # 1x1, rates, image pooling, 5C -> C, dropout
        self.aspp = ASPP(c + 4 * cfg.side_context, list(cfg.aspp_rates), out_channels=c)
        self.aspp.project[-1].p = cfg.aspp_dropout  # torchvision hard-codes Dropout(0.5) there
        blocks: list[nn.Module] = [conv_bn_relu(c, d)]
        for _ in range(cfg.decoder_upsamples):
            blocks += [Upsample2x(), conv_bn_relu(d, d)]
        logits = nn.Conv2d(d // 2, 1, 1)
        # Start at the prior share of foreground pixels (RetinaNet's trick): the first steps then learn where the
        # object is instead of learning that most pixels are background.
        nn.init.constant_(logits.bias, math.log(cfg.mask_prior / (1 - cfg.mask_prior)))
        blocks += [conv_bn_relu(d, d // 2), logits]
        self.head = nn.Sequential(*blocks)

    def forward(self, x):
        return self.head(self.aspp(self.sides(x)))
