"""Figure 3: JRM attention, fused SDPA vs the explicit-softmax (eager) reference: time and peak memory.

    .venv/bin/python bench/attention.py [--quick]
    .venv/bin/python bench/attention.py --cpu-bf16

At the paper's token counts (448 px: 14*14 + 25 = 221 tokens; 576 px: 18*18 + 25 = 349), C = 512, 8 heads
(head dim 64), batch 8, fp32, 2 torch threads, forward + backward:
  op     : the attention op alone, q/k/v (8, 8, N, 64) with a boolean key-padding mask (the words past each
           sentence's length are masked), `F.scaled_dot_product_attention` vs `jrnet.jrm.eager_attention`;
  JRM    : the whole `jrnet.jrm.JRM` of the paper configs (3 levels x 2 pre-norm encoder layers, FFN 512, final
           LayerNorm), train mode, `model.attention=sdpa` vs `eager`, identical weights.
Each at attention dropout 0 and at the paper's 0.2: on CPU, SDPA with dropout > 0 leaves the fused flash kernel
for the unfused math fallback (the profiler's op names are printed to show which kernel ran).
Time: median over interleaved rounds (each round runs every case, alternating the order); a warm-up call first.
Peak memory: torch.profiler with profile_memory=True; from its raw event tree, every CPU allocation and free
during one forward + backward, in time order; the peak of the running sum is the peak of bytes allocated
during the step above what existed before it (inputs and weights not included, gradients included).

--cpu-bf16: the demo's JRM on a CPU under bf16 autocast (its sizes from `configs/demo.yaml`, batch 16 = one of
two ranks' share, 1 thread), forward + backward: `scaled_dot_product_attention` on the bf16 q, k, v autocast makes
against `jrnet.jrm.fused_attention`, which attends in fp32 there; the op alone and the whole JRM.
"""

from __future__ import annotations

import argparse
import sys
import time
from unittest.mock import patch

import torch
import torch.nn.functional as F
from common import header, interleave, median, profiler_peak_bytes, spread, table

from jrnet.config import load_config
from jrnet.jrm import JRM, eager_attention, fused_attention

BATCH, CHANNELS, HEADS, WORDS = 8, 512, 8, 25
SIZES = {448: 14, 576: 18}  # image size -> H = W


def word_valid(batch: int, seed: int = 0) -> torch.Tensor:
    """(B, 25) True for real words: lengths drawn from 3..15, a RefCOCO-like spread padded to 25."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, 16, (batch,), generator=g)
    return torch.arange(WORDS)[None] < lengths[:, None]


# ---------------------------------------------------------------- the op alone


def op_case(tokens: int, kind: str, dropout: float):
    g = torch.Generator().manual_seed(0)
    d = CHANNELS // HEADS
    q, k, v = (torch.randn(BATCH, HEADS, tokens, d, generator=g, requires_grad=True) for _ in range(3))
    pixels = tokens - WORDS
    valid = torch.cat([torch.ones(BATCH, pixels, dtype=torch.bool), word_valid(BATCH)], dim=1)
    mask = valid[:, None, None, :]

    def step():
        if kind == "sdpa":
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        else:
            y = eager_attention(q, k, v, mask, dropout)
        y.backward(torch.ones_like(y))
        q.grad = k.grad = v.grad = None

    return step


# ---------------------------------------------------------------- the whole JRM


def jrm_case(image_size: int, kind: str, dropout: float, state: dict | None):
    cfg = load_config(f"paper_{image_size}", [f"model.attention={kind}", f"model.jrm_dropout={dropout}"]).model
    assert cfg.channels == CHANNELS and cfg.jrm_heads == HEADS and cfg.feature_size == SIZES[image_size]
    torch.manual_seed(0)
    jrm = JRM(cfg, positional_encoding=True)
    if state is not None:
        jrm.load_state_dict(state)
    jrm.train()
    g = torch.Generator().manual_seed(1)
    h = cfg.feature_size
    levels = [torch.randn(BATCH, CHANNELS, h, h, generator=g, requires_grad=True) for _ in range(3)]
    words = torch.randn(BATCH, WORDS, CHANNELS, generator=g, requires_grad=True)
    valid = word_valid(BATCH)

    def step():
        outputs = jrm(levels, words, valid)
        loss = sum(v.float().square().mean() + w.float().square().mean() for v, w in outputs)
        loss.backward()
        jrm.zero_grad(set_to_none=True)
        for t in (*levels, words):
            t.grad = None

    return step, jrm


# ---------------------------------------------------------------- the demo's JRM under bf16 autocast on a CPU


def cpu_bf16_cases(batch: int = 16) -> dict:
    """name -> forward+backward step: bf16 SDPA vs `fused_attention`, the op alone and the demo's whole JRM."""
    demo = load_config("demo")
    cfg, words = demo.model, demo.data.max_words
    pixels, heads = cfg.feature_size**2, cfg.jrm_heads
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(3, words + 1, (batch,), generator=g)
    valid = torch.arange(words)[None] < lengths[:, None]
    mask = torch.cat([torch.ones(batch, pixels, dtype=torch.bool), valid], dim=1)[:, None, None, :]
    shape = (batch, heads, pixels + words, cfg.channels // heads)
    q, k, v = (torch.randn(*shape, generator=g).bfloat16().requires_grad_() for _ in range(3))
    torch.manual_seed(0)
    jrm = JRM(cfg, positional_encoding=True).train()
    levels = [torch.randn(batch, cfg.channels, cfg.feature_size, cfg.feature_size, generator=g) for _ in range(3)]
    word_vectors = torch.randn(batch, words, cfg.channels, generator=g)

    def op(attend):
        def step():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                y = attend(q, k, v, mask, 0.0)
            y.float().sum().backward()
            q.grad = k.grad = v.grad = None

        return step

    def whole_jrm(attend):
        def step():
            # JointAttention looks fused_attention up at each call: patched, the JRM runs the other kernel
            with patch("jrnet.jrm.fused_attention", attend), torch.autocast("cpu", dtype=torch.bfloat16):
                loss = sum(
                    x.float().square().mean() + w.float().square().mean() for x, w in jrm(levels, word_vectors, valid)
                )
            loss.backward()
            jrm.zero_grad(set_to_none=True)

        return step

    def bf16_sdpa(q, k, v, mask, p):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)

    return {
        "op, bf16 SDPA": op(bf16_sdpa),
        "op, fused_attention (fp32 inside)": op(fused_attention),
        "JRM, bf16 SDPA": whole_jrm(bf16_sdpa),
        "JRM, fused_attention (fp32 inside)": whole_jrm(fused_attention),
    }


def cpu_bf16_main(rounds: int = 9, reps: int = 5) -> int:
    torch.set_num_threads(1)
    demo = load_config("demo")
    cfg = demo.model
    header(
        "JRM attention on a CPU under bf16 autocast: bf16 SDPA vs jrnet.jrm.fused_attention (fp32 inside)",
        f"forward+backward ms (median of {rounds} interleaved rounds of {reps} calls, after a warm-up call), the "
        f"demo's JRM ({cfg.feature_size}x{cfg.feature_size} pixels + {demo.data.max_words} words, C {cfg.channels}, "
        f"{cfg.jrm_heads} heads, {cfg.jrm_layers} layer(s) x 3 levels), batch 16, 1 thread, autocast(cpu, bfloat16)",
    )
    steps = cpu_bf16_cases()
    for step in steps.values():
        step()
    times = interleave({name: per_call(step, reps) for name, step in steps.items()}, rounds)
    rows = []
    for what in ("op", "JRM"):
        slow, fast = times[f"{what}, bf16 SDPA"], times[f"{what}, fused_attention (fp32 inside)"]
        for name, t in ((f"{what}, bf16 SDPA", slow), (f"{what}, fused_attention (fp32 inside)", fast)):
            ratio = f"{median(slow) / median(fast):.2f}" if t is fast else ""
            rows.append([name, f"{median(t) * 1e3:.2f}", spread([x * 1e3 for x in t]), ratio])
    print(table(rows, ["what", "fwd+bwd ms (median)", "range ms", "bf16 SDPA / fused_attention"]))
    return 0


# ---------------------------------------------------------------- measuring


def peak_bytes(step) -> tuple[int, list[str]]:
    """Peak of the running sum of CPU allocations/frees during one call (torch.profiler memory events),
    and the attention-related op names that ran."""
    return profiler_peak_bytes(step)


def per_call(step, reps: int):
    def run():
        t0 = time.perf_counter()
        for _ in range(reps):
            step()
        return (time.perf_counter() - t0) / reps

    return run


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="448 only, fewer rounds (about 1 minute)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cpu-bf16", action="store_true", help="the demo's JRM under bf16 autocast (about 15 seconds)")
    args = p.parse_args()
    if args.cpu_bf16:
        return cpu_bf16_main()
    torch.set_num_threads(args.threads)
    sizes = [448] if args.quick else [448, 576]
    rounds = 3 if args.quick else 5  # the op alone
    jrm_rounds = 2 if args.quick else 3  # the whole JRM (seconds per call)
    op_reps = 2 if args.quick else 3
    header(
        "Figure 3: JRM attention, fused SDPA vs eager (explicit softmax)",
        f"forward+backward seconds (median of interleaved rounds: op alone {rounds} rounds of {op_reps} calls, JRM "
        f"{jrm_rounds} rounds of 1 call) and peak allocated CPU memory (torch.profiler profile_memory, one call), "
        f"batch {BATCH}, C {CHANNELS}, {HEADS} heads, fp32, {args.threads} threads, attention dropout 0 and 0.2",
    )
    rows = []
    for size in sizes:
        tokens = SIZES[size] ** 2 + WORDS
        for dropout in (0.0, 0.2):
            # the op alone
            steps = {kind: op_case(tokens, kind, dropout) for kind in ("sdpa", "eager")}
            for s in steps.values():
                s()  # warm-up
            mem = {kind: peak_bytes(steps[kind]) for kind in steps}
            times = interleave({k: per_call(s, op_reps) for k, s in steps.items()}, rounds)
            rows += result_rows(f"op, N={tokens}", size, dropout, times, mem)
            print(f"  op N={tokens} dropout {dropout}: kernels {mem['sdpa'][1]} vs {mem['eager'][1]}", flush=True)

            # the whole JRM, same weights for both
            sdpa_step, sdpa_jrm = jrm_case(size, "sdpa", dropout, None)
            eager_step, eager_jrm = jrm_case(size, "eager", dropout, sdpa_jrm.state_dict())
            if dropout == 0.0:
                print("  " + same_outputs(sdpa_jrm, eager_jrm, size))
            steps = {"sdpa": sdpa_step, "eager": eager_step}
            for s in steps.values():
                s()  # warm-up
            mem = {kind: peak_bytes(steps[kind]) for kind in steps}
            times = interleave({k: per_call(s, 1) for k, s in steps.items()}, jrm_rounds)
            rows += result_rows(f"JRM 3x2 layers, N={tokens}", size, dropout, times, mem)
            print(f"  JRM N={tokens} dropout {dropout}: done", flush=True)
    print()
    print(
        table(
            rows,
            [
                "what",
                "image",
                "dropout",
                "attention",
                "fwd+bwd ms (median)",
                "range ms",
                "eager / sdpa time",
                "peak MiB",
                "eager / sdpa memory",
            ],
        )
    )
    print("\n(ms are this machine's, shared with other jobs; ratios come from interleaved rounds of the same run)")
    return 0


def same_outputs(a: JRM, b: JRM, size: int) -> str:
    """Eval mode, same weights: sdpa and eager JRM outputs agree (the kernel changes, not the maths)."""
    a.eval(), b.eval()
    h = SIZES[size]
    g = torch.Generator().manual_seed(2)
    levels = [torch.randn(2, CHANNELS, h, h, generator=g) for _ in range(3)]
    words, valid = torch.randn(2, WORDS, CHANNELS, generator=g), word_valid(2)
    with torch.no_grad():
        diff = max(
            (x - y).abs().max().item()
            for (xa, wa), (xb, wb) in zip(a(levels, words, valid), b(levels, words, valid), strict=True)
            for x, y in ((xa, xb), (wa, wb))
        )
    a.train(), b.train()
    return f"check: JRM outputs sdpa vs eager (eval, same weights) max |diff| = {diff:.1e}"


def result_rows(what: str, size: int, dropout: float, times: dict, mem: dict) -> list[list[object]]:
    rows = []
    for kind in ("sdpa", "eager"):
        ratio_t = median(times["eager"]) / median(times["sdpa"])
        ratio_m = mem["eager"][0] / max(1, mem["sdpa"][0])
        rows.append(
            [
                what,
                size,
                dropout,
                kind,
                f"{median(times[kind]) * 1e3:.1f}",
                spread([t * 1e3 for t in times[kind]]),
                f"{ratio_t:.2f}" if kind == "eager" else "",
                f"{mem[kind][0] / 2**20:.1f}",
                f"{ratio_m:.2f}" if kind == "eager" else "",
            ]
        )
    return rows


if __name__ == "__main__":
    sys.exit(main())
