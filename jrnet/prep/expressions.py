"""Referring expressions of the generated dataset: sentences that single out one shape of a scene."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from jrnet.prep.scenes import MARGIN, ORDINALS, PLURALS, Thing


@dataclass(frozen=True)
class Expression:
    kind: str  # attribute | spatial (extremes, relations to a landmark) | ordinal | comparative
    paraphrases: tuple[str, ...]


def matches(things: Sequence[Thing], target: Thing, attrs: Sequence[str]) -> list[Thing]:
    return [t for t in things if all(t.attribute(a) == target.attribute(a) for a in attrs)]


def attribute_sets(visible: Sequence[str], allow_empty: bool = True) -> list[tuple[str, ...]]:
    """Subsets of the visible attributes, smallest first, in a fixed order."""
    start = 0 if allow_empty else 1
    return [combo for n in range(start, len(visible) + 1) for combo in itertools.combinations(visible, n)]


SAME_SIZE_WORDS = MappingProxyType({"big": "big", "small": "small"})


def noun_phrase(
    thing: Thing, attrs: Sequence[str], noun: str = "shape", size_words: Mapping[str, str] = SAME_SIZE_WORDS
) -> str:
    words = [size_words[thing.size] if "size" in attrs else "", thing.colour if "colour" in attrs else ""]
    words.append(thing.shape if "shape" in attrs else noun)
    return " ".join(word for word in words if word)


def plural_phrase(
    thing: Thing, attrs: Sequence[str], noun: str = "shapes", size_words: Mapping[str, str] = SAME_SIZE_WORDS
) -> str:
    words = [size_words[thing.size] if "size" in attrs else "", thing.colour if "colour" in attrs else ""]
    words.append(PLURALS[thing.shape] if "shape" in attrs else noun)
    return " ".join(word for word in words if word)


@dataclass(frozen=True)
class Phrasing:
    """The words and sentence templates of one generated set. DEMO_PHRASING is the CPU demo's; a held-out set
    passes its own, so a model is checked on phrasings it never saw. Placeholders: {np} a noun phrase ("small
    red square"), {one} the same with "one" for a missing shape, {nps}/{ones} plurals, {lm} a landmark's noun
    phrase, {nth} an ordinal word, {side} left/right/top/bottom, {shape}/{colour} single words."""

    size_words: Mapping[str, str]  # size -> adjective
    unique: tuple[str, ...]  # attribute-only: {one}, {np}
    colour_shape: tuple[str, ...]  # extra attribute-only ones when colour + shape (no size) single it out
    extremes: Mapping[str, tuple[str, ...]]  # direction -> {np}
    pair_extremes: Mapping[str, tuple[str, ...]]  # direction -> {nps}: only when exactly two look alike
    ordinals: tuple[str, ...]  # {nth} {np} {side}, said from both ends
    middles: Mapping[str, tuple[str, ...]]  # "left" (across) or "top" (down) -> {np}: the middle of three
    comparatives: Mapping[str, tuple[str, ...]]  # target's size -> {ones}, {one}: two look-alikes
    relations: Mapping[str, tuple[str, ...]]  # direction -> {np}, {lm}
    nearest: tuple[str, ...]  # {np}, {lm}: the look-alike clearly closest to a landmark
    max_words: int = 12  # longer paraphrases are dropped


def unique_descriptions(things: Sequence[Thing], target: Thing, visible: Sequence[str]) -> list[tuple[str, ...]]:
    """Minimal attribute sets that single out the target."""
    found: list[tuple[str, ...]] = []
    for attrs in attribute_sets(visible, allow_empty=False):
        if len(matches(things, target, attrs)) == 1 and not any(set(f) <= set(attrs) for f in found):
            found.append(attrs)
    return found


DEMO_PHRASING = Phrasing(
    size_words=SAME_SIZE_WORDS,
    unique=("the {one}", "{np}", "the {np} in the picture"),
    colour_shape=("the {shape} that is {colour}",),
    extremes=MappingProxyType(
        {
            "left": ("the {np} on the left", "the leftmost {np}", "left {np}"),
            "right": ("the {np} on the right", "the rightmost {np}", "right {np}"),
            "top": ("the top {np}", "the {np} at the top", "the highest {np}"),
            "bottom": ("the bottom {np}", "the {np} at the bottom", "the lowest {np}"),
        }
    ),
    pair_extremes=MappingProxyType({}),
    ordinals=("the {nth} {np} from the {side}",),
    middles=MappingProxyType({}),
    comparatives=MappingProxyType(
        {
            "big": ("the bigger of the two {ones}", "the larger {one}"),
            "small": ("the smaller of the two {ones}", "the smaller {one}"),
        }
    ),
    relations=MappingProxyType(
        {
            "left": ("the {np} left of the {lm}", "the {np} to the left of the {lm}"),
            "right": ("the {np} right of the {lm}", "the {np} to the right of the {lm}"),
            "top": ("the {np} above the {lm}", "the {np} over the {lm}"),
            "bottom": ("the {np} below the {lm}", "the {np} under the {lm}"),
        }
    ),
    nearest=(),
)


def unique_expressions(
    things: Sequence[Thing], target: Thing, visible: Sequence[str], phrasing: Phrasing = DEMO_PHRASING
) -> list[Expression]:
    expressions = []
    for attrs in unique_descriptions(things, target, visible):
        one = noun_phrase(target, attrs, "one", phrasing.size_words)
        phrase = noun_phrase(target, attrs, "shape", phrasing.size_words)
        paraphrases = [t.format(one=one, np=phrase) for t in phrasing.unique]
        if "shape" in attrs and "colour" in attrs and "size" not in attrs:
            paraphrases += [t.format(shape=target.shape, colour=target.colour) for t in phrasing.colour_shape]
        expressions.append(Expression("attribute", tuple(paraphrases)))
    return expressions


# direction -> (coordinate, sign: +1 when the direction means a smaller coordinate)
DIRECTIONS = MappingProxyType({"left": ("cx", 1), "right": ("cx", -1), "top": ("cy", 1), "bottom": ("cy", -1)})


def _position(thing: Thing, direction: str) -> float:
    """Coordinate along a direction, oriented so that smaller means further that way."""
    axis, sign = DIRECTIONS[direction]
    return sign * getattr(thing, axis)


def is_extreme(group: Sequence[Thing], target: Thing, direction: str) -> bool:
    here = _position(target, direction)
    return all(here + MARGIN <= _position(other, direction) for other in group if other is not target)


def extreme_expressions(
    things: Sequence[Thing], target: Thing, visible: Sequence[str], phrasing: Phrasing = DEMO_PHRASING
) -> list[Expression]:
    expressions = []
    for attrs in attribute_sets(visible):
        group = matches(things, target, attrs)
        if len(group) < 2:
            continue
        phrase = noun_phrase(target, attrs, "shape", phrasing.size_words)
        plural = plural_phrase(target, attrs, "shapes", phrasing.size_words)
        for direction, templates in phrasing.extremes.items():
            if is_extreme(group, target, direction):
                if len(group) == 2:  # "of the two circles the left one" says how many there are: only for pairs
                    templates = templates + phrasing.pair_extremes.get(direction, ())
                expressions.append(Expression("spatial", tuple(t.format(np=phrase, nps=plural) for t in templates)))
    return expressions


def ordinal_expressions(
    things: Sequence[Thing], target: Thing, visible: Sequence[str], phrasing: Phrasing = DEMO_PHRASING
) -> list[Expression]:
    """'the second circle from the left' in groups of 3+ with clearly separated positions."""
    expressions = []
    for attrs in attribute_sets(visible):
        group = matches(things, target, attrs)
        if len(group) < 3:
            continue
        phrase = noun_phrase(target, attrs, "shape", phrasing.size_words)
        for direction in ("left", "top"):
            ranked = sorted(group, key=lambda t, d=direction: _position(t, d))
            positions = [_position(t, direction) for t in ranked]
            if any(b - a < MARGIN for a, b in itertools.pairwise(positions)):
                continue
            rank = ranked.index(target)
            opposite = {"left": "right", "top": "bottom"}[direction]
            ends = ((ORDINALS[rank], direction), (ORDINALS[len(ranked) - 1 - rank], opposite))
            paraphrases = [t.format(nth=nth, np=phrase, side=side) for nth, side in ends for t in phrasing.ordinals]
            expressions.append(Expression("ordinal", tuple(paraphrases)))
            if len(ranked) == 3 and rank == 1 and direction in phrasing.middles:
                expressions.append(
                    Expression("ordinal", tuple(t.format(np=phrase) for t in phrasing.middles[direction]))
                )
    return expressions


def comparative_expressions(
    things: Sequence[Thing], target: Thing, visible: Sequence[str], phrasing: Phrasing = DEMO_PHRASING
) -> list[Expression]:
    """'the bigger of the two red ones' when exactly two look-alikes differ in size."""
    if "size" not in visible:
        return []
    expressions = []
    for attrs in attribute_sets([a for a in visible if a != "size"]):
        group = matches(things, target, attrs)
        if len(group) != 2 or group[0].size == group[1].size:
            continue
        ones = plural_phrase(target, attrs, "ones" if attrs else "shapes")
        one = noun_phrase(target, attrs, "one")
        paraphrases = tuple(t.format(ones=ones, one=one) for t in phrasing.comparatives[target.size])
        expressions.append(Expression("comparative", paraphrases))
    return expressions


def _landmarks(things: Sequence[Thing], target: Thing, visible: Sequence[str]) -> list[tuple[Thing, tuple[str, ...]]]:
    """Other objects that a few attributes single out, with their first minimal description."""
    return [(lm, found[0]) for lm in things if lm is not target and (found := unique_descriptions(things, lm, visible))]


def relation_expressions(
    things: Sequence[Thing], target: Thing, visible: Sequence[str], phrasing: Phrasing = DEMO_PHRASING
) -> list[Expression]:
    """'the circle left of the blue square': the only look-alike on that side of a unique landmark."""
    landmarks = _landmarks(things, target, visible)
    expressions = []
    for attrs in attribute_sets(visible, allow_empty=False):
        group = matches(things, target, attrs)
        if len(group) < 2:
            continue
        for landmark, landmark_attrs in landmarks:
            if landmark in group:
                continue
            landmark_phrase = noun_phrase(landmark, landmark_attrs, "shape", phrasing.size_words)
            for direction, templates in phrasing.relations.items():
                side = _position(landmark, direction)
                target_on_side = _position(target, direction) + MARGIN <= side
                others_opposite = all(_position(o, direction) >= side + MARGIN for o in group if o is not target)
                if target_on_side and others_opposite:
                    phrase = noun_phrase(target, attrs, "shape", phrasing.size_words)
                    paraphrases = tuple(t.format(np=phrase, lm=landmark_phrase) for t in templates)
                    expressions.append(Expression("spatial", paraphrases))
    return expressions


NEAREST_RATIO = 1.5  # every other look-alike is at least this much further from the landmark (centre to centre)


def is_nearest(group: Sequence[Thing], target: Thing, landmark: Thing) -> bool:
    def distance(thing: Thing) -> float:
        return math.hypot(thing.cx - landmark.cx, thing.cy - landmark.cy)

    return all(distance(other) >= NEAREST_RATIO * distance(target) for other in group if other is not target)


def nearest_expressions(
    things: Sequence[Thing], target: Thing, visible: Sequence[str], phrasing: Phrasing = DEMO_PHRASING
) -> list[Expression]:
    """'the circle closest to the white square': the look-alike clearly nearest a unique landmark."""
    if not phrasing.nearest:
        return []
    expressions = []
    landmarks = _landmarks(things, target, visible)
    for attrs in attribute_sets(visible, allow_empty=False):
        group = matches(things, target, attrs)
        if len(group) < 2:
            continue
        phrase = noun_phrase(target, attrs, "shape", phrasing.size_words)
        for landmark, landmark_attrs in landmarks:
            if landmark not in group and is_nearest(group, target, landmark):
                landmark_phrase = noun_phrase(landmark, landmark_attrs, "shape", phrasing.size_words)
                paraphrases = tuple(t.format(np=phrase, lm=landmark_phrase) for t in phrasing.nearest)
                expressions.append(Expression("spatial", paraphrases))
    return expressions


ExpressionKind = Callable[[Sequence[Thing], Thing, Sequence[str], Phrasing], list[Expression]]
EXPRESSION_KINDS: tuple[ExpressionKind, ...] = (
    unique_expressions,
    extreme_expressions,
    ordinal_expressions,
    comparative_expressions,
    relation_expressions,
    nearest_expressions,  # none in the demo's phrasing, so its draws are unchanged
)


def fitting(expressions: Sequence[Expression], max_words: int) -> list[Expression]:
    """The expressions with their over-long paraphrases dropped (and those left with none)."""
    kept = [Expression(e.kind, tuple(p for p in e.paraphrases if len(p.split()) <= max_words)) for e in expressions]
    return [e for e in kept if e.paraphrases]


def referring_sentences(
    rng: np.random.Generator,
    things: Sequence[Thing],
    target: Thing,
    visible: Sequence[str],
    phrasing: Phrasing = DEMO_PHRASING,
) -> Expression | None:
    """1-3 paraphrases that single out the target; the kind of expression is drawn uniformly first so
    spatial, ordinal, comparative and relational ones are as common as plain attribute ones."""
    by_kind = [
        found
        for kind in EXPRESSION_KINDS
        if (found := fitting(kind(things, target, visible, phrasing), phrasing.max_words))
    ]
    if not by_kind:
        return None
    candidates = by_kind[int(rng.integers(len(by_kind)))]
    expression = candidates[int(rng.integers(len(candidates)))]
    count = min(int(rng.integers(1, 4)), len(expression.paraphrases))
    picked = rng.choice(len(expression.paraphrases), size=count, replace=False)
    return Expression(expression.kind, tuple(expression.paraphrases[i] for i in sorted(picked)))


def refer_sentence(rng: np.random.Generator, text: str, sent_id: int, kind: str) -> dict:
    """A sentence record as in refs(unc).p (raw as typed, sent lower-cased, tokens split), plus its kind."""
    raw = text[0].upper() + text[1:] if rng.random() < 0.5 else text
    raw += "." if rng.random() < 0.3 else ""
    return {"tokens": text.split(), "raw": raw, "sent": text, "sent_id": sent_id, "kind": kind}
