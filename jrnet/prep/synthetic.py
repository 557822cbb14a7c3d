"""A generated referring-segmentation dataset in the refer layout, for tests and the CPU training demo.

Scenes of coloured shapes on a lightly textured background, with referring expressions that need the
sentence to pick the object: unique attributes ("the blue triangle"), extremes ("the red square on the
left"), ordinals ("the second circle from the left"), comparatives ("the bigger of the two red ones") and
relations to a landmark ("the circle left of the green square"). Several refs per image point at
different objects. Objects never overlap, so every mask is exactly the visible object.

Layout written (as the refer API expects):
    <data-root>/synthetic/refs(unc).p, instances.json, generator.json
    <data-root>/images/synthetic/synthetic_<image_id:06d>.jpg

A few annotations are stored as two overlapping polygons, as compressed RLE or as uncompressed (iscrowd)
RLE, and a few images are grayscale or CMYK JPEGs, so every decoding path of a real dataset is exercised.
The same generator with another `Recipe` writes held-out sets (bench/relational_set.py: other sizes, colours
and sentences, in the refcoco layout); the defaults are the demo's, byte for byte.
Usage: python -m jrnet.prep.synthetic [--data-root data/] [--num-images 2000] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from jrnet.fileio import write_atomic
from jrnet.prep.expressions import DEMO_PHRASING, Expression, Phrasing, refer_sentence, referring_sentences
from jrnet.prep.refer import dataset_spec, load_refs, ref_mask
from jrnet.prep.scenes import (
    ATTRIBUTES,
    DEMO_SCENES,
    GRAY_SAFE_COLOURS,
    SHAPES,
    SceneStyle,
    Thing,
    overlapping_parts_segmentation,
    polygon_segmentation,
    render,
    rle_segmentation,
    sample_scene,
)

GENERATOR_VERSION = 2  # 2: the evaluation splits stop growing at EVAL_SPLITS_OF images (sets <= 2000 unchanged)
SPLITS = (("val", 0.10), ("testA", 0.05), ("testB", 0.05))  # the rest is train
# A larger set adds training images only: its val/testA/testB are the size of a 2000-image set's, so evaluation
# costs the same whatever the set's size (BENCHMARKS.md 8f trains on 10,000 images with a val of the same size).
EVAL_SPLITS_OF = 2000
REFS_PER_IMAGE = 3
JPEG_QUALITY = 90


@dataclass(frozen=True)
class SyntheticOptions:
    num_images: int = 2000
    seed: int = 0


@dataclass(frozen=True)
class Recipe:
    """What a generated set looks like and where it is written. DEMO is the CPU demo's set; bench/relational_set.py
    makes a held-out one with other image sizes, colours, object sizes and sentences."""

    name: str
    dataset: str  # the layout written: dataset_spec(dataset)'s refs, instances and image folder
    file_name: str  # image file name, formatted with the image id
    image_sizes: tuple[int, int]  # smallest and largest width and height, in px
    scenes: SceneStyle
    gray_safe: tuple[str, ...]  # colours a grayscale image may hold (they stay apart from its background)
    phrasing: Phrasing


DEMO = Recipe(
    name="demo",
    dataset="synthetic",
    file_name="synthetic_{:06d}.jpg",
    image_sizes=(96, 160),
    scenes=DEMO_SCENES,
    gray_safe=GRAY_SAFE_COLOURS,
    phrasing=DEMO_PHRASING,
)


@dataclass
class Counters:
    """Running ids, shared by all images so ids are unique in the dataset."""

    ann_id: int = 1
    ref_id: int = 0
    sent_id: int = 0


def split_of_images(rng: np.random.Generator, num_images: int) -> list[str]:
    """80/10/5/5 by image up to EVAL_SPLITS_OF images, every split non-empty; beyond it the rest is train."""
    counts = {split: max(1, round(share * min(num_images, EVAL_SPLITS_OF))) for split, share in SPLITS}
    labels = ["train"] * (num_images - sum(counts.values()))
    for split, count in counts.items():
        labels += [split] * count
    return [labels[i] for i in rng.permutation(num_images)]


def colour_mode(image_id: int) -> str:
    """A few grayscale and CMYK JPEGs (ids 2 and 3 first, so even a tiny set has both)."""
    return {2: "L", 3: "CMYK"}.get(image_id % 40, "RGB")


def annotation_segmentation(thing: Thing, ref_number: int | None, height: int, width: int) -> tuple[object, int]:
    """(segmentation, iscrowd): referred objects cycle through the storage formats a real dataset has."""
    style = None if ref_number is None else ref_number % 12
    if style == 3:
        return rle_segmentation(thing, height, width, compressed=True), 0
    if style == 7:
        return rle_segmentation(thing, height, width, compressed=False), 1
    if style == 10:
        return overlapping_parts_segmentation(thing), 0
    return polygon_segmentation(thing), 0


def make_image(
    rng: np.random.Generator, image_id: int, split: str, counters: Counters, recipe: Recipe = DEMO
) -> tuple[dict, list[dict], list[dict], np.ndarray]:
    """One image: (COCO image record, annotations, refs, pixels)."""
    low, high = recipe.image_sizes
    width, height = int(rng.integers(low, high + 1)), int(rng.integers(low, high + 1))
    file_name = recipe.file_name.format(image_id)
    image = {"id": image_id, "file_name": file_name, "height": height, "width": width}
    gray = colour_mode(image_id) == "L"
    palette = recipe.gray_safe if gray else list(recipe.scenes.colours)
    things = sample_scene(rng, width, height, palette, recipe.scenes)
    visible = ("size", "shape") if gray else ATTRIBUTES  # no colour words about a grayscale image
    targets: dict[int, Expression] = {}
    for index in rng.permutation(len(things)):
        if len(targets) == REFS_PER_IMAGE:
            break
        expression = referring_sentences(rng, things, things[index], visible, recipe.phrasing)
        if expression is not None:
            targets[int(index)] = expression
    anns, refs, masks = [], [], []
    for index, thing in enumerate(things):
        ref_number = counters.ref_id if index in targets else None
        segmentation, iscrowd = annotation_segmentation(thing, ref_number, height, width)
        ann = {"id": counters.ann_id, "image_id": image_id, "category_id": SHAPES.index(thing.shape) + 1}
        ann |= {"segmentation": segmentation, "iscrowd": iscrowd}
        mask = ref_mask(ann, height, width)
        ys, xs = np.nonzero(mask)
        ann["area"] = int(mask.sum())
        ann["bbox"] = [int(xs.min()), int(ys.min()), int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1]
        anns.append(ann)
        masks.append(mask)
        if index in targets:
            refs.append(make_ref(rng, ann, split, file_name, targets[index], counters))
        counters.ann_id += 1
    return image, anns, refs, render(rng, masks, things, width, height, recipe.scenes)


def make_ref(
    rng: np.random.Generator, ann: dict, split: str, file_name: str, expression: Expression, counters: Counters
) -> dict:
    sentences = []
    for text in expression.paraphrases:
        sentences.append(refer_sentence(rng, text, counters.sent_id, expression.kind))
        counters.sent_id += 1
    ref = {
        "ref_id": counters.ref_id,
        "ann_id": ann["id"],
        "image_id": ann["image_id"],
        "category_id": ann["category_id"],
        "split": split,
        "sent_ids": [s["sent_id"] for s in sentences],
        "sentences": sentences,
        "file_name": file_name.replace(".jpg", f"_{ann['id']}.jpg"),  # as refcoco: image name + ann id
    }
    counters.ref_id += 1
    return ref


def save_jpeg(pixels: np.ndarray, path: Path, mode: str) -> None:
    # 4:4:4 chroma: subsampling would smear the colour of shapes only a few pixels wide
    Image.fromarray(pixels, "RGB").convert(mode).save(path, "JPEG", quality=JPEG_QUALITY, subsampling=0)


def generate_images(
    options: SyntheticOptions, image_dir: Path, recipe: Recipe = DEMO
) -> Iterator[tuple[dict, list[dict], list[dict]]]:
    rng = np.random.default_rng(options.seed)
    splits = split_of_images(rng, options.num_images)
    counters = Counters()
    for image_id, split in enumerate(splits, start=1):
        image, anns, refs, pixels = make_image(rng, image_id, split, counters, recipe)
        save_jpeg(pixels, image_dir / image["file_name"], colour_mode(image_id))
        yield image, anns, refs


def generate(data_root: str | Path, options: SyntheticOptions | None = None, recipe: Recipe = DEMO) -> Path:
    """Write the dataset under `data_root`; the refs file is written last, so its presence means complete."""
    options = options or SyntheticOptions()
    if options.num_images < 4:
        raise ValueError(f"--num-images must be at least 4 (one image per split), got {options.num_images}")
    spec = dataset_spec(recipe.dataset)
    data_root = Path(data_root)
    image_dir = spec.image_root(data_root)
    image_dir.mkdir(parents=True, exist_ok=True)
    spec.refs_path(data_root).parent.mkdir(parents=True, exist_ok=True)
    images, anns, refs = [], [], []
    for image, image_anns, image_refs in generate_images(options, image_dir, recipe):
        images.append(image)
        anns += image_anns
        refs += image_refs
    categories = [{"id": i + 1, "name": shape, "supercategory": "shape"} for i, shape in enumerate(SHAPES)]
    instances = {"images": images, "annotations": anns, "categories": categories}
    write_atomic(spec.instances_path(data_root), json.dumps(instances, separators=(",", ":")).encode())
    generator = {"generator_version": GENERATOR_VERSION, **asdict(options)}
    if recipe is not DEMO:  # the demo's record keeps its original keys (existing_options reads it)
        generator["recipe"] = recipe.name
    write_atomic(spec.refs_path(data_root).parent / "generator.json", json.dumps(generator, indent=2).encode())
    write_atomic(spec.refs_path(data_root), pickle.dumps(refs, protocol=4))
    return spec.refs_path(data_root).parent


def generator_path(data_root: str | Path) -> Path:
    return dataset_spec("synthetic").refs_path(Path(data_root)).parent / "generator.json"


def existing_options(data_root: str | Path) -> SyntheticOptions | None:
    """Options of a complete generated dataset under `data_root`, None when there is none."""
    if not dataset_spec("synthetic").refs_path(Path(data_root)).is_file():
        return None
    try:
        recorded = json.loads(generator_path(data_root).read_text())
        return SyntheticOptions(num_images=recorded["num_images"], seed=recorded["seed"])
    except (OSError, ValueError, KeyError):
        return SyntheticOptions(num_images=-1, seed=-1)  # made by something else: options unknown


def splits_outdated(data_root: str | Path) -> bool:
    """True for a set whose splits this generator would draw differently (version 1, more than 2000 images)."""
    try:
        recorded = json.loads(generator_path(data_root).read_text())
    except (OSError, ValueError):
        return False
    return recorded.get("generator_version") == 1 and recorded.get("num_images", 0) > EVAL_SPLITS_OF


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=Path("data"))
    parser.add_argument("--num-images", type=int, default=SyntheticOptions.num_images)
    parser.add_argument("--seed", type=int, default=SyntheticOptions.seed)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        folder = generate(args.data_root, SyntheticOptions(args.num_images, args.seed))
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    refs = load_refs(dataset_spec("synthetic").refs_path(args.data_root))
    seconds = time.perf_counter() - started
    print(f"wrote {args.num_images} images, {len(refs)} refs to {folder} in {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
