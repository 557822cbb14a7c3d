"""The training loop: step-based, epochs defined by the data, exact resume, periodic evaluation and checkpoints."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from jrnet import checkpoint
from jrnet.config import Config
from jrnet.data import LoaderPlan, ShardSet, data_order, model_kwargs, train_loader
from jrnet.distributed import DistEnv, init_distributed, max_over_ranks, mean_over_ranks
from jrnet.engine import build_engine, resolve_precision, zero_stage
from jrnet.evaluate import evaluate_split
from jrnet.metrics import format_table
from jrnet.model import build_jrnet, mask_loss, trunk_identity
from jrnet.preemption import StopSignal
from jrnet.tracking import RunLogger, new_run_id
from jrnet.visualize import gallery

log = logging.getLogger("jrnet.train")


@dataclass
class Progress:
    """Where the run is: optimizer steps done, epoch, micro-batches of that epoch already consumed."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0


@dataclass
class RunResult:
    progress: Progress
    stopped_by_signal: int | None
    eval: dict | None


def train(
    cfg: Config, shards_dir: str, output: str, max_steps: int | None, resume: str, stop: StopSignal | None = None
) -> RunResult:
    stop = stop or StopSignal()  # launch.py installs it first thing: a signal during the setup must not kill
    env = init_distributed(cfg.train.threads)
    logging.basicConfig(
        level=logging.INFO if env.is_main else logging.WARNING,
        format=f"%(asctime)s [rank {env.rank}] %(message)s",
    )
    shards = ShardSet.open(shards_dir, cfg.data.dataset)
    shards.check_max_words(cfg)
    out = Path(output)
    ckdir = out / "checkpoints"
    if env.is_main:
        ckdir.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(cfg.dumps())
    if cfg.data.feature_cache:
        shards = shards.features(cfg)  # the trunk is skipped: its cached levels come from the shards
    plan = LoaderPlan.make(cfg, shards.split(cfg.data.train_split)["samples"], env.world_size)
    model = build_jrnet(cfg, shards.vocab_size(), shards.glove(cfg.model.glove))
    trunk = trunk_identity(cfg, model.backbone.trunk)
    order = data_order(cfg, shards, env.world_size)
    start = checkpoint.resolve(resume, ckdir)
    checkpoint.set_aside_newer(ckdir, start, env)
    universal = start is not None and checkpoint.needs_universal(start, env.world_size)
    engine = build_engine(cfg, model, env.world_size, plan.micro_batch, load_universal=universal)
    dtype = next(p.dtype for p in engine.module.parameters() if p.is_floating_point())
    torch.manual_seed(cfg.train.seed + env.rank)  # same init on every rank (above), own dropout masks from here

    progress, run_id = Progress(), None
    if start is not None:
        if universal:
            start = checkpoint.make_universal(start, env)
        state = checkpoint.load(engine, start, env)
        progress, run_id = Progress(**state["progress"]), state["wandb_id"]
        log.info(
            "resumed from %s at step %d (epoch %d, %s)",
            start,
            progress.step,
            progress.epoch,
            resume_position(progress, state.get("data_order", {}), order),
        )
    run_id = run_id or new_run_id()
    logger = RunLogger(out, cfg, env.is_main, run_id, progress.step)
    stop_at = min(cfg.train.total_steps, max_steps or cfg.train.total_steps)
    precision = resolve_precision(cfg.train.precision)
    log.info(
        "world %d | global batch %d = %d ranks x micro-batch %d x accumulation %d | %d steps/epoch | "
        "precision %s | ZeRO-%d | %s",
        env.world_size,
        cfg.train.global_batch_size,
        env.world_size,
        plan.micro_batch,
        cfg.train.grad_accum_steps,
        plan.steps_per_epoch,
        precision,
        zero_stage(cfg),
        env.device,
    )
    signalled = max_over_ranks(stop.received or 0)[0]
    if signalled:  # nothing trained since `start`: that checkpoint (or none) is where a requeued run continues
        log.info("signal %d before the first step: stopping without a new checkpoint", signalled)
        logger.finish()
        return RunResult(progress, signalled, None)

    ctx = TrainContext(cfg, env, engine, shards, plan, logger, ckdir, dtype, run_id, trunk, order, stop)
    bar = tqdm(total=stop_at, initial=progress.step, disable=not env.is_main, desc="train", dynamic_ncols=True)
    window = Window()
    while progress.step < stop_at:
        batches = train_loader(cfg, shards, plan, progress.epoch, skip=progress.batch_in_epoch)
        t_ready = time.perf_counter()
        for batch in batches:
            window.data += time.perf_counter() - t_ready
            boundary = engine.is_gradient_accumulation_boundary()
            window.add(ctx.micro_step(batch, progress.epoch))
            progress.batch_in_epoch += 1
            if boundary:
                progress.step += 1
                bar.update(1)
                signalled = max_over_ranks(stop.received or 0)[0]
                if progress.step % cfg.train.log_every == 0 or progress.step == stop_at or signalled:
                    ctx.log_window(progress, window)
                    window = Window()
                paused = time.perf_counter()  # evaluation and checkpoints are not training throughput
                if progress.step % cfg.train.eval_every == 0 and progress.step < stop_at and not signalled:
                    signalled = ctx.evaluate(progress.step)[1]
                last = progress.step == stop_at or signalled
                if progress.step % cfg.train.checkpoint_every == 0 or last:
                    ctx.save(progress)
                window.started += time.perf_counter() - paused
                if signalled:
                    log.info("signal %d: checkpoint at step %d written, stopping", signalled, progress.step)
                    logger.finish()
                    return RunResult(progress, signalled, None)
                if progress.step >= stop_at:
                    break
            t_ready = time.perf_counter()
        else:
            progress.epoch += 1
            progress.batch_in_epoch = 0
            continue
        break
    bar.close()
    result_eval, signalled = ctx.evaluate(progress.step, final=progress.step >= cfg.train.total_steps)
    logger.finish()
    return RunResult(progress, signalled or None, result_eval)


def resume_position(progress: Progress, saved: dict, current: dict) -> str:
    """Continue mid-epoch only when the data order is the one the checkpoint was cut in; else restart the epoch."""
    changed = [f"{k} {saved.get(k)!r} -> {v!r}" for k, v in current.items() if saved.get(k) != v]
    if not changed:
        return f"batch {progress.batch_in_epoch} of the epoch: exact data position"
    lost = progress.batch_in_epoch
    progress.batch_in_epoch = 0
    return f"restarting the epoch, {lost} batches of it are seen again: the data order changed ({'; '.join(changed)})"


@dataclass
class Window:
    """Sums over the steps between two log lines: where the time goes and how much was trained."""

    data: float = 0.0
    forward: float = 0.0
    backward: float = 0.0
    optimizer: float = 0.0
    loss: float = 0.0
    micro_batches: int = 0
    skipped: int = 0
    started: float = 0.0

    def __post_init__(self):
        self.started = time.perf_counter()

    def add(self, timing: dict) -> None:
        self.forward += timing["forward"]
        self.backward += timing["backward"]
        self.optimizer += timing["optimizer"]
        self.loss += timing["loss"]
        self.micro_batches += 1
        self.skipped = timing["skipped"]


class TrainContext:
    def __init__(self, cfg, env: DistEnv, engine, shards, plan, logger, ckdir, dtype, run_id, trunk, order, stop):
        self.cfg, self.env, self.engine, self.shards, self.plan = cfg, env, engine, shards, plan
        self.logger, self.ckdir, self.dtype, self.run_id = logger, ckdir, dtype, run_id
        self.trunk, self.order, self.stop = trunk, order, stop
        self.skipped: dict[tuple[int, int], int] = {}  # (epoch, worker) -> broken samples skipped so far

    def micro_step(self, batch: dict, epoch: int) -> dict:
        dev = self.env.device
        t0 = time.perf_counter()
        logits = self.engine(**model_kwargs(batch, dev, self.dtype))
        loss = mask_loss(logits, batch["mask"].to(dev))
        t1 = time.perf_counter()
        self.engine.backward(loss)
        t2 = time.perf_counter()
        self.engine.step()
        t3 = time.perf_counter()
        self.skipped[epoch, int(batch["worker"])] = int(batch["skipped"])
        return {
            "forward": t1 - t0,
            "backward": t2 - t1,
            "optimizer": t3 - t2,
            "loss": loss.item(),
            "skipped": sum(self.skipped.values()),
        }

    def log_window(self, progress: Progress, w: Window) -> None:
        n = max(1, w.micro_batches)
        elapsed = time.perf_counter() - w.started
        samples = w.micro_batches * self.plan.micro_batch * self.env.world_size
        record = {
            "step": progress.step,
            "epoch": progress.epoch,
            "loss": mean_over_ranks(w.loss / n),
            "lr": self.engine.get_lr()[0],
            "samples_per_s": samples / elapsed,
            "samples_per_s_per_rank": samples / elapsed / self.env.world_size,
            "time_data_s": w.data / n,
            "time_forward_s": w.forward / n,
            "time_backward_s": w.backward / n,
            "time_optimizer_s": w.optimizer / n,
            "skipped_samples": round(mean_over_ranks(w.skipped) * self.env.world_size),
        }
        self.logger.log(record)
        if self.env.is_main:
            log.info(
                "step %d | loss %.4f | lr %.2e | %.1f samples/s | data %.3fs fwd %.3fs bwd %.3fs opt %.3fs",
                progress.step,
                record["loss"],
                record["lr"],
                record["samples_per_s"],
                record["time_data_s"],
                record["time_forward_s"],
                record["time_backward_s"],
                record["time_optimizer_s"],
            )

    def evaluate(self, step: int, final: bool = False) -> tuple[dict | None, int]:
        """(results, 0), or (None, signal) when a stop signal ended the evaluation early on every rank."""
        cfg, out = self.cfg, self.ckdir.parent
        self.engine.eval()
        results, images = {}, {}
        for split in cfg.data.eval_splits:
            summary, panels = evaluate_split(
                self.engine,
                cfg,
                self.shards,
                split,
                self.env.device,
                self.dtype,
                batch_size=self.plan.micro_batch,
                overlays=cfg.log.overlays if self.env.is_main else 0,
                stop=self.stop,
            )
            if summary is None:
                self.engine.train()
                signalled = max_over_ranks(self.stop.received or 0)[0]
                log.info("signal %d: evaluation of %s at step %d abandoned", signalled, split, step)
                return None, signalled
            results[split] = summary
            images[f"overlays/{split}"] = panels
            if self.env.is_main and panels:
                folder = out / "overlays"
                folder.mkdir(exist_ok=True)
                gallery([p for p, _ in panels]).save(folder / f"{split}_step{step:08d}.png")
        self.engine.train()
        if self.env.is_main:
            record = {"step": step, **{f"eval/{s}/{k}": v for s, m in results.items() for k, v in m.items()}}
            self.logger.log(record)
            self.logger.log_images(step, images)
            (out / "eval.json").write_text(json.dumps({"step": step, "final": final, "splits": results}, indent=2))
            log.info("evaluation at step %d\n%s", step, format_table(results))
        return results, 0

    def save(self, progress: Progress) -> None:
        state = {
            "progress": progress.__dict__.copy(),
            "config": self.cfg.to_dict(),
            "wandb_id": self.run_id,
            "trunk": self.trunk,
            "data_order": self.order,
        }
        path = checkpoint.save(self.engine, self.ckdir, progress.step, state, self.env, self.cfg.train.keep_checkpoints)
        log.info("checkpoint %s", path)
