"""`data.flips`: mirrored training samples with their side words swapped, drawn per (seed, epoch, ref); the
training loader applies them to the very samples it would read unmirrored."""

from __future__ import annotations

import pytest
import torch

from jrnet.config import ConfigError, load_config
from jrnet.mirror import Mirrors, TokenMirror
from jrnet.mix import Mix
from jrnet.stream import LoaderPlan, train_loader
from jrnet.vocab import Vocab

WORDS = ["<pad>", "<unk>", "the", "second", "circle", "from", "left", "right", "leftmost", "top", "bottom", "lower"]
WORDS += ["upper", "higher", "beneath", "above", "below"]


def ids(vocab: Vocab, text: str) -> torch.Tensor:
    return torch.tensor([vocab.ids[w] for w in text.split()] + [0, 0])


def words(vocab: Vocab, tokens: torch.Tensor) -> str:
    return " ".join(vocab.words[t] for t in tokens.tolist() if t)


@pytest.mark.parametrize(
    ("flip", "sentence", "mirrored"),
    [
        ("horizontal", "the second circle from the left", "the second circle from the right"),
        ("horizontal", "the top right circle", "the top left circle"),
        ("vertical", "the top right circle", "the bottom right circle"),
        ("vertical", "the lower circle", "the upper circle"),
        ("vertical", "the higher circle", "the lower circle"),
        ("vertical", "the circle beneath the circle above", "the circle above the circle below"),
    ],
)
def test_side_words_are_swapped_for_their_mirror_words(flip, sentence, mirrored):
    vocab = Vocab(WORDS)
    mirror = TokenMirror.build(vocab, flip)
    assert words(vocab, mirror.ids[ids(vocab, sentence)]) == mirrored
    assert not mirror.blocked[ids(vocab, sentence)].any()


def test_a_sentence_whose_mirror_word_is_not_in_the_vocabulary_is_never_mirrored():
    """ "leftmost" without "rightmost" in the vocabulary: over 64 refs, that sentence's sample is never mirrored,
    while one without it is mirrored for about half of them."""
    vocab = Vocab(WORDS)
    mirrors = Mirrors(("horizontal",), vocab, seed=0)
    image, mask = torch.arange(2 * 3 * 4, dtype=torch.uint8).view(2, 3, 4)[:1].expand(3, 3, 4), torch.eye(3, 4) > 0
    flipped = {"blocked": 0, "free": 0}
    for ref in range(64):
        for name, text in (("blocked", "the leftmost circle"), ("free", "the left circle")):
            sample = {"image": image, "mask": mask, "tokens": ids(vocab, text), "ref_id": torch.tensor(ref)}
            out = mirrors(sample, epoch=0)
            mirrored = not torch.equal(out["image"], image)
            flipped[name] += mirrored
            assert torch.equal(out["mask"], mask.flip(-1) if mirrored else mask)
            if name == "free":
                assert words(vocab, out["tokens"]) == ("the right circle" if mirrored else "the left circle")
    assert flipped["blocked"] == 0 and 20 <= flipped["free"] <= 44, flipped


def test_training_loader_mirrors_the_samples_it_would_read_and_nothing_else(synthetic_shards, monkeypatch):
    """The same refs in the same order with and without `data.flips`; each sample either as it was or mirrored
    (image, mask and side words together), horizontally or vertically or both, each for some of the samples."""
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    base = ["data.workers=0", "train.global_batch_size=4", "model.image_size=32", "data.max_words=25"]
    plain_cfg = load_config("tiny", base)
    mirror_cfg = load_config("tiny", [*base, "data.flips=[horizontal, vertical]"])
    data = Mix.open(synthetic_shards, plain_cfg)
    plan = LoaderPlan.make(plain_cfg, data.train_samples("train"), 1)
    plain, mirrored = (list(train_loader(cfg, data, plan, epoch=0)) for cfg in (plain_cfg, mirror_cfg))
    vocab = data.vocab
    horizontal, vertical = (TokenMirror.build(vocab, flip).ids for flip in ("horizontal", "vertical"))
    seen = set()
    for a, b in zip(plain, mirrored, strict=True):
        assert torch.equal(a["ref_id"], b["ref_id"])
        for i in range(len(a["ref_id"])):
            candidates = {
                (h, v): (
                    a["image"][i].flip([-1] * h + [-2] * v) if h or v else a["image"][i],
                    a["mask"][i].flip([-1] * h + [-2] * v) if h or v else a["mask"][i],
                    (vertical if v else torch.arange(len(vocab.words)))[
                        (horizontal if h else torch.arange(len(vocab.words)))[a["tokens"][i]]
                    ],
                )
                for h in (0, 1)
                for v in (0, 1)
            }
            match = [
                key
                for key, (image, mask, tokens) in candidates.items()
                if torch.equal(image, b["image"][i])
                and torch.equal(mask, b["mask"][i])
                and torch.equal(tokens, b["tokens"][i])
            ]
            assert match, f"ref {int(a['ref_id'][i])}: not the plain sample, mirrored or not"
            seen.update(match)
    assert {(1, 0), (0, 1), (0, 0)} <= seen, seen


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.flips=[diagonal]"], "data.flips"),
        (["data.flips=[horizontal]", "data.feature_cache=true"], "data.flips mirrors decoded images"),
    ],
)
def test_bad_flips_are_a_config_error_naming_the_field(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config("tiny", overrides)
