"""How much does a trained model with a gated JRM (JRNet, only JRM) use it? Its gates, and the split scored with
JRM's outputs removed.

    .venv/bin/python bench/jrm_knockout.py --checkpoint runs/demo --shards shards [--split val]

With `model.jrm_gate` each level enters the fusion as X + tanh(alpha) * JRM(X) (jrnet/jrm.py). Setting the pixel
gates, the word gates or both to 0 in the trained model removes that part of JRM's contribution and leaves every
other weight as trained; the drop in overall IoU is what the model takes from JRM.
"""

from __future__ import annotations

import torch
from common import trained_model_parser

from jrnet.evaluate import evaluate_split
from jrnet.inference import load
from jrnet.shard_format import KINDS

GATES = ("pixel_gates", "word_gates")
NO_JRM = "all gates 0 (JRM's outputs removed)"  # JRNet: only CMMLF's path; only JRM: the baseline's
KNOCKOUTS = {"as trained": (), "pixel gates 0": ("pixel_gates",), "word gates 0": ("word_gates",), NO_JRM: GATES}


@torch.no_grad()
def knockouts(model, cfg, shards, split: str) -> dict[str, dict]:
    """The split's summary (as `jrnet.evaluate` scores it) for each row of KNOCKOUTS; the gates are put back after."""
    jrm = model.jrm
    trained = {name: getattr(jrm, name).detach().clone() for name in GATES}
    rows = {}
    try:
        for label, zeroed in KNOCKOUTS.items():
            for name, alpha in trained.items():
                getattr(jrm, name).copy_(torch.zeros_like(alpha) if name in zeroed else alpha)
            rows[label], _ = evaluate_split(model, cfg, shards, split, "cpu", batch_size=64)
    finally:
        for name, alpha in trained.items():
            getattr(jrm, name).copy_(alpha)
    return rows


def main() -> None:
    args = trained_model_parser(__doc__).parse_args()
    torch.set_num_threads(1)
    trained = load(args.checkpoint, args.shards)
    jrm = trained.model.jrm
    if jrm is None or not jrm.gated:
        raise SystemExit(f"error: {args.checkpoint} has no gated JRM (model.variant with JRM and model.jrm_gate)")
    for name in GATES:
        print(f"{name}: tanh(alpha) per level = {', '.join(f'{v:.3f}' for v in getattr(jrm, name).tanh().tolist())}")
    shards = trained.datasets(args.shards).parts[0].shards
    rows = knockouts(trained.model, trained.cfg, shards, args.split)
    print(f"{args.checkpoint}, {args.split}: overall IoU (by kind: {' / '.join(KINDS)})")
    print("| JRM | overall IoU | prec@0.9 | " + " | ".join(KINDS) + " |")
    print("| --- | ---: | ---: |" + " ---: |" * len(KINDS))
    for label, s in rows.items():
        kinds = [100 * s["by_kind"][k]["overall_iou"] if k in s.get("by_kind", {}) else float("nan") for k in KINDS]
        cells = " | ".join(f"{v:.2f}" for v in kinds)
        print(f"| {label} | {100 * s['overall_iou']:.2f} | {100 * s['prec@0.9']:.2f} | {cells} |")


if __name__ == "__main__":
    main()
