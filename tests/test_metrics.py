"""Metrics against hand-computed cases; partial sums of two "ranks" equal one process exactly."""

import pytest
import torch

from jrnet.metrics import IoUAccumulator


def mask(h, w, box=None):
    m = torch.zeros(h, w, dtype=torch.bool)
    if box:
        y0, y1, x0, x1 = box
        m[y0:y1, x0:x1] = True
    return m


def test_empty_prediction():
    acc = IoUAccumulator()
    assert acc.update(mask(4, 4), mask(4, 4, (0, 2, 0, 2))) == [0.0]
    s = acc.summary()
    assert s["overall_iou"] == 0.0 and s["mean_iou"] == 0.0 and s["prec@0.5"] == 0.0


def test_empty_ground_truth_and_empty_prediction_is_perfect():
    acc = IoUAccumulator()
    assert acc.update(mask(4, 4), mask(4, 4)) == [1.0]
    assert acc.summary()["overall_iou"] == 1.0


def test_empty_ground_truth_with_prediction_is_zero():
    acc = IoUAccumulator()
    assert acc.update(mask(4, 4, (0, 1, 0, 1)), mask(4, 4)) == [0.0]


def test_perfect():
    acc = IoUAccumulator()
    m = mask(5, 5, (1, 4, 1, 4))
    acc.update(m, m)
    s = acc.summary()
    assert s["overall_iou"] == s["mean_iou"] == 1.0 and s["prec@0.9"] == 1.0


def test_half_overlap():
    acc = IoUAccumulator()
    # prediction 4x2 on the left half, target 4x4: I = 8, U = 16.
    assert acc.update(mask(4, 4, (0, 4, 0, 2)), mask(4, 4, (0, 4, 0, 4))) == [0.5]
    s = acc.summary()
    assert s["overall_iou"] == 0.5 and s["mean_iou"] == 0.5
    assert s["prec@0.5"] == 0.0  # strictly greater than X, as the paper states


def test_overall_vs_mean_differ():
    acc = IoUAccumulator()
    acc.update(mask(10, 10, (0, 10, 0, 10)), mask(10, 10, (0, 10, 0, 10)))  # I = U = 100, IoU 1
    acc.update(mask(10, 10), mask(10, 10, (0, 1, 0, 1)))  # I = 0, U = 1, IoU 0
    s = acc.summary()
    assert s["overall_iou"] == pytest.approx(100 / 101)
    assert s["mean_iou"] == 0.5


def test_two_ranks_sum_to_one_process():
    g = torch.Generator().manual_seed(0)
    preds = torch.rand(7, 6, 9, generator=g) > 0.5
    targets = torch.rand(7, 6, 9, generator=g) > 0.4
    whole = IoUAccumulator()
    whole.update(preds, targets)
    rank0, rank1 = IoUAccumulator(), IoUAccumulator()
    for i in range(7):
        (rank0 if i % 2 == 0 else rank1).update(preds[i], targets[i])
    merged = rank0.merge(rank1)
    assert merged.intersection == whole.intersection and merged.union == whole.union
    assert merged.above == whole.above and merged.count == whole.count == 7
    assert merged.summary() == pytest.approx(whole.summary())


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ in shape"):
        IoUAccumulator().update(mask(3, 3), mask(3, 4))
