"""Lightning callbacks of vlp's own (the others come from Lightning itself, see conf/callbacks/)."""

from __future__ import annotations

import random
import time
import zlib
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.flop_counter import FlopCounterMode


class DataSkipMonitor(pl.Callback):
    """Logs how many bad samples the data pipeline skipped and stops a run whose data is mostly bad.

    Each batch carries ``data_skipped`` (samples its worker skipped since its previous batch; see
    vlp.data.pipeline). The counts are summed over ranks every step, so every rank sees the same totals
    and stops together (a rank raising alone would leave the others waiting in a collective).

    Args:
        max_skip_rate: the run aborts when skipped / (skipped + used) exceeds this...
        min_samples: ...once at least this many samples have been read (early rates are noisy).
    """

    def __init__(self, max_skip_rate: float = 0.01, min_samples: int = 1000) -> None:
        if not 0.0 <= max_skip_rate <= 1.0:
            raise ValueError(f"max_skip_rate must be within [0, 1], got {max_skip_rate}")
        self.max_skip_rate = max_skip_rate
        self.min_samples = min_samples
        self.skipped = 0
        self.used = 0
        self._eval_skipped = 0

    @staticmethod
    def _batch_size(batch: dict[str, Any]) -> int:
        return int(batch["input_ids"].shape[0]) if "input_ids" in batch else 0

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        skipped = int(batch.pop("data_skipped", 0)) if isinstance(batch, dict) else 0
        local = torch.tensor([skipped, self._batch_size(batch)], dtype=torch.float64, device=pl_module.device)
        total = trainer.strategy.reduce(local, reduce_op="sum")
        self.skipped += int(total[0])
        self.used += int(total[1])
        pl_module.log(
            "train/data/skipped", float(self.skipped), on_step=True, on_epoch=False, sync_dist=False
        )
        seen = self.skipped + self.used
        rate = self.skipped / seen if seen else 0.0
        if seen >= self.min_samples and rate > self.max_skip_rate:
            raise RuntimeError(
                f"the data pipeline skipped {self.skipped} of {seen} samples ({100 * rate:.1f}%), over the "
                f"limit callbacks.data_skips.max_skip_rate={self.max_skip_rate}: the log names the first bad "
                "samples and their reasons"
            )

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._eval_skipped = 0

    def on_validation_batch_start(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if isinstance(batch, dict):
            self._eval_skipped += int(batch.pop("data_skipped", 0))

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        skipped = torch.tensor(float(self._eval_skipped), device=pl_module.device)
        pl_module.log("val/data/skipped", skipped, reduce_fx="sum", sync_dist=True)

    def state_dict(self) -> dict[str, int]:
        return {"skipped": self.skipped, "used": self.used}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self.skipped = int(state_dict.get("skipped", 0))
        self.used = int(state_dict.get("used", 0))


class Telemetry(pl.Callback):
    """Training speed as it happens: ``perf/samples_per_second`` (global batch over wall time),
    ``perf/step_seconds``, ``perf/data_wait_fraction`` (the share of wall time between one step's end and
    the next one's start, where the loop waits for the data loader), each over the last ``every_n_steps``
    optimizer steps; and, when ``peak_flops_per_device`` is given (e.g. 989e12 for an H100 in bf16),
    ``perf/mfu``: model FLOPs utilisation, from the FLOPs of one training step that torch's
    FlopCounterMode counts on the first batch (forward and backward, the optimizer not counted).

    Times are wall-clock on rank 0; on GPU they include waiting for the device only where the step
    synchronises (the loss logging does), which is what the user waits for too.
    """

    def __init__(self, every_n_steps: int = 50, peak_flops_per_device: float | None = None) -> None:
        self.every_n_steps = every_n_steps
        self.peak_flops_per_device = peak_flops_per_device
        self.flops_per_step: float | None = None
        self._counter: FlopCounterMode | None = None
        self._reset()
        self._last_end: float | None = None

    def _reset(self) -> None:
        self._wait = self._busy = 0.0
        self._samples = self._steps = 0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last_end = None  # the gap across an epoch boundary (validation, checkpoints) is not data wait

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._start = time.perf_counter()
        if self._last_end is not None:
            self._wait += self._start - self._last_end
        if self.peak_flops_per_device and self.flops_per_step is None and self._counter is None:
            self._counter = FlopCounterMode(display=False)
            self._counter.__enter__()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._counter is not None:  # the first step, counted: not timed
            self._counter.__exit__(None, None, None)
            self.flops_per_step = float(self._counter.get_total_flops())
            self._counter = None
            self._last_end = time.perf_counter()
            return
        end = time.perf_counter()
        self._busy += end - self._start
        self._last_end = end
        self._samples += int(batch["input_ids"].shape[0]) * trainer.world_size
        self._steps += 1
        if self._steps >= self.every_n_steps:
            elapsed = self._wait + self._busy
            metrics = {
                "perf/samples_per_second": self._samples / elapsed,
                "perf/step_seconds": elapsed / self._steps,
                "perf/data_wait_fraction": self._wait / elapsed,
            }
            if self.flops_per_step and self.peak_flops_per_device:
                achieved = self.flops_per_step * self._steps / elapsed  # per device: each runs its step
                metrics["perf/mfu"] = achieved / self.peak_flops_per_device
            # straight to the loggers (as LearningRateMonitor does): self.log would keep only the values
            # that fall on trainer.log_every_n_steps
            if trainer.is_global_zero:
                for logger in trainer.loggers:
                    logger.log_metrics(metrics, step=trainer.global_step)
            self._reset()


class StepSeed(pl.Callback):
    """Seeds every training batch's randomness (dropout, ITM negative draws, anything drawing from the
    global RNGs) from (seed, rank, epoch, batch index), so that no RNG state needs saving: a run resumed
    from a step checkpoint draws exactly what the uninterrupted run drew at the same batch, on every rank.
    (Data augmentation in the loader is seeded per sample, see vlp.data.pipeline.StreamContext.)"""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        key = f"{self.seed}/{trainer.global_rank}/{trainer.current_epoch}/{batch_idx}"
        seed = zlib.crc32(key.encode())
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)  # also seeds every CUDA device


class NonFiniteGuard(pl.Callback):
    """Skips every optimizer step whose loss or gradients are not finite (the gradients are dropped, so
    the weights and the optimizer's moments keep their last good values) and counts it
    (``train/nonfinite_steps``). After ``max_consecutive`` such steps in a row the run stops: it saves
    the last good state as ``<run_dir>/checkpoints/nonfinite-stop.ckpt`` and raises with a message.

    Under DDP the check reads the all-reduced gradients, the same on every rank, so all ranks skip or stop
    together. With fp16 gradient scaling, overflowing gradients are the scaler's to handle (it skips the
    step and lowers the scale): there only a non-finite loss counts.
    """

    def __init__(self, max_consecutive: int = 10, checkpoint_dir: str | None = None) -> None:
        if max_consecutive < 1:
            raise ValueError(f"callbacks.nonfinite_guard.max_consecutive must be >= 1, got {max_consecutive}")
        self.max_consecutive = max_consecutive
        self.checkpoint_dir = checkpoint_dir
        self.skipped = 0
        self.in_a_row = 0
        self._loss_ok: torch.Tensor | None = None  # all micro-batch losses since the last step finite

    def on_before_backward(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor
    ) -> None:
        # kept on the device and read with the gradients: one sync a step, after backward
        finite = torch.isfinite(loss.detach()).all()
        self._loss_ok = finite if self._loss_ok is None else self._loss_ok & finite

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        gradients = [
            p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None
        ]
        scaled = getattr(trainer.precision_plugin, "scaler", None) is not None
        checks = [] if self._loss_ok is None else [self._loss_ok]
        self._loss_ok = None
        if gradients and not scaled:
            checks.append(torch.stack(torch._foreach_norm(gradients)).isfinite().all())
        finite = not checks or bool(torch.stack([check.to(checks[0].device) for check in checks]).all())
        if finite:
            self.in_a_row = 0
            return
        for group in optimizer.param_groups:  # no gradient, no update (AdamW skips such parameters)
            for parameter in group["params"]:
                parameter.grad = None
        self.skipped += 1
        self.in_a_row += 1
        if self.in_a_row >= self.max_consecutive:
            directory = self.checkpoint_dir or f"{trainer.default_root_dir}/checkpoints"
            path = f"{directory}/nonfinite-stop.ckpt"
            trainer.save_checkpoint(path)
            raise RuntimeError(
                f"{self.in_a_row} optimizer steps in a row had a non-finite loss or gradient (step "
                f"{trainer.global_step}; {self.skipped} skipped in all): stopped, the last good state is "
                f"{path}. Lower system.optimizer.lr, check the data, or try trainer.precision=bf16-mixed"
            )

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        pl_module.log("train/nonfinite_steps", float(self.skipped), on_step=True, on_epoch=False)

    def state_dict(self) -> dict[str, int]:
        return {"skipped": self.skipped, "in_a_row": self.in_a_row}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self.skipped = int(state_dict.get("skipped", 0))
        self.in_a_row = int(state_dict.get("in_a_row", 0))
