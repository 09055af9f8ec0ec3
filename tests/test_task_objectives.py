"""VQA and NLVR2 heads on real batches from their datamodules, and vlp-train on each task."""

from __future__ import annotations

import json

import torch

from tests.conftest import compose_train_config
from tests.test_train import vlp_train
from vlp.build import build_run


def build_task(synth_data, tmp_path, experiment: str):
    """The run of an experiment, its model in eval mode, and its first validation batch."""
    cfg = compose_train_config(
        [f"data_dir={synth_data.root}", f"run_dir={tmp_path}", f"experiment={experiment}"]
    )
    torch.manual_seed(0)
    run = build_run(cfg)
    run.system.eval()
    return run, next(iter(run.datamodule.val_dataloader()))


def test_vqa_objective_scores_the_soft_target_of_its_answer(synth_data, synth_vqa, tmp_path):
    run, batch = build_task(synth_data, tmp_path, "finetune_vqa")
    objective = run.system.objectives["vqa"]
    assert objective.num_answers == len(run.datamodule.answers)
    encoded = run.system.model.encode(batch["pixel_values"], batch["input_ids"], batch["attention_mask"])
    output = objective(batch, encoded, run.system.model)
    logits = objective.logits(encoded, run.system.model)
    expected = batch["vqa_targets"][torch.arange(len(logits)), logits.argmax(1)].mean()
    assert torch.allclose(output.metrics["score"], expected)
    assert output.loss.requires_grad and torch.isfinite(output.loss)


def test_nlvr2_objective_fuses_each_image_with_its_sentence(synth_data, synth_nlvr2, tmp_path):
    cfg = compose_train_config(
        [f"data_dir={synth_data.root}", f"run_dir={tmp_path}", "experiment=finetune_nlvr2"]
    )
    run = build_run(cfg).system.eval(), None
    system = run[0]
    datamodule = build_run(cfg).datamodule
    datamodule.set_image_config(
        system.model.vision.image_size, system.model.vision.mean, system.model.vision.std
    )
    batch = next(iter(datamodule.val_dataloader()))
    pairs = batch["pixel_values"]
    objective = system.objectives["nlvr2"]

    def logits_for(pixel_values):
        encoded = system.model.encode(pixel_values.flatten(0, 1), batch["input_ids"], batch["attention_mask"])
        return objective.logits(encoded, system.model)

    with torch.no_grad():
        straight = logits_for(pairs)
        swapped = logits_for(pairs.flip(1))  # right image first
        # Row 0 alone gives row 0's logits: no mixing across pairs.
        encoded0 = system.model.encode(
            pairs[:1].flatten(0, 1), batch["input_ids"][:1], batch["attention_mask"][:1]
        )
        alone = objective.logits(encoded0, system.model)
    assert straight.shape == (len(batch["labels"]), 2)
    assert not torch.allclose(straight, swapped)  # left and right states sit in fixed halves
    assert torch.allclose(alone[0], straight[0], atol=1e-5)


def test_finetuning_runs_end_to_end_from_a_pretraining_checkpoint(
    synth_data, synth_vqa, synth_nlvr2, tmp_path
):
    pretrain = tmp_path / "pretrain"
    vlp_train(synth_data, pretrain, "debug=limit", "data.batch_size=8", "data.eval_batch_size=8",
              "trainer.max_epochs=1", "system.scheduler.warmup_steps=2")  # fmt: skip
    checkpoint = pretrain / "checkpoints" / "last.ckpt"
    for task, metric in (("vqa", "val/vqa/score"), ("nlvr2", "val/nlvr2/acc")):
        run_dir = tmp_path / task
        result = vlp_train(synth_data, run_dir, f"experiment=finetune_{task}", "debug=limit",
                           "data.batch_size=8", "data.eval_batch_size=8", "trainer.max_epochs=1",
                           f"model.init_from={checkpoint}", "system.scheduler.warmup_steps=2")  # fmt: skip
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert 0.0 <= metrics[metric] <= 1.0
        assert "loaded" in result.stderr + (run_dir / "train.log").read_text()
