"""Read the refer data layout (refs pickle + COCO-style instances.json + an image folder).

Semantics follow the refer API: a ref points at one annotation; its mask is the annotation's polygons
rasterised with pycocotools and SUMMED (overlapping parts count more than once), then binarised with > 0;
RLE segmentations (compressed or uncompressed counts) are decoded as they are.

`ReferDataset` is the naive per-sample loader most RIS codebases use: every item opens the JPEG from disk
and rasterises the mask again. It is kept here as the reference the sharded pipeline is measured against.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

# refcoco/refcoco+ (unc): train val testA testB; refcocog umd: train val test; refclef: train val test.
SPLIT_ORDER = ("train", "val", "test", "testA", "testB", "testC")


class ReferError(ValueError):
    """Refer data that is missing or cannot be read; the message names the file or the ref."""


@dataclass(frozen=True)
class DatasetSpec:
    name: str  # short name used on the command line and as the shard folder: unc, unc+, gref, referit, ...
    refer_name: str  # folder under the data root: refcoco, refcoco+, refcocog, refclef, synthetic
    split_by: str  # refs(<split_by>).p
    default_split_by: str
    image_dir: str  # image folder relative to the data root

    @property
    def folder(self) -> str:
        """Output folder name: the short name, suffixed when the split is not the dataset's default."""
        return self.name if self.split_by == self.default_split_by else f"{self.name}_{self.split_by}"

    def refs_path(self, data_root: Path) -> Path:
        return Path(data_root) / self.refer_name / f"refs({self.split_by}).p"

    def instances_path(self, data_root: Path) -> Path:
        return Path(data_root) / self.refer_name / "instances.json"

    def image_root(self, data_root: Path) -> Path:
        return Path(data_root) / self.image_dir


def _spec(name: str, refer_name: str, split_by: str, image_dir: str) -> DatasetSpec:
    return DatasetSpec(name, refer_name, split_by, split_by, image_dir)


_COCO_IMAGES = "images/mscoco/images/train2014"
DATASETS: Mapping[str, DatasetSpec] = MappingProxyType(
    {
        "unc": _spec("unc", "refcoco", "unc", _COCO_IMAGES),
        "unc+": _spec("unc+", "refcoco+", "unc", _COCO_IMAGES),
        "gref": _spec("gref", "refcocog", "umd", _COCO_IMAGES),
        "referit": _spec("referit", "refclef", "berkeley", "images/saiapr_tc-12"),
        "synthetic": _spec("synthetic", "synthetic", "unc", "images/synthetic"),
    }
)


def dataset_spec(name: str, split_by: str | None = None) -> DatasetSpec:
    """The layout of a dataset by short name, optionally with another split (gref + google)."""
    if name not in DATASETS:
        raise ReferError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    spec = DATASETS[name]
    return replace(spec, split_by=split_by) if split_by else spec


def split_sort_key(split: str) -> tuple[int, str]:
    """Known splits in their usual order, anything else after them alphabetically."""
    return (SPLIT_ORDER.index(split), "") if split in SPLIT_ORDER else (len(SPLIT_ORDER), split)


def _polygons(segmentation: list) -> list[list[float]]:
    # pycocotools reads a first polygon of exactly 4 numbers as a bbox (for all of them) and fails on fewer;
    # a polygon of under 3 points has no area, so dropping it keeps the refer API's result.
    return [polygon for polygon in segmentation if len(polygon) >= 6]


def _rles(segmentation: Any, height: int, width: int) -> list[dict]:
    """pycocotools RLEs of a segmentation: polygons (one RLE each), or RLE with string or list counts."""
    if isinstance(segmentation, dict):
        segmentation = [segmentation]
    if not isinstance(segmentation, list):
        raise ReferError(f"unsupported segmentation type {type(segmentation).__name__}")
    if segmentation and isinstance(segmentation[0], dict):
        return [
            mask_utils.frPyObjects(rle, height, width) if isinstance(rle["counts"], list) else rle
            for rle in segmentation
        ]
    polygons = _polygons(segmentation)
    return mask_utils.frPyObjects(polygons, height, width) if polygons else []


def ref_mask(ann: Mapping, height: int, width: int) -> np.ndarray:
    """bool [height, width] mask of an annotation with refer API semantics (sum over parts, then > 0)."""
    rles = _rles(ann["segmentation"], height, width)
    if not rles:
        return np.zeros((height, width), dtype=bool)
    decoded = mask_utils.decode(rles)  # [h, w, parts] uint8
    return decoded.sum(axis=2) > 0


def mask_area(ann: Mapping, height: int, width: int) -> int:
    """Pixel count of `ref_mask` computed on the RLEs (no full-size decode): the union's area."""
    rles = _rles(ann["segmentation"], height, width)
    if not rles:
        return 0
    return int(mask_utils.area(mask_utils.merge(rles, intersect=False)))


@dataclass
class Refer:
    """One dataset's refs, images, annotations and categories, indexed by id."""

    spec: DatasetSpec
    data_root: Path
    refs: list[dict]
    images: dict[int, dict]
    anns: dict[int, dict]
    categories: dict[int, dict]

    @classmethod
    def load(cls, data_root: str | Path, spec: DatasetSpec) -> Refer:
        data_root = Path(data_root)
        refs = load_refs(spec.refs_path(data_root))
        instances = load_instances(spec.instances_path(data_root))
        return cls(
            spec=spec,
            data_root=data_root,
            refs=refs,
            images={image["id"]: image for image in instances["images"]},
            anns={ann["id"]: ann for ann in instances["annotations"]},
            categories={cat["id"]: cat for cat in instances.get("categories", [])},
        )

    @property
    def image_root(self) -> Path:
        return self.spec.image_root(self.data_root)

    def splits(self) -> list[str]:
        return sorted({ref["split"] for ref in self.refs}, key=split_sort_key)

    def split_refs(self, split: str) -> list[dict]:
        """Refs of one split sorted by ref_id (the order shards are written in)."""
        return sorted((ref for ref in self.refs if ref["split"] == split), key=lambda ref: ref["ref_id"])

    def image_of(self, ref: Mapping) -> dict:
        try:
            return self.images[ref["image_id"]]
        except KeyError:
            raise ReferError(f"ref {ref['ref_id']}: image_id {ref['image_id']} is not in instances.json") from None

    def ann_of(self, ref: Mapping) -> dict:
        try:
            return self.anns[ref["ann_id"]]
        except KeyError:
            raise ReferError(f"ref {ref['ref_id']}: ann_id {ref['ann_id']} is not in instances.json") from None

    def image_path(self, image: Mapping) -> Path:
        # refs' own `file_name` carries the ann id (COCO_train2014_..._16.jpg): use the image's.
        return self.image_root / image["file_name"]

    def mask(self, ref: Mapping) -> np.ndarray:
        image = self.image_of(ref)
        return ref_mask(self.ann_of(ref), image["height"], image["width"])


class RefsUnpickler(pickle.Unpickler):
    """Builds only what refer data holds (dicts, lists, tuples, strings, numbers): a pickle that names any class
    or function, which is how a pickle runs code, is refused before anything is called."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"refused to load {module}.{name}: a refs file holds only plain data")


def load_refs(path: Path) -> list[dict]:
    """The pickled refs list, read with `RefsUnpickler`: files downloaded from anywhere cannot run code."""
    if not path.is_file():
        raise ReferError(f"refs file not found: {path}")
    try:
        with open(path, "rb") as file:
            # The public refs(*).p files were pickled by Python 2; latin1 reads their byte strings losslessly.
            refs = RefsUnpickler(file, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError) as error:
        raise ReferError(f"{path}: not a refs pickle ({error})") from error
    if not isinstance(refs, list):
        raise ReferError(f"{path}: expected a list of refs, got {type(refs).__name__}")
    seen: set[int] = set()
    for ref in refs:
        if ref["ref_id"] in seen:  # one shard key per ref: a second sample would be dropped without a word
            raise ReferError(f"{path}: duplicate ref_id {ref['ref_id']}")
        seen.add(ref["ref_id"])
    return refs


def load_instances(path: Path) -> dict:
    if not path.is_file():
        raise ReferError(f"instances file not found: {path}")
    try:
        instances = json.loads(path.read_bytes())
    except ValueError as error:
        raise ReferError(f"{path}: not valid JSON ({error})") from error
    missing = [key for key in ("images", "annotations") if key not in instances]
    if missing:
        raise ReferError(f"{path}: no {missing[0]!r} list (not a COCO-style instances file)")
    return instances


class ReferDataset:
    """Naive per-sample loader of one split: each item reads the image file and rasterises the mask."""

    def __init__(self, data_root: str | Path, dataset: str = "unc", split: str = "train", split_by: str | None = None):
        self.refer = Refer.load(data_root, dataset_spec(dataset, split_by))
        self.refs = self.refer.split_refs(split)
        if not self.refs:
            raise ReferError(f"{dataset}: split {split!r} has no refs (splits: {', '.join(self.refer.splits())})")

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        ref = self.refs[index]
        image = self.refer.image_of(ref)
        with Image.open(self.refer.image_path(image)) as file:
            pixels = np.asarray(file.convert("RGB"))
        return {
            "image": pixels,  # uint8 [h, w, 3]
            "mask": self.refer.mask(ref),  # bool [h, w]
            "sentences": [sentence.get("raw") or sentence.get("sent", "") for sentence in ref["sentences"]],
            "ref_id": ref["ref_id"],
        }
