"""JRNet: paper configs, frozen backbone, fused vs eager attention, padding, every ablation, weight loading."""

import warnings

import pytest
import torch

from jrnet.backbone import WeightsError, build_trunk, load_trunk_weights
from jrnet.config import VARIANTS, ModelConfig, load_config
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


def test_frozen_backbone_only_head_trains():
    torch.manual_seed(0)
    model = JRNet(small_config(), vocab_size=50).train()
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


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_variant_trains(variant):
    model = JRNet(small_config(variant=variant), vocab_size=50).train()
    loss = mask_loss(model(tokens(2, [3, 7]), torch.randn(2, 3, 64, 64)), torch.rand(2, 64, 64) > 0.5)
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads), "a trainable parameter got no gradient"
    assert (model.jrm is None) == (VARIANTS[variant][0] == "none")


@pytest.mark.parametrize("layers", [1, 2, 3, 4])
def test_jrm_layers(layers):
    model = JRNet(small_config(jrm_layers=layers), vocab_size=50)
    assert all(len(e.layers) == layers for e in model.jrm.encoders) and len(model.jrm.encoders) == 3
    shared = JRNet(small_config(jrm_layers=layers, jrm_shared=True), vocab_size=50)
    assert len(shared.jrm.encoders) == 1
    loss = mask_loss(shared(tokens(2, [4, 2]), torch.randn(2, 3, 64, 64)), torch.rand(2, 64, 64) > 0.5)
    loss.backward()


def test_cmmlf_gate_source_switch_changes_output():
    torch.manual_seed(0)
    paper = JRNet(small_config(), vocab_size=50).eval()
    authors = JRNet(small_config(cmmlf_gate_source="authors"), vocab_size=50).eval()
    authors.load_state_dict(paper.state_dict())
    t, x = tokens(1, [5]), torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert not torch.allclose(paper(t, x), authors(t, x))


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
