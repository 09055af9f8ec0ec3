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

from vlp.data.synthetic import DEFAULT_IMAGE_SIZE as SIZE  # the demo model's image size
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


# ---------------------------------------------------------------------------------------------------------
# ITC + ITM + MLM on the tiny model: 2 ranks with half the batch each give one process's gradients

GLOBAL_BATCH, TEXT_LENGTH, VOCAB = 8, 7, 50


def global_batch() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    ids = torch.randint(5, VOCAB, (GLOBAL_BATCH, TEXT_LENGTH), generator=generator)
    mask = torch.ones_like(ids)
    mask[::3, -2:] = 0  # some padding
    picked = (torch.rand(ids.shape, generator=generator) < 0.3) & mask.bool()
    picked[1::4] = False  # rows without masked tokens: ranks hold different counts
    return {
        "pixel_values": torch.randn(GLOBAL_BATCH, 3, SIZE, SIZE, generator=generator),
        "input_ids": ids,
        "attention_mask": mask,
        "mlm_input_ids": torch.where(picked, torch.full_like(ids, 4), ids),
        "mlm_labels": torch.where(picked, ids, torch.full_like(ids, -100)),
        "image_id": torch.arange(GLOBAL_BATCH) // 2 * 2,  # pairs of captions of the same image
    }


def objective_gradients(
    rows: slice, gather_with_grad: bool, local_loss: bool = False
) -> dict[str, torch.Tensor]:
    """Gradients of ITC + ITM (global negatives) + MLM on ``rows`` of the global batch, averaged over
    ranks as DDP averages them."""
    from tests.conftest import compose_train_config
    from vlp.build import build_model
    from vlp.distributed import all_reduce, world_size
    from vlp.objectives.itc import ImageTextContrastive
    from vlp.objectives.itm import ImageTextMatching
    from vlp.objectives.mlm import MaskedLanguageModeling

    torch.manual_seed(0)
    model = build_model(compose_train_config(["run_dir=unused"]), vocab_size=VOCAB).eval()  # no dropout
    objectives = torch.nn.ModuleList(
        [
            ImageTextContrastive(model.dims, gather_with_grad=gather_with_grad, local_loss=local_loss),
            ImageTextMatching(model.dims, negatives="global", sampling_temperature=0.3),
            MaskedLanguageModeling(model.dims),
        ]
    )
    batch = {key: value[rows] for key, value in global_batch().items()}
    torch.manual_seed(123)  # the ITM draw: rank 0's seed is shared with every rank
    encoded = model.encode(batch["pixel_values"], batch["input_ids"], batch["attention_mask"])
    loss = sum(objective(batch, encoded, model).loss for objective in objectives)
    loss.backward()
    parameters = [*model.named_parameters(), *objectives.named_parameters(prefix="objectives")]
    return {
        name: all_reduce(parameter.grad.clone()) / world_size()
        for name, parameter in parameters
        if parameter.grad is not None
    }


# (name, how the global batch is split, ITC gathers with gradient, ITC local loss)
VARIANTS = [
    ("with_grad", "even", True, False),
    ("local_loss_uneven", "uneven", True, True),
    ("without_grad", "even", False, False),
]


def momentum_itc_step(rows: slice) -> dict[str, torch.Tensor]:
    """Two steps of ITC with momentum distillation and an 11-slot queue on ``rows`` of each of two global
    batches (the weights moved in between, as an optimizer would): the second step's DDP-averaged
    gradients and the queue afterwards."""
    from tests.conftest import compose_train_config
    from vlp.build import build_model
    from vlp.distributed import all_reduce, world_size
    from vlp.objectives.itc import ImageTextContrastive

    torch.manual_seed(0)
    model = build_model(compose_train_config(["run_dir=unused"]), vocab_size=VOCAB).eval()
    itc = ImageTextContrastive(model.dims, momentum=0.9, queue_size=11, distill_alpha=0.4)
    itc.bind(model)
    itc.train()
    itc.momentum.encoders.eval()  # no dropout
    first = {key: value[rows] for key, value in global_batch().items()}
    second = {key: value.flip(0)[rows] for key, value in global_batch().items()}
    second["image_id"] = second["image_id"] + 1000
    for step, batch in enumerate((first, second)):
        encoded = model.encode(batch["pixel_values"], batch["input_ids"], batch["attention_mask"])
        loss = itc(batch, encoded, model).loss
        if step == 0:
            with torch.no_grad():  # a stand-in for the optimizer step between the two batches
                for parameter in model.parameters():
                    parameter.add_(0.01 * torch.cos(torch.arange(parameter.numel()).view_as(parameter)))
    loss.backward()
    result = {
        name: all_reduce(parameter.grad.clone()) / world_size()
        for name, parameter in model.named_parameters()
        if parameter.grad is not None
    }
    result.update({f"queue.{name}": buffer.clone() for name, buffer in itc.queue.named_buffers()})
    return result


def _objectives_worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE)
    try:
        half = GLOBAL_BATCH // WORLD_SIZE
        even = slice(rank * half, (rank + 1) * half)
        uneven = slice(0, 5) if rank == 0 else slice(5, GLOBAL_BATCH)  # a short batch on rank 1
        for variant, rows, gather, local_loss in VARIANTS:
            gradients = objective_gradients(even if rows == "even" else uneven, gather, local_loss)
            torch.save(gradients, Path(out_dir, f"rank{rank}_{variant}.pt"))
        torch.save(momentum_itc_step(uneven), Path(out_dir, f"rank{rank}_momentum.pt"))
    finally:
        dist.destroy_process_group()


def test_two_ranks_give_one_process_gradients_for_itc_itm_and_mlm(tmp_path):
    """ITC gathers with gradient, ITM draws negatives from the global batch with a shared generator, MLM
    and ITM divide by the global count: DDP's averaged gradients equal a single process on the global
    batch (to 1e-5 of each tensor's largest entry), also with ITC's local loss and batches of 5 and 3.
    Gathering ITC's embeddings without gradient (ALBEF's choice) does not. ITC with momentum
    distillation and a queue (batches of 5 and 3) matches too, and its queue is the same on every rank."""
    mp.spawn(_objectives_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD_SIZE, join=True)
    expected = objective_gradients(slice(0, GLOBAL_BATCH), gather_with_grad=True)
    assert any(name.startswith("objectives.1.") for name in expected)  # ITM's head got gradients
    for variant in ("with_grad", "local_loss_uneven"):
        gradients = torch.load(tmp_path / f"rank0_{variant}.pt")
        assert gradients.keys() == expected.keys()
        for name, gradient in expected.items():
            # 1e-9 absolute for tensors whose gradient is zero in exact arithmetic (attention key biases)
            tolerance = 1e-5 * gradient.abs().max() + 1e-9
            assert torch.allclose(gradients[name], gradient, rtol=0, atol=tolerance), (variant, name)
        other_rank = torch.load(tmp_path / f"rank1_{variant}.pt")
        assert torch.equal(gradients["vision_proj.weight"], other_rank["vision_proj.weight"])
    # ITC with momentum distillation and a queue: each rank's rows against the global momentum keys give
    # one process's gradients too, and every rank holds the same queue (the global batch, in order)
    expected_momentum = momentum_itc_step(slice(0, GLOBAL_BATCH))
    assert int(expected_momentum["queue.filled"]) == 11 and int(expected_momentum["queue.position"]) == 5
    for rank in range(WORLD_SIZE):
        momentum = torch.load(tmp_path / f"rank{rank}_momentum.pt")
        assert momentum.keys() == expected_momentum.keys()
        for name, expected_tensor in expected_momentum.items():
            tolerance = 1e-5 * expected_tensor.abs().max() + 1e-9
            assert torch.allclose(momentum[name], expected_tensor, rtol=0, atol=tolerance), name
    without_grad = torch.load(tmp_path / "rank0_without_grad.pt")["vision_proj.weight"]
    projection = expected["vision_proj.weight"]
    assert not torch.allclose(without_grad, projection, atol=1e-3 * projection.abs().max())


DDP_SHORT_RUN = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.max_steps=2",
                 "trainer.limit_val_batches=1", "trainer.enable_progress_bar=false", "data.num_workers=0",
                 "data.batch_size=8", "data.eval_batch_size=8"]  # fmt: skip


@pytest.mark.slow
def test_a_multirun_sweep_with_ddp_writes_one_folder_per_job(synth_data, tmp_path):
    """Lightning starts each job's second rank by re-running the command line: it must run that job in
    that job's folder, not the whole sweep in a new one, and the second job must start its ranks too."""
    command = [str(Path(sys.executable).with_name("vlp-train")), "-m", f"data_dir={synth_data.root}",
               *DDP_SHORT_RUN, "system.optimizer.lr=1e-4,3e-4"]  # fmt: skip
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "multirun" / "train").iterdir()
    for job in ("0", "1"):
        assert (sweep / job / "metrics.json").is_file() and (
            sweep / job / "train_ddp_process_1.log"
        ).is_file()
    assert not (tmp_path / "outputs").exists()


@pytest.mark.slow
def test_torchrun_ranks_share_one_run_folder(synth_data, tmp_path):
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    command = [
        torchrun,
        "--nproc-per-node",
        "2",
        "-m",
        "vlp.train",
        f"data_dir={synth_data.root}",
        *DDP_SHORT_RUN,
    ]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = (tmp_path / "outputs" / "train").iterdir()
    assert run.name.startswith("torchrun-") and (run / "metrics.json").is_file()
