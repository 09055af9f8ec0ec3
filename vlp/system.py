"""VLPSystem: the LightningModule that trains a VLPModel with a weighted sum of objectives.

It holds no architecture: it receives the model, the objectives and the evaluators, built by the entry
point from the config.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torchmetrics import MeanMetric

from vlp.model.vlp import VLPModel
from vlp.objectives.base import Objective
from vlp.optim import freeze_parameters, parameter_groups
from vlp.types import Batch

OptimizerFactory = Callable[..., Optimizer]  # called with param groups
SchedulerFactory = Callable[..., Any]  # called with (optimizer, total_steps=...)


class VLPSystem(pl.LightningModule):
    """Args:
    model: the VLPModel being trained.
    objectives: name -> Objective; logged as ``{stage}/{name}/{metric}``.
    optimizer: e.g. ``functools.partial(torch.optim.AdamW, lr=1e-4)``; gets the param groups.
    scheduler: e.g. ``functools.partial(vlp.optim.warmup_cosine, warmup_steps=100)``; gets
        ``total_steps`` from the Trainer. Stepped every optimizer step.
    evaluators: name -> evaluator with ``update(batch, encoded, model, outputs)``, ``compute()``,
        ``reset()``; optionally ``save(stage)`` (prediction files, rank 0) and ``bind(model, objectives)``.
    weight_decay: applied to weights, never to biases and norms.
    lr_multipliers: parameter-name prefix -> factor of the optimizer's lr, e.g. ``{"model": 0.2}`` so
        that pretrained encoders move slower than new heads (``objectives.*``) when finetuning.
    layer_decay: encoder prefix -> layer-wise lr decay, e.g. ``{"model.vision": 0.65}`` (see
        :func:`vlp.optim.parameter_groups`).
    freeze: regexes over whole parameter names whose parameters are not trained, e.g.
        ``["model\\.vision\\..*"]`` (see :func:`vlp.optim.freeze_parameters`).
    """

    def __init__(
        self,
        model: VLPModel,
        objectives: dict[str, Objective],
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        evaluators: dict[str, Any] | None = None,
        weight_decay: float = 0.01,
        lr_multipliers: dict[str, float] | None = None,
        layer_decay: dict[str, float] | None = None,
        freeze: list[str] | None = None,
        compile: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if not objectives:
            raise ValueError("objectives is empty: select at least one, e.g. objectives=[itc,itm,mlm]")
        self.model = model
        self.objectives = nn.ModuleDict(objectives)
        for objective in self.objectives.values():
            if hasattr(objective, "bind"):  # objectives that keep copies of the model (ITC's momentum towers)
                objective.bind(model)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.evaluators = dict(evaluators or {})
        for evaluator in self.evaluators.values():
            if hasattr(evaluator, "bind"):  # evaluators that run the model's heads (retrieval re-ranking)
                evaluator.bind(model, dict(self.objectives))
        self.weight_decay = weight_decay
        self.lr_multipliers = dict(lr_multipliers or {})
        self.layer_decay = dict(layer_decay or {})
        # Frozen here, not in configure_optimizers: Lightning wraps the system in DDP before it asks for
        # optimizers, and DDP only leaves out the parameters that already have requires_grad=False (it
        # would otherwise wait for, or search every step for, gradients that never come). Checkpoints
        # still hold the frozen tensors, and a resumed run freezes the same ones when it rebuilds the
        # system, so its parameter groups match the saved optimizer state.
        freeze_parameters(self, list(freeze or []))
        self._parameter_groups()  # a wrong prefix fails now, before data loading and DDP start
        if compile is not None:
            # torch.compile each tower and the fusion in place (nn.Module.compile): parameter names,
            # checkpoints and DDP stay as they are; compilation happens at the first call. Objectives'
            # heads are small and data-dependent (ITM sampling, masked positions) and stay eager.
            for part in (model.vision, model.text, getattr(model, "fusion", None)):
                if part is not None:
                    part.compile(**compile)
        # One running weighted mean per logged key, created on first use; Lightning reduces them
        # across ranks at epoch end (sum of weighted values / sum of weights, so exact).
        self.running_means = nn.ModuleDict()
        self._handed_over_this_epoch: set[str] = set()  # see _log_mean
        self.validated_at_step: int | None = None

    def _log_mean(self, key: str, value: Tensor, weight: Tensor | int, stage: str, hand_over: bool) -> None:
        """Add ``value`` (weighted) to the running mean of ``key``; hand the mean to Lightning's logger
        only when ``hand_over``. Updating a metric costs microseconds, but every ``self.log`` call moves
        the metric object through Lightning's result collection (milliseconds each, a large share of a
        small model's step), so training steps hand over only when the logger writes (every
        ``log_every_n_steps``), and every metric is handed over once in each epoch (its first value),
        which registers it for its epoch mean: at epoch end Lightning reads the metric's whole accumulated
        state, not only the values handed over."""
        slot = key.replace("/", "__")  # ModuleDict keys may not contain dots or slashes
        if slot not in self.running_means:
            self.running_means[slot] = MeanMetric().to(self.device)
        metric = self.running_means[slot]
        weight = torch.as_tensor(weight, dtype=torch.float32, device=value.device)
        if slot not in self._handed_over_this_epoch:
            self._handed_over_this_epoch.add(slot)
            hand_over = True
        if not hand_over:
            metric.update(value.detach().float(), weight)
            return
        metric(value.detach().float(), weight)  # forward: also keeps this batch's value for the step log
        self.log(
            key, metric, on_step=stage == "train", on_epoch=True, metric_attribute=f"running_means.{slot}"
        )

    def _hand_over_to_logger(self, stage: str) -> bool:
        """Whether this step's metrics go to Lightning's logger (see :meth:`_log_mean`)."""
        if stage != "train":  # evaluation logs epoch means only
            return False
        connector = getattr(self._trainer, "_logger_connector", None)
        return connector is None or connector.should_update_logs

    def _step(self, batch: Batch, stage: str) -> Tensor:
        pixel_values = batch["pixel_values"]
        if pixel_values.ndim == 5:  # image pairs [B, 2, 3, H, W] (NLVR2): encode every image, [2B, ...]
            pixel_values = pixel_values.flatten(0, 1)
        encoded = self.model.encode(pixel_values, batch["input_ids"], batch["attention_mask"])
        batch_size = batch["input_ids"].shape[0]
        hand_over = self._hand_over_to_logger(stage)
        total = torch.zeros((), device=self.device)
        outputs = {}
        for name, objective in self.objectives.items():
            output = outputs[name] = objective(batch, encoded, self.model)
            total = total + objective.weight * output.loss
            self._log_mean(f"{stage}/{name}/loss", output.loss, batch_size, stage, hand_over)
            for metric, value in output.metrics.items():
                weight = output.metric_weights.get(metric, batch_size)
                self._log_mean(f"{stage}/{name}/{metric}", value, weight, stage, hand_over)
        self._log_mean(f"{stage}/loss", total, batch_size, stage, hand_over)
        if stage != "train":
            for evaluator in self.evaluators.values():
                evaluator.update(batch, encoded, self.model, outputs)
        return total

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._step(batch, "test")

    def on_train_epoch_start(self) -> None:
        self._handed_over_this_epoch.clear()

    def _start_evaluation(self) -> None:
        self._handed_over_this_epoch.clear()
        for evaluator in self.evaluators.values():
            evaluator.reset()

    def _finish_evaluation(self, stage: str) -> None:
        for name, evaluator in self.evaluators.items():
            # compute() gathers across ranks, so every rank logs the same numbers: no further sync.
            for metric, value in evaluator.compute().items():
                self.log(f"{stage}/{name}/{metric}", value, sync_dist=False)
            if hasattr(evaluator, "save") and self.trainer.is_global_zero:
                evaluator.save(stage)  # prediction files in the official formats
            evaluator.reset()

    def on_validation_epoch_start(self) -> None:
        self._start_evaluation()

    def on_test_epoch_start(self) -> None:
        self._start_evaluation()

    def on_validation_epoch_end(self) -> None:
        self._finish_evaluation("val")
        if not self.trainer.sanity_checking:
            self.validated_at_step = self.global_step  # vlp-train reuses this pass for the final metrics

    def on_test_epoch_end(self) -> None:
        self._finish_evaluation("test")

    def _parameter_groups(self) -> list[dict]:
        base_lr = getattr(self.optimizer_factory, "keywords", {}).get("lr")
        return parameter_groups(self, self.weight_decay, base_lr, self.lr_multipliers, self.layer_decay)

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = self.optimizer_factory(self._parameter_groups())
        if self.scheduler_factory is None:
            return {"optimizer": optimizer}
        scheduler = self.scheduler_factory(
            optimizer, total_steps=int(self.trainer.estimated_stepping_batches)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
