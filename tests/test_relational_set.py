"""bench/relational_set.py: a held-out relational set readable as `unc`, shardable as is, in other colours and
words than the demo's, whose every sentence picks out its object by the scene's geometry."""

from __future__ import annotations

import contextlib
import io
import json
import re
import sys
from collections import Counter
from pathlib import Path

import pytest

from jrnet.prep.refer import Refer, dataset_spec, ref_mask
from jrnet.prep.scenes import COLOURS, ORDINALS, PLURALS, SHAPES
from jrnet.prep.shard import main as shard_main

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import relational_set  # noqa: E402

NUM_IMAGES = 120  # about 360 refs and 700 sentences
BIG_AREA = 515  # px: every little shape is below (circle r 12: 452), every large one above (diamond r 17: 578)
SIZE_WORDS = {"large": "big", "little": "small"}
COLOUR_WORDS = tuple(relational_set.RELATIONAL_SCENES.colours)


@pytest.fixture(scope="module")
def relational_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The set's data root and what the command printed."""
    root = tmp_path_factory.mktemp("relational")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert relational_set.main(["--data-root", str(root), "--num-images", str(NUM_IMAGES), "--seed", "3"]) == 0
    return root, printed.getvalue()


def load(root: Path) -> Refer:
    return Refer.load(root, dataset_spec("unc"))


def test_readable_as_unc_and_shardable_unchanged(relational_root, tmp_path):
    root, printed = relational_root
    refer = load(root)
    assert refer.splits() == ["train", "val", "testA", "testB"]
    assert (root / "refcoco" / "refs(unc).p").is_file() and (root / "images/mscoco/images/train2014").is_dir()
    sizes = {(image["width"], image["height"]) for image in refer.images.values()}
    assert all(160 <= w <= 224 and 160 <= h <= 224 for w, h in sizes) and any(w != h for w, h in sizes)
    for ref in refer.refs:
        assert refer.image_path(refer.image_of(ref)).is_file() and refer.mask(ref).any()
    out = tmp_path / "shards"
    argv = ["unc", "--data-root", str(root), "--out", str(out), "--max-words", "12", "--workers", "1"]
    assert shard_main(argv) == 0
    manifest = json.loads((out / "unc" / "manifest.json").read_text())
    assert sum(split["samples"] for split in manifest["splits"].values()) == len(refer.refs)
    assert all(split["truncated_sentences"] == 0 for split in manifest["splits"].values())
    found = re.search(r"colour \+ shape only .*: overall IoU (\d\.\d+)", printed)
    assert found and 0.1 < float(found[1]) < 0.7  # relations matter: a colour + shape reader misses most


def test_short_sentences_in_other_colours_and_every_kind(relational_root):
    refer = load(relational_root[0])
    sentences = [s for ref in refer.refs for s in ref["sentences"]]
    assert max(len(s["tokens"]) for s in sentences) <= 12
    words = Counter(word for s in sentences for word in s["tokens"])
    assert not any(words[colour] for colour in COLOURS)  # none of the demo's colour words
    assert all(words[colour] for colour in COLOUR_WORDS)
    assert words["large"] and words["little"] and not words["big"] and not words["small"]
    kinds = Counter(s["kind"] for s in sentences)
    assert set(kinds) == {"attribute", "spatial", "ordinal", "comparative"}
    assert kinds["attribute"] < len(sentences) / 3  # mostly relational


# ---------------------------------------------------------------- every sentence picks out its object


def scene(refer: Refer, image_id: int, objects: list[dict]) -> list[dict]:
    """Attributes read back from the data: shape from the category, colour from the pixels, size from the area,
    position from the mask's centre."""
    image = refer.images[image_id]
    described = []
    for thing in objects:
        mask = ref_mask(thing["ann"], image["height"], image["width"])
        ys, xs = mask.nonzero()
        size = "big" if mask.sum() > BIG_AREA else "small"
        x, y = (xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2
        described.append({"ann_id": thing["ann"]["id"], **thing, "size": size, "x": x, "y": y})
    return described


def matching(objects: list[dict], phrase: str) -> list[dict]:
    """Objects a noun phrase fits ("large white square", "pink circles", "shape", "one"); any other word fails."""
    wanted = {}
    for word in phrase.split():
        singular = {plural: shape for shape, plural in PLURALS.items()}.get(word, word)
        if word in SIZE_WORDS:
            wanted["size"] = SIZE_WORDS[word]
        elif word in COLOUR_WORDS:
            wanted["colour"] = word
        elif singular in SHAPES:
            wanted["shape"] = singular
        else:
            assert word in ("shape", "shapes", "one", "ones"), f"{word!r} in noun phrase {phrase!r}"
    return [o for o in objects if all(o[key] == value for key, value in wanted.items())]


AXES = {"left": ("x", 1), "right": ("x", -1), "top": ("y", 1), "bottom": ("y", -1)}
SIDES = {"upper": "top", "uppermost": "top", "lower": "bottom", "down": "bottom"}
SIDES |= {"higher up than": "top", "sitting above": "top", "lower down than": "bottom", "beneath": "bottom"}
CLEAR = 4  # px: the generator keeps 6 px between positions; reading them back from masks costs about 1


def ranked(objects: list[dict], side: str, clear: bool = True) -> list[dict]:
    """Objects from the `side` end on, asserting that neighbours are clearly apart."""
    axis, sign = AXES[SIDES.get(side, side)]
    order = sorted(objects, key=lambda o: sign * o[axis])
    assert not clear or all(abs(a[axis] - b[axis]) >= CLEAR for a, b in zip(order, order[1:], strict=False))
    return order


def nearest(group: list[dict], landmark: dict) -> dict:
    distances = sorted(((o["x"] - landmark["x"]) ** 2 + (o["y"] - landmark["y"]) ** 2) ** 0.5 for o in group)
    assert len(distances) >= 2 and distances[1] >= 1.3 * distances[0]  # clearly the nearest
    return min(group, key=lambda o: (o["x"] - landmark["x"]) ** 2 + (o["y"] - landmark["y"]) ** 2)


def one_landmark(objects: list[dict], phrase: str) -> dict:
    landmarks = matching(objects, phrase)
    assert len(landmarks) == 1, phrase
    return landmarks[0]


def pair_with_sizes(objects: list[dict], phrase: str) -> list[dict]:
    pair = matching(objects, phrase)
    assert len(pair) == 2 and pair[0]["size"] != pair[1]["size"], phrase
    return pair


def beyond(objects: list[dict], phrase: str, side: str, landmark: dict) -> dict:
    axis, sign = AXES[SIDES.get(side, side)]
    found = [o for o in matching(objects, phrase) if sign * o[axis] < sign * landmark[axis]]
    assert len(found) == 1, phrase
    return found[0]


def by_size(pair: list[dict], word: str) -> dict:
    return next(o for o in pair if o["size"] == ("big" if word == "larger" else "small"))


def exact_pair(objects: list[dict], phrase: str) -> list[dict]:
    pair = matching(objects, phrase)
    assert len(pair) == 2, phrase  # "of the two ..." is said only of exactly two look-alikes
    return pair


def nth(group: list[dict], side: str, word: str) -> dict:
    assert len(group) >= 3  # ordinals only in groups of three or more look-alikes
    return ranked(group, side)[ORDINALS.index(word)]


def middle(group: list[dict], side: str) -> dict:
    assert len(group) == 3
    return ranked(group, side)[1]


def extreme(group: list[dict], side: str) -> dict:
    assert len(group) >= 2  # an extreme among look-alikes, not a lone object
    order = ranked(group, side, clear=False)
    axis = AXES[SIDES.get(side, side)][0]
    assert abs(order[0][axis] - order[1][axis]) >= CLEAR
    return order[0]


def only(objects: list[dict], phrase: str) -> dict:
    found = matching(objects, phrase)
    assert len(found) == 1, phrase
    return found[0]


NTH = "|".join(ORDINALS)
# (kind, patterns, resolver): tried in order, the attribute ones last since "the {np}" starts many sentences.
READINGS = [
    (
        "comparative",
        (
            r"^of the two (?P<np>.+) the (?P<w>larger|smaller) one$",
            r"^the (?P<w>larger|smaller) (?P<np>.+)$",
            r"^the (?P<np>.+) that is (?P<w>larger|smaller)$",
        ),
        lambda o, m: by_size(pair_with_sizes(o, m["np"]), m["w"]),
    ),
    (
        "spatial",
        (r"^of the two (?P<np>.+) the (?P<side>left|right|upper|lower) one$",),
        lambda o, m: ranked(exact_pair(o, m["np"]), m["side"])[0],
    ),
    (
        "ordinal",
        (
            r"^the middle (?P<np>.+) from (?P<axis>left|top) to (right|bottom)$",
            r"^the (?P<np>.+) in the middle going (?P<axis>across|down)$",
        ),
        lambda o, m: middle(matching(o, m["np"]), "left" if m["axis"] in ("left", "across") else "top"),
    ),
    (
        "ordinal",
        (
            rf"^the (?P<np>.+) (?P<nth>{NTH}) from the (?P<side>\w+)$",
            rf"^the (?P<nth>{NTH}) (?P<np>.+) counting from the (?P<side>\w+)$",
        ),
        lambda o, m: nth(matching(o, m["np"]), m["side"], m["nth"]),
    ),
    (
        "spatial",
        (
            r"^the (?P<np>.+) furthest to the (?P<side>left|right)$",
            r"^the (?P<np>.+) nearest the (?P<side>left|right) edge$",
            r"^the (?P<np>.+) nearest the (?P<side>top|bottom)$",
            r"^the (?P<side>uppermost) (?P<np>.+)$",
            r"^the (?P<np>.+) furthest (?P<side>down)$",
        ),
        lambda o, m: extreme(matching(o, m["np"]), m["side"]),
    ),
    (
        "spatial",
        (r"^the (?P<np>.+?) (closest to|nearest|beside) the (?P<lm>.+)$",),
        lambda o, m: nearest(matching(o, m["np"]), one_landmark(o, m["lm"])),
    ),
    (
        "spatial",
        (
            r"^the (?P<np>.+?) (on the|further) (?P<side>left|right) (of|than) the (?P<lm>.+)$",
            r"^the (?P<np>.+?) (?P<side>higher up than|sitting above|lower down than|beneath) the (?P<lm>.+)$",
        ),
        lambda o, m: beyond(o, m["np"], m["side"], one_landmark(o, m["lm"])),
    ),
    (
        "attribute",
        (r"^the (?P<colour>\w+) coloured (?P<shape>\w+)$",),
        lambda o, m: only(o, f"{m['colour']} {m['shape']}"),
    ),
    (
        "attribute",
        (r"^the only (?P<np>.+)$", r"^the (?P<np>.+) in this image$", r"^the (?P<np>.+)$"),
        lambda o, m: only(o, m["np"]),
    ),
]


def resolve(sentence: str, objects: list[dict]) -> tuple[str, dict]:
    """(kind, object) by the first reading whose pattern fits the sentence."""
    for kind, patterns, pick in READINGS:
        for pattern in patterns:
            if found := re.match(pattern, sentence):
                return kind, pick(objects, found)
    raise AssertionError(f"no reading of {sentence!r}")


def test_every_sentence_picks_out_exactly_its_object(relational_root):
    """Re-resolve every sentence against what the image and annotations show, independently of the generator's
    own reasoning: e.g. "the X furthest to the left" is the leftmost of the look-alikes by a clear margin."""
    refer = load(relational_root[0])
    image_ids = {ref["image_id"] for ref in refer.refs}
    objects = relational_set.scene_objects(refer, relational_set.RELATIONAL_SCENES.colours, image_ids)
    checked = Counter()
    for ref in refer.refs:
        things = scene(refer, ref["image_id"], objects[ref["image_id"]])
        for sentence in ref["sentences"]:
            kind, picked = resolve(sentence["sent"], things)
            assert picked["ann_id"] == ref["ann_id"], (sentence["sent"], ref["ann_id"], things)
            assert kind == sentence["kind"], sentence["sent"]
            checked[kind] += 1
    assert sum(checked.values()) > 300 and all(checked[k] for k in ("spatial", "ordinal", "comparative"))


def test_colour_shape_reader_takes_the_first_noun_phrase():
    colours = COLOUR_WORDS
    read = relational_set.named_colour_and_shape
    assert read("the large circle closest to the white square", colours) == (None, "circle")
    assert read("the white shape beside the orange circle", colours) == ("white", None)
    assert read("of the two pink diamonds the upper one", colours) == ("pink", "diamond")
    assert read("the larger one", colours) == (None, None)
    assert read("the white coloured circle", colours) == ("white", "circle")
