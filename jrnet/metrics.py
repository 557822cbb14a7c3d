"""RIS metrics, named unambiguously: overall IoU = sum(I) / sum(U); mean IoU = mean of per-sample IoU;
prec@X = share of samples with IoU strictly greater than X (the paper's "greater than the threshold X").

Everything is kept as integer / float64 partial sums, so the sums of several ranks add up exactly to the
single-process result (each sample is counted on exactly one rank).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from jrnet.distributed import comm_device

THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)


def sample_iou(intersection: int, union: int) -> float:
    # Empty prediction of an empty target is a perfect answer (RIS targets are never empty in practice).
    return 1.0 if union == 0 else intersection / union


@dataclass
class IoUAccumulator:
    intersection: int = 0
    union: int = 0
    iou_sum: float = 0.0
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
        self.iou_sum += sum(ious)
        self.count += len(ious)
        for k, threshold in enumerate(THRESHOLDS):
            self.above[k] += sum(iou > threshold for iou in ious)
        return ious

    def merge(self, other: IoUAccumulator) -> IoUAccumulator:
        return IoUAccumulator(
            self.intersection + other.intersection,
            self.union + other.union,
            self.iou_sum + other.iou_sum,
            self.count + other.count,
            [a + b for a, b in zip(self.above, other.above, strict=True)],
        )

    def all_reduce(self) -> IoUAccumulator:
        """Sum the partial sums of every rank (float64 holds these integers exactly up to 2**53)."""
        if not (dist.is_available() and dist.is_initialized()):
            return self
        values = [self.intersection, self.union, self.iou_sum, self.count, *self.above]
        t = torch.tensor(values, dtype=torch.float64, device=comm_device())
        dist.all_reduce(t)
        v = t.tolist()
        return IoUAccumulator(int(v[0]), int(v[1]), v[2], int(v[3]), [int(x) for x in v[4:]])

    def summary(self) -> dict[str, float]:
        n = max(self.count, 1)
        out = {f"prec@{t}": self.above[k] / n for k, t in enumerate(THRESHOLDS)}
        out["overall_iou"] = sample_iou(self.intersection, self.union)
        out["mean_iou"] = self.iou_sum / n
        out["samples"] = self.count
        return out


def format_table(results: dict[str, dict[str, float]]) -> str:
    """The paper's table layout, in percent: one row per split."""
    cols = [f"prec@{t}" for t in THRESHOLDS] + ["overall_iou", "mean_iou"]
    head = f"{'split':<8}" + "".join(f"{c:>12}" for c in cols) + f"{'sentences':>11}"
    rows = [head, "-" * len(head)]
    for split, m in results.items():
        rows.append(f"{split:<8}" + "".join(f"{100 * m[c]:>12.2f}" for c in cols) + f"{int(m['samples']):>11}")
    rows.append("prec@X = share of sentences with IoU > X; overall IoU = sum(I)/sum(U); mean IoU = mean per-sentence IoU")
    return "\n".join(rows)
