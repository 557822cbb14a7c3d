"""Side counts (not in the paper): what "the third circle from the left" needs and attention does not give.

Softmax attention averages, and convolutions see a neighbourhood: neither tells a cell how many things lie to one
side of it. Here a 1x1 convolution of a level matched with its sentence, Y^i * tile(s^i), gives K non-negative maps
(trained to put one unit of mass on each object the noun phrase names) and each cell receives, per map, the mass
strictly left of, right of, above and below it: 4K counts. The sentence also predicts the count its target has on
each side, e(s^i), and each count enters the fusion a second time as the match exp(-(count - e)^2), which peaks
where the count is what the ordinal word asks for.

Learnt from the mask loss alone, the maps stay near their initial value (BENCHMARKS.md 8l: a count is of use only
once the maps mark objects, and the maps learn to mark objects only once a count is of use), so `train.count_weight`
teaches map 0 what an object is from the one object every sample marks, its target: `count_loss`.
"""

import torch
import torch.nn.functional as F
from einops import repeat
from torch import nn

SIDES = ("left", "right", "above", "below")


def side_counts(mass: torch.Tensor) -> torch.Tensor:
    """(B, K, H, W) non-negative mass -> (B, 4K, H, W): per map, the mass strictly left, right, above, below."""
    h, w = mass.shape[-2:]
    columns, rows = mass.sum(2), mass.sum(3)  # (B, K, W), (B, K, H)
    left = columns.cumsum(-1) - columns
    right = columns.sum(-1, keepdim=True) - columns.cumsum(-1)
    above = rows.cumsum(-1) - rows
    below = rows.sum(-1, keepdim=True) - rows.cumsum(-1)
    return torch.cat(
        [
            repeat(left, "b k w -> b k h w", h=h),
            repeat(right, "b k w -> b k h w", h=h),
            repeat(above, "b k h -> b k h w", w=w),
            repeat(below, "b k h -> b k h w", w=w),
        ],
        dim=1,
    )


class SideCounts(nn.Module):
    """Y^i * tile(s^i) (B, C, H, W) and s^i (B, C) -> [counts ; exp(-(counts - e(s^i))^2)] (B, 8K, H, W)."""

    def __init__(self, channels: int, maps: int):
        super().__init__()
        self.objects = nn.Conv2d(channels, maps, 1)
        self.expected = nn.Linear(channels, len(SIDES) * maps)
        # About 0.02 mass per cell at the start: counts of a few units across a 12 x 12 level, not of dozens.
        nn.init.constant_(self.objects.bias, -4.0)

    @property
    def out_channels(self) -> int:
        return 2 * self.expected.out_features

    def forward(self, matched: torch.Tensor, sentence: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The fusion's extra channels, and the mass maps (B, K, H, W) for `count_loss`."""
        mass = F.softplus(self.objects(matched))
        counts = side_counts(mass)
        expected = self.expected(sentence)[..., None, None]
        return torch.cat([counts, torch.exp(-((counts - expected) ** 2))], dim=1), mass


def count_loss(masses: list[torch.Tensor], target: torch.Tensor, outside_weight: float = 0.05) -> torch.Tensor:
    """Per level, map 0's mass inside the target (the mask's area share of each cell) should be one object,
    (inside - 1)^2, and little lies elsewhere: `outside_weight` times the mass outside. The other objects that the
    sentence names are not marked in any sample, hence a weak penalty outside instead of a target of zero; averaged
    over samples and levels, in fp32."""
    target = target.float()[:, None]
    total = 0.0
    for mass in masses:
        share = F.adaptive_avg_pool2d(target, mass.shape[-2:])[:, 0]
        first = mass[:, 0].float()
        inside = (first * share).sum((1, 2))
        outside = (first * (1 - share)).sum((1, 2))
        total = total + ((inside - 1) ** 2 + outside_weight * outside).mean()
    return total / len(masses)
