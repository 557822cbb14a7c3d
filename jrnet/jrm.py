"""Joint Reasoning Module (section 3.2): one multimodal transformer encoder over pixels and words together.

Pixels (HW tokens) and words (T tokens) are concatenated into one sequence, so a single self-attention models
region-region, word-word and region-word interactions at once. DETR-style pre-norm layers: positional
encodings are added to queries and keys (not values) at every layer; padded words are masked out of the keys.
"""

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from jrnet.config import ModelConfig
from jrnet.position import sinusoid_1d, sinusoid_2d


class JointAttention(nn.Module):
    """Multi-head self-attention through `scaled_dot_product_attention` (fused kernels on GPU and CPU)."""

    def __init__(self, channels: int, heads: int, dropout: float, attention: str):
        super().__init__()
        self.heads, self.dropout, self.attention = heads, dropout, attention
        self.qk = nn.Linear(channels, 2 * channels)
        self.v = nn.Linear(channels, channels)
        self.out = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor, pos: torch.Tensor, key_valid: torch.Tensor) -> torch.Tensor:
        q, k = rearrange(self.qk(x + pos), "b n (two h d) -> two b h n d", two=2, h=self.heads)
        v = rearrange(self.v(x), "b n (h d) -> b h n d", h=self.heads)
        mask = key_valid[:, None, None, :]  # (B, 1, 1, N): True = attend
        p = self.dropout if self.training else 0.0
        attend = fused_attention if self.attention == "sdpa" else eager_attention
        y = attend(q, k, v, mask, p)
        return self.out(rearrange(y, "b h n d -> b n (h d)"))


def fused_attention(q, k, v, mask, dropout_p: float) -> torch.Tensor:
    """`scaled_dot_product_attention`; on a CPU in fp32 when autocast made q, k, v bf16 or fp16: there the flash
    kernel's forward + backward take 4-5x as long in bf16 as in fp32 at JRM's sizes (BENCHMARKS.md 8p)."""
    if q.device.type != "cpu" or q.dtype not in (torch.bfloat16, torch.float16):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
    with torch.autocast("cpu", enabled=False):
        y = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask, dropout_p=dropout_p)
    return y.to(q.dtype)


def eager_attention(q, k, v, mask, dropout_p: float) -> torch.Tensor:
    """The explicit-softmax path the authors' nn.MultiheadAttention(need_weights=True) takes; reference only."""
    scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
    weights = scores.masked_fill(~mask, float("-inf")).softmax(dim=-1)
    return F.dropout(weights, dropout_p) @ v


class EncoderLayer(nn.Module):
    """Pre-norm: x + Attn(LN(x)), then x + FFN(LN(x)), ReLU, dropout as in the authors' code."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        c = cfg.channels
        self.norm1, self.norm2 = nn.LayerNorm(c), nn.LayerNorm(c)
        self.attn = JointAttention(c, cfg.jrm_heads, cfg.jrm_dropout, cfg.attention)
        self.ffn = nn.Sequential(
            nn.Linear(c, cfg.jrm_ffn),
            nn.ReLU(inplace=True),
            nn.Dropout(cfg.jrm_dropout),
            nn.Linear(cfg.jrm_ffn, c),
        )
        self.drop1, self.drop2 = nn.Dropout(cfg.jrm_dropout), nn.Dropout(cfg.jrm_dropout)

    def forward(self, x, pos, key_valid):
        x = x + self.drop1(self.attn(self.norm1(x), pos, key_valid))
        return x + self.drop2(self.ffn(self.norm2(x)))


class JointEncoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.jrm_layers))
        self.norm = nn.LayerNorm(cfg.channels)

    def forward(self, x, pos, key_valid):
        for layer in self.layers:
            x = layer(x, pos, key_valid)
        return self.norm(x)


class JRM(nn.Module):
    """Per level: visual (B, C, H, W) + words (B, T, C) -> X_v (B, C, H, W) and X_l (B, T, C).

    `jrm_gate`: X + tanh(alpha) * encoder(X), one alpha per level for pixels and one for words, starting at 0.
    """

    def __init__(self, cfg: ModelConfig, positional_encoding: bool, levels: int = 3):
        super().__init__()
        self.positional_encoding = positional_encoding
        n_encoders = 1 if cfg.jrm_shared else levels
        self.encoders = nn.ModuleList(JointEncoder(cfg) for _ in range(n_encoders))
        self.gated = cfg.jrm_gate
        if self.gated:  # 1-D: no weight decay pulls them back to 0
            self.pixel_gates, self.word_gates = nn.Parameter(torch.zeros(levels)), nn.Parameter(torch.zeros(levels))

    def forward(self, levels: list[torch.Tensor], words: torch.Tensor, word_valid: torch.Tensor):
        b, c, h, w = levels[0].shape
        t = words.shape[1]
        if self.positional_encoding:
            pos = torch.cat([sinusoid_2d(h, w, c, words.device), sinusoid_1d(t, c, words.device)])
            pos = pos.to(words.dtype)[None]
        else:
            pos = words.new_zeros(1, h * w + t, c)
        key_valid = torch.cat([word_valid.new_ones(b, h * w), word_valid], dim=1)
        outputs = []
        for i, visual in enumerate(levels):
            encoder = self.encoders[i % len(self.encoders)]
            m = torch.cat([rearrange(visual, "b c h w -> b (h w) c"), words], dim=1)
            x = encoder(m, pos, key_valid)
            if self.gated:
                gate = torch.cat([self.pixel_gates[i].expand(h * w), self.word_gates[i].expand(t)]).tanh()
                x = m + gate.to(x.dtype)[None, :, None] * x
            outputs.append((rearrange(x[:, : h * w], "b (h w) c -> b c h w", h=h), x[:, h * w :]))
        return outputs
