"""RIS metrics, named unambiguously: overall IoU = sum(I) / sum(U); mean IoU = mean of per-sample IoU;
prec@X = share of samples with IoU strictly greater than X (the paper's "greater than the threshold X").

Everything is kept as integer partial sums (per-sample IoU in fixed point, 2**-32 resolution), so the sums
of several ranks add up exactly, in any order, to the single-process result (each sample is counted on exactly
one rank).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from jrnet.distributed import comm_device
from jrnet.shard_format import KINDS

THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)
IOU_SCALE = 2**32


def sample_iou(intersection: int, union: int) -> float:
    # Empty prediction of an empty target is a perfect answer (RIS targets are never empty in practice).
    return 1.0 if union == 0 else intersection / union


@dataclass
class IoUAccumulator:
    intersection: int = 0
    union: int = 0
    iou_fixed: int = 0  # sum of round(IoU * IOU_SCALE): integer sums do not depend on the order of addition
    count: int = 0
    above: list[int] = field(default_factory=lambda: [0] * len(THRESHOLDS))

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> list[float]:
        """Add one sample or a batch of boolean masks of equal shape; returns the per-sample IoUs."""
        if pred.shape != target.shape:
            raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
        pred, target = pred.bool(), target.bool()
        if pred.dim() == 2:
            pred, target = pred[None], target[None]
        inter = (pred & target).flatten(1).sum(1).tolist()
        union = (pred | target).flatten(1).sum(1).tolist()
        return [self.add(i, u) for i, u in zip(inter, union, strict=True)]

    def add(self, intersection: int, union: int) -> float:
        """Add one sample by its pixel counts; returns its IoU."""
        iou = sample_iou(intersection, union)
        self.intersection += intersection
        self.union += union
        self.iou_fixed += round(iou * IOU_SCALE)
        self.count += 1
        for k, threshold in enumerate(THRESHOLDS):
            self.above[k] += iou > threshold
        return iou

    def merge(self, other: IoUAccumulator) -> IoUAccumulator:
        return IoUAccumulator(
            self.intersection + other.intersection,
            self.union + other.union,
            self.iou_fixed + other.iou_fixed,
            self.count + other.count,
            [a + b for a, b in zip(self.above, other.above, strict=True)],
        )

    def values(self) -> list[int]:
        return [self.intersection, self.union, self.iou_fixed, self.count, *self.above]

    @classmethod
    def from_values(cls, v: list[int]) -> IoUAccumulator:
        return cls(v[0], v[1], v[2], v[3], list(v[4:]))

    def all_reduce(self) -> IoUAccumulator:
        """Sum the partial sums of every rank, in int64."""
        return self.from_values(_sum_over_ranks(self.values()))

    def summary(self) -> dict[str, float]:
        n = max(self.count, 1)
        out = {f"prec@{t}": self.above[k] / n for k, t in enumerate(THRESHOLDS)}
        out["overall_iou"] = sample_iou(self.intersection, self.union)
        out["mean_iou"] = self.iou_fixed / IOU_SCALE / n
        out["samples"] = self.count
        return out


def _sum_over_ranks(values: list[int]) -> list[int]:
    if not (dist.is_available() and dist.is_initialized()):
        return values
    t = torch.tensor(values, dtype=torch.int64, device=comm_device())
    dist.all_reduce(t)
    return t.tolist()


LENGTH_BUCKETS = ((1, 3), (4, 6), (7, 9), (10, None))  # words per sentence (as sharded, so at most max_words)


def length_bucket(words: int) -> str:
    low, high = next((lo, hi) for lo, hi in LENGTH_BUCKETS if hi is None or words <= hi)
    return f"{low}+ words" if high is None else f"{low}-{high} words"


class Breakdown:
    """The same metrics per sentence-length bucket and per expression kind. Every rank holds every group, in
    a fixed order, so one all-reduce sums them; empty groups (no kinds outside the generated set) drop out."""

    def __init__(self):
        names = [length_bucket(lo) for lo, _ in LENGTH_BUCKETS] + list(KINDS)
        self.groups = {name: IoUAccumulator() for name in names}

    def add(self, words: int, kind: str | None, intersection: int, union: int) -> None:
        self.groups[length_bucket(max(words, 1))].add(intersection, union)
        if kind in self.groups:
            self.groups[kind].add(intersection, union)

    def all_reduce(self) -> Breakdown:
        width = len(IoUAccumulator().values())
        summed = _sum_over_ranks([v for acc in self.groups.values() for v in acc.values()])
        out = Breakdown()
        for k, name in enumerate(out.groups):
            out.groups[name] = IoUAccumulator.from_values(summed[k * width : (k + 1) * width])
        return out

    def summary(self) -> dict[str, dict[str, dict[str, float]]]:
        lengths = {n: a.summary() for n, a in self.groups.items() if n not in KINDS and a.count}
        kinds = {n: a.summary() for n, a in self.groups.items() if n in KINDS and a.count}
        return {"by_length": lengths, "by_kind": kinds}


def format_table(results: dict[str, dict]) -> str:
    """The paper's table layout, in percent: one row per split, then its length and kind breakdown rows."""
    cols = [f"prec@{t}" for t in THRESHOLDS] + ["overall_iou", "mean_iou"]
    head = f"{'split':<16}" + "".join(f"{c:>12}" for c in cols) + f"{'sentences':>11}"
    rows = [head, "-" * len(head)]

    def row(label: str, m: dict) -> str:
        return f"{label:<16}" + "".join(f"{100 * m[c]:>12.2f}" for c in cols) + f"{int(m['samples']):>11}"

    for split, m in results.items():
        rows.append(row(split, m))
        for group in ("by_length", "by_kind"):
            rows += [row(f"  {name}", sub) for name, sub in m.get(group, {}).items()]
    rows.append(
        "prec@X = share of sentences with IoU > X; overall IoU = sum(I)/sum(U); mean IoU = mean per-sentence IoU"
    )
    return "\n".join(rows)
