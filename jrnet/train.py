"""Training: a Trainer holds the run's state (model, optimizer and schedule in the DeepSpeed engine, the data
stream's position, the step) and loops "train step, then maybe log, evaluate, save, stop".

What a resume restores is `Trainer.state_dict()`, saved with every checkpoint beside DeepSpeed's own state.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from jrnet import checkpoint
from jrnet.config import Config
from jrnet.distributed import DistEnv, average_buffers, init_distributed, max_over_ranks, mean_over_ranks
from jrnet.engine import build_engine, resolve_precision, zero_stage
from jrnet.evaluate import evaluate_split
from jrnet.metrics import format_table
from jrnet.mix import Mix
from jrnet.model import build_jrnet, mask_loss, model_kwargs, trunk_identity
from jrnet.preemption import StopSignal
from jrnet.stream import LoaderPlan, TrainStream
from jrnet.tracking import RunLogger, new_run_id
from jrnet.visualize import gallery

log = logging.getLogger("jrnet.train")


@dataclass
class RunResult:
    step: int
    stopped_by_signal: int | None  # the signal that stopped the run after a checkpoint, or None: it finished
    eval: dict | None


def flatten(tree: dict, prefix: str = "") -> dict[str, float]:
    """{"eval": {"val": {"overall_iou": x}}} -> {"eval/val/overall_iou": x}: one metrics.jsonl / wandb key each."""
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        out.update(flatten(value, f"{name}/") if isinstance(value, dict) else {name: value})
    return out


def train(
    cfg: Config, shards_dir: str, output: str, max_steps: int | None, resume: str, stop: StopSignal | None = None
) -> RunResult:
    stop = stop or StopSignal()  # launch.py installs it first thing: a signal during the setup must not kill
    env = init_distributed(cfg.train.threads)
    logging.basicConfig(
        level=logging.INFO if env.is_main else logging.WARNING,
        format=f"%(asctime)s [rank {env.rank}] %(message)s",
    )
    data = Mix.open(shards_dir, cfg)  # with data.feature_cache the trunk is skipped: its levels come from the shards
    for warning in filter(None, (part.shards.resize_warning(cfg) for part in data.parts)):
        if env.is_main:
            log.warning(warning)
    out = Path(output)
    ckdir = out / "checkpoints"
    if env.is_main:
        ckdir.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(cfg.dumps())
    start = checkpoint.resolve(resume, ckdir)
    checkpoint.set_aside_newer(ckdir, start, env)
    universal = start is not None and checkpoint.needs_universal(start, env.world_size)
    trainer = Trainer(cfg, env, data, out, stop, load_universal=universal)
    if start is not None:
        trainer.resume(checkpoint.make_universal(start, env) if universal else start)
    return trainer.fit(min(cfg.train.total_steps, max_steps or cfg.train.total_steps))


@dataclass
class Window:
    """Sums over the steps between two log lines: where the time goes and how much was trained."""

    data: float = 0.0
    forward: float = 0.0
    backward: float = 0.0
    optimizer: float = 0.0
    loss: float = 0.0
    micro_batches: int = 0
    started: float = 0.0

    def __post_init__(self):
        self.started = time.perf_counter()

    @contextmanager
    def paused(self):
        """Evaluation and checkpoints are not training throughput."""
        paused = time.perf_counter()
        yield
        self.started += time.perf_counter() - paused


class Trainer:
    def __init__(self, cfg: Config, env: DistEnv, data: Mix, out: Path, stop: StopSignal, load_universal: bool):
        self.cfg, self.env, self.data, self.out, self.stop = cfg, env, data, out, stop
        self.plan = LoaderPlan.make(cfg, data.train_samples(cfg.data.train_split), env.world_size)
        model = build_jrnet(cfg, data.vocab_size(), data.glove(cfg.model.glove))
        self.trunk = trunk_identity(cfg, model.backbone.trunk)
        self.engine = build_engine(cfg, model, env.world_size, self.plan.micro_batch, load_universal=load_universal)
        torch.manual_seed(cfg.train.seed + env.rank)  # same init on every rank (above), own dropout masks from here
        self.stream = TrainStream(cfg, data, self.plan, env.world_size)
        self.step, self.run_id = 0, new_run_id()
        self.train_seconds = 0.0  # the learning curve's clock: training only, evaluations and checkpoints left out
        self.skipped: dict[tuple[int, int], int] = {}  # (epoch, worker) -> broken samples skipped so far
        self.logger: RunLogger | None = None

    # ------------------------------------------------------------ state

    def state_dict(self) -> dict:
        return {
            "step": self.step,
            "train_seconds": self.train_seconds,
            "wandb_id": self.run_id,
            "config": self.cfg.to_dict(),
            "trunk": self.trunk,
            "data": self.stream.state_dict(),
        }

    def load_state_dict(self, state: dict) -> str:
        self.step, self.run_id = state["step"], state["wandb_id"]
        self.train_seconds = state.get("train_seconds", 0.0)  # checkpoints written before the clock: from 0
        return self.stream.load_state_dict(state["data"])

    def resume(self, start: Path) -> None:
        position = self.load_state_dict(checkpoint.load(self.engine, start, self.env))
        log.info("resumed from %s at step %d (%s)", start, self.step, position)

    # ------------------------------------------------------------ the loop

    def fit(self, stop_at: int) -> RunResult:
        self.logger = RunLogger(self.out, self.cfg, self.env.is_main, self.run_id, self.step)
        self.log_setup()
        signalled = self.stop_requested()
        if signalled:  # nothing trained since the resume point: that checkpoint (or none) is where a requeue goes on
            log.info("signal %d before the first step: stopping without a new checkpoint", signalled)
            return self.finish(RunResult(self.step, signalled, None))
        t = self.cfg.train
        batches = iter(self.stream)
        bar = tqdm(total=stop_at, initial=self.step, desc="train", disable=not self.show_progress_bar())
        window = Window()
        while self.step < stop_at:
            self.train_step(batches, window)
            bar.update(1)
            signalled = self.stop_requested()
            last = self.step == stop_at or bool(signalled)
            if self.step % t.log_every == 0 or self.step % t.eval_every == 0 or last:  # evaluations read the clock
                self.log_window(window)
                window = Window()
            with window.paused():
                if self.step % t.eval_every == 0 and not last:
                    signalled = self.evaluate()[1]
                if self.step % t.checkpoint_every == 0 or last or signalled:
                    self.save()
            if signalled:
                log.info("signal %d: checkpoint at step %d written, stopping", signalled, self.step)
                return self.finish(RunResult(self.step, signalled, None))
        bar.close()
        results, signalled = self.evaluate(final=self.step >= t.total_steps)
        return self.finish(RunResult(self.step, signalled or None, results))

    def train_step(self, batches, window: Window) -> None:
        """One optimizer step: `grad_accum_steps` micro-batches through forward, backward and the engine's step."""
        dev = self.env.device
        for _ in range(self.cfg.train.grad_accum_steps):
            t0 = time.perf_counter()
            batch = next(batches)
            t1 = time.perf_counter()
            logits = self.engine(**model_kwargs(batch, dev))
            loss = mask_loss(logits, batch["mask"].to(dev), self.cfg.train.dice_weight)
            t2 = time.perf_counter()
            self.engine.backward(loss)
            t3 = time.perf_counter()
            self.engine.step()
            t4 = time.perf_counter()
            window.data += t1 - t0
            window.forward += t2 - t1
            window.backward += t3 - t2
            window.optimizer += t4 - t3
            window.loss += loss.item()
            window.micro_batches += 1
            self.skipped[self.stream.epoch, int(batch["worker"])] = int(batch["skipped"])
        self.step += 1

    def stop_requested(self) -> int:
        """The stop signal any rank received (all ranks agree), or 0."""
        return max_over_ranks(self.stop.received or 0)[0]

    def finish(self, result: RunResult) -> RunResult:
        self.logger.finish()
        return result

    # ------------------------------------------------------------ maybe log, evaluate, save

    def show_progress_bar(self) -> bool:
        """On a terminal only: carriage-return updates would flood a Slurm log; the log lines say the same."""
        return self.env.is_main and sys.stderr.isatty()

    def log_setup(self) -> None:
        t = self.cfg.train
        log.info(
            "world %d | global batch %d = %d ranks x micro-batch %d x accumulation %d | %d steps/epoch | "
            "precision %s | ZeRO-%d | %s",
            self.env.world_size,
            t.global_batch_size,
            self.env.world_size,
            self.plan.micro_batch,
            t.grad_accum_steps,
            self.plan.steps_per_epoch,
            resolve_precision(t.precision),
            zero_stage(self.cfg),
            self.env.device,
        )

    def log_window(self, w: Window) -> None:
        n = max(1, w.micro_batches)
        elapsed = time.perf_counter() - w.started
        self.train_seconds += elapsed
        samples = w.micro_batches * self.plan.micro_batch * self.env.world_size
        record = {
            "step": self.step,
            "train_seconds": self.train_seconds,
            "epoch": self.stream.epoch,
            "loss": mean_over_ranks(w.loss / n),
            "lr": self.engine.get_lr()[0],
            "samples_per_s": samples / elapsed,
            "samples_per_s_per_rank": samples / elapsed / self.env.world_size,
            "time_data_s": w.data / n,
            "time_forward_s": w.forward / n,
            "time_backward_s": w.backward / n,
            "time_optimizer_s": w.optimizer / n,
            "skipped_samples": round(mean_over_ranks(sum(self.skipped.values())) * self.env.world_size),
        }
        self.logger.log(record)
        log.info(
            "step %d | loss %.4f | lr %.2e | %.1f samples/s | data %.3fs fwd %.3fs bwd %.3fs opt %.3fs",
            self.step,
            record["loss"],
            record["lr"],
            record["samples_per_s"],
            record["time_data_s"],
            record["time_forward_s"],
            record["time_backward_s"],
            record["time_optimizer_s"],
        )

    def evaluate(self, final: bool = False) -> tuple[dict | None, int]:
        """(results, 0), or (None, signal) when a stop signal ended the evaluation early on every rank."""
        cfg, step = self.cfg, self.step
        average_buffers(self.engine.module)  # every rank evaluates, and saves, the same BatchNorm statistics
        self.engine.eval()
        results, images = {}, {}
        for label, part, tokens, split in self.data.eval_targets(cfg.data.eval_splits):  # label: val, or unc/val
            summary, panels = evaluate_split(
                self.engine,
                cfg,
                part.shards,
                split,
                self.env.device,
                batch_size=self.plan.micro_batch,
                overlays=cfg.log.overlays if self.env.is_main else 0,
                stop=self.stop,
                tokens=tokens,
            )
            if summary is None:
                self.engine.train()
                signalled = self.stop_requested()
                log.info("signal %d: evaluation of %s at step %d abandoned", signalled, label, step)
                return None, signalled
            results[label] = summary
            images[f"overlays/{label}"] = panels
            if self.env.is_main and panels:
                folder = self.out / "overlays"
                folder.mkdir(exist_ok=True)
                gallery([p for p, _ in panels]).save(folder / f"{label.replace('/', '_')}_step{step:08d}.png")
        self.engine.train()
        if self.env.is_main:
            record = {"step": step, "train_seconds": self.train_seconds, **flatten({"eval": results})}
            self.logger.log(record)
            self.logger.log_images(step, images)
            report = {"step": step, "train_seconds": self.train_seconds, "final": final, "splits": results}
            (self.out / "eval.json").write_text(json.dumps(report, indent=2))
            log.info("evaluation at step %d\n%s", step, format_table(results))
        return results, 0

    def save(self) -> None:
        average_buffers(self.engine.module)
        ckdir = self.out / "checkpoints"
        path = checkpoint.save(
            self.engine, ckdir, self.step, self.state_dict(), self.env, self.cfg.train.keep_checkpoints
        )
        log.info("checkpoint %s", path)
