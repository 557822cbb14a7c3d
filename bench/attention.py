"""Figure 3: JRM attention, fused SDPA vs the explicit-softmax (eager) reference: time and peak memory.

    .venv/bin/python bench/attention.py [--quick]

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
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
import torch.nn.functional as F
from common import header, interleave, median, profiler_peak_bytes, spread, table

from jrnet.config import load_config
from jrnet.jrm import JRM, eager_attention

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
    args = p.parse_args()
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
