"""Distributed behaviour on 2 CPU processes over gloo: exact gradients through the gathers, and a real
2-process DDP training run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from vlp.objectives.itc import contrastive_targets, symmetric_infonce

WORLD_SIZE = 2
BATCH, DIM = 3, 4


def global_embeddings() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    images = torch.nn.functional.normalize(torch.randn(WORLD_SIZE * BATCH, DIM, generator=generator), dim=1)
    texts = torch.nn.functional.normalize(torch.randn(WORLD_SIZE * BATCH, DIM, generator=generator), dim=1)
    return images, texts


def itc_loss(images, texts):
    return symmetric_infonce(10.0 * images @ texts.t(), contrastive_targets(torch.arange(len(images))))


def _gradient_worker(rank: int, init_file: str, out_dir: str) -> None:
    from vlp.distributed import gather_variable_length, gather_with_grad, gather_without_grad

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE)
    try:
        images, texts = global_embeddings()
        mine = slice(rank * BATCH, (rank + 1) * BATCH)
        results = {}
        for name, gather in [("with_grad", gather_with_grad), ("without_grad", gather_without_grad)]:
            local_images = images[mine].clone().requires_grad_(True)
            local_texts = texts[mine].clone().requires_grad_(True)
            loss = itc_loss(gather(local_images), gather(local_texts))
            loss.backward()
            results[name] = {"loss": loss.item(), "image_grad": local_images.grad.tolist()}
        uneven = gather_variable_length(torch.full((rank + 1, 2), float(rank)))
        results["variable_length"] = uneven.tolist()
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(results))
    finally:
        dist.destroy_process_group()


def test_contrastive_gradients_through_the_gather_are_exact(tmp_path):
    mp.spawn(_gradient_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD_SIZE, join=True)
    images, texts = global_embeddings()
    images.requires_grad_(True)
    full_loss = itc_loss(images, texts)
    full_loss.backward()
    for rank in range(WORLD_SIZE):
        results = json.loads((tmp_path / f"rank{rank}.json").read_text())
        mine = slice(rank * BATCH, (rank + 1) * BATCH)
        expected = images.grad[mine]
        # every rank computes the global loss; gather's backward sums the ranks' gradients (world_size x
        # the global gradient), and DDP's averaging over ranks then divides by world_size again
        with_grad = torch.tensor(results["with_grad"]["image_grad"])
        assert results["with_grad"]["loss"] == pytest.approx(full_loss.item(), rel=1e-5)
        assert torch.allclose(with_grad, WORLD_SIZE * expected, atol=1e-6)
        # without gradient through the gather a rank only sees its own queries' share: not the same
        without_grad = torch.tensor(results["without_grad"]["image_grad"])
        assert not torch.allclose(without_grad, WORLD_SIZE * expected, atol=1e-4)
        assert results["variable_length"] == [[0.0, 0.0], [1.0, 1.0], [1.0, 1.0]]


@pytest.mark.slow
def test_two_process_ddp_training_run(synth_data, tmp_path):
    command = [
        str(Path(sys.executable).with_name("vlp-train")),
        f"data_dir={synth_data.root}",
        f"hydra.run.dir={tmp_path}",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.max_epochs=2",
        "trainer.enable_progress_bar=false",
        "data.batch_size=8",
        "data.eval_batch_size=8",
        "data.num_workers=1",
        "system.scheduler.warmup_steps=2",
    ]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    # 48 train images / (8 per rank x 2 ranks) = 3 steps an epoch; val: every image once across ranks
    assert metrics["val/retrieval/num_images"] == 20
    assert (
        metrics["val/retrieval/num_texts"]
        == json.loads((synth_data.shards / "val" / "index.json").read_text())["num_captions"]
    )
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert checkpoint["global_step"] == 6
