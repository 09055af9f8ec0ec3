"""Lightning callbacks of vlp's own (the others come from Lightning itself, see conf/callbacks/)."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch


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
