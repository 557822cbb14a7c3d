"""Scenes of the generated dataset: coloured shapes on a textured background, placed without overlap."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
from pycocotools import mask as mask_utils

from jrnet.prep.refer import ref_mask

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


@dataclass(frozen=True)
class SceneStyle:
    """How scenes look: the demo's, or another held-out set's (other colours, sizes, crowding, background)."""

    colours: Mapping[str, tuple[int, int, int]]  # colour word -> RGB
    radii: Mapping[str, tuple[float, float]]  # size word -> half-extent range in px
    objects: tuple[int, int]  # fewest and most shapes in a scene
    twin_share: float  # share of scenes whose first two shapes look alike (same colour and shape)
    background: tuple[float, float]  # range of the background's grey level
    tint: tuple[float, float, float]  # added to the background's RGB


DEMO_SCENES = SceneStyle(COLOURS, RADII, objects=(2, 5), twin_share=0.0, background=(150, 215), tint=(0, 0, 0))


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


def sample_scene(
    rng: np.random.Generator, width: int, height: int, palette: Sequence[str], style: SceneStyle = DEMO_SCENES
) -> list[Thing]:
    """Non-overlapping shapes (2-5 in the demo) from a small per-scene palette, so look-alikes are common."""
    shapes = rng.choice(SHAPES, size=int(rng.integers(1, 4)), replace=False)
    colours = rng.choice(palette, size=int(rng.integers(1, 4)), replace=False)
    # Drawn only when the style asks for twins, so the demo's random stream (and its bytes) stay as they were.
    twin = style.twin_share > 0 and rng.random() < style.twin_share
    things: list[Thing] = []
    wanted = int(rng.integers(style.objects[0], style.objects[1] + 1))
    for _ in range(20):  # a shape that finds no room is replaced by a new draw (a smaller one fits)
        shape, colour = str(rng.choice(shapes)), str(rng.choice(colours))
        if twin and len(things) == 1:
            shape, colour = things[0].shape, things[0].colour
        size = "big" if rng.random() < 0.5 else "small"
        radius = float(rng.uniform(*style.radii[size]))
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
    rng: np.random.Generator,
    masks: Sequence[np.ndarray],
    things: Sequence[Thing],
    width: int,
    height: int,
    style: SceneStyle = DEMO_SCENES,
) -> np.ndarray:
    """uint8 [h, w, 3]: tinted grey background with a soft gradient; shapes painted exactly on their masks."""
    base = rng.uniform(*style.background) + rng.uniform(-12, 12, size=3) + np.asarray(style.tint, dtype=float)
    ramp = np.linspace(-1, 1, width)[None, :, None] * rng.uniform(-10, 10)
    pixels = np.broadcast_to(base + ramp, (height, width, 3)).copy()
    for mask, thing in zip(masks, things, strict=True):
        pixels[mask] = style.colours[thing.colour]
    pixels += rng.normal(0, 5, size=pixels.shape)
    return np.clip(pixels, 0, 255).astype(np.uint8)
