"""A held-out refer-layout relational set, to check that the CPU demo recipe generalises beyond the set it was
tuned on (issue #11): the demo's generator (jrnet/prep/synthetic.py) with another recipe.

    python bench/relational_set.py --data-root DIR [--num-images 2000] [--seed 0]
    python pipeline/shard.py unc --data-root DIR --out SHARDS --max-words 12

What differs from the demo's set: 160-224 px images (demo 96-160); orange, cyan, pink, brown, white and black
shapes (demo red, green, blue, yellow, purple) on a slate-blue background (demo light grey); larger shapes
(half-extents 10-12 and 17-20 px, demo 8-9.5 and 15-17); 3-5 shapes a scene (demo 2-5), four in five scenes
built around two shapes of the same colour and shape, so mostly only position or size tells them apart; other
sentence templates and words ("large"/"little", "the circle furthest to the left", "of the two white squares
the upper one", "the middle diamond from left to right", "the triangle closest to the pink circle").

Written as refcoco (`unc`): DIR/refcoco/refs(unc).p and instances.json, DIR/images/mscoco/images/train2014/.
Splits train/val/testA/testB (80/10/5/5 by image); each sentence records its kind as the demo's do.
Prints the counts per split and kind, and the val overall IoU of a predictor that reads only colour and
shape words (every object of the named colour and shape): how much the relations matter in this set.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from jrnet.metrics import IoUAccumulator  # noqa: E402
from jrnet.prep.expressions import Phrasing  # noqa: E402
from jrnet.prep.refer import Refer, dataset_spec, ref_mask  # noqa: E402
from jrnet.prep.scenes import PLURALS, SHAPES, SceneStyle  # noqa: E402
from jrnet.prep.synthetic import Recipe, SyntheticOptions, generate  # noqa: E402
from jrnet.shard_format import KINDS  # noqa: E402

RELATIONAL_SCENES = SceneStyle(
    colours=MappingProxyType(
        {
            "orange": (245, 140, 20),
            "cyan": (30, 205, 215),
            "pink": (245, 120, 190),
            "brown": (95, 50, 15),
            "white": (245, 245, 245),
            "black": (20, 20, 20),
        }
    ),
    radii=MappingProxyType({"small": (10.0, 12.0), "big": (17.0, 20.0)}),
    objects=(3, 5),
    twin_share=0.8,
    background=(110, 135),
    tint=(-10, 0, 25),  # slate blue: every colour above stands apart from it
)

RELATIONAL_PHRASING = Phrasing(
    size_words=MappingProxyType({"big": "large", "small": "little"}),
    unique=("the {np}", "the {np} in this image", "the only {one}"),
    colour_shape=("the {colour} coloured {shape}",),
    extremes=MappingProxyType(
        {
            "left": ("the {np} furthest to the left", "the {np} nearest the left edge"),
            "right": ("the {np} furthest to the right", "the {np} nearest the right edge"),
            "top": ("the {np} nearest the top", "the uppermost {np}"),
            "bottom": ("the {np} nearest the bottom", "the {np} furthest down"),
        }
    ),
    pair_extremes=MappingProxyType(
        {
            "left": ("of the two {nps} the left one",),
            "right": ("of the two {nps} the right one",),
            "top": ("of the two {nps} the upper one",),
            "bottom": ("of the two {nps} the lower one",),
        }
    ),
    ordinals=("the {np} {nth} from the {side}", "the {nth} {np} counting from the {side}"),
    middles=MappingProxyType(
        {
            "left": ("the middle {np} from left to right", "the {np} in the middle going across"),
            "top": ("the middle {np} from top to bottom", "the {np} in the middle going down"),
        }
    ),
    comparatives=MappingProxyType(
        {
            "big": ("the larger {one}", "of the two {ones} the larger one", "the {one} that is larger"),
            "small": ("the smaller {one}", "of the two {ones} the smaller one", "the {one} that is smaller"),
        }
    ),
    relations=MappingProxyType(
        {
            "left": ("the {np} on the left of the {lm}", "the {np} further left than the {lm}"),
            "right": ("the {np} on the right of the {lm}", "the {np} further right than the {lm}"),
            "top": ("the {np} higher up than the {lm}", "the {np} sitting above the {lm}"),
            "bottom": ("the {np} lower down than the {lm}", "the {np} beneath the {lm}"),
        }
    ),
    nearest=("the {np} closest to the {lm}", "the {np} nearest the {lm}", "the {np} beside the {lm}"),
    max_words=12,
)

RELATIONAL = Recipe(
    name="relational",
    dataset="unc",
    file_name="COCO_train2014_{:012d}.jpg",
    image_sizes=(160, 224),
    scenes=RELATIONAL_SCENES,
    gray_safe=("white", "black", "brown"),  # far from the background's grey level once stored as grayscale
    phrasing=RELATIONAL_PHRASING,
)

# The words that end a sentence's first noun phrase (the referred object's, in every template above).
HEAD_NOUNS = frozenset([*SHAPES, *PLURALS.values(), "shape", "shapes", "one", "ones"])
SINGULAR = {plural: shape for shape, plural in PLURALS.items()}


def named_colour_and_shape(sentence: str, colours: Sequence[str]) -> tuple[str | None, str | None]:
    """The colour and shape words of a sentence's first noun phrase (None where it names none)."""
    colour = None
    for word in sentence.split():
        if word in colours:
            colour = word
        if word in HEAD_NOUNS:
            shape = SINGULAR.get(word, word)
            return colour, shape if shape in SHAPES else None
    return colour, None


def colour_shape_baseline(refer: Refer, split: str, colours: Sequence[str], scenes: dict[int, list[dict]]) -> dict:
    """Overall and mean IoU over every sentence of a split when the prediction is the union of the objects of
    the named colour and shape (all objects when neither is named): what a model blind to relations gets."""
    accumulator = IoUAccumulator()
    for ref in refer.split_refs(split):
        image = refer.image_of(ref)
        target = refer.mask(ref)
        for sentence in ref["sentences"]:
            colour, shape = named_colour_and_shape(sentence["sent"], colours)
            predicted = np.zeros_like(target)
            for thing in scenes[ref["image_id"]]:
                if colour in (None, thing["colour"]) and shape in (None, thing["shape"]):
                    predicted |= ref_mask(thing["ann"], image["height"], image["width"])
            accumulator.add(int((predicted & target).sum()), int((predicted | target).sum()))
    return accumulator.summary()


def scene_objects(
    refer: Refer, colours: Mapping[str, tuple[int, int, int]], image_ids: set[int]
) -> dict[int, list[dict]]:
    """Per image: its annotations with shape (from the category) and colour (the palette's nearest to the
    mean pixel of the object, read back from the JPEG)."""
    palette = np.array(list(colours.values()), dtype=np.float32)
    names = list(colours)
    by_image: dict[int, list[dict]] = {image_id: [] for image_id in image_ids}
    for ann in refer.anns.values():
        if ann["image_id"] in by_image:
            by_image[ann["image_id"]].append(ann)
    scenes = {}
    for image_id, anns in by_image.items():
        image = refer.images[image_id]
        with Image.open(refer.image_path(image)) as file:
            pixels = np.asarray(file.convert("RGB"), dtype=np.float32)
        things = []
        for ann in anns:
            mean = pixels[ref_mask(ann, image["height"], image["width"])].mean(axis=0)
            colour = names[int(np.abs(palette - mean).sum(axis=1).argmin())]
            things.append({"ann": ann, "shape": refer.categories[ann["category_id"]]["name"], "colour": colour})
        scenes[image_id] = things
    return scenes


def counts_table(refer: Refer) -> str:
    """Images, refs and sentences per split, and each kind's share of the sentences."""
    lines = [f"{'split':<7}{'images':>8}{'refs':>7}{'sentences':>11}" + "".join(f"{k:>13}" for k in KINDS)]
    for split in refer.splits():
        refs = refer.split_refs(split)
        sentences = [s for ref in refs for s in ref["sentences"]]
        shares = Counter(s["kind"] for s in sentences)
        cells = "".join(f"{100 * shares[k] / len(sentences):>12.1f}%" for k in KINDS)
        images = len({ref["image_id"] for ref in refs})
        lines.append(f"{split:<7}{images:>8}{len(refs):>7}{len(sentences):>11}{cells}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, required=True)
    parser.add_argument("--num-images", type=int, default=SyntheticOptions.num_images)
    parser.add_argument("--seed", type=int, default=SyntheticOptions.seed)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        folder = generate(args.data_root, SyntheticOptions(args.num_images, args.seed), RELATIONAL)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    refer = Refer.load(args.data_root, dataset_spec(RELATIONAL.dataset))
    seconds = time.perf_counter() - started
    print(f"wrote {args.num_images} images, {len(refer.refs)} refs to {folder} in {seconds:.1f} s")
    print(counts_table(refer))
    colours = RELATIONAL.scenes.colours
    scenes = scene_objects(refer, colours, {ref["image_id"] for ref in refer.split_refs("val")})
    baseline = colour_shape_baseline(refer, "val", list(colours), scenes)
    print(
        f"val, colour + shape only predictor (every object of the named colour and shape): "
        f"overall IoU {baseline['overall_iou']:.3f}, mean IoU {baseline['mean_iou']:.3f}"
    )
    print(f"shard: python pipeline/shard.py unc --data-root {args.data_root} --out SHARDS --max-words 12")
    return 0


if __name__ == "__main__":
    sys.exit(main())
