"""Run logging on rank 0: `<output>/metrics.jsonl` (one object per logged step) and wandb (offline by default).

The wandb run id lives in the checkpoint, so a resumed run continues the same wandb run; metrics.jsonl lines
past the resumed step (logged after the last checkpoint of a crashed run) are dropped, so the file reads as
one uninterrupted run.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from pathlib import Path

from jrnet.config import Config
from jrnet.fileio import write_atomic_text

log = logging.getLogger(__name__)


def new_run_id() -> str:
    return secrets.token_hex(4)  # the shape of wandb's own ids: 8 lower-case alphanumerics


class RunLogger:
    def __init__(self, output: Path, cfg: Config, enabled: bool, run_id: str, resumed_step: int):
        self.enabled = enabled
        self.path = output / "metrics.jsonl"
        self.wandb = None
        if not enabled:
            return
        self._truncate_after(resumed_step)
        if cfg.log.wandb != "disabled":
            import wandb

            os.environ.setdefault("WANDB_SILENT", "true")
            self.wandb = wandb.init(
                project=cfg.log.project,
                name=cfg.name,
                id=run_id,
                resume="allow",
                mode=cfg.log.wandb,
                dir=str(output),
                config=cfg.to_dict(),
            )

    def _truncate_after(self, step: int) -> None:
        if not self.path.is_file():
            return
        kept = []
        for number, line in enumerate(self.path.read_text().splitlines(), 1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # torn by a kill or a full disk mid-write
                log.warning("%s: dropped unreadable line %d: %.80s", self.path, number, line)
                continue
            if record["step"] <= step:
                kept.append(line)
        write_atomic_text(self.path, "".join(f"{line}\n" for line in kept))

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.wandb is not None:
            self.wandb.log({k: v for k, v in record.items() if k != "step"}, step=record["step"])

    def log_images(self, step: int, images: dict[str, list]) -> None:
        """images: name -> list of (PIL image, caption)."""
        if self.wandb is None:
            return
        import wandb

        self.wandb.log({k: [wandb.Image(img, caption=cap) for img, cap in v] for k, v in images.items()}, step=step)

    def finish(self) -> None:
        if self.wandb is not None:
            self.wandb.finish()
