"""The generated dataset: refer layout, variety, storage formats, expressions that pick the right object."""

from __future__ import annotations

import hashlib
import json
import pickle
import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jrnet.prep.expressions import (
    comparative_expressions,
    extreme_expressions,
    ordinal_expressions,
    relation_expressions,
    unique_expressions,
)
from jrnet.prep.plan import InputError
from jrnet.prep.refer import Refer, dataset_spec, ref_mask
from jrnet.prep.scenes import COLOURS, SHAPES, Thing, overlapping_parts_segmentation, polygon_segmentation
from jrnet.prep.shard import ensure_synthetic
from jrnet.prep.synthetic import SyntheticOptions, existing_options, generate, main, split_of_images

BIG_AREA = 340  # px: every small shape is below (circle r 9.5: 283 px), every big one above (diamond r 15: 450)
ORDINAL_WORDS = ("first", "second", "third", "fourth", "fifth")


def load(root: Path) -> Refer:
    return Refer.load(root, dataset_spec("synthetic"))


def all_sentences(refer: Refer) -> list[str]:
    return [sentence["sent"] for ref in refer.refs for sentence in ref["sentences"]]


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


# ---------------------------------------------------------------- the generated files


def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        generate(tmp_path / name, SyntheticOptions(num_images=8, seed=seed))
    assert tree_digest(tmp_path / "a") == tree_digest(tmp_path / "b")
    assert (tmp_path / "a/synthetic/refs(unc).p").read_bytes() != (tmp_path / "c/synthetic/refs(unc).p").read_bytes()
    assert existing_options(tmp_path / "a") == SyntheticOptions(num_images=8, seed=5)
    assert existing_options(tmp_path / "missing") is None


def test_refer_layout_and_fields(synthetic_root):
    refer = load(synthetic_root)
    assert (synthetic_root / "images" / "synthetic").is_dir()
    assert refer.splits() == ["train", "val", "testA", "testB"]
    splits = Counter(ref["split"] for ref in refer.refs)
    assert splits["train"] > sum(splits.values()) / 2
    assert sorted(c["name"] for c in refer.categories.values()) == sorted(SHAPES)
    for ref in refer.refs:
        assert set(ref) == {
            "ref_id",
            "ann_id",
            "image_id",
            "category_id",
            "split",
            "sent_ids",
            "sentences",
            "file_name",
        }
        image, ann = refer.image_of(ref), refer.ann_of(ref)
        assert refer.image_path(image).is_file()
        assert ann["image_id"] == ref["image_id"] and ann["category_id"] == ref["category_id"]
        assert ref["file_name"] == image["file_name"].replace(".jpg", f"_{ann['id']}.jpg")  # as refcoco
        assert 1 <= len(ref["sentences"]) <= 3 and ref["sent_ids"] == [s["sent_id"] for s in ref["sentences"]]
        for sentence in ref["sentences"]:
            assert sentence["tokens"] == sentence["sent"].split() and sentence["raw"].lower().startswith(
                sentence["sent"]
            )
    assert len({s for ref in refer.refs for s in ref["sent_ids"]}) == sum(len(ref["sent_ids"]) for ref in refer.refs)


def test_scenes_vary_and_objects_never_overlap(synthetic_root):
    refer = load(synthetic_root)
    sizes = {(image["width"], image["height"]) for image in refer.images.values()}
    assert all(96 <= w <= 160 and 96 <= h <= 160 for w, h in sizes)
    assert len(sizes) > 10 and any(w != h for w, h in sizes)
    by_image = defaultdict(list)
    for ann in refer.anns.values():
        by_image[ann["image_id"]].append(ann)
    assert {len(anns) for anns in by_image.values()} <= {2, 3, 4, 5} and len(by_image) == len(refer.images)
    for image_id, anns in by_image.items():
        image = refer.images[image_id]
        masks = np.stack([ref_mask(ann, image["height"], image["width"]) for ann in anns])
        assert masks.sum(axis=0).max() == 1  # disjoint: every mask is the whole visible object
        assert all(mask.sum() == ann["area"] for mask, ann in zip(masks, anns, strict=True))


def test_several_refs_per_image_point_at_different_objects(synthetic_root):
    refs_by_image = defaultdict(list)
    for ref in load(synthetic_root).refs:
        refs_by_image[ref["image_id"]].append(ref)
    assert all(len({ref["ann_id"] for ref in refs}) == len(refs) for refs in refs_by_image.values())
    assert sum(len(refs) >= 2 for refs in refs_by_image.values()) > len(refs_by_image) / 2


def test_every_storage_format_and_colour_mode_is_present(synthetic_root):
    refer = load(synthetic_root)
    kinds = Counter()
    for ref in refer.refs:
        segmentation = refer.ann_of(ref)["segmentation"]
        if isinstance(segmentation, dict):
            kinds["rle-list" if isinstance(segmentation["counts"], list) else "rle-string"] += 1
        else:
            kinds[f"polygons-{len(segmentation)}"] += 1
    assert {"rle-list", "rle-string", "polygons-1", "polygons-2"} <= set(kinds)
    modes = Counter()
    for image in refer.images.values():
        with Image.open(refer.image_path(image)) as file:
            assert file.format == "JPEG"
            modes[file.mode] += 1
    assert modes["L"] and modes["CMYK"] and modes["RGB"] > modes["L"] + modes["CMYK"]


def test_grayscale_images_are_never_referred_to_by_colour(synthetic_root):
    refer = load(synthetic_root)
    for ref in refer.refs:
        with Image.open(refer.image_path(refer.image_of(ref))) as file:
            if file.mode == "L":
                assert not any(colour in s["sent"].split() for s in ref["sentences"] for colour in COLOURS)


def interior(mask: np.ndarray, margin: int = 2) -> np.ndarray:
    """The mask minus a band along its border, where JPEG blends the object into the background."""
    inner = mask.copy()
    for shift in ((margin, 0), (-margin, 0), (0, margin), (0, -margin)):
        inner &= np.roll(mask, shift, axis=(0, 1))
    return inner


def test_pixels_are_painted_exactly_on_the_masks(synthetic_root):
    refer = load(synthetic_root)
    for ref in refer.refs[:40]:
        with Image.open(refer.image_path(refer.image_of(ref))) as file:
            pixels = np.asarray(file.convert("RGB"), dtype=np.float32)
        masks = np.stack([refer.mask(r) for r in refer.refs if r["image_id"] == ref["image_id"]])
        mask = refer.mask(ref)
        ys, xs = np.nonzero(mask)
        near = np.zeros_like(mask)
        near[max(ys.min() - 4, 0) : ys.max() + 5, max(xs.min() - 4, 0) : xs.max() + 5] = True
        background = pixels[near & ~masks.any(axis=0)].mean(axis=0)
        inside = pixels[interior(mask)]
        assert inside.std(axis=0).max() < 20  # one flat colour plus light noise and JPEG error
        assert np.abs(inside.mean(axis=0) - background).max() > 30  # that stands out from its surroundings


# ---------------------------------------------------------------- referring expressions


def test_expressions_need_colour_shape_size_and_relations(synthetic_root):
    words = Counter(word for sentence in all_sentences(load(synthetic_root)) for word in sentence.split())
    assert all(words[colour] for colour in COLOURS) and all(words[shape] for shape in SHAPES)
    assert words["big"] and words["small"] and words["bigger"] + words["larger"] and words["smaller"]
    assert words["left"] and words["right"] and words["top"] + words["highest"] and words["bottom"] + words["lowest"]
    assert words["second"] and words["from"]
    assert words["above"] + words["below"] + words["over"] + words["under"] + words["of"] > 0


def describe_anns(refer: Refer, image_id: int) -> list[dict]:
    """Attributes read back from the data itself: shape from the category, size from the area, colour from
    the pixels, position from the mask's centre."""
    image = next(i for i in refer.images.values() if i["id"] == image_id)
    with Image.open(refer.image_path(image)) as file:
        pixels = np.asarray(file.convert("RGB"), dtype=np.float32)
    objects = []
    for ann in (a for a in refer.anns.values() if a["image_id"] == image_id):
        mask = ref_mask(ann, image["height"], image["width"])
        ys, xs = np.nonzero(mask)
        mean = pixels[mask].mean(axis=0)
        colour = min(COLOURS, key=lambda name: np.abs(mean - COLOURS[name]).sum())
        objects.append(
            {
                "ann_id": ann["id"],
                "shape": refer.categories[ann["category_id"]]["name"],
                "size": "big" if mask.sum() > BIG_AREA else "small",
                "colour": colour,
                "x": (xs.min() + xs.max()) / 2,
                "y": (ys.min() + ys.max()) / 2,
            }
        )
    return objects


def matching(objects: list[dict], phrase: str) -> list[dict]:
    """Objects a noun phrase fits ("small red square", "red ones", "circles", "shape")."""
    wanted = {}
    for word in phrase.split():
        word = word.removesuffix("s") if word.removesuffix("s") in SHAPES else word
        if word in ("big", "small"):
            wanted["size"] = word
        elif word in COLOURS:
            wanted["colour"] = word
        elif word in SHAPES:
            wanted["shape"] = word
    return [o for o in objects if all(o[key] == value for key, value in wanted.items())]


SIDES = {"left": ("x", 1), "right": ("x", -1), "top": ("y", 1), "bottom": ("y", -1)}
SIDE_WORDS = {"leftmost": "left", "rightmost": "right", "highest": "top", "lowest": "bottom"}
SIDE_WORDS |= {"above": "top", "over": "top", "below": "bottom", "under": "bottom"}
EXTREME = [
    re.compile(r"^the (?P<side>leftmost|rightmost|highest|lowest|top|bottom) (?P<np>.+)$"),
    re.compile(r"^the (?P<np>.+) (on|at) the (?P<side>left|right|top|bottom)$"),
    re.compile(r"^(?P<side>left|right) (?P<np>.+)$"),
]
ORDINAL = re.compile(rf"^the (?P<rank>{'|'.join(ORDINAL_WORDS)}) (?P<np>.+) from the (?P<side>\w+)$")
COMPARATIVE = re.compile(r"^the (?P<more>bigger|larger|smaller)( of the two)? (?P<np>.+)$")
RELATION = re.compile(r"^the (?P<np>.+?) (to the )?(?P<side>left|right|above|over|below|under)( of)? the (?P<lm>.+)$")


def ranked(objects: list[dict], side: str) -> list[dict]:
    axis, sign = SIDES[SIDE_WORDS.get(side, side)]
    return sorted(objects, key=lambda o: sign * o[axis])


def resolve(sentence: str, objects: list[dict]) -> dict | None:
    """The one object a sentence picks out, by its own reading of the scene; None when it is ambiguous."""
    if found := ORDINAL.match(sentence):
        order = ranked(matching(objects, found["np"]), found["side"])
        rank = ORDINAL_WORDS.index(found["rank"])
        return order[rank] if len(order) > rank else None
    if found := RELATION.match(sentence):
        landmarks = matching(objects, found["lm"])
        if len(landmarks) != 1:
            return None
        axis, sign = SIDES[SIDE_WORDS.get(found["side"], found["side"])]
        landmark = landmarks[0]
        beyond = [o for o in matching(objects, found["np"]) if sign * o[axis] < sign * landmark[axis]]
        return beyond[0] if len(beyond) == 1 else None
    if found := COMPARATIVE.match(sentence):
        pair = matching(objects, found["np"])
        if len(pair) != 2 or pair[0]["size"] == pair[1]["size"]:
            return None
        return next(o for o in pair if o["size"] == ("small" if found["more"] == "smaller" else "big"))
    for pattern in EXTREME:
        if found := pattern.match(sentence):
            order = ranked(matching(objects, found["np"]), found["side"])
            axis = SIDES[SIDE_WORDS.get(found["side"], found["side"])][0]
            clear = len(order) >= 2 and abs(order[0][axis] - order[1][axis]) >= 4
            return order[0] if clear else None
    phrase = re.sub(r"^the | in the picture$", "", sentence)
    phrase = re.sub(r"^(\w+) that is (\w+)$", r"\2 \1", phrase)
    candidates = matching(objects, phrase)
    return candidates[0] if len(candidates) == 1 else None


def test_every_sentence_picks_out_exactly_its_object(synthetic_root):
    """Re-resolve every sentence against what the image and annotations show (colour from the pixels,
    size from the area, position from the mask), independently of the generator's own reasoning."""
    refer = load(synthetic_root)
    checked = 0
    for ref in refer.refs:
        with Image.open(refer.image_path(refer.image_of(ref))) as file:
            if file.mode == "L":
                continue  # colour cannot be read back from gray pixels
        objects = describe_anns(refer, ref["image_id"])
        for sentence in (s["sent"] for s in ref["sentences"]):
            picked = resolve(sentence, objects)
            assert picked is not None and picked["ann_id"] == ref["ann_id"], (
                sentence,
                ref["ann_id"],
                objects,
            )
            checked += 1
    assert checked > 100


def thing(shape: str, colour: str, size: str, x: float, y: float = 50) -> Thing:
    return Thing(shape, colour, size, x, y, 9.0 if size == "small" else 16.0)


def phrases(expressions) -> set[str]:
    return {p for expression in expressions for p in expression.paraphrases}


def test_extremes_and_comparatives_on_a_built_scene():
    left, right = thing("square", "red", "small", 20), thing("square", "red", "big", 80)
    circle = thing("circle", "blue", "big", 50, 110)
    scene = [left, right, circle]
    visible = ("size", "colour", "shape")
    assert "the red square on the left" in phrases(extreme_expressions(scene, left, visible))
    assert "the rightmost red square" in phrases(extreme_expressions(scene, right, visible))
    assert "the red square on the left" not in phrases(extreme_expressions(scene, right, visible))
    assert "the smaller of the two red ones" in phrases(comparative_expressions(scene, left, visible))
    assert "the bigger of the two squares" in phrases(comparative_expressions(scene, right, visible))
    assert {"the blue one", "the circle"} <= phrases(unique_expressions(scene, circle, visible))
    assert comparative_expressions(scene, left, ("colour", "shape")) == []  # no size words without size


def test_ordinals_and_relations_on_a_built_scene():
    a, b, c = (thing("circle", "green", "small", x) for x in (20, 50, 80))
    landmark = thing("square", "blue", "big", 65, 110)
    scene = [a, b, c, landmark]
    visible = ("size", "colour", "shape")
    assert {"the second circle from the left", "the second circle from the right"} <= phrases(
        ordinal_expressions(scene, b, visible)
    )
    assert "the third circle from the left" in phrases(ordinal_expressions(scene, c, visible))
    # c is the only circle right of the square; a and b are both left of it, so neither is "left of" it
    assert any(p.startswith("the circle right of the ") for p in phrases(relation_expressions(scene, c, visible)))
    assert not any("left of" in p for p in phrases(relation_expressions(scene, b, visible)))


def test_overlapping_parts_cover_exactly_the_shape():
    for shape in SHAPES:
        item = thing(shape, "red", "big", 40, 40)
        whole = ref_mask({"segmentation": polygon_segmentation(item)}, 80, 80)
        parts = ref_mask({"segmentation": overlapping_parts_segmentation(item)}, 80, 80)
        assert np.logical_xor(whole, parts).sum() <= 4  # the cut adds vertices on the same edges


# ---------------------------------------------------------------- command line


def test_cli_writes_the_set_and_rejects_too_few_images(tmp_path, capsys):
    assert main(["--data-root", str(tmp_path), "--num-images", "3"]) == 2
    assert capsys.readouterr().err.startswith("error: --num-images must be at least 4")
    assert main(["--data-root", str(tmp_path), "--num-images", "6", "--seed", "1"]) == 0
    assert "wrote 6 images" in capsys.readouterr().out
    refs = pickle.loads((tmp_path / "synthetic" / "refs(unc).p").read_bytes())
    assert {ref["split"] for ref in refs} == {"train", "val", "testA", "testB"}
    assert json.loads((tmp_path / "synthetic" / "generator.json").read_text())["num_images"] == 6


@pytest.mark.parametrize("num_images", [4, 5])
def test_every_split_gets_an_image_even_in_the_smallest_set(tmp_path, num_images):
    generate(tmp_path, SyntheticOptions(num_images=num_images, seed=0))
    assert {ref["split"] for ref in load(tmp_path).refs} == {"train", "val", "testA", "testB"}


@pytest.mark.parametrize(("num_images", "train"), [(2000, 1600), (10000, 9600)])
def test_a_larger_set_adds_training_images_only(num_images, train):
    splits = Counter(split_of_images(np.random.default_rng(0), num_images))
    assert splits == {"train": train, "val": 200, "testA": 100, "testB": 100}


def test_a_2000_image_set_is_split_as_generator_version_1_did():
    # version 1: round(share * num_images) images per evaluation split, then one permutation of the labels
    labels = ["train"] * 1600 + ["val"] * 200 + ["testA"] * 100 + ["testB"] * 100
    version_1 = [labels[i] for i in np.random.default_rng(7).permutation(2000)]
    assert split_of_images(np.random.default_rng(7), 2000) == version_1


def test_a_version_1_set_larger_than_2000_images_is_refused_not_reused(tmp_path):
    folder = tmp_path / "synthetic"
    folder.mkdir()
    (folder / "refs(unc).p").write_bytes(pickle.dumps([]))
    (folder / "generator.json").write_text(json.dumps({"generator_version": 1, "num_images": 3000, "seed": 0}))
    with pytest.raises(InputError, match=r"generator.json: made by generator version 1"):
        ensure_synthetic(tmp_path, None, None)
    (folder / "generator.json").write_text(json.dumps({"generator_version": 1, "num_images": 2000, "seed": 0}))
    assert ensure_synthetic(tmp_path, None, None) == SyntheticOptions(2000, 0)
