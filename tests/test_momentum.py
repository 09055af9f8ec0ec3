"""ALBEF's ITC with momentum distillation: the feature queue, the EMA towers, and their life across a
checkpoint and a ``model.init_from``."""

import pytest
import torch

from vlp.checkpoint import init_from_checkpoint
from vlp.data.synthetic import DEFAULT_IMAGE_SIZE as SIZE  # the demo model's image size
from vlp.objectives.itc import ImageTextContrastive, contrastive_targets, symmetric_infonce
from vlp.objectives.momentum import FeatureQueue


def batch_of(rows: int, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        "pixel_values": torch.randn(rows, 3, SIZE, SIZE, generator=generator),
        "input_ids": torch.randint(5, 50, (rows, 6), generator=generator),
        "attention_mask": torch.ones(rows, 6, dtype=torch.long),
        "image_id": torch.arange(rows) + 100 * seed,
    }


def momentum_itc(model, **options) -> ImageTextContrastive:
    objective = ImageTextContrastive(model.dims, **options)
    objective.bind(model)
    objective.train()  # training mode: the copy moves and the queue fills
    objective.momentum.encoders.eval()  # but no dropout, so that runs compare exactly
    return objective


def run(objective, model, batch):
    encoded = model.encode(batch["pixel_values"], batch["input_ids"], batch["attention_mask"])
    return objective(batch, encoded, model)


def test_the_queue_keeps_the_newest_rows_and_only_real_ones():
    queue = FeatureQueue(size=5, dim=2)
    assert queue.contents()[0].shape == (0, 2)  # nothing pushed: no fake zero negatives
    queue.push(torch.ones(3, 2), torch.ones(3, 2), torch.tensor([1, 2, 3]))
    assert queue.contents()[2].tolist() == [1, 2, 3]
    queue.push(torch.zeros(4, 2), torch.zeros(4, 2), torch.tensor([4, 5, 6, 7]))  # wraps round
    assert int(queue.filled) == 5 and int(queue.position) == 2
    assert sorted(queue.contents()[2].tolist()) == [3, 4, 5, 6, 7]
    queue.push(torch.zeros(1, 2), torch.zeros(1, 2), torch.tensor([8]))  # a short last batch
    assert sorted(queue.contents()[2].tolist()) == [4, 5, 6, 7, 8] and int(queue.position) == 3
    queue.push(torch.zeros(7, 2), torch.zeros(7, 2), torch.arange(10, 17))  # more rows than slots
    assert sorted(queue.contents()[2].tolist()) == [12, 13, 14, 15, 16]


def test_with_a_frozen_copy_and_no_queue_the_loss_is_plain_itc(tiny_model):
    """momentum=0 keeps the copy equal to the online towers: the loss value is plain InfoNCE (only the
    gradient differs: the keys are detached)."""
    objective = momentum_itc(tiny_model, momentum=0.0)
    batch = batch_of(6)
    output = run(objective, tiny_model, batch)
    encoded = tiny_model.encode(batch["pixel_values"], batch["input_ids"], batch["attention_mask"])
    logits = objective.logit_scale() * encoded.image.embedding @ encoded.text.embedding.t()
    plain = symmetric_infonce(logits, contrastive_targets(batch["image_id"]))
    assert output.loss.item() == pytest.approx(plain.item(), rel=1e-5)


def test_the_momentum_towers_follow_the_online_ones_by_the_decay(tiny_model):
    objective = momentum_itc(tiny_model, momentum=0.9)
    run(objective, tiny_model, batch_of(4))  # first call: copies the online weights
    name = "vision_proj.weight"
    online = dict(tiny_model.named_parameters())[name]
    momentum = dict(objective.momentum.encoders.named_parameters())[name]
    assert torch.equal(momentum, online)
    assert "fusion" not in dict(objective.momentum.encoders.named_children())
    before = momentum.clone()
    with torch.no_grad():
        online.add_(1.0)  # an optimizer step
    run(objective, tiny_model, batch_of(4, seed=1))
    assert torch.allclose(momentum, 0.9 * before + 0.1 * online, atol=1e-6)
    assert not momentum.requires_grad
    objective.eval()
    run(objective, tiny_model, batch_of(4, seed=2))  # evaluation neither moves the copy nor the queue
    assert torch.allclose(momentum, 0.9 * before + 0.1 * online, atol=1e-6)


def test_queue_negatives_and_soft_targets_change_the_loss(tiny_model):
    first, second = batch_of(4), batch_of(4, seed=1)
    losses = {}
    for name, options in {
        "hard": dict(momentum=0.995),
        "queue": dict(momentum=0.995, queue_size=16),
        "distilled": dict(momentum=0.995, queue_size=16, distill_alpha=0.4),
    }.items():
        objective = momentum_itc(tiny_model, **options)
        run(objective, tiny_model, first)
        output = run(objective, tiny_model, second)
        losses[name] = output.loss.item()
        if "queue_size" in options:
            assert output.metrics["queue_filled"].item() == 8
            assert (
                objective.queue.contents()[2].tolist()
                == first["image_id"].tolist() + second["image_id"].tolist()
            )
    # 4 more negatives (the first batch) raise the loss; soft targets change it again
    assert losses["queue"] > losses["hard"] + 1e-3
    assert abs(losses["distilled"] - losses["queue"]) > 1e-4


def test_distillation_warms_up_over_the_given_batches(tiny_model):
    objective = momentum_itc(tiny_model, momentum=0.995, distill_alpha=0.4, distill_warmup_steps=4)
    alphas = [
        run(objective, tiny_model, batch_of(2, seed=s)).metrics["distill_alpha"].item() for s in range(6)
    ]
    assert alphas == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.4])


def test_the_queue_and_the_momentum_towers_survive_a_checkpoint(tiny_model):
    objective = momentum_itc(tiny_model, momentum=0.9, queue_size=8, distill_alpha=0.4)
    for seed in range(3):  # 12 rows through an 8-slot queue: it has wrapped
        run(objective, tiny_model, batch_of(4, seed=seed))
    state = {key: value.clone() for key, value in objective.state_dict().items()}
    assert any(key.startswith("momentum.encoders.vision.") for key in state)
    restored = momentum_itc(tiny_model, momentum=0.9, queue_size=8, distill_alpha=0.4)
    restored.load_state_dict(state)
    follow_up = batch_of(4, seed=7)
    assert (
        run(restored, tiny_model, follow_up).loss.item() == run(objective, tiny_model, follow_up).loss.item()
    )
    assert torch.equal(restored.queue.images, objective.queue.images)
    assert int(restored.queue.position) == int(objective.queue.position) == 0


def test_init_from_loads_the_momentum_towers_but_starts_the_queue_empty(tiny_model, tmp_path):
    source = torch.nn.ModuleDict(
        {
            "model": tiny_model,
            "objectives": torch.nn.ModuleDict({"itc": momentum_itc(tiny_model, momentum=0.9, queue_size=8)}),
        }
    )
    run(source["objectives"]["itc"], tiny_model, batch_of(4))
    torch.save({"state_dict": source.state_dict()}, tmp_path / "pretrained.ckpt")
    target = torch.nn.ModuleDict(
        {
            "model": tiny_model,
            "objectives": torch.nn.ModuleDict({"itc": momentum_itc(tiny_model, momentum=0.9, queue_size=8)}),
        }
    )
    report = init_from_checkpoint(target, tmp_path / "pretrained.ckpt")
    assert int(target["objectives"]["itc"].queue.filled) == 0
    assert "objectives.itc.queue.image_ids" in report.reset
    assert bool(target["objectives"]["itc"].momentum.synced)  # loaded with the momentum weights


def test_queue_options_without_momentum_are_refused(tiny_model):
    with pytest.raises(ValueError, match="need momentum encoders"):
        ImageTextContrastive(tiny_model.dims, queue_size=16)
