"""JRNet: paper configs, frozen backbone, fused vs eager attention, padding, every ablation, weight loading."""

import warnings
from unittest.mock import patch

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from jrnet.backbone import LEVELS, Backbone, WeightsError, build_trunk, coordinate_maps, load_trunk_weights
from jrnet.cmmlf import CMMLF, build_fusion
from jrnet.config import VARIANTS, ConfigError, ModelConfig, load_config
from jrnet.model import JRNet, mask_loss

warnings.filterwarnings("ignore", message=".*random weights.*")
warnings.filterwarnings("ignore", message="no GloVe vectors.*")


def small_config(**overrides) -> ModelConfig:
    base = dict(
        backbone="resnet18",
        image_size=64,
        feature_size=8,
        channels=32,
        word_dim=16,
        jrm_heads=4,
        jrm_ffn=64,
        decoder_channels=32,
        aspp_rates=(1, 2, 3),
        output_stride=32,
        jrm_dropout=0.0,
    )
    base.update(overrides)
    return ModelConfig(**base)


def tokens(batch: int, lengths: list[int], total: int = 10, vocab: int = 50) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    t = torch.randint(2, vocab, (batch, total), generator=g)
    for i, n in enumerate(lengths):
        t[i, n:] = 0
    return t


@pytest.mark.parametrize("name,size,tokens_side", [("paper_448", 448, 14), ("paper_576", 576, 18)])
def test_paper_config_shapes(name, size, tokens_side):
    cfg = load_config(name)
    assert cfg.model.image_size == size and cfg.model.feature_size == tokens_side
    model = JRNet(cfg.model, vocab_size=100).eval()
    seen = {}
    model.jrm.encoders[0].register_forward_hook(lambda m, inp, out: seen.update(n=inp[0].shape[1]))
    with torch.no_grad():
        logits = model(tokens(1, [7], total=cfg.data.max_words), torch.randn(1, 3, size, size))
    assert logits.shape == (1, 1, size, size)
    assert seen["n"] == tokens_side * tokens_side + cfg.data.max_words  # HW visual tokens + T words
    head = sum(p.numel() for n, p in model.named_parameters() if not n.startswith(("backbone.trunk", "text.embedding")))
    assert abs(head / 1e6 - 80.24) / 80.24 < 0.03  # the authors' head, measured from their code


@pytest.mark.parametrize("train_called", [False, True], ids=["as_built", "after_train"])
def test_frozen_backbone_only_head_trains(train_called):
    """As built (the trainer's first steps come before any train() / eval() call) and after model.train()."""
    torch.manual_seed(0)
    model = JRNet(small_config(), vocab_size=50)
    if train_called:
        model.train()
    assert model.training
    trunk_before = {k: v.clone() for k, v in model.backbone.trunk.state_dict().items()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    loss = mask_loss(model(tokens(2, [3, 5]), torch.randn(2, 3, 64, 64)), torch.rand(2, 64, 64) > 0.5)
    loss.backward()
    opt.step()
    assert all(p.grad is None for p in model.backbone.trunk.parameters())
    assert not model.backbone.trunk.training  # BN in eval mode even when the model trains
    for k, v in model.backbone.trunk.state_dict().items():
        assert torch.equal(v, trunk_before[k]), f"{k} changed"  # weights and BN running stats
    assert all(p.grad is not None for p in model.backbone.project.parameters())


def test_sdpa_matches_eager_with_padding():
    torch.manual_seed(0)
    fused = JRNet(small_config(attention="sdpa"), vocab_size=50).eval()
    eager = JRNet(small_config(attention="eager"), vocab_size=50).eval()
    eager.load_state_dict(fused.state_dict())
    t, x = tokens(3, [2, 6, 10]), torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(fused(t, x), eager(t, x), atol=1e-5, rtol=1e-5)


class _AtenDtypes(TorchDispatchMode):
    """Records the dtype of the first tensor argument of every aten op whose name contains `part`."""

    def __init__(self, part: str):
        super().__init__()
        self.part, self.seen = part, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if self.part in func.__name__:
            self.seen.append((func.__name__, args[0].dtype))
        return func(*args, **(kwargs or {}))


def test_jrm_attends_in_fp32_on_cpu_under_bf16_autocast_and_returns_bf16():
    # The CPU flash kernel takes 4-5x as long in bf16 as in fp32 at JRM's sizes (BENCHMARKS.md 8p)
    torch.manual_seed(0)
    model = JRNet(small_config(attention="sdpa"), vocab_size=50)
    t, x = tokens(2, [3, 5]), torch.randn(2, 3, 64, 64)
    with _AtenDtypes("scaled_dot_product") as forward_ops, torch.autocast("cpu", dtype=torch.bfloat16):
        levels, _ = model.backbone(x)
        words, valid = model.text(t)
        visual, _ = model.jrm(levels, words.to(levels[0].dtype), valid)[0]
    with _AtenDtypes("scaled_dot_product") as backward_ops:
        visual.float().sum().backward()
    assert levels[0].dtype == visual.dtype == torch.bfloat16  # the rest of the model stays in bf16
    assert forward_ops.seen and {dtype for _, dtype in forward_ops.seen} == {torch.float32}
    assert any("backward" in name for name, _ in backward_ops.seen)
    assert {dtype for _, dtype in backward_ops.seen} == {torch.float32}


def test_padding_words_do_not_change_output():
    torch.manual_seed(0)
    model = JRNet(small_config(), vocab_size=50).eval()
    t, x = tokens(2, [4, 6], total=8), torch.randn(2, 3, 64, 64)
    padded = torch.cat([t, torch.zeros(2, 9, dtype=torch.long)], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(model(t, x), model(padded, x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_fully_padded_sentence_is_finite(attention):
    model = JRNet(small_config(attention=attention), vocab_size=50).train()
    t = torch.zeros(2, 10, dtype=torch.long)
    logits = model(t, torch.randn(2, 3, 64, 64))
    loss = mask_loss(logits, torch.rand(2, 64, 64) > 0.5)
    loss.backward()
    assert torch.isfinite(logits).all() and torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def assert_gradients(model: torch.nn.Module) -> None:
    """Every trainable parameter got a finite, non-zero gradient; every frozen one got none."""
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable
    for name, p in trainable:
        assert p.grad is not None, f"trainable {name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{name}: all-zero gradient"
    for name, p in model.named_parameters():
        if not p.requires_grad:
            assert p.grad is None, f"frozen {name} got a gradient"


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_variant_trains_all_trainable_params_and_no_frozen_one(variant):
    torch.manual_seed(0)
    glove = torch.randn(50, 16).numpy()
    model = JRNet(small_config(variant=variant), vocab_size=50, glove=glove).train()
    loss = mask_loss(model(tokens(2, [3, 7]), torch.randn(2, 3, 64, 64)), torch.rand(2, 64, 64) > 0.5)
    loss.backward()
    assert torch.isfinite(loss)
    assert_gradients(model)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    trunk = {f"backbone.trunk.{n}" for n, _ in model.backbone.trunk.named_parameters()}
    use_glove = VARIANTS[variant][2]
    assert frozen == trunk | ({"text.embedding.weight"} if use_glove else set())  # the paper's frozen parts
    assert (model.jrm is None) == (VARIANTS[variant][0] == "none")


@pytest.mark.parametrize("layers", [1, 2, 3, 4])
def test_jrm_layers_count_and_shared_encoder_gets_gradient(layers):
    model = JRNet(small_config(jrm_layers=layers), vocab_size=50)
    assert all(len(e.layers) == layers for e in model.jrm.encoders) and len(model.jrm.encoders) == 3
    torch.manual_seed(0)
    shared = JRNet(small_config(jrm_layers=layers, jrm_shared=True), vocab_size=50)
    assert len(shared.jrm.encoders) == 1
    loss = mask_loss(shared(tokens(2, [4, 2]), torch.randn(2, 3, 64, 64)), torch.rand(2, 64, 64) > 0.5)
    loss.backward()
    assert torch.isfinite(loss)
    assert_gradients(shared)  # including every layer of the one encoder the three levels share


def test_gated_jrm_starts_as_only_cmmlf_and_its_gates_and_encoders_learn():
    """With `jrm_gate` every level enters CMMLF as X + tanh(alpha) * JRM(X), alpha = 0 at the start: the model then
    computes what "only CMMLF" computes with the same other weights. The gates learn from the first step, JRM's
    encoders once a gate is off 0, and the output then departs from only CMMLF's."""
    torch.manual_seed(0)
    gated = JRNet(small_config(jrm_gate=True), vocab_size=50).eval()
    only_cmmlf = JRNet(small_config(variant="only_cmmlf"), vocab_size=50).eval()
    only_cmmlf.load_state_dict({k: v for k, v in gated.state_dict().items() if not k.startswith("jrm.")})
    words, image = tokens(2, [3, 7]), torch.randn(2, 3, 64, 64)
    # Equal up to float rounding: JRM's pixel tokens come back as a non-contiguous view, which convolutions sum
    # in another order.
    torch.testing.assert_close(gated(words, image), only_cmmlf(words, image), rtol=0, atol=1e-6)
    gated.train()
    mask_loss(gated(words, image), torch.rand(2, 64, 64) > 0.5).backward()
    jrm = gated.jrm
    assert jrm.pixel_gates.grad.abs().min() > 0 and jrm.word_gates.grad.abs().min() > 0
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in jrm.encoders.parameters())  # tanh(0) = 0
    with torch.no_grad():
        jrm.pixel_gates.fill_(0.1)
    gated.zero_grad()
    mask_loss(gated(words, image), torch.rand(2, 64, 64) > 0.5).backward()
    assert all(p.grad.abs().sum() > 0 for p in jrm.encoders.parameters())
    assert (gated.eval()(words, image) - only_cmmlf(words, image)).abs().max() > 1e-3


@pytest.mark.parametrize("with_sentence", [False, True])
def test_cmmlf_sentence_gives_the_fusion_a_route_from_the_sentence_past_the_gates(with_sentence):
    """With every gate held at a constant (conv weights 0), eq. 4's Y^i no longer depend on the sentence: the fused
    map then changes with the sentence only when `cmmlf_sentence` hands the Conv3D fusion the tiled X_lavg^i."""
    torch.manual_seed(0)
    c = 8
    fusion = build_fusion("cmmlf", small_config(channels=c, cmmlf_sentence=with_sentence)).eval()
    for gate in fusion.gates:
        torch.nn.init.zeros_(gate[0].weight)
    assert fusion.fuse.block[0].in_channels == (2 * c if with_sentence else c)
    visual = [torch.randn(2, c, 5, 6) for _ in range(3)]
    with torch.no_grad():
        one, other = (fusion(visual, [torch.randn(2, c) for _ in range(3)]) for _ in range(2))
    assert torch.equal(one, other) != with_sentence


@pytest.mark.parametrize("with_sentence", [False, True])
def test_cmmlf_product_hands_the_fusion_each_level_times_its_sentence_vector(with_sentence):
    """With every gate at sigmoid(0) = 1/2 (conv weights 0, BN at its initial statistics), eq. 4 gives Y^i = 2 X_v^i;
    the Conv3D fusion must then read [Y^i ; tile(s^i)] (`cmmlf_sentence`) followed by Y^i * tile(s^i), channel by
    channel."""
    torch.manual_seed(0)
    c = 8
    cfg = small_config(channels=c, cmmlf_sentence=with_sentence, cmmlf_product=True)
    fusion = build_fusion("cmmlf", cfg).eval()
    for gate in fusion.gates:
        torch.nn.init.zeros_(gate[0].weight)
    visual, sentence = [torch.randn(2, c, 5, 6) for _ in range(3)], [torch.randn(2, c) for _ in range(3)]
    seen = []
    fusion.fuse.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    with torch.no_grad():
        fusion(visual, sentence)
    for x, s, fused_input in zip(visual, sentence, seen[0], strict=True):
        y, tiled = 2 * x, s[:, :, None, None].expand_as(x)
        expected = [y, tiled, y * tiled] if with_sentence else [y, y * tiled]
        torch.testing.assert_close(fused_input, torch.cat(expected, dim=1))


@pytest.mark.parametrize("source", ["paper", "authors"])
def test_cmmlf_computes_eq_3_and_4(source):
    """Eq. 3: Lambda_ij = sigmoid(BN(conv3x3([X_v^i ; tile(X_lavg^j)]))); eq. 4: Y^i = X_v^i + sum_{j != i}
    Lambda_ij * X_v^i (paper), or Lambda_ij * X_v^j (authors); the Y^i then go to the 3-D fusion. In float64,
    computed by hand from the module's own gate weights, compared at atol 1e-10."""
    torch.manual_seed(0)
    c, h, w, b = 8, 5, 6, 2
    fusion = build_fusion("cmmlf", small_config(channels=c, cmmlf_gate_source=source)).double().eval()
    assert isinstance(fusion, CMMLF)
    for gate in fusion.gates:  # non-trivial BN statistics and affine, so that BN is really applied
        bn = gate[1]
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        torch.nn.init.uniform_(bn.weight, 0.5, 1.5)
        torch.nn.init.uniform_(bn.bias, -0.5, 0.5)
    visual = [torch.randn(b, c, h, w, dtype=torch.float64) for _ in range(3)]
    sentence = [torch.randn(b, c, dtype=torch.float64) for _ in range(3)]

    pairs = [(i, j) for i in range(3) for j in range(3) if j != i]
    assert fusion.pairs == pairs  # gate k belongs to pairs[k]
    expected = []
    for i in range(3):
        y = visual[i].clone()
        for j in range(3):
            if j == i:
                continue
            conv, bn, _ = fusion.gates[pairs.index((i, j))]
            tiled = sentence[j][:, :, None, None].expand(b, c, h, w)
            z = F.conv2d(torch.cat([visual[i], tiled], dim=1), conv.weight, padding=1)
            z = (z - bn.running_mean[:, None, None]) / torch.sqrt(bn.running_var[:, None, None] + bn.eps)
            lam = torch.sigmoid(z * bn.weight[:, None, None] + bn.bias[:, None, None])
            y = y + lam * (visual[j] if source == "authors" else visual[i])
        expected.append(y)

    seen = {}
    fusion.fuse.register_forward_pre_hook(lambda m, args: seen.update(y=[t.clone() for t in args[0]]))
    with torch.no_grad():
        out = fusion(visual, sentence)
        for i in range(3):
            torch.testing.assert_close(seen["y"][i], expected[i], atol=1e-10, rtol=0)
        torch.testing.assert_close(out, fusion.fuse(expected), atol=1e-10, rtol=0)
    assert not torch.allclose(expected[0], visual[0])  # the gates really add something


def test_glove_initialises_and_freezes_embedding():
    glove = torch.randn(50, 16).numpy()
    model = JRNet(small_config(), vocab_size=50, glove=glove)
    assert torch.equal(model.text.embedding.weight.data, torch.from_numpy(glove))
    assert not model.text.embedding.weight.requires_grad
    no_glove = JRNet(small_config(variant="no_glove"), vocab_size=50, glove=glove)
    assert no_glove.text.embedding.weight.requires_grad


@pytest.mark.parametrize("prefix", ["", "backbone."])
def test_backbone_weights_roundtrip(tmp_path, prefix):
    cfg = small_config()
    source = build_trunk(cfg)
    torch.nn.init.normal_(source.conv1.weight)
    state = {prefix + k: v for k, v in source.state_dict().items()}
    if prefix:
        state["classifier.0.weight"] = torch.zeros(1)  # deeplab head: ignored
    else:
        state["fc.weight"] = torch.zeros(1000, 512)  # ResNet classifier: ignored
    path = tmp_path / "weights.pth"
    torch.save(state, path)
    model = JRNet(small_config(backbone_weights=str(path)), vocab_size=50)
    for k, v in source.state_dict().items():
        assert torch.equal(model.backbone.trunk.state_dict()[k], v), k


def test_backbone_weights_errors_name_file_and_key(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(WeightsError, match="nope.pth"):
        JRNet(small_config(backbone_weights=str(missing)), vocab_size=50)
    r34 = tmp_path / "r34.pth"
    torch.save(build_trunk(small_config(backbone="resnet34")).state_dict(), r34)
    with pytest.raises(WeightsError, match=r"r34\.pth: key 'layer1\.0\.conv1\.weight' has shape \(64, 64, 3, 3\)"):
        load_trunk_weights(build_trunk(small_config(backbone="resnet50")), r34)
    partial = build_trunk(small_config()).state_dict()
    del partial["layer4.1.bn2.weight"]
    cut = tmp_path / "cut.pth"
    torch.save(partial, cut)
    with pytest.raises(WeightsError, match=r"cut\.pth: missing key 'layer4\.1\.bn2\.weight'"):
        load_trunk_weights(build_trunk(small_config()), cut)


def test_cpu_trunk_levels_at_output_stride_8():
    """The demo's small trunk: all three levels at S/8 (no resizing), a fraction of ResNet-18's size."""
    cfg = small_config(backbone="resnet_cpu", output_stride=8, image_size=96, feature_size=12)
    trunk = build_trunk(cfg)
    feats = trunk(torch.zeros(2, 3, 96, 96))
    assert [tuple(f.shape) for f in feats.values()] == [(2, 64, 12, 12), (2, 96, 12, 12), (2, 128, 12, 12)]
    assert sum(p.numel() for p in trunk.parameters()) < 0.6e6
    logits = JRNet(cfg, vocab_size=50)(tokens(2, [3, 5]), torch.randn(2, 3, 96, 96))
    assert logits.shape == (2, 1, 96, 96)
    with pytest.raises(ValueError, match="output stride 8"):
        load_config("demo", ["model.backbone=resnet_cpu", "model.output_stride=32"])


def test_aspp_dropout_follows_config():
    """torchvision's ASPP hard-codes Dropout(0.5); model.aspp_dropout sets it (default 0.5, as before)."""
    assert JRNet(small_config(), vocab_size=50).decoder.aspp.project[-1].p == 0.5
    assert JRNet(small_config(aspp_dropout=0.0), vocab_size=50).decoder.aspp.project[-1].p == 0.0


def test_coordinate_maps_hold_each_cell_centres_x_then_y():
    maps = coordinate_maps(torch.zeros(1, 5, 2, 4))
    assert torch.equal(maps[0, 0], torch.tensor([[-0.75, -0.25, 0.25, 0.75]] * 2))
    assert torch.equal(maps[0, 1], torch.tensor([[-0.5] * 4, [0.5] * 4]))


@pytest.mark.parametrize("maps", ["coord_channels", "colour_channels"])
def test_level_maps_reach_the_features_past_a_blind_trunk(maps):
    """With the trunk's levels all zero, the levels still tell cells apart by position (coordinates) or by the
    image's colour there (colours): the maps enter each level's projection."""
    cfg = small_config(backbone="resnet_cpu", output_stride=8, image_size=32, feature_size=4, **{maps: True})
    backbone = Backbone(cfg).eval()
    assert [p[0].in_channels for p in backbone.project] == [
        c + (2 if maps == "coord_channels" else 3) for c in (64, 96, 128)
    ]
    image = torch.zeros(1, 3, 32, 32, dtype=torch.uint8)
    image[:, 0, :, :16] = 255  # red left half, black right half
    blind = {name: torch.zeros(1, c, 4, 4) for name, c in zip(LEVELS, backbone.level_channels, strict=True)}
    with torch.no_grad(), patch.object(backbone, "run_trunk", return_value=blind):
        levels, _ = backbone(image)
        plain = Backbone(small_config(backbone="resnet_cpu", output_stride=8, image_size=32, feature_size=4)).eval()
        with patch.object(plain, "run_trunk", return_value=blind):
            without, _ = plain(image)
    for level, flat in zip(levels, without, strict=True):
        assert torch.allclose(flat, flat[..., :1, :1].expand_as(flat))  # no maps: every cell alike
        left, right = level[0, :, :, 0], level[0, :, :, 3]  # first and last column
        assert not torch.allclose(left, right)
        if maps == "colour_channels":  # same colour down a column: the inner rows (no padding in reach) alike
            assert torch.allclose(level[0, :, 1], level[0, :, 2])


def test_colour_channels_refuse_a_feature_cache():
    with pytest.raises(ConfigError, match="model.colour_channels reads the image"):
        load_config("demo", ["model.colour_channels=true", "data.feature_cache=true"])
    backbone = Backbone(
        small_config(backbone="resnet_cpu", output_stride=8, image_size=32, feature_size=4, colour_channels=True)
    )
    with pytest.raises(ValueError, match="needs the image"):
        backbone(cached=torch.zeros(1, 64 + 96 + 128, 4, 4))


def test_decoder_skip_predicts_at_the_skip_layers_stride_from_its_local_features_without_training_them():
    # resnet_cpu's stem is at stride 2: 16 x 16 logits at 32 px, where the levels' decoder alone gives 8 x 8.
    cfg = small_config(
        backbone="resnet_cpu", output_stride=8, image_size=32, feature_size=4, decoder_upsamples=1, decoder_skip="stem"
    )
    decoder = JRNet(cfg, vocab_size=50).decoder.eval()
    assert decoder.skip[0].in_channels == 32
    fused, skip = torch.randn(1, cfg.channels, 4, 4, requires_grad=True), torch.randn(1, 32, 16, 16)
    logits = decoder(fused, skip.requires_grad_())
    logits.sum().backward()
    assert logits.shape == (1, 1, 16, 16)
    assert fused.grad.abs().sum() > 0 and skip.grad is None  # the skip is read, not trained through
    with torch.no_grad():
        moved = skip.clone()
        moved[0, :, 8, 8] += 5.0  # one stem cell
        changed = (decoder(fused, moved) - logits).abs()[0, 0] > 0
    rows, cols = changed.nonzero(as_tuple=True)
    assert changed[8, 8] and rows.min() >= 7 and rows.max() <= 9 and cols.min() >= 7 and cols.max() <= 9  # 3 x 3


def test_decoder_skip_must_name_an_early_layer_of_the_trunk_and_refuses_a_feature_cache():
    with pytest.raises(
        ConfigError, match=r"model.decoder_skip='layer3' is not a skip layer of resnet_cpu: one of \['layer1', 'stem'\]"
    ):
        load_config("demo", ["model.decoder_skip=layer3"])
    with pytest.raises(ConfigError, match="model.decoder_skip reads the trunk's early layers"):
        load_config("demo", ["model.decoder_skip=stem", "model.colour_channels=false", "data.feature_cache=true"])
    load_config("demo", ["model.decoder_skip=layer1"])  # accepted
    backbone = Backbone(small_config(backbone="resnet_cpu", output_stride=8, feature_size=4, decoder_skip="stem"))
    with pytest.raises(ValueError, match="model.decoder_skip needs the image"):
        backbone(cached=torch.zeros(1, 64 + 96 + 128, 4, 4))


def test_mask_loss_adds_dice_weight_times_one_minus_the_soft_dice_per_sample():
    # Sample 0: p = 0.5 everywhere, 2 of 4 pixels foreground: dice = (2 * 1 + 1) / (2 + 2 + 1) = 0.6.
    # Sample 1: p = sigmoid(20) on its 1 foreground pixel, sigmoid(-20) elsewhere: dice = 1 to 1e-8.
    logits = torch.tensor([[[[0.0, 0.0], [0.0, 0.0]]], [[[20.0, -20.0], [-20.0, -20.0]]]])
    target = torch.tensor([[[1, 1], [0, 0]], [[1, 0], [0, 0]]], dtype=torch.bool)
    bce = F.binary_cross_entropy_with_logits(logits.squeeze(1), target.float())
    assert mask_loss(logits, target) == pytest.approx(bce.item())
    expected = bce.item() + 0.5 * ((1 - 0.6) + (1 - 1.0)) / 2
    assert mask_loss(logits, target, dice_weight=0.5).item() == pytest.approx(expected, abs=1e-6)
