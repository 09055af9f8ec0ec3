"""Callbacks that tests add to vlp-train runs (``+callbacks.<name>._target_=tests.resume_helpers...``)."""

from __future__ import annotations

import json
import os
import signal
from typing import Any

import pytorch_lightning as pl


class RecordBatches(pl.Callback):
    """Appends each training batch's (epoch, step, image ids) to a file, flushed to disk at once (the
    process may be killed at any moment)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        record = {
            "epoch": trainer.current_epoch,
            "step": trainer.global_step,
            "ids": batch["image_id"].tolist(),
        }
        with open(self.path, "a") as out:
            out.write(json.dumps(record) + "\n")
            out.flush()
            os.fsync(out.fileno())


class KillAtStep(pl.Callback):
    """SIGKILLs its own process as the batch of global step ``step`` starts: no cleanup, no last save."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class KillDuringSave(pl.Callback):
    """SIGKILLs its own process half-way through writing the checkpoint of global step ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: Any, checkpoint: dict) -> None:
        if trainer.global_step != self.step:
            return
        from fsspec.implementations.local import LocalFileOpener

        def write_half_then_die(opener: Any, data: bytes) -> int:
            opener.f.write(data[: len(data) // 2])
            opener.f.flush()
            os.fsync(opener.f.fileno())
            os.kill(os.getpid(), signal.SIGKILL)
            return 0

        LocalFileOpener.write = write_half_then_die


class InjectNaN(pl.Callback):
    """Turns the images of the batches of the given global steps into NaN (``every_step_from``: of every
    step from then on)."""

    def __init__(self, steps: list[int] | None = None, every_step_from: int | None = None) -> None:
        self.steps = set(steps or [])
        self.every_step_from = every_step_from

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        step = trainer.global_step
        if step in self.steps or (self.every_step_from is not None and step >= self.every_step_from):
            batch["pixel_values"].fill_(float("nan"))
