"""VQA and NLVR2 heads on real batches from their datamodules, and vlp-train on each task."""

from __future__ import annotations

import json

import pytest
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


@pytest.mark.slow
def test_finetuning_from_a_checkpoint_writes_official_predictions_that_score_as_logged(
    synth_data, synth_vqa, synth_nlvr2, tmp_path
):
    """Pretrain briefly, finetune VQA and NLVR2 from it, then score the prediction files the runs wrote
    with the official-semantics scorers: the numbers must equal what the runs logged."""
    from vlp.metrics.nlvr2 import load_nlvr2_rows, nlvr2_scores, read_predictions_csv
    from vlp.metrics.vqa import load_vqa_results, vqa_accuracy

    pretrain = tmp_path / "pretrain"
    vlp_train(synth_data, pretrain, "debug=limit", "data.batch_size=8", "data.eval_batch_size=8",
              "trainer.max_epochs=1", "system.scheduler.warmup_steps=2")  # fmt: skip
    checkpoint = pretrain / "checkpoints" / "last.ckpt"
    runs = {}
    for task in ("vqa", "nlvr2"):
        run_dir = runs[task] = tmp_path / task
        result = vlp_train(synth_data, run_dir, f"experiment=finetune_{task}", "debug=limit",
                           "trainer.limit_val_batches=1.0", "data.batch_size=8", "data.eval_batch_size=8",
                           "trainer.max_epochs=1", f"model.init_from={checkpoint}",
                           "system.scheduler.warmup_steps=2")  # fmt: skip
        assert "loaded" in result.stderr + (run_dir / "train.log").read_text()

    metrics = json.loads((runs["vqa"] / "metrics.json").read_text())
    annotations = json.loads((synth_vqa.raw / "v2_mscoco_val2014_annotations.json").read_text())[
        "annotations"
    ]
    results = load_vqa_results(runs["vqa"] / "predictions" / "vqa_val_results.json")
    official = vqa_accuracy(results, annotations)
    assert metrics["val/vqa/accuracy"] == pytest.approx(official["overall"])
    assert metrics["val/vqa/accuracy_yes_no"] == pytest.approx(official["per_answer_type"]["yes/no"])
    assert metrics["val/vqa/num_questions"] == len(annotations)

    metrics = json.loads((runs["nlvr2"] / "metrics.json").read_text())
    rows = load_nlvr2_rows(synth_nlvr2.raw / "data" / "dev.json")
    predictions = read_predictions_csv(runs["nlvr2"] / "predictions" / "nlvr2_val_predictions.csv")
    official = nlvr2_scores(predictions, rows)
    assert metrics["val/nlvr2/accuracy"] == pytest.approx(official["accuracy"])
    assert metrics["val/nlvr2/consistency"] == pytest.approx(official["consistency"])
    assert len(predictions) == len(rows)
