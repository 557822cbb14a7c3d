"""The training command for every launcher (`launch.py` at the top of the repository, or `jrnet-train`):

    deepspeed --num_gpus N launch.py --config FILE --shards DIR --output DIR [--max-steps N]
                                     [--resume auto|PATH|none] [section.key=value ...]
    torchrun --nproc_per_node N launch.py ...      srun python launch.py ...      python launch.py ...
    jrnet-train --config paper_448 --print-config [section.key=value ...]     # the resolved config, as YAML

Everything that can be checked before a rank starts training is checked first, with a clear error.
Exit codes: 0 finished; 2 bad input (nothing started); 75 stopped by a signal after a complete checkpoint
(the caller requeues, and `--resume auto` continues from that step).
"""

from __future__ import annotations

import argparse
import sys

from jrnet.cli import HelpFormatter, skip_final_collection
from jrnet.preemption import EXIT_BAD_INPUT, EXIT_REQUEUE, StopSignal


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="jrnet-train", description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--config", required=True, help="YAML file or a named config (paper_448, paper_576, demo, tiny)")
    p.add_argument(
        "--shards",
        help="folder written by pipeline/shard.py (holds <dataset>/), an http(s):// prefix of one, or a "
        "pipe: command with {path} (README: shards in object storage); required to train",
    )
    p.add_argument("--output", help="run folder: checkpoints/, metrics.jsonl, eval.json; required to train")
    p.add_argument("--max-steps", type=int, default=None, help="stop at this step with a checkpoint (default: none)")
    p.add_argument(
        "--resume",
        default="auto",
        help="auto (latest complete checkpoint), none, or a checkpoint or run folder (default: auto)",
    )
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    p.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("overrides", nargs="*", help="section.key=value, e.g. train.lr=1e-4 model.jrm_layers=1")
    args = p.parse_args(argv)
    if not args.print_config and not (args.shards and args.output):
        p.error("--shards and --output are required to train")
    return args


def world_size_of_launch() -> int:
    import os

    return int(os.environ.get("WORLD_SIZE", os.environ.get("SLURM_NTASKS", "1")))


def preflight(args: argparse.Namespace, world_size: int | None = None):
    """Config, shards, precision and DeepSpeed config checked before any process group or engine exists."""
    import torch

    from jrnet import checkpoint
    from jrnet.config import ConfigError, load_config
    from jrnet.engine import deepspeed_config
    from jrnet.mix import Mix
    from jrnet.stream import LoaderPlan

    cfg = load_config(args.config, args.overrides)
    if cfg.train.precision == "fp16" and not torch.cuda.is_available():
        raise ConfigError("train.precision=fp16 needs a CUDA GPU (no fp16 training on CPU): use fp32 or bf16")
    data = Mix.open(args.shards, cfg)
    for part in data.parts:
        part.shards.urls(cfg.data.train_split)
    for _, part, _, split in data.eval_targets(cfg.data.eval_splits):  # each split in at least one dataset
        part.shards.urls(split)
    data.vocab_size()  # a mix reads every vocabulary: unreadable ones fail here
    world = world_size or world_size_of_launch()
    plan = LoaderPlan.make(cfg, data.train_samples(cfg.data.train_split), world)
    deepspeed_config(cfg, world, plan.micro_batch)
    if args.max_steps is not None and args.max_steps < 1:
        raise ConfigError("--max-steps must be >= 1")
    if args.resume not in ("auto", "none"):
        checkpoint.find(args.resume)
    return cfg


def main(argv: list[str] | None = None) -> int:
    stop = StopSignal()  # first, before the heavy imports: a stop signal from here on is a clean stop, not a kill
    skip_final_collection()
    from jrnet.checkpoint import CheckpointError
    from jrnet.config import ConfigError
    from jrnet.shards import DataError

    args = parse_args(argv)
    if args.print_config:
        from jrnet.config import ConfigError, load_config

        try:
            print(load_config(args.config, args.overrides).to_yaml(), end="")
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            return EXIT_BAD_INPUT
        return 0
    try:
        cfg = preflight(args)
    except (ConfigError, DataError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    from jrnet.distributed import shutdown_distributed
    from jrnet.train import train

    try:
        result = train(cfg, args.shards, args.output, args.max_steps, args.resume, stop)
    except (DataError, CheckpointError) as e:
        # A DataLoader worker's error arrives with its traceback in the message: its last line says what broke.
        print(f"error: {str(e).strip().splitlines()[-1]}", file=sys.stderr)
        return 1
    shutdown_distributed()
    return 0 if result.stopped_by_signal is None else EXIT_REQUEUE


if __name__ == "__main__":
    sys.exit(main())
