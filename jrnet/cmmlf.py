"""Cross-Modal Multi-Level Fusion (section 3.3, eq. 3-4) and the alternative fusions of the ablations.

Every fusion maps per-level pairs (X_v^i (B, C, H, W), sentence vector X_lavg^i (B, C)) to one map (B, C, H, W).
"""

import torch
from einops import repeat
from torch import nn

from jrnet.config import ModelConfig


def masked_mean(words: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean over real words only; an all-padding sentence gives zeros, not NaN."""
    weights = valid.to(words.dtype)[..., None]
    return (words * weights).sum(1) / weights.sum(1).clamp(min=1)


def tile(vector: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return repeat(vector, "b c -> b c h w", h=like.shape[-2], w=like.shape[-1])


class Conv3dFusion(nn.Module):
    """Stack the levels on a depth axis; Conv3d (k=3, no depth padding) + BN + ReLU + Dropout collapses them."""

    def __init__(self, channels: int, levels: int, dropout: float, in_channels: int | None = None):
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv3d(in_channels or channels, channels, kernel_size=(levels, 3, 3), padding=(0, 1, 1), bias=False),
            nn.BatchNorm3d(channels),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
        )

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        return self.block(torch.stack(maps, dim=2)).squeeze(2)


class CMMLF(nn.Module):
    """Y^i = X_v^i + sum_{j != i} Lambda_ij * X_v^src, Lambda_ij = sigmoid(BN(conv3x3([X_v^i ; tile(X_lavg^j)]))).

    src = i (paper, eq. 4, default) or j (`cmmlf_gate_source: authors`, what the authors' code computes).
    `cmmlf_sentence` (not in the paper): each Y^i enters the Conv3D fusion beside its tiled X_lavg^i, a direct route
    from the sentence to the fused map like the concat fusion's (BENCHMARKS.md 8d: CMMLF alone learns slowly).
    `cmmlf_product` (not in the paper): each Y^i also enters it as Y^i * tile(X_lavg^i), elementwise, so that which
    pixels match the sentence is one product away instead of being left to the convolution of a concatenation.
    """

    def __init__(self, cfg: ModelConfig, levels: int = 3):
        super().__init__()
        c = cfg.channels
        self.pairs = [(i, j) for i in range(levels) for j in range(levels) if i != j]
        self.gates = nn.ModuleList(
            nn.Sequential(nn.Conv2d(2 * c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.Sigmoid())
            for _ in self.pairs
        )
        self.source_j = cfg.cmmlf_gate_source == "authors"
        self.with_sentence, self.with_product = cfg.cmmlf_sentence, cfg.cmmlf_product
        inputs = c * (1 + self.with_sentence + self.with_product)
        self.fuse = Conv3dFusion(c, levels, cfg.fusion_dropout, in_channels=inputs)

    def forward(self, visual: list[torch.Tensor], sentence: list[torch.Tensor]) -> torch.Tensor:
        refined = list(visual)
        for (i, j), gate in zip(self.pairs, self.gates, strict=True):
            weight = gate(torch.cat([visual[i], tile(sentence[j], visual[i])], dim=1))
            refined[i] = refined[i] + weight * visual[j if self.source_j else i]
        return self.fuse([self.fusion_input(y, s) for y, s in zip(refined, sentence, strict=True)])

    def fusion_input(self, y: torch.Tensor, sentence: torch.Tensor) -> torch.Tensor:
        tiled = tile(sentence, y)
        parts = [y] + [tiled] * self.with_sentence + [y * tiled] * self.with_product
        return torch.cat(parts, dim=1) if len(parts) > 1 else y


class Conv3dOnly(nn.Module):
    """Ablation "JRM + Conv3D": the levels go straight to the 3-D convolution."""

    def __init__(self, cfg: ModelConfig, levels: int = 3):
        super().__init__()
        self.fuse = Conv3dFusion(cfg.channels, levels, cfg.fusion_dropout)

    def forward(self, visual, sentence):
        return self.fuse(visual)


class ConvLSTMFusion(nn.Module):
    """Ablation "JRM + ConvLSTM": a ConvLSTM reads the levels 2 -> 3 -> 4; its last hidden state is the output."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        c = cfg.channels
        self.gates = nn.Conv2d(2 * c, 4 * c, 3, padding=1)

    def forward(self, visual, sentence):
        h = torch.zeros_like(visual[0])
        cell = torch.zeros_like(visual[0])
        for x in visual:
            i, f, o, g = self.gates(torch.cat([x, h], dim=1)).chunk(4, dim=1)
            cell = f.sigmoid() * cell + i.sigmoid() * g.tanh()
            h = o.sigmoid() * cell.tanh()
        return h


class ConcatFusion(nn.Module):
    """Baseline / "Only JRM": each level concatenated with its tiled sentence vector, 1x1 conv down to C."""

    def __init__(self, cfg: ModelConfig, levels: int = 3):
        super().__init__()
        c = cfg.channels
        self.project = nn.Sequential(
            nn.Conv2d(2 * c * levels, c, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)
        )

    def forward(self, visual, sentence):
        pairs = [torch.cat([v, tile(s, v)], dim=1) for v, s in zip(visual, sentence, strict=True)]
        return self.project(torch.cat(pairs, dim=1))


def build_fusion(name: str, cfg: ModelConfig) -> nn.Module:
    return {"cmmlf": CMMLF, "conv3d": Conv3dOnly, "convlstm": ConvLSTMFusion, "concat": ConcatFusion}[name](cfg)
