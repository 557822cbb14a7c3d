"""Figure 6: FLOPs per sample of the paper config, the samples/s an H100 would give, and the loader cores it needs.

    .venv/bin/python bench/gpu_plan.py [--quick]

FLOPs: `torch.utils.flop_counter.FlopCounterMode` around the real modules of `jrnet.model.JRNet` (paper_448 and
paper_576 configs: frozen ResNet-101 trunk at output stride 16, C = 512, 2 JRM layers, T = 25 words), batch 1,
forward and backward. Backward covers the head only: the trunk is frozen, so autograd never enters it (and the
first projection convs compute weight gradients only). FlopCounterMode's own module attribution of backward ops
is unreliable (it credited the projections' backward to the text LSTM here), so the model is run stage by stage
exactly as `JRNet.forward` composes it (trunk -> projections; text; JRM; sentence mean + CMMLF; decoder), each
stage's inputs detached, and each stage's backward is driven separately with the gradient of its output: every
FLOP lands in the stage that executed it. A check compares the staged logits with `model(tokens, image)` and
(full run, 448) the staged totals with one FlopCounterMode around the whole model's forward + backward.
Counted: matmuls, convolutions, SDPA (2 FLOPs per multiply-add); not counted: LSTM kernels (no formula in the
counter; given analytically), normalisation, activations, interpolation (a few % at most).

Throughput per GPU: samples/s = MFU x peak / training FLOPs per sample, for H100 SXM bf16 dense peak 989.4 TFLOP/s
(NVIDIA's datasheet; 1979 is the 2:4-sparse figure) and MFU 30 % and 45 %, MFU counted on the executed FLOPs
(trunk forward + head forward + head backward).
Loader: the CPU seconds per sample of `jrnet.samples.train_sample` (JPEG decode to uint8, mask PNG decode, tokens;
normalisation runs on the GPU) on a COCO-sized sample stored as `pipeline/shard.py --train-size S` stores it
(JPEG and mask at S x S), beside the same sample at its original 640 x 480 (decode + resize at load), at 448 and 576
px, 1 torch thread, measured as thread CPU time (time.thread_time: not inflated by other jobs on this machine)
with wall time alongside, interleaved rounds; cores per GPU = samples/s per GPU x CPU seconds per sample.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from common import coco_like_jpeg, coco_like_polygon, header, interleave, mask_png, median, spread, table
from torch.utils.flop_counter import FlopCounterMode

from jrnet.cmmlf import masked_mean
from jrnet.config import load_config
from jrnet.model import JRNet, mask_loss
from jrnet.samples import train_sample

H100_BF16_DENSE = 989.4e12  # FLOP/s, H100 SXM5, dense (no sparsity)
MFUS = (0.30, 0.45)
VOCAB = 10_000
STAGES = ("trunk", "projections", "text (LSTM)", "JRM", "CMMLF", "decoder (ASPP + head)")


def count(fn) -> tuple[float, dict]:
    """FLOPs of fn() (and per-module forward attribution), fn's result."""
    with FlopCounterMode(display=False, depth=None) as counter:
        result = fn()
    return counter.get_total_flops(), result


def leaf(t: torch.Tensor) -> torch.Tensor:
    return t.detach().requires_grad_(True)


def staged_flops(model: JRNet, tokens: torch.Tensor, image: torch.Tensor, target: torch.Tensor):
    """Forward and backward FLOPs per stage, running the stages as JRNet.forward composes them."""
    fwd, bwd = {}, {}
    bb = model.backbone
    fwd["trunk"], levels = count(lambda: bb.trunk_features(image))
    fwd["projections"], proj = count(lambda: [p(x) for p, x in zip(bb.project, levels, strict=True)])
    fwd["text (LSTM)"], (words, valid) = count(lambda: model.text(tokens))
    proj_in, words_in = [leaf(p) for p in proj], leaf(words)
    fwd["JRM"], pairs = count(lambda: model.jrm(proj_in, words_in, valid))
    visual_in = [leaf(v) for v, _ in pairs]
    word_out_in = [leaf(w) for _, w in pairs]

    def cmmlf():
        sentence = [masked_mean(x, valid) for x in word_out_in]
        return model.fusion(visual_in, sentence)

    fwd["CMMLF"], fused = count(cmmlf)
    fused_in = leaf(fused)

    def decoder():
        logits = model.decoder(fused_in)
        logits = F.interpolate(logits, size=image.shape[-2:], mode="bilinear", align_corners=False)
        return logits, mask_loss(logits, target)

    fwd["decoder (ASPP + head)"], (logits, loss) = count(decoder)
    with FlopCounterMode(display=False, depth=None) as c:
        model.decoder.aspp(fused_in.detach())
    aspp_fwd = c.get_total_flops()

    bwd["decoder (ASPP + head)"], _ = count(lambda: loss.backward())
    bwd["CMMLF"], _ = count(lambda: torch.autograd.backward([fused], [fused_in.grad]))
    outs = [t for pair in pairs for t in pair]
    grads = [t.grad for pair in zip(visual_in, word_out_in, strict=True) for t in pair]
    bwd["JRM"], _ = count(lambda: torch.autograd.backward(outs, grads))
    bwd["text (LSTM)"], _ = count(lambda: torch.autograd.backward([words], [words_in.grad]))
    bwd["projections"], _ = count(lambda: torch.autograd.backward(proj, [p.grad for p in proj_in]))
    bwd["trunk"] = 0.0  # frozen: no autograd graph (checked below)
    assert not any(t.requires_grad for t in levels), "the trunk's outputs require grad: is it frozen?"
    return fwd, bwd, logits.detach(), aspp_fwd


def whole_model_flops(model: JRNet, tokens, image, target) -> tuple[float, float]:
    model.zero_grad(set_to_none=True)
    with FlopCounterMode(display=False, depth=None) as c:
        loss = mask_loss(model(tokens, image), target)
        forward = c.get_total_flops()
        loss.backward()
        total = c.get_total_flops()
    return forward, total - forward


def lstm_flops(word_dim: int, hidden: int, words: int) -> float:
    """Forward FLOPs of a 1-layer LSTM over `words` steps: 4 gates x (input + hidden) x hidden MACs x 2."""
    return 2 * 4 * (word_dim + hidden) * hidden * words


def coco_sample() -> dict:
    from jrnet.prep.refer import ref_mask

    polygon = coco_like_polygon(640, 480, seed=7)
    mask = ref_mask({"segmentation": [polygon]}, 480, 640)
    sentences = [{"sent_id": 0, "raw": "the man on the left", "tokens": [5, 6, 7, 8, 9], "truncated": False}]
    meta = {"ref_id": 0, "sentences": sentences}
    return {
        "__key__": "000000000",
        "__url__": "memory",
        "jpg": coco_like_jpeg(),
        "mask.png": mask_png(mask),
        "json": json.dumps(meta).encode(),
    }


def stored_at(sample: dict, size: int) -> dict:
    """The same sample as `pipeline/shard.py --train-size size` stores it: image and mask already at size x size."""
    from jrnet.prep.write import png_mask, resized_jpeg, resized_mask
    from jrnet.samples import decode_mask

    mask = decode_mask(sample["mask.png"]).numpy()
    return {**sample, "jpg": resized_jpeg(sample["jpg"], size), "mask.png": png_mask(resized_mask(mask, size))}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="FLOPs at 448 only, fewer timing rounds (about 1 minute)")
    args = p.parse_args()
    warnings.filterwarnings("ignore", message="frozen backbone with random weights")
    sizes = [448] if args.quick else [448, 576]
    header(
        "Figure 6: FLOPs per sample (paper config), H100 samples/s at a stated MFU, loader cores per GPU",
        "FlopCounterMode per stage (forward; backward of the head), batch 1, at "
        f"{sizes} px; train_sample CPU seconds on a COCO-sized sample at 448 and 576 px (1 thread, interleaved)",
    )
    flops = {}
    for size in sizes:
        torch.set_num_threads(2)
        cfg = load_config(f"paper_{size}")
        torch.manual_seed(0)
        model = JRNet(cfg.model, VOCAB, np.zeros((VOCAB, cfg.model.word_dim), np.float32))
        model.eval()  # same counted FLOPs as train mode; batch 1 is legal for BatchNorm
        g = torch.Generator().manual_seed(0)
        tokens = torch.randint(2, VOCAB, (1, cfg.data.max_words), generator=g)
        image = torch.randn(1, 3, size, size, generator=g)
        target = torch.rand(1, size, size, generator=g) > 0.5
        t0 = time.perf_counter()
        fwd, bwd, logits, aspp = staged_flops(model, tokens, image, target)
        seconds = time.perf_counter() - t0
        with torch.no_grad():
            diff = (model(tokens, image) - logits).abs().max().item()
        lstm = lstm_flops(cfg.model.word_dim, cfg.model.channels, cfg.data.max_words)
        print(
            f"{size} px (H = W = {cfg.model.feature_size}, T = {cfg.data.max_words}): counted in {seconds:.0f} s "
            f"on this machine; staged logits vs model(tokens, image): max |diff| {diff:.1e}; "
            f"LSTM forward (analytic, not counted) {lstm / 1e9:.3f} GFLOPs"
        )
        if size == 448 and not args.quick:
            whole_f, whole_b = whole_model_flops(model, tokens, image, target)
            print(
                f"  check: one FlopCounterMode around the whole model: forward {whole_f / 1e9:.2f} G, backward "
                f"{whole_b / 1e9:.2f} G; staged sums: {sum(fwd.values()) / 1e9:.2f} G, {sum(bwd.values()) / 1e9:.2f} G"
            )
        flops[size] = (fwd, bwd, aspp)

    rows = []
    for stage in STAGES:
        row = [stage]
        for size in sizes:
            fwd, bwd, _ = flops[size]
            total = sum(fwd.values()) + sum(bwd.values())
            row += [
                f"{fwd[stage] / 1e9:.2f}",
                f"{bwd[stage] / 1e9:.2f}",
                f"{100 * (fwd[stage] + bwd[stage]) / total:.1f}%",
            ]
        rows.append(row)
    total_row = ["**total**"]
    head_row = ["head only (all but the trunk)"]
    for size in sizes:
        fwd, bwd, _ = flops[size]
        f_all, b_all = sum(fwd.values()), sum(bwd.values())
        total_row += [f"{f_all / 1e9:.2f}", f"{b_all / 1e9:.2f}", "100%"]
        head_row += [f"{(f_all - fwd['trunk']) / 1e9:.2f}", f"{b_all / 1e9:.2f}", ""]
    rows += [head_row, total_row]
    headers = ["stage (GFLOPs per sample)"]
    for size in sizes:
        headers += [f"{size} fwd", f"{size} bwd", f"{size} share"]
    print()
    print(table(rows, headers))
    for size in sizes:
        fwd, _, aspp = flops[size]
        print(
            f"({size}: ASPP is {aspp / 1e9:.2f} G of the decoder's {fwd['decoder (ASPP + head)'] / 1e9:.2f} G forward; "
            f"head forward x 8 samples = {(sum(fwd.values()) - fwd['trunk']) * 8 / 1e9:.0f} G)"
        )

    # ---------------------------------------------------------------- loader CPU cost per sample
    torch.set_num_threads(1)
    sample = coco_sample()
    print(
        f"\nloader sample: {len(sample['jpg']) / 1024:.0f} KB JPEG 640x480, mask PNG {len(sample['mask.png'])} bytes; "
        "jrnet.samples.train_sample, 1 torch thread"
    )
    cfgs = {s: load_config(f"paper_{s}") for s in (448, 576)}
    reps = 10 if args.quick else 20
    stored = {s: stored_at(sample, s) for s in (448, 576)}
    variants = {
        "train_sample, original 640x480": lambda size: train_sample(sample, cfgs[size], 0),
        "train_sample, stored at S": lambda size: train_sample(stored[size], cfgs[size], 0),
    }
    cases = {(v, s): (lambda v=v, s=s: variants[v](s)) for s in (448, 576) for v in variants}
    cpu_times: dict[tuple, list[float]] = {k: [] for k in cases}

    def per_sample(key):
        def run():
            c0, w0 = time.thread_time(), time.perf_counter()
            for _ in range(reps):
                cases[key]()
            cpu_times[key].append((time.thread_time() - c0) / reps)
            return (time.perf_counter() - w0) / reps

        return run

    for fn in cases.values():
        fn()  # warm-up
    wall = interleave({k: per_sample(k) for k in cases}, 3 if args.quick else 7)
    rows = []
    for key in cases:
        c = cpu_times[key]
        ms = [x * 1e3 for x in c]
        rows.append([key[1], key[0], f"{median(c) * 1e3:.2f}", spread(ms), f"{median(wall[key]) * 1e3:.2f}"])
    print(table(rows, ["S", "per-sample work", "CPU ms/sample (median)", "range", "wall ms/sample"]))
    resized = {s: median(cpu_times["train_sample, original 640x480", s]) for s in (448, 576)}
    cpu = {s: median(cpu_times["train_sample, stored at S", s]) for s in (448, 576)}
    print(
        "ratio original / stored at S: "
        + ", ".join(f"{s}: {resized[s] / cpu[s]:.2f}" for s in (448, 576))
        + " (stored at S: the shards' --train-size copy, decoded without a resize)"
    )

    # ---------------------------------------------------------------- the plan
    print(f"\nper H100 SXM (bf16 dense peak {H100_BF16_DENSE / 1e12:.1f} TFLOP/s):")
    rows = []
    for size in sizes:
        fwd, bwd, _ = flops[size]
        train = sum(fwd.values()) + sum(bwd.values())
        head_only = train - fwd["trunk"]
        for mfu in MFUS:
            rate = mfu * H100_BF16_DENSE / train
            rows.append(
                [
                    size,
                    f"{train / 1e9:.1f}",
                    f"{mfu:.0%}",
                    f"{mfu:.2f} x {H100_BF16_DENSE / 1e12:.1f}e12 / {train / 1e9:.1f}e9 = {rate:.0f}",
                    f"{rate:.0f} x {cpu[size] * 1e3:.2f} ms = {rate * cpu[size]:.1f}",
                    f"{rate * resized[size]:.1f}",
                    f"{mfu * H100_BF16_DENSE / head_only:.0f}",
                ]
            )
    print(
        table(
            rows,
            [
                "S",
                "train GFLOPs/sample",
                "MFU",
                "samples/s per GPU",
                "loader cores per GPU (stored at S)",
                "cores, resizing at load",
                "samples/s if trunk features cached",
            ],
        )
    )
    print(
        "\n(loader cores count train_sample only, measured as CPU time; the real loader adds tar reading, shuffling "
        "and batching on top (Figure 2: train loader / bare decode limit). The last column is the rate if the frozen "
        "trunk's features were precomputed (JRNet.forward accepts `cached` levels): the loader then reads features "
        "instead of decoding JPEGs, a different I/O budget not measured here.)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
