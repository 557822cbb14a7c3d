"""Tokenisation, the vocabulary and GloVe vectors: one definition shared by sharding, training and predict.

Words are lower-cased and only alphabetic tokens (`str.isalpha()`) are kept, as in the paper; id 0 is
`<pad>`, id 1 is `<unk>`, then words by descending train-split frequency with ties in alphabetical order.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1


def tokenize(text: str) -> list[str]:
    """Lower-cased alphabetic words of free text ("The 2nd man's hat," -> the, man, s, hat)."""
    return [word for word in re.findall(r"\w+", text.lower()) if word.isalpha()]


def sentence_words(sentence: Mapping) -> list[str]:
    """Words of a refer sentence: its `tokens` list when present, else its `sent` (or `raw`) text."""
    tokens = sentence.get("tokens")
    if tokens:
        return [word for word in (str(token).lower() for token in tokens) if word.isalpha()]
    return tokenize(sentence.get("sent") or sentence.get("raw") or "")


def truncate(words: Sequence[str], max_words: int | None) -> tuple[list[str], bool]:
    """The first `max_words` words and whether anything was cut off."""
    if max_words is None or len(words) <= max_words:
        return list(words), False
    return list(words[:max_words]), True


class Vocab:
    """Word <-> id mapping with `<pad>` = 0 and `<unk>` = 1."""

    def __init__(self, words: Sequence[str]):
        if list(words[:2]) != [PAD, UNK]:
            raise ValueError(f"a vocabulary must start with {PAD!r}, {UNK!r}; got {list(words[:2])}")
        self.words: list[str] = list(words)
        self.ids: dict[str, int] = {word: i for i, word in enumerate(self.words)}
        if len(self.ids) != len(self.words):
            raise ValueError("a vocabulary may not list a word twice")

    @classmethod
    def build(cls, word_lists: Iterable[Sequence[str]]) -> Vocab:
        """Vocabulary of every word seen, most frequent first, ties alphabetical (deterministic)."""
        counts = Counter(word for words in word_lists for word in words)
        counts.pop(PAD, None)
        counts.pop(UNK, None)
        ranked = sorted(counts, key=lambda word: (-counts[word], word))
        return cls([PAD, UNK, *ranked])

    @classmethod
    def from_file(cls, path: str | Path) -> Vocab:
        """Read a `vocab.json` (`{"words": [...]}`) written by `pipeline/shard.py`."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as error:
            raise ValueError(f"{path}: not a vocabulary file ({error})") from error
        return cls.from_json(text, str(path))

    @classmethod
    def from_json(cls, text: str, source: str) -> Vocab:
        """A `vocab.json`'s text; `source` names it in the error."""
        try:
            words = json.loads(text)["words"]
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{source}: not a vocabulary file ({error})") from error
        return cls(words)

    def to_json(self) -> str:
        return json.dumps({"words": self.words}, ensure_ascii=False) + "\n"

    def encode_words(self, words: Iterable[str]) -> list[int]:
        return [self.ids.get(word, UNK_ID) for word in words]

    def encode(self, text: str, max_words: int | None = None) -> list[int]:
        """Token ids of free text, tokenised exactly as the shards were (optionally truncated)."""
        words, _ = truncate(tokenize(text), max_words)
        return self.encode_words(words)

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: object) -> bool:
        return word in self.ids


class GloveFormatError(ValueError):
    """A GloVe text file that cannot be read as `word v1 ... vdim` lines."""


@dataclass(frozen=True)
class GloveMatch:
    vectors: np.ndarray  # float32 [len(words), dim]; zeros where a word is missing
    found: np.ndarray  # bool [len(words)]


def read_glove(path: str | Path, words: Sequence[str], dim: int | None = None) -> GloveMatch:
    """Stream a GloVe text file and keep only the rows of `words`.

    The file is scanned as bytes and only lines whose first field is a wanted word are parsed, so the
    5 GB 840B file costs one sequential read. Its "words" may contain spaces (". . ."): the vector is the
    last `dim` fields and the word everything before. `dim` defaults to the first line's field count - 1.
    """
    wanted = {word.encode("utf-8"): i for i, word in enumerate(words) if word != PAD}  # pad stays zero
    found = np.zeros(len(words), dtype=bool)
    vectors: np.ndarray | None = None
    with open(path, "rb") as lines:
        for number, line in enumerate(lines, start=1):
            if vectors is None:
                dim = dim or _glove_dim(line, path)
                vectors = np.zeros((len(words), dim), dtype=np.float32)
                if _is_word2vec_header(line):
                    continue
            head = line.split(maxsplit=1)[0] if line.strip() else b""
            if head not in wanted:
                continue
            word, vector = _parse_glove_line(line, dim, path, number)
            row = wanted.get(word)
            if row is not None and not found[row]:  # the first entry of a duplicated word wins
                vectors[row] = vector
                found[row] = True
    if vectors is None:
        raise GloveFormatError(f"{path}: empty GloVe file")
    return GloveMatch(vectors=vectors, found=found)


def load_glove_text(path: str | Path, words: Sequence[str]) -> np.ndarray:
    """float32 [len(words), dim] GloVe rows of `words`; missing words (and `<pad>`) are zero rows."""
    return read_glove(path, words).vectors


def _is_word2vec_header(line: bytes) -> bool:
    fields = line.split()
    return len(fields) == 2 and all(field.isdigit() for field in fields)


def _glove_dim(first_line: bytes, path: str | Path) -> int:
    fields = first_line.split()
    if _is_word2vec_header(first_line):
        return int(fields[1])
    if len(fields) < 2:
        raise GloveFormatError(f"{path}:1: expected 'word v1 v2 ...', got {first_line[:80]!r}")
    _parse_glove_line(first_line, len(fields) - 1, path, 1)
    return len(fields) - 1


def _parse_glove_line(line: bytes, dim: int, path: str | Path, number: int) -> tuple[bytes, np.ndarray]:
    fields = line.split()
    if len(fields) < dim + 1:
        raise GloveFormatError(f"{path}:{number}: expected a word and {dim} numbers, got {len(fields)} fields")
    try:
        vector = np.array([float(value) for value in fields[-dim:]], dtype=np.float32)
    except ValueError as error:
        raise GloveFormatError(f"{path}:{number}: not a GloVe vector line ({error})") from error
    return b" ".join(fields[:-dim]), vector
