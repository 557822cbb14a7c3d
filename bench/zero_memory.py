"""Figure 4: per-rank memory of parameters, gradients and optimizer states under ZeRO-0/1/2/3, measured.

    .venv/bin/python bench/zero_memory.py [--quick]

For each ZeRO stage, two ranks (torch.multiprocessing, gloo, CPU) build the paper's JRNet (configs/paper_448.yaml:
frozen ResNet-101 trunk, C = 512, an ~80 M-parameter trainable head) through the real `jrnet.engine.build_engine`
with `configs/deepspeed/zero<stage>.json`, fp32, torch AdamW, at a tiny input (64 px image, H = W = 4, micro-batch
2 per rank): the memory of parameters, gradients and optimizer states does not depend on the image size.
Each rank runs two training steps (forward, `engine.backward`, `engine.step`) and, after the second backward
(before its step: optimizer states from step 1 and this step's gradients both alive) and again after the step,
inventories what it holds, summing the bytes (numel x element size of each distinct storage, so views into a
flat buffer are counted once) of:
  parameters   : every model parameter's data and, at ZeRO-3, its partition `ds_tensor` (trainable / frozen);
  master       : the fp32 partitions ZeRO-1/2/3 give the torch optimizer (a copy even in fp32 training);
  optimizer    : the torch AdamW state tensors (exp_avg, exp_avg_sq, step);
  gradients    : `.grad` of the parameters and of the master partitions, and every tensor the ZeRO optimizer
                 object holds under an attribute path naming grads or ipg buckets (reduce buckets, partitions);
  other        : any other tensor the ZeRO optimizer object holds.
Next to it, the ZeRO paper's formula for Psi trainable parameters, N_d = 2 ranks, fp32 (4 bytes): parameters 4 Psi
(/ N_d at stage 3), gradients 4 Psi (/ N_d at stages 2-3), optimizer states m + v = 8 Psi (/ N_d at stages 1-3),
plus DeepSpeed's fp32 master partition 4 Psi / N_d at stages 1-3. Memory is deterministic: one run per stage.
Both ranks' numbers are printed; the table shows rank 0 (the ranks agree unless a column says otherwise).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import socket
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import ROOT, header, profiler_peak_bytes, table

MIB = 2**20
VOCAB = 10_000  # a RefCOCO-sized vocabulary (frozen GloVe embedding: not trained, not in the optimizer)
CATEGORIES = ("params trainable", "params frozen", "master", "optimizer", "gradients", "other")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- the inventory


def storage_key(t: torch.Tensor) -> tuple[int, int] | None:
    if t.device.type != "cpu":
        return None
    storage = t.untyped_storage()
    return (storage.data_ptr(), storage.nbytes()) if storage.nbytes() else None


def walk(obj, path: str, depth: int, seen: set, out: list, skip: tuple):
    """(path, tensor) of tensors reachable from obj through attributes, lists, tuples, dicts, dataclasses."""
    if depth < 0 or id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        out.append((path, obj))
        if obj.grad is not None:
            out.append((path + ".grad", obj.grad))
        return
    if isinstance(obj, skip):
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            walk(v, f"{path}[{k}]", depth - 1, seen, out, skip)
    elif isinstance(obj, list | tuple | set):
        for i, v in enumerate(obj):
            walk(v, f"{path}[{i}]", depth - 1, seen, out, skip)
    elif dataclasses.is_dataclass(obj) or (hasattr(obj, "__dict__") and type(obj).__module__.startswith("deepspeed")):
        for k, v in vars(obj).items():
            walk(v, f"{path}.{k}", depth - 1, seen, out, skip)


def inventory(engine) -> dict:
    """Bytes per category of what this rank holds (distinct storages, first category wins)."""
    opt = engine.optimizer
    inner = getattr(opt, "optimizer", opt)  # ZeRO wraps the torch optimizer; ZeRO-0 hands it over as is
    assigned: dict[tuple[int, int], str] = {}
    totals = dict.fromkeys(CATEGORIES, 0)
    where: dict[str, dict[str, int]] = {c: {} for c in CATEGORIES}  # category -> attribute path -> bytes

    def add(category: str, t: torch.Tensor | None, name: str = ""):
        if t is None:
            return
        key = storage_key(t)
        if key is None or key in assigned:
            return
        assigned[key] = category
        totals[category] += key[1]
        name = re.sub(r"\[\d+\]", "[i]", name)
        where[category][name] = where[category].get(name, 0) + key[1]

    params = list(engine.module.parameters())
    trainable = {id(p) for p in params if p.requires_grad or getattr(p, "ds_requires_grad", False)}
    for p in params:
        cat = "params trainable" if id(p) in trainable else "params frozen"
        add(cat, p.data)
        add(cat, getattr(p, "ds_tensor", None))
    # The torch optimizer's parameters are ZeRO's fp32 partitions (ZeRO-3 swaps them into param_groups only
    # during its step, so take them from the state's keys and ZeRO's own lists too).
    masters = [m for g in inner.param_groups for m in g["params"]] + list(inner.state.keys())
    masters += list(getattr(opt, "single_partition_of_fp32_groups", [])) if opt is not inner else []
    masters += list(getattr(opt, "fp32_partitioned_groups_flat", [])) if opt is not inner else []
    for m in masters:
        add("master", m, "fp32 partitions")
    for s in inner.state.values():
        for v in s.values():
            if isinstance(v, torch.Tensor):
                add("optimizer", v)
    for p in params:
        add("gradients", p.grad, "param.grad")
    for m in masters:
        add("gradients", m.grad, "fp32 partition .grad")
    if opt is not inner:
        found: list = []
        walk(opt, "opt", 4, {id(inner), id(engine.module)}, found, (torch.nn.Module, torch.optim.Optimizer))
        for path, t in found:
            low = path.lower()
            add("gradients" if ("grad" in low or "ipg" in low) else "other", t, path.removeprefix("opt."))
    return {"bytes": totals, "where": where}


def all_live_tensor_bytes() -> int:
    """Every distinct CPU storage of a live python-visible tensor (a cross-check of the inventory's total)."""
    import gc

    seen, total = set(), 0
    for obj in gc.get_objects():
        try:
            if isinstance(obj, torch.Tensor):
                key = storage_key(obj)
                if key and key not in seen:
                    seen.add(key)
                    total += key[1]
        except Exception:  # noqa: BLE001, S112 (some objects raise on isinstance)
            continue
    return total


# ---------------------------------------------------------------- one rank


def rank_main(rank: int, stage: int, port: int, out_dir: str) -> None:
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE="2",
        LOCAL_WORLD_SIZE="2",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        DS_ACCELERATOR="cpu",
    )
    import logging
    import warnings

    import numpy as np

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    from jrnet.config import load_config
    from jrnet.distributed import init_distributed
    from jrnet.engine import build_engine
    from jrnet.model import JRNet, mask_loss

    cfg = load_config(
        "paper_448",
        [
            "model.image_size=64",
            "model.feature_size=4",
            f"train.zero_stage={stage}",
            f"train.deepspeed_config={ROOT / 'configs' / 'deepspeed' / f'zero{stage}.json'}",
            "train.global_batch_size=4",
            "train.precision=fp32",
            "log.wandb=disabled",
        ],
    )
    env = init_distributed(None)
    torch.manual_seed(0)
    glove = np.zeros((VOCAB, cfg.model.word_dim), dtype=np.float32)  # frozen embedding, as with GloVe
    model = JRNet(cfg.model, VOCAB, glove)
    psi = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    t0 = time.perf_counter()
    engine = build_engine(cfg, model, env.world_size, micro_batch=2)
    init_s = time.perf_counter() - t0
    g = torch.Generator().manual_seed(rank)
    tokens = torch.randint(2, VOCAB, (2, cfg.data.max_words), generator=g)
    image = torch.randn(2, 3, 64, 64, generator=g)
    mask = torch.rand(2, 64, 64, generator=g) > 0.5
    snapshots, transient = {}, 0
    for step in range(2):
        loss = mask_loss(engine(tokens, image), mask)
        if step == 1:
            # bytes allocated during backward above the level before it, at its peak: gradients and reduce
            # buckets that exist only while backward runs (activations, tiny at 64 px, are freed meanwhile)
            transient, _ = profiler_peak_bytes(lambda loss=loss: engine.backward(loss))
            snapshots["after backward"] = inventory(engine)
        else:
            engine.backward(loss)
        engine.step()
    snapshots["after step"] = inventory(engine)
    live = all_live_tensor_bytes()
    rss = int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    record = {
        "rank": rank,
        "stage": stage,
        "psi": psi,
        "frozen": frozen,
        "optimizer_class": f"{type(engine.optimizer).__module__}.{type(engine.optimizer).__name__}",
        "snapshots": snapshots,
        "backward_peak_bytes": transient,
        "live_tensor_bytes": live,
        "rss_bytes": rss,
        "engine_init_s": init_s,
        "loss": loss.item(),
    }
    Path(out_dir, f"stage{stage}_rank{rank}.json").write_text(json.dumps(record))
    engine.destroy()
    torch.distributed.destroy_process_group()


# ---------------------------------------------------------------- main


def formula(stage: int, psi: int, n: int = 2) -> dict[str, float]:
    return {
        "params trainable": 4 * psi / (n if stage >= 3 else 1),
        "master": 4 * psi / n if stage >= 1 else 0,
        "optimizer": 8 * psi / (n if stage >= 1 else 1),
        "gradients": 4 * psi / (n if stage >= 2 else 1),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="ZeRO-0 and ZeRO-2 only (about 1 minute)")
    args = p.parse_args()
    stages = [0, 2] if args.quick else [0, 1, 2, 3]
    header(
        "Figure 4: ZeRO-0/1/2/3 per-rank memory of parameters, gradients, optimizer states (measured vs formula)",
        f"bytes each of 2 ranks holds after one training step of the paper_448 model through jrnet.engine."
        f"build_engine (fp32, torch AdamW, gloo), stages {stages}; inventory of tensors (distinct storages)",
    )
    out = Path(tempfile.mkdtemp(prefix="bench-zero-"))
    import torch.multiprocessing as mp

    records = {}
    for stage in stages:
        t0 = time.perf_counter()
        try:
            mp.spawn(rank_main, args=(stage, free_port(), str(out)), nprocs=2, join=True)
            records[stage] = [json.loads((out / f"stage{stage}_rank{r}.json").read_text()) for r in range(2)]
        finally:
            for r in range(2):
                (out / f"stage{stage}_rank{r}.json").unlink(missing_ok=True)
        r0 = records[stage][0]
        print(
            f"ZeRO-{stage}: {time.perf_counter() - t0:.0f} s (this machine), optimizer {r0['optimizer_class']}, "
            f"loss after 2 steps {r0['loss']:.5f} / {records[stage][1]['loss']:.5f}",
            flush=True,
        )
    out.rmdir()
    psi, frozen = records[stages[0]][0]["psi"], records[stages[0]][0]["frozen"]
    print(
        f"\ntrainable parameters Psi = {psi:,} ({psi / 1e6:.2f} M; the authors' head: 80.24 M), frozen = {frozen:,} "
        f"(ResNet-101 trunk + the {VOCAB}-word GloVe embedding)\n"
    )
    rows = []
    for stage in stages:
        recs = records[stage]
        snap = [r["snapshots"]["after backward"]["bytes"] for r in recs]
        after = [r["snapshots"]["after step"]["bytes"] for r in recs]
        f = formula(stage, psi)
        for cat in CATEGORIES:
            measured = snap[0][cat]
            other_rank = "" if snap[1][cat] == measured else f" (rank 1: {snap[1][cat] / MIB:.1f})"
            expected = f.get(cat)
            rows.append(
                [
                    f"ZeRO-{stage}",
                    cat,
                    f"{measured / MIB:.1f}{other_rank}",
                    f"{after[0][cat] / MIB:.1f}",
                    "" if expected is None else f"{expected / MIB:.1f}",
                    "" if not expected else f"{measured / expected:.3f}",
                ]
            )
        total = sum(snap[0].values())
        core = sum(snap[0][c] for c in ("params trainable", "master", "optimizer", "gradients"))
        rows.append(
            [
                f"ZeRO-{stage}",
                "**total held (all categories)**",
                f"{total / MIB:.1f}",
                f"{sum(after[0].values()) / MIB:.1f}",
                f"{sum(f.values()) / MIB:.1f} (w/o frozen)",
                f"{core / sum(f.values()):.3f} (w/o frozen, other)",
            ]
        )
    print(
        table(
            rows,
            ["stage", "category (rank 0)", "MiB after backward", "MiB after step", "formula MiB", "measured/formula"],
        )
    )
    print(
        "\npeak during the second engine.backward (torch.profiler profile_memory: running sum of CPU allocations and "
        "frees, MiB above the level before backward), rank 0 / rank 1: transient gradients and reduce buckets that "
        "the snapshots after backward no longer hold"
    )
    rows = []
    for stage in stages:
        recs = records[stage]
        before = [sum(r["snapshots"]["after step"]["bytes"].values()) for r in recs]  # = the level before backward
        peaks = [r["backward_peak_bytes"] for r in recs]
        rows.append(
            [
                f"ZeRO-{stage}",
                " / ".join(f"{b / MIB:.0f}" for b in before),
                " / ".join(f"{p / MIB:.0f}" for p in peaks),
                " / ".join(f"{(b + p) / MIB:.0f}" for b, p in zip(before, peaks, strict=True)),
            ]
        )
    print(
        table(
            rows,
            ["stage", "held between steps MiB", "+ peak during backward MiB", "= peak held during backward MiB"],
        )
    )
    print("\ncross-checks per rank (MiB): all live tensor storages in the process (gc), and process RSS")
    for stage in stages:
        for r in records[stage]:
            print(
                f"  ZeRO-{stage} rank {r['rank']}: live tensors {r['live_tensor_bytes'] / MIB:.0f}, "
                f"RSS {r['rss_bytes'] / MIB:.0f}"
            )
    print("\nwhere the ZeRO optimizer's gradient and other buffers are (rank 0, after backward, MiB):")
    for stage in stages:
        where = records[stage][0]["snapshots"]["after backward"]["where"]
        for cat in ("gradients", "other", "master"):
            listed = [f"{k} {v / MIB:.1f}" for k, v in where[cat].items() if v]
            if listed:
                print(f"  ZeRO-{stage} {cat}: {', '.join(listed)}")
    print("\nratios to ZeRO-0 (rank 0, after backward; params + master + optimizer + gradients, trainable only):")
    base = None
    for stage in stages:
        snap = records[stage][0]["snapshots"]["after backward"]["bytes"]
        core = sum(snap[c] for c in ("params trainable", "master", "optimizer", "gradients"))
        base = base or core
        expected = sum(formula(stage, psi).values()) / sum(formula(0, psi).values())
        print(f"  ZeRO-{stage}: {core / MIB:.0f} MiB = {core / base:.2f} x ZeRO-0 (formula: {expected:.2f} x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
