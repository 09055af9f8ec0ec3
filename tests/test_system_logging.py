"""What VLPSystem logs: step values at the logger's steps, and epoch means over every batch, even though
metrics are handed to Lightning only at those steps (the per-call cost of ``self.log`` is milliseconds)."""

from __future__ import annotations

import functools

import pytorch_lightning as pl
import torch

from vlp.data.synthetic import DEFAULT_IMAGE_SIZE as SIZE  # the demo model's image size
from vlp.objectives.base import Objective
from vlp.system import VLPSystem
from vlp.types import ObjectiveOutput


class BatchIdMean(Objective):
    """A loss that trains the model a little and a metric whose value we know: the batch's mean image id."""

    def forward(self, batch, encoded, model):
        loss = encoded.image.embedding.pow(2).mean()
        return ObjectiveOutput(loss=loss, metrics={"id": batch["image_id"].float().mean()})


class Catcher(pl.loggers.Logger):
    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[int, dict[str, float]]] = []

    name, version = "catcher", 0

    def log_metrics(self, metrics, step=None) -> None:
        self.rows.append((step, dict(metrics)))

    def log_hyperparams(self, *args, **kwargs) -> None:
        pass


def batches(count: int) -> list[dict[str, torch.Tensor]]:
    return [
        {
            "pixel_values": torch.randn(2, 3, SIZE, SIZE),
            "input_ids": torch.randint(5, 50, (2, 6)),
            "attention_mask": torch.ones(2, 6, dtype=torch.long),
            "image_id": torch.tensor([index, index]),  # the metric's value on this batch = its index
        }
        for index in range(count)
    ]


def test_step_values_at_the_logger_steps_and_exact_epoch_means(tiny_model, tmp_path):
    system = VLPSystem(
        tiny_model, {"probe": BatchIdMean()}, functools.partial(torch.optim.SGD, lr=0.01), weight_decay=0.0
    )
    logger = Catcher()
    trainer = pl.Trainer(
        accelerator="cpu", max_epochs=2, log_every_n_steps=3, logger=logger, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path, limit_val_batches=0,
    )  # fmt: skip
    loader = torch.utils.data.DataLoader(batches(7), batch_size=None)
    trainer.fit(system, train_dataloaders=loader)
    steps = {step: row["train/probe/id_step"] for step, row in logger.rows if "train/probe/id_step" in row}
    # the logger writes at steps 2, 5 (epoch 0: batches 2 and 5) and 8, 11 (epoch 1: batches 1 and 4)
    assert steps == {2: 2.0, 5: 5.0, 8: 1.0, 11: 4.0}
    epoch_means = [row["train/probe/id_epoch"] for _, row in logger.rows if "train/probe/id_epoch" in row]
    assert epoch_means == [3.0, 3.0]  # the mean of 0..6: every batch counted, not only the logged ones
