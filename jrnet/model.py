"""JRNet, top to bottom: backbone levels + words -> JRM -> CMMLF -> ASPP decoder -> mask logits.

The ablations of the paper (Tables 2 and 3) are the same class with other `model.variant` / `jrm_layers`.
"""

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from jrnet.backbone import Backbone
from jrnet.cmmlf import build_fusion, masked_mean
from jrnet.config import ModelConfig
from jrnet.decoder import MaskDecoder
from jrnet.jrm import JRM
from jrnet.text import TextEncoder


class JRNet(nn.Module):
    def __init__(self, cfg: ModelConfig, vocab_size: int, glove: np.ndarray | None = None):
        super().__init__()
        reasoning, fusion, use_glove, positional_encoding = cfg.variant_flags()
        self.image_size = cfg.image_size
        self.backbone = Backbone(cfg)
        self.text = TextEncoder(cfg, vocab_size, glove, use_glove)
        self.jrm = JRM(cfg, positional_encoding) if reasoning == "jrm" else None
        self.fusion = build_fusion(fusion, cfg)
        self.decoder = MaskDecoder(cfg)

    def forward(self, tokens: torch.Tensor, image: torch.Tensor | None = None, cached: torch.Tensor | None = None):
        """Logits (B, 1, S, S) at the input size S; `cached`: feature-cache levels instead of the image."""
        levels = self.backbone(image, cached)
        words, valid = self.text(tokens)
        words = words.to(levels[0].dtype)
        if self.jrm is not None:
            visual, word_out = zip(*self.jrm(levels, words, valid), strict=True)
        else:
            visual, word_out = levels, [words] * len(levels)
        sentence = [masked_mean(x, valid) for x in word_out]
        logits = self.decoder(self.fusion(list(visual), sentence))
        return F.interpolate(logits, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)

    def trainable_parameters(self):
        return [p for p in self.parameters() if p.requires_grad]


def mask_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-pixel binary cross entropy, on logits in fp32 (safe under bf16/fp16 autocast)."""
    return F.binary_cross_entropy_with_logits(logits.float().squeeze(1), target.float())
