"""Mask generation (section 3.4): ASPP, then conv blocks with bilinear x2 upsampling, then one logit channel."""

import math

import torch.nn.functional as F
from torch import nn
from torchvision.models.segmentation.deeplabv3 import ASPP

from jrnet.config import ModelConfig


def conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class Upsample2x(nn.Module):
    def forward(self, x):
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


class MaskDecoder(nn.Module):
    """(B, C, H, W) -> logits (B, 1, H * 2**upsamples, W * 2**upsamples)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        c, d = cfg.channels, cfg.decoder_channels
        self.aspp = ASPP(c, list(cfg.aspp_rates), out_channels=c)  # 1x1, rates, image pooling, 5C -> C, dropout
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
        return self.head(self.aspp(x))
