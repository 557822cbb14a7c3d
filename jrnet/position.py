"""Fixed sinusoidal positional encodings (JRM, paper eq. 1-2): 2-D for pixels, 1-D for words."""

import math

import torch
from einops import rearrange


def sinusoid_1d(length: int, channels: int, device=None) -> torch.Tensor:
    """Transformer-style encoding of positions 0..length-1, shape (length, channels)."""
    position = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, channels, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / channels))
    pe = torch.zeros(length, channels, device=device)
    pe[:, 0::2] = torch.sin(position * freq)
    pe[:, 1::2] = torch.cos(position * freq[: channels // 2])
    return pe


def sinusoid_2d(height: int, width: int, channels: int, device=None) -> torch.Tensor:
    """DETR-style: half the channels encode y, half encode x; shape (height * width, channels) row-major."""
    half = channels // 2
    y = sinusoid_1d(height, half, device)[:, None, :].expand(height, width, half)
    x = sinusoid_1d(width, channels - half, device)[None, :, :].expand(height, width, channels - half)
    return rearrange(torch.cat([y, x], dim=-1), "h w c -> (h w) c")
