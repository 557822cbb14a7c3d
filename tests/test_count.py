"""Side counts (model.side_counts, train.count_weight): the counts and the loss by hand, the fusion's input, what the
loss teaches, the config."""

import math

import pytest
import torch
import torch.nn.functional as F
from test_model import small_config

from jrnet.cmmlf import build_fusion
from jrnet.config import ConfigError, load_config
from jrnet.count import SideCounts, count_loss, side_counts
from jrnet.model import JRNet


def test_side_counts_are_the_mass_strictly_on_each_side_of_every_cell():
    """Two objects of unit mass in a 3 x 4 grid, at (row 0, column 1) and (row 2, column 3): a cell in column 2 has
    one object to its left and one to its right, a cell in column 1 none to its left (its own is not counted)."""
    mass = torch.zeros(1, 1, 3, 4)
    mass[0, 0, 0, 1] = mass[0, 0, 2, 3] = 1.0
    left, right, above, below = side_counts(mass)[0]
    assert torch.equal(left, torch.tensor([[0.0, 0, 1, 1]]).expand(3, 4))
    assert torch.equal(right, torch.tensor([[2.0, 1, 1, 0]]).expand(3, 4))
    assert torch.equal(above, torch.tensor([[0.0], [1], [1]]).expand(3, 4))
    assert torch.equal(below, torch.tensor([[1.0], [1], [0]]).expand(3, 4))


def test_side_counts_keep_each_map_apart():
    """Map k's counts are channels k, K + k, 2K + k, 3K + k, computed from map k alone."""
    mass = torch.rand(2, 3, 5, 6)
    counts = side_counts(mass)
    for k in range(3):
        alone = side_counts(mass[:, k : k + 1])
        torch.testing.assert_close(counts[:, k::3], alone)


def test_the_count_match_peaks_where_the_count_equals_the_sentences_count():
    """Mass 1/H in every cell of a H x W level gives `left` = column index; the sentence's expected count held at 2
    makes the match exp(-(x - 2)^2): 1 in column 2 only."""
    h, w, c = 4, 5, 6
    counter = SideCounts(c, maps=1)
    torch.nn.init.zeros_(counter.objects.weight)
    torch.nn.init.constant_(counter.objects.bias, math.log(math.expm1(1 / h)))  # softplus(bias) = 1/H
    torch.nn.init.zeros_(counter.expected.weight)
    torch.nn.init.constant_(counter.expected.bias, 2.0)
    with torch.no_grad():
        out, mass = counter(torch.randn(1, c, h, w), torch.randn(1, c))
    torch.testing.assert_close(mass, torch.full((1, 1, h, w), 1 / h))
    assert out.shape == (1, counter.out_channels, h, w) == (1, 8, h, w)
    torch.testing.assert_close(out[0, 0], torch.arange(w, dtype=torch.float32).expand(h, w))
    torch.testing.assert_close(out[0, 4], torch.exp(-((torch.arange(w) - 2.0) ** 2)).expand(h, w))


def test_cmmlf_hands_the_fusion_the_side_counts_of_each_level_matched_with_its_sentence():
    """With the gates at 1/2 (Y^i = 2 X_v^i), the fusion reads [Y^i ; Y^i * s^i ; SideCounts_i(Y^i * s^i, s^i)]."""
    torch.manual_seed(0)
    c, maps = 8, 2
    fusion = build_fusion("cmmlf", small_config(channels=c, cmmlf_product=True, side_counts=maps)).eval()
    for gate in fusion.gates:
        torch.nn.init.zeros_(gate[0].weight)
    assert fusion.fuse.block[0].in_channels == 2 * c + 8 * maps
    visual, sentence = [torch.randn(2, c, 5, 6) for _ in range(3)], [torch.randn(2, c) for _ in range(3)]
    seen = []
    fusion.fuse.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    with torch.no_grad():
        fusion(visual, sentence)
        for level, (x, s, fused_input) in enumerate(zip(visual, sentence, seen[0], strict=True)):
            matched = 2 * x * s[:, :, None, None]
            counter = fusion.counts[level]
            counts = side_counts(F.softplus(counter.objects(matched)))
            match = torch.exp(-((counts - counter.expected(s)[..., None, None]) ** 2))
            torch.testing.assert_close(fused_input, torch.cat([2 * x, matched, counts, match], dim=1))


def test_count_loss_asks_one_object_of_mass_inside_the_target_and_little_outside():
    """A 2 x 2 level, the target the top-left quarter of a 4 x 4 mask: map 0 holds 0.5 inside and 0.2 + 0.1 outside,
    so (0.5 - 1)^2 + 0.05 * 0.3 = 0.265; a second level with exactly 1 inside and nothing outside adds 0: mean
    0.1325. Maps other than 0 do not count."""
    target = torch.zeros(1, 4, 4)
    target[0, :2, :2] = 1
    first = torch.zeros(1, 3, 2, 2)
    first[0, 0] = torch.tensor([[0.5, 0.2], [0.1, 0.0]])
    first[0, 1:] = 7.0
    second = torch.zeros(1, 3, 2, 2)
    second[0, 0, 0, 0] = 1.0
    torch.testing.assert_close(count_loss([first, second], target), torch.tensor(0.1325))


def test_count_loss_teaches_map_0_to_put_one_unit_on_an_object_whatever_its_size():
    """Trained on its own loss, a SideCounts reading features that mark objects (channel 0 = 1 on an object) learns
    to put one unit of mass on a 2 x 2 object and on a 3 x 3 one alike: what the counts need."""
    torch.manual_seed(0)
    counter = SideCounts(channels=2, maps=1)
    optimizer = torch.optim.Adam(counter.parameters(), lr=0.05)
    features, targets = torch.zeros(2, 2, 8, 8), torch.zeros(2, 8, 8)
    features[0, 0, 1:3, 1:3] = targets[0, 1:3, 1:3] = 1
    features[1, 0, 4:7, 2:5] = targets[1, 4:7, 2:5] = 1
    features[1, 1, 4:7, 2:5] = 1  # the bigger object looks bigger
    for _ in range(300):
        optimizer.zero_grad()
        _, mass = counter(features, torch.zeros(2, 2))
        count_loss([mass], targets).backward()
        optimizer.step()
    _, mass = counter(features, torch.zeros(2, 2))
    inside = (mass[:, 0] * targets).sum((1, 2))
    torch.testing.assert_close(inside, torch.ones(2), atol=0.05, rtol=0)
    assert mass[:, 0][targets == 0].max() < 0.1 * mass[:, 0][targets == 1].min()  # background: a twentieth


def test_jrnet_with_mass_gives_the_same_logits_and_a_mass_map_per_level():
    torch.manual_seed(0)
    model = JRNet(small_config(cmmlf_product=True, side_counts=2), vocab_size=50).eval()
    words, image = torch.randint(2, 50, (2, 6)), torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        logits, masses = model(words, image, with_mass=True)
        torch.testing.assert_close(logits, model(words, image))
    assert [tuple(m.shape) for m in masses] == [(2, 2, 8, 8)] * 3


def test_count_weight_needs_side_counts_and_cmmlf():
    with pytest.raises(ConfigError, match="train.count_weight.*model.side_counts"):
        load_config("demo", ["train.count_weight=0.1"])
    with pytest.raises(ConfigError, match="train.count_weight.*model.side_counts"):
        load_config("demo", ["train.count_weight=0.1", "model.side_counts=4", "model.variant=baseline"])
    assert load_config("demo", ["train.count_weight=0.1", "model.side_counts=4"]).train.count_weight == 0.1
