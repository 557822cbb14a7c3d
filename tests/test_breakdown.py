"""What the evaluation shows beyond the paper's table: breakdowns by sentence length and expression kind, a
gallery with failures, and masks that are visible on an object of any colour."""

from __future__ import annotations

import json

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from jrnet.evaluate import GalleryPicker
from jrnet.metrics import Breakdown, length_bucket
from jrnet.shards import ShardSet
from jrnet.visualize import contrasting, highlight, outline


@pytest.mark.parametrize("words,bucket", [(1, "1-3 words"), (3, "1-3 words"), (4, "4-6 words"), (9, "7-9 words"),
                                          (10, "10+ words"), (25, "10+ words")])  # fmt: skip
def test_length_buckets(words, bucket):
    assert length_bucket(words) == bucket


def test_breakdown_by_length_and_kind_against_hand_computed_sums():
    b = Breakdown()
    b.add(2, "attribute", 30, 40)  # IoU 0.75
    b.add(3, "spatial", 10, 40)  # IoU 0.25
    b.add(5, "spatial", 45, 50)  # IoU 0.90
    b.add(12, None, 0, 20)  # IoU 0: a sentence of a dataset without kinds
    out = b.all_reduce().summary()
    assert list(out["by_length"]) == ["1-3 words", "4-6 words", "10+ words"]  # empty buckets drop out
    short = out["by_length"]["1-3 words"]
    assert short["overall_iou"] == 40 / 80 and short["mean_iou"] == pytest.approx(0.5, abs=1e-9)
    assert short["prec@0.5"] == 0.5 and short["samples"] == 2
    assert out["by_length"]["10+ words"]["overall_iou"] == 0.0
    spatial = out["by_kind"]["spatial"]
    assert spatial["overall_iou"] == 55 / 90 and spatial["prec@0.8"] == 0.5 and spatial["samples"] == 2
    assert list(out["by_kind"]) == ["attribute", "spatial"]


def test_gallery_shows_failures_and_successes():
    picker = GalleryPicker(4)
    for iou in (0.9, 0.95, 0.8, 0.1, 0.99, 0.3, 0.2, 0.4):
        if picker.wants(iou):
            picker.add(iou, f"panel {iou}", "")
    assert [p for p, _ in picker.panels()] == ["panel 0.1", "panel 0.3", "panel 0.9", "panel 0.95"]
    only_good = GalleryPicker(3)
    for iou in (0.9, 0.8, 0.7, 0.6):
        if only_good.wants(iou):
            only_good.add(iou, iou, "")
    assert [p for p, _ in only_good.panels()] == [0.9, 0.8, 0.7]  # no failures: successes fill the gallery


@pytest.mark.parametrize("object_colour", [(215, 35, 35), (30, 160, 60), (35, 75, 215), (235, 205, 25), (0, 0, 0)])
def test_a_mask_shows_on_an_object_of_any_colour(object_colour):
    pixels = np.full((20, 20, 3), 180, np.uint8)
    mask = np.zeros((20, 20), bool)
    mask[5:15, 5:15] = True
    pixels[mask] = object_colour
    drawn = np.asarray(highlight(Image.fromarray(pixels), mask), dtype=np.float32)
    edge = outline(mask)
    assert edge.sum() == 36 and not edge[6:14, 6:14].any()  # the 10 x 10 square's border
    distance = np.abs(drawn[edge] - np.array(object_colour, np.float32)).sum(axis=1)
    assert distance.min() >= 255, "the contour must contrast with the object it outlines"
    assert (drawn[~mask] == 180).all()  # nothing drawn outside the mask
    assert tuple(contrasting(np.array([object_colour], np.float32))) != object_colour


def test_generated_shards_record_each_sentences_kind(synthetic_shards):
    shards = ShardSet.open(synthetic_shards, "synthetic")
    kinds = set()
    for sample in wds.DataPipeline(wds.SimpleShardList(shards.urls("train")), wds.tarfile_to_samples()):
        kinds |= {sentence["kind"] for sentence in json.loads(sample["json"])["sentences"]}
    assert kinds == {"attribute", "spatial", "ordinal", "comparative"}
