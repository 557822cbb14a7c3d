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
Usage: python pipeline/synthetic.py [--data-root data/] [--num-images 2000] [--seed 0]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import pickle
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from pipeline.refer import dataset_spec, load_refs, ref_mask

GENERATOR_VERSION = 1
SHAPES = ("circle", "square", "triangle", "diamond")
PLURALS = MappingProxyType({"circle": "circles", "square": "squares", "triangle": "triangles", "diamond": "diamonds"})
COLOURS: Mapping[str, tuple[int, int, int]] = MappingProxyType(
    {
        "red": (215, 35, 35),
        "green": (30, 160, 60),
        "blue": (35, 75, 215),
        "yellow": (235, 205, 25),
        "purple": (135, 50, 175),
    }
)
# Colours whose luminance stays far below the light background once an image is stored as grayscale.
GRAY_SAFE_COLOURS = ("red", "green", "blue", "purple")
# Half-extent ranges in pixels. Same-shape areas differ about 3.5x; across shapes big is still >= 1.5x small.
RADII = MappingProxyType({"small": (8.0, 9.5), "big": (15.0, 17.0)})
TRIANGLE_SCALE = 1.3  # circumradius / half-extent, so a triangle's area is close to the other shapes'
# Bounding-circle radius / half-extent per shape, for placement without overlap.
REACH = MappingProxyType({"circle": 1.0, "square": 1.2, "triangle": 1.5, "diamond": 1.0})
ATTRIBUTES = ("size", "colour", "shape")
ORDINALS = ("first", "second", "third", "fourth", "fifth")
MARGIN = 6.0  # px between centres for "left of", "leftmost", ordinals: positions are never ambiguous
GAP = 3.0  # px between objects' bounding circles
SPLITS = (("val", 0.10), ("testA", 0.05), ("testB", 0.05))  # the rest is train
REFS_PER_IMAGE = 3
JPEG_QUALITY = 90


@dataclass(frozen=True)
class SyntheticOptions:
    num_images: int = 2000
    seed: int = 0


@dataclass(frozen=True)
class Thing:
    """One shape in a scene."""

    shape: str
    colour: str
    size: str
    cx: float
    cy: float
    radius: float

    def attribute(self, name: str) -> str:
        return getattr(self, name)

    def polygon(self) -> list[tuple[float, float]]:
        return shape_polygon(self.shape, self.cx, self.cy, self.radius)


@dataclass(frozen=True)
class Expression:
    kind: str  # unique | extreme | ordinal | comparative | relation
    paraphrases: tuple[str, ...]


def shape_polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    """Convex polygon of a shape; circles get 32 vertices."""
    if shape == "circle":
        angles = [2 * math.pi * k / 32 for k in range(32)]
        return [(cx + r * math.cos(a), cy + r * math.sin(a)) for a in angles]
    if shape == "square":
        s = 0.85 * r
        return [(cx - s, cy - s), (cx + s, cy - s), (cx + s, cy + s), (cx - s, cy + s)]
    if shape == "triangle":
        # Centred on its bounding box, not its centroid: "top"/"left" must match what the eye sees.
        big_r = TRIANGLE_SCALE * r
        angles = [math.radians(a) for a in (-90, 30, 150)]
        return [(cx + big_r * math.cos(a), cy + big_r * (math.sin(a) + 0.25)) for a in angles]
    if shape == "diamond":
        return [(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)]
    raise ValueError(f"unknown shape {shape!r}")


def clip_polygon(points: Sequence[tuple[float, float]], x: float, keep_left: bool) -> list[tuple[float, float]]:
    """The part of a convex polygon on one side of the vertical line at `x` (Sutherland-Hodgman, one edge)."""

    def inside(p: tuple[float, float]) -> bool:
        return p[0] <= x if keep_left else p[0] >= x

    clipped = []
    for current, following in zip(points, [*points[1:], points[0]], strict=True):
        if inside(current):
            clipped.append(current)
        if inside(current) != inside(following):
            t = (x - current[0]) / (following[0] - current[0])
            clipped.append((x, current[1] + t * (following[1] - current[1])))
    return clipped


def _flat(points: Sequence[tuple[float, float]]) -> list[float]:
    return [round(v, 2) for point in points for v in point]


def polygon_segmentation(thing: Thing) -> list[list[float]]:
    return [_flat(thing.polygon())]


def overlapping_parts_segmentation(thing: Thing) -> list[list[float]]:
    """Two polygons that overlap in a vertical strip: the refer API's sum counts the strip twice."""
    overlap = thing.radius / 3
    points = thing.polygon()
    return [
        _flat(clip_polygon(points, thing.cx + overlap, True)),
        _flat(clip_polygon(points, thing.cx - overlap, False)),
    ]


def rle_segmentation(thing: Thing, height: int, width: int, compressed: bool) -> dict:
    """The polygon's mask as RLE: string counts (refclef style) or uncompressed counts (COCO iscrowd)."""
    mask = ref_mask({"segmentation": polygon_segmentation(thing)}, height, width)
    if compressed:
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        return {"size": [height, width], "counts": rle["counts"].decode("ascii")}
    column_major = mask.flatten(order="F")
    changes = np.flatnonzero(np.diff(column_major.astype(np.int8))) + 1
    bounds = np.concatenate([[0], changes, [column_major.size]])
    counts = np.diff(bounds).tolist()
    if column_major[0]:  # counts start with a run of zeros
        counts = [0, *counts]
    return {"size": [height, width], "counts": counts}


# ---------------------------------------------------------------- scenes


def sample_scene(rng: np.random.Generator, width: int, height: int, palette: Sequence[str]) -> list[Thing]:
    """2-5 non-overlapping shapes from a small per-scene palette, so look-alikes are common."""
    shapes = rng.choice(SHAPES, size=int(rng.integers(1, 4)), replace=False)
    colours = rng.choice(palette, size=int(rng.integers(1, 4)), replace=False)
    things: list[Thing] = []
    wanted = int(rng.integers(2, 6))
    for _ in range(20):  # a shape that finds no room is replaced by a new draw (a smaller one fits)
        shape, colour = str(rng.choice(shapes)), str(rng.choice(colours))
        size = "big" if rng.random() < 0.5 else "small"
        radius = float(rng.uniform(*RADII[size]))
        placed = place(rng, things, shape, radius, width, height)
        if placed is not None:
            things.append(Thing(shape, colour, size, placed[0], placed[1], radius))
        if len(things) == wanted or (placed is None and len(things) >= 2):
            break
    return things


def place(
    rng: np.random.Generator, things: Sequence[Thing], shape: str, radius: float, width: int, height: int
) -> tuple[float, float] | None:
    reach = REACH[shape] * radius
    for _ in range(60):
        cx = float(rng.uniform(reach + 1, width - reach - 1))
        cy = float(rng.uniform(reach + 1, height - reach - 1))
        if all(math.hypot(cx - t.cx, cy - t.cy) >= reach + REACH[t.shape] * t.radius + GAP for t in things):
            return round(cx, 1), round(cy, 1)
    return None


def render(
    rng: np.random.Generator, masks: Sequence[np.ndarray], things: Sequence[Thing], width: int, height: int
) -> np.ndarray:
    """uint8 [h, w, 3]: tinted grey background with a soft gradient; shapes painted exactly on their masks."""
    base = rng.uniform(150, 215) + rng.uniform(-12, 12, size=3)
    ramp = np.linspace(-1, 1, width)[None, :, None] * rng.uniform(-10, 10)
    pixels = np.broadcast_to(base + ramp, (height, width, 3)).copy()
    for mask, thing in zip(masks, things, strict=True):
        pixels[mask] = COLOURS[thing.colour]
    pixels += rng.normal(0, 5, size=pixels.shape)
    return np.clip(pixels, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- referring expressions


def matches(things: Sequence[Thing], target: Thing, attrs: Sequence[str]) -> list[Thing]:
    return [t for t in things if all(t.attribute(a) == target.attribute(a) for a in attrs)]


def attribute_sets(visible: Sequence[str], allow_empty: bool = True) -> list[tuple[str, ...]]:
    """Subsets of the visible attributes, smallest first, in a fixed order."""
    start = 0 if allow_empty else 1
    return [combo for n in range(start, len(visible) + 1) for combo in itertools.combinations(visible, n)]


def noun_phrase(thing: Thing, attrs: Sequence[str], noun: str = "shape") -> str:
    words = [thing.size if "size" in attrs else "", thing.colour if "colour" in attrs else ""]
    words.append(thing.shape if "shape" in attrs else noun)
    return " ".join(word for word in words if word)


def plural_phrase(thing: Thing, attrs: Sequence[str], noun: str = "shapes") -> str:
    words = [thing.colour if "colour" in attrs else ""]
    words.append(PLURALS[thing.shape] if "shape" in attrs else noun)
    return " ".join(word for word in words if word)


def unique_descriptions(things: Sequence[Thing], target: Thing, visible: Sequence[str]) -> list[tuple[str, ...]]:
    """Minimal attribute sets that single out the target."""
    found: list[tuple[str, ...]] = []
    for attrs in attribute_sets(visible, allow_empty=False):
        if len(matches(things, target, attrs)) == 1 and not any(set(f) <= set(attrs) for f in found):
            found.append(attrs)
    return found


def unique_expressions(things: Sequence[Thing], target: Thing, visible: Sequence[str]) -> list[Expression]:
    expressions = []
    for attrs in unique_descriptions(things, target, visible):
        phrase, bare = noun_phrase(target, attrs, "one"), noun_phrase(target, attrs, "shape")
        paraphrases = [f"the {phrase}", bare, f"the {bare} in the picture"]
        if "shape" in attrs and "colour" in attrs and "size" not in attrs:
            paraphrases.append(f"the {target.shape} that is {target.colour}")
        expressions.append(Expression("unique", tuple(paraphrases)))
    return expressions


# direction -> (coordinate, sign: +1 when the direction means a smaller coordinate)
DIRECTIONS = MappingProxyType({"left": ("cx", 1), "right": ("cx", -1), "top": ("cy", 1), "bottom": ("cy", -1)})
EXTREME_TEMPLATES = MappingProxyType(
    {
        "left": ("the {np} on the left", "the leftmost {np}", "left {np}"),
        "right": ("the {np} on the right", "the rightmost {np}", "right {np}"),
        "top": ("the top {np}", "the {np} at the top", "the highest {np}"),
        "bottom": ("the bottom {np}", "the {np} at the bottom", "the lowest {np}"),
    }
)


def _position(thing: Thing, direction: str) -> float:
    """Coordinate along a direction, oriented so that smaller means further that way."""
    axis, sign = DIRECTIONS[direction]
    return sign * getattr(thing, axis)


def is_extreme(group: Sequence[Thing], target: Thing, direction: str) -> bool:
    here = _position(target, direction)
    return all(here + MARGIN <= _position(other, direction) for other in group if other is not target)


def extreme_expressions(things: Sequence[Thing], target: Thing, visible: Sequence[str]) -> list[Expression]:
    expressions = []
    for attrs in attribute_sets(visible):
        group = matches(things, target, attrs)
        if len(group) < 2:
            continue
        phrase = noun_phrase(target, attrs)
        for direction, templates in EXTREME_TEMPLATES.items():
            if is_extreme(group, target, direction):
                expressions.append(Expression("extreme", tuple(t.format(np=phrase) for t in templates)))
    return expressions


def ordinal_expressions(things: Sequence[Thing], target: Thing, visible: Sequence[str]) -> list[Expression]:
    """'the second circle from the left' in groups of 3+ with clearly separated positions."""
    expressions = []
    for attrs in attribute_sets(visible):
        group = matches(things, target, attrs)
        if len(group) < 3:
            continue
        phrase = noun_phrase(target, attrs)
        for direction in ("left", "top"):
            ranked = sorted(group, key=lambda t, d=direction: _position(t, d))
            positions = [_position(t, direction) for t in ranked]
            if any(b - a < MARGIN for a, b in itertools.pairwise(positions)):
                continue
            rank = ranked.index(target)
            opposite = {"left": "right", "top": "bottom"}[direction]
            expressions.append(
                Expression(
                    "ordinal",
                    (
                        f"the {ORDINALS[rank]} {phrase} from the {direction}",
                        f"the {ORDINALS[len(ranked) - 1 - rank]} {phrase} from the {opposite}",
                    ),
                )
            )
    return expressions


def comparative_expressions(things: Sequence[Thing], target: Thing, visible: Sequence[str]) -> list[Expression]:
    """'the bigger of the two red ones' when exactly two look-alikes differ in size."""
    if "size" not in visible:
        return []
    expressions = []
    for attrs in attribute_sets([a for a in visible if a != "size"]):
        group = matches(things, target, attrs)
        if len(group) != 2 or group[0].size == group[1].size:
            continue
        more = "bigger" if target.size == "big" else "smaller"
        larger = "larger" if target.size == "big" else "smaller"
        ones = plural_phrase(target, attrs, "ones" if attrs else "shapes")
        paraphrases = [f"the {more} of the two {ones}", f"the {larger} {noun_phrase(target, attrs, 'one')}"]
        expressions.append(Expression("comparative", tuple(paraphrases)))
    return expressions


RELATION_TEMPLATES = MappingProxyType(
    {
        "left": ("the {np} left of the {lm}", "the {np} to the left of the {lm}"),
        "right": ("the {np} right of the {lm}", "the {np} to the right of the {lm}"),
        "top": ("the {np} above the {lm}", "the {np} over the {lm}"),
        "bottom": ("the {np} below the {lm}", "the {np} under the {lm}"),
    }
)


def relation_expressions(things: Sequence[Thing], target: Thing, visible: Sequence[str]) -> list[Expression]:
    """'the circle left of the blue square': the only look-alike on that side of a unique landmark."""
    landmarks = [
        (lm, found[0]) for lm in things if lm is not target and (found := unique_descriptions(things, lm, visible))
    ]
    expressions = []
    for attrs in attribute_sets(visible, allow_empty=False):
        group = matches(things, target, attrs)
        if len(group) < 2:
            continue
        for landmark, landmark_attrs in landmarks:
            if landmark in group:
                continue
            landmark_phrase = noun_phrase(landmark, landmark_attrs)
            for direction, templates in RELATION_TEMPLATES.items():
                side = _position(landmark, direction)
                target_on_side = _position(target, direction) + MARGIN <= side
                others_opposite = all(_position(o, direction) >= side + MARGIN for o in group if o is not target)
                if target_on_side and others_opposite:
                    phrase = noun_phrase(target, attrs)
                    paraphrases = tuple(t.format(np=phrase, lm=landmark_phrase) for t in templates)
                    expressions.append(Expression("relation", paraphrases))
    return expressions


EXPRESSION_KINDS: tuple[Callable[[Sequence[Thing], Thing, Sequence[str]], list[Expression]], ...] = (
    unique_expressions,
    extreme_expressions,
    ordinal_expressions,
    comparative_expressions,
    relation_expressions,
)


def referring_sentences(
    rng: np.random.Generator, things: Sequence[Thing], target: Thing, visible: Sequence[str]
) -> list[str]:
    """1-3 sentences that single out the target; the kind of expression is drawn uniformly first so
    spatial, ordinal, comparative and relational ones are as common as plain attribute ones."""
    by_kind = [found for kind in EXPRESSION_KINDS if (found := kind(things, target, visible))]
    if not by_kind:
        return []
    candidates = by_kind[int(rng.integers(len(by_kind)))]
    expression = candidates[int(rng.integers(len(candidates)))]
    count = min(int(rng.integers(1, 4)), len(expression.paraphrases))
    picked = rng.choice(len(expression.paraphrases), size=count, replace=False)
    return [expression.paraphrases[i] for i in sorted(picked)]


def refer_sentence(rng: np.random.Generator, text: str, sent_id: int) -> dict:
    """A sentence record as in refs(unc).p: raw as typed, sent lower-cased, tokens split."""
    raw = text[0].upper() + text[1:] if rng.random() < 0.5 else text
    raw += "." if rng.random() < 0.3 else ""
    return {"tokens": text.split(), "raw": raw, "sent": text, "sent_id": sent_id}


# ---------------------------------------------------------------- the dataset


@dataclass
class Counters:
    """Running ids, shared by all images so ids are unique in the dataset."""

    ann_id: int = 1
    ref_id: int = 0
    sent_id: int = 0


def split_of_images(rng: np.random.Generator, num_images: int) -> list[str]:
    """80/10/5/5 by image, every split non-empty."""
    counts = {split: max(1, round(share * num_images)) for split, share in SPLITS}
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
    rng: np.random.Generator, image_id: int, split: str, counters: Counters
) -> tuple[dict, list[dict], list[dict], np.ndarray]:
    """One image: (COCO image record, annotations, refs, pixels)."""
    width, height = int(rng.integers(96, 161)), int(rng.integers(96, 161))
    file_name = f"synthetic_{image_id:06d}.jpg"
    image = {"id": image_id, "file_name": file_name, "height": height, "width": width}
    gray = colour_mode(image_id) == "L"
    things = sample_scene(rng, width, height, GRAY_SAFE_COLOURS if gray else list(COLOURS))
    visible = ("size", "shape") if gray else ATTRIBUTES  # no colour words about a grayscale image
    targets: dict[int, list[str]] = {}
    for index in rng.permutation(len(things)):
        if len(targets) == REFS_PER_IMAGE:
            break
        sentences = referring_sentences(rng, things, things[index], visible)
        if sentences:
            targets[int(index)] = sentences
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
    return image, anns, refs, render(rng, masks, things, width, height)


def make_ref(
    rng: np.random.Generator, ann: dict, split: str, file_name: str, texts: list[str], counters: Counters
) -> dict:
    sentences = []
    for text in texts:
        sentences.append(refer_sentence(rng, text, counters.sent_id))
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


def generate_images(options: SyntheticOptions, image_dir: Path) -> Iterator[tuple[dict, list[dict], list[dict]]]:
    rng = np.random.default_rng(options.seed)
    splits = split_of_images(rng, options.num_images)
    counters = Counters()
    for image_id, split in enumerate(splits, start=1):
        image, anns, refs, pixels = make_image(rng, image_id, split, counters)
        save_jpeg(pixels, image_dir / image["file_name"], colour_mode(image_id))
        yield image, anns, refs


def _write_atomic(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def generate(data_root: str | Path, options: SyntheticOptions | None = None) -> Path:
    """Write the dataset under `data_root`; the refs file is written last, so its presence means complete."""
    options = options or SyntheticOptions()
    if options.num_images < 4:
        raise ValueError(f"--num-images must be at least 4 (one image per split), got {options.num_images}")
    spec = dataset_spec("synthetic")
    data_root = Path(data_root)
    image_dir = spec.image_root(data_root)
    image_dir.mkdir(parents=True, exist_ok=True)
    spec.refs_path(data_root).parent.mkdir(parents=True, exist_ok=True)
    images, anns, refs = [], [], []
    for image, image_anns, image_refs in generate_images(options, image_dir):
        images.append(image)
        anns += image_anns
        refs += image_refs
    categories = [{"id": i + 1, "name": shape, "supercategory": "shape"} for i, shape in enumerate(SHAPES)]
    instances = {"images": images, "annotations": anns, "categories": categories}
    _write_atomic(spec.instances_path(data_root), json.dumps(instances, separators=(",", ":")).encode())
    generator = {"generator_version": GENERATOR_VERSION, **asdict(options)}
    _write_atomic(generator_path(data_root), json.dumps(generator, indent=2).encode())
    _write_atomic(spec.refs_path(data_root), pickle.dumps(refs, protocol=4))
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
