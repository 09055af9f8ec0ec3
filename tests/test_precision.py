"""Precision and compilation on the CPU: bf16-mixed trains the tiny model as fp32 does, and compiled
towers give the eager outputs. (Activation checkpointing: tests/test_model_families.py.)"""

from __future__ import annotations

import csv
import math

import pytest
import torch

from tests.conftest import compose_train_config
from vlp.train import train


def train_losses(synth_data, run_dir, precision: str) -> list[float]:
    cfg = compose_train_config(
        [f"data_dir={synth_data.root}", f"run_dir={run_dir}", f"trainer.precision={precision}",
         "trainer.overfit_batches=2", "trainer.max_epochs=12", "trainer.check_val_every_n_epoch=12",
         "trainer.log_every_n_steps=1", "trainer.enable_progress_bar=false", "data.batch_size=8",
         "data.eval_batch_size=8", "data.num_workers=0", "system.scheduler.warmup_steps=2",
         "system.optimizer.lr=1e-3", "logger=csv"]
    )  # fmt: skip
    train(cfg)
    rows = list(csv.DictReader((run_dir / "csv" / "metrics.csv").open()))
    return [float(row["train/loss_step"]) for row in rows if row.get("train/loss_step")]


@pytest.mark.slow
def test_fp16_mixed_with_hf_text_towers_stays_finite_and_learns(synth_data, tmp_path):
    """16-mixed (fp16 autocast + gradient scaling; on the CPU as on a GPU): the BERT text tower's padding
    mask and the fusion's attention stay finite, and the loss falls as in bf16."""
    fp16 = train_losses(synth_data, tmp_path / "fp16", "16-mixed")
    assert len(fp16) >= 20 and all(math.isfinite(loss) for loss in fp16), fp16
    first, last = sum(fp16[:4]) / 4, sum(fp16[-4:]) / 4
    assert last < 0.9 * first, (first, last)


@pytest.mark.slow
def test_bf16_mixed_trains_the_tiny_model_as_fp32_does(synth_data, tmp_path):
    """24 steps on 2 batches: the bf16 loss is finite, falls, and ends within 5% of fp32's."""
    bf16 = train_losses(synth_data, tmp_path / "bf16", "bf16-mixed")
    fp32 = train_losses(synth_data, tmp_path / "fp32", "32-true")
    assert len(bf16) == len(fp32) >= 20 and all(math.isfinite(loss) for loss in bf16)
    first, last = sum(bf16[:4]) / 4, sum(bf16[-4:]) / 4
    assert last < 0.9 * first, (first, last)
    assert abs(last - sum(fp32[-4:]) / 4) < 0.05 * last, (bf16[-4:], fp32[-4:])


@pytest.mark.slow
def test_compiled_towers_give_the_eager_outputs_and_keep_their_parameter_names(synth_data, tmp_path):
    from vlp.build import build_run

    base = [f"data_dir={synth_data.root}", f"run_dir={tmp_path}"]
    torch.manual_seed(0)
    eager = build_run(compose_train_config(base)).system.model.eval()
    torch.manual_seed(0)
    compiled = build_run(compose_train_config([*base, "system.compile={}"])).system.model.eval()
    assert compiled.state_dict().keys() == eager.state_dict().keys()
    size = eager.vision.image_size
    pixels, ids = torch.randn(2, 3, size, size), torch.randint(5, 50, (2, 7))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        expected = eager.encode(pixels, ids, mask)
        encoded = compiled.encode(pixels, ids, mask)
        fused = compiled.fuse(encoded.text.tokens, mask, encoded.image.tokens).pooled
        expected_fused = eager.fuse(expected.text.tokens, mask, expected.image.tokens).pooled
    assert compiled.vision._compiled_call_impl is not None  # compiled by inductor, not skipped
    assert torch.allclose(encoded.image.embedding, expected.image.embedding, atol=1e-5)
    assert torch.allclose(encoded.text.embedding, expected.text.embedding, atol=1e-5)
    assert torch.allclose(fused, expected_fused, atol=1e-5)
