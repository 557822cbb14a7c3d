"""The loader hands the model uint8 pixels; the model normalises them on its own device."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from jrnet.backbone import IMAGENET_MEAN, IMAGENET_STD
from jrnet.config import load_config
from jrnet.model import build_jrnet
from jrnet.samples import decode_image


def jpeg(seed: int, size=(40, 30)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG")
    return buffer.getvalue()


def test_loader_decodes_to_uint8_only():
    image = decode_image(jpeg(0), 32)
    assert image.dtype == torch.uint8 and image.shape == (3, 32, 32)


def test_uint8_normalised_in_the_model_gives_the_logits_of_floats_normalised_on_the_cpu():
    cfg = load_config("tiny")
    model = build_jrnet(cfg, 20).eval()
    pixels = torch.stack([decode_image(jpeg(seed), 32) for seed in (1, 2)])
    mean, std = np.array(IMAGENET_MEAN, np.float32), np.array(IMAGENET_STD, np.float32)
    on_cpu = (pixels.permute(0, 2, 3, 1).numpy().astype(np.float32) / 255.0 - mean) / std  # the old loader's work
    on_cpu = torch.from_numpy(on_cpu).permute(0, 3, 1, 2).contiguous()
    tokens = torch.tensor([[3, 4, 5, 0], [6, 0, 0, 0]])
    with torch.no_grad():
        from_uint8, from_float = model(tokens, pixels), model(tokens, on_cpu)
    assert torch.allclose(from_uint8, from_float, rtol=0, atol=1e-5)  # fp32; only the operation order differs


def test_input_step_casts_to_the_trunks_dtype():
    """DeepSpeed's fp16 mode casts the model, buffers included: the normalised image follows them."""
    cfg = load_config("tiny")
    backbone = build_jrnet(cfg, 20).backbone.to(torch.float64)
    assert backbone.normalize(torch.zeros(1, 3, 4, 4, dtype=torch.uint8)).dtype == torch.float64


def test_an_image_stored_at_the_models_size_is_decoded_to_the_same_pixels_as_pil():
    data = jpeg(3, size=(32, 32))
    fast = decode_image(data, 32)  # torchvision's decoder: nothing to resize
    pil = torch.from_numpy(np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))).permute(2, 0, 1)
    assert fast.dtype == torch.uint8 and torch.equal(fast, pil)


def test_an_image_of_another_size_is_resized_within_two_levels_of_pils_bilinear_resize():
    """The loader's torchvision decode + antialiased resize against PIL's (what shards made with --train-size
    store): same size, no pixel more than 2 levels apart, on average well under one level."""
    data = jpeg(4, size=(121, 148))
    fast = decode_image(data, 96).to(torch.int16)
    pil = Image.open(io.BytesIO(data)).convert("RGB").resize((96, 96), Image.BILINEAR)
    pil = torch.from_numpy(np.asarray(pil)).permute(2, 0, 1).to(torch.int16)
    assert fast.shape == (3, 96, 96) and (fast - pil).abs().max() <= 2 and (fast - pil).abs().float().mean() < 0.5


def test_a_png_image_decodes_like_a_jpeg_one():
    """`jrnet.predict` takes any image file: a PNG goes through the same decode."""
    pixels = np.random.default_rng(5).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    assert torch.equal(decode_image(buffer.getvalue(), 32), torch.from_numpy(pixels).permute(2, 0, 1))


def test_an_8_bit_mask_is_thresholded_between_127_and_128():
    from jrnet.samples import decode_mask

    levels = np.array([[0, 127, 128, 255]], np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(levels).save(buffer, "PNG")
    mask = decode_mask(buffer.getvalue())
    assert mask.dtype == torch.bool and mask.tolist() == [[False, False, True, True]]


def test_masks_of_both_shard_formats_decode_alike():
    """Format 2 stores 1-bit masks; shards of format 1 (8-bit 0/255) still read the same."""
    from jrnet.samples import decode_mask

    mask = np.zeros((30, 40), bool)
    mask[5:20, 10:35] = True
    one_bit, eight_bit = io.BytesIO(), io.BytesIO()
    Image.fromarray(mask).save(one_bit, "PNG")
    Image.fromarray(mask.astype(np.uint8) * 255).save(eight_bit, "PNG")
    for size in (None, 16):
        a, b = decode_mask(one_bit.getvalue(), size), decode_mask(eight_bit.getvalue(), size)
        assert a.dtype == torch.bool and torch.equal(a, b)
    assert torch.equal(decode_mask(one_bit.getvalue()), torch.from_numpy(mask))
