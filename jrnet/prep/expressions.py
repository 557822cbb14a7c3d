"""Referring expressions of the generated dataset: sentences that single out one shape of a scene."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
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
        expressions.append(Expression("attribute", tuple(paraphrases)))
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
                expressions.append(Expression("spatial", tuple(t.format(np=phrase) for t in templates)))
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
                    expressions.append(Expression("spatial", paraphrases))
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
) -> Expression | None:
    """1-3 paraphrases that single out the target; the kind of expression is drawn uniformly first so
    spatial, ordinal, comparative and relational ones are as common as plain attribute ones."""
    by_kind = [found for kind in EXPRESSION_KINDS if (found := kind(things, target, visible))]
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
