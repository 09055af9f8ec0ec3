"""Telemetry: samples/s, step time and data-wait share from the training loop's timing, and MFU from the
FLOPs torch counts in the first step."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
import torch

from vlp.callbacks import Telemetry


class LogCatcher:
    def __init__(self) -> None:
        self.logged: list[dict[str, float]] = []

    def log_metrics(self, metrics, step) -> None:
        self.logged.append(dict(metrics))


def run_steps(callback, steps: int, wait: float, work) -> LogCatcher:
    logger = LogCatcher()
    trainer = SimpleNamespace(world_size=2, is_global_zero=True, loggers=[logger], global_step=0)
    module = None
    batch = {"input_ids": torch.zeros(8, 3)}
    callback.on_train_epoch_start(trainer, module)
    for step in range(steps):
        time.sleep(wait)  # the loop waiting for the data loader
        callback.on_train_batch_start(trainer, module, batch, step)
        work()
        callback.on_train_batch_end(trainer, module, None, batch, step)
    return logger


def test_samples_per_second_step_time_and_data_wait_share():
    module = run_steps(Telemetry(every_n_steps=4), steps=4, wait=0.04, work=lambda: time.sleep(0.04))
    (metrics,) = module.logged
    assert metrics["perf/step_seconds"] == pytest.approx(0.08, rel=0.5)
    assert metrics["perf/data_wait_fraction"] == pytest.approx(0.5, abs=0.2)
    # 8 samples per rank x 2 ranks per step
    assert metrics["perf/samples_per_second"] == pytest.approx(16 / metrics["perf/step_seconds"], rel=1e-6)
    assert "perf/mfu" not in metrics


def test_mfu_from_the_counted_flops_of_the_first_step():
    a, b = torch.randn(64, 64), torch.randn(64, 64)
    callback = Telemetry(every_n_steps=3, peak_flops_per_device=1e9)
    module = run_steps(callback, steps=4, wait=0.0, work=lambda: a @ b)  # the first step is counted
    assert callback.flops_per_step == 2 * 64**3
    (metrics,) = module.logged
    seconds = metrics["perf/step_seconds"]
    assert metrics["perf/mfu"] == pytest.approx(2 * 64**3 / seconds / 1e9, rel=1e-6)
