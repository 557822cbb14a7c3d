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
        ious = [sample_iou(i, u) for i, u in zip(inter, union, strict=True)]
        self.intersection += sum(inter)
        self.union += sum(union)
        self.iou_fixed += sum(round(iou * IOU_SCALE) for iou in ious)
        self.count += len(ious)
        for k, threshold in enumerate(THRESHOLDS):
            self.above[k] += sum(iou > threshold for iou in ious)
        return ious

    def merge(self, other: IoUAccumulator) -> IoUAccumulator:
        return IoUAccumulator(
            self.intersection + other.intersection,
            self.union + other.union,
            self.iou_fixed + other.iou_fixed,
            self.count + other.count,
            [a + b for a, b in zip(self.above, other.above, strict=True)],
        )

    def all_reduce(self) -> IoUAccumulator:
        """Sum the partial sums of every rank, in int64."""
        if not (dist.is_available() and dist.is_initialized()):
            return self
        values = [self.intersection, self.union, self.iou_fixed, self.count, *self.above]
        t = torch.tensor(values, dtype=torch.int64, device=comm_device())
        dist.all_reduce(t)
        v = t.tolist()
        return IoUAccumulator(v[0], v[1], v[2], v[3], v[4:])

    def summary(self) -> dict[str, float]:
        n = max(self.count, 1)
        out = {f"prec@{t}": self.above[k] / n for k, t in enumerate(THRESHOLDS)}
        out["overall_iou"] = sample_iou(self.intersection, self.union)
        out["mean_iou"] = self.iou_fixed / IOU_SCALE / n
        out["samples"] = self.count
        return out


def format_table(results: dict[str, dict[str, float]]) -> str:
    """The paper's table layout, in percent: one row per split."""
    cols = [f"prec@{t}" for t in THRESHOLDS] + ["overall_iou", "mean_iou"]
    head = f"{'split':<8}" + "".join(f"{c:>12}" for c in cols) + f"{'sentences':>11}"
    rows = [head, "-" * len(head)]
    for split, m in results.items():
        rows.append(f"{split:<8}" + "".join(f"{100 * m[c]:>12.2f}" for c in cols) + f"{int(m['samples']):>11}")
    rows.append(
        "prec@X = share of sentences with IoU > X; overall IoU = sum(I)/sum(U); mean IoU = mean per-sentence IoU"
    )
    return "\n".join(rows)
