"""The non-finite guard: NaN batches are skipped and counted, and a run that only produces NaN stops
with a message and a checkpoint of its last good state."""

from __future__ import annotations

import csv
import math

import pytest
import torch

from tests.test_resume import vlp_train

GUARD = "tests.resume_helpers.InjectNaN"


def test_nan_batches_are_skipped_and_counted(synth_data, tmp_path):
    run_dir = tmp_path / "run"
    result = vlp_train(synth_data, run_dir, "trainer.max_epochs=1", "trainer.log_every_n_steps=1",
                       f"+callbacks.nan._target_={GUARD}", "+callbacks.nan.steps=[1,4]")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rows = list(csv.DictReader((run_dir / "csv" / "metrics.csv").open()))
    counts = {
        int(row["step"]): float(row["train/nonfinite_steps"])
        for row in rows
        if row.get("train/nonfinite_steps")
    }
    assert counts == {0: 0.0, 1: 1.0, 2: 1.0, 3: 1.0, 4: 2.0, 5: 2.0}
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu")
    assert state["global_step"] == 6  # the skipped steps still count as steps of the schedule
    assert all(
        torch.isfinite(tensor).all() for tensor in state["state_dict"].values() if tensor.is_floating_point()
    )
    assert state["callbacks"]["NonFiniteGuard"]["skipped"] == 2


@pytest.mark.parametrize("precision", ["32-true", "16-mixed"])
def test_consecutive_nan_steps_stop_the_run_with_the_last_good_state(synth_data, tmp_path, precision):
    run_dir = tmp_path / "run"
    result = vlp_train(synth_data, run_dir, f"trainer.precision={precision}",
                       "callbacks.nonfinite_guard.max_consecutive=3", f"+callbacks.nan._target_={GUARD}",
                       "+callbacks.nan.every_step_from=2")  # fmt: skip
    assert result.returncode != 0
    assert "3 optimizer steps in a row had a non-finite loss or gradient" in result.stderr
    state = torch.load(run_dir / "checkpoints" / "nonfinite-stop.ckpt", map_location="cpu")
    assert state["global_step"] == 4  # steps 2, 3, 4 were NaN: stopped at the third, after 2 good steps
    weights = [t for t in state["state_dict"].values() if t.is_floating_point()]
    assert weights and all(math.isfinite(t.float().abs().max().item()) for t in weights)
