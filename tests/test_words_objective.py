import pytest
import torch

from vlp.objectives.words import CaptionWords, caption_word_targets, mean_average_precision


def test_word_targets_mark_each_caption_word_once_and_skip_special_tokens_and_padding():
    # [CLS]=2 and [SEP]=3 are special, 0 is [PAD]; row 0 repeats word 7, row 1 is padded
    input_ids = torch.tensor([[2, 7, 9, 7, 3], [2, 8, 3, 0, 0]])
    attention_mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    targets = caption_word_targets(input_ids, attention_mask, vocab_size=10, ignore=torch.tensor([0, 2, 3]))
    expected = torch.zeros(2, 10)
    expected[0, [7, 9]] = 1.0
    expected[1, 8] = 1.0
    assert torch.equal(targets, expected)


def test_mean_average_precision_on_a_hand_worked_ranking():
    # row 0: words at ranks 1 and 3 -> AP (1/1 + 2/3) / 2; row 1: its word first -> 1
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.1], [0.2, 0.9, 0.1, 0.0]])
    targets = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    expected = ((1.0 + 2.0 / 3.0) / 2 + 1.0) / 2
    assert mean_average_precision(scores, targets).item() == pytest.approx(expected)
    # logits are often negative: a word ranked first is still ranked first
    assert mean_average_precision(scores - 5.0, targets).item() == pytest.approx(expected)


def test_caption_words_loss_is_bce_over_the_vocabulary_from_the_mean_vision_token(tiny_model):
    objective = CaptionWords(tiny_model.dims, special_token_ids=[0, 2, 3]).train()
    size = tiny_model.vision.image_size
    batch = {
        "pixel_values": torch.randn(2, 3, size, size),
        "input_ids": torch.tensor([[2, 7, 9, 3], [2, 8, 3, 0]]),
        "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]]),
    }
    tiny_model.zero_grad()
    encoded = tiny_model.encode(batch["pixel_values"], batch["input_ids"], batch["attention_mask"])
    output = objective(batch, encoded, tiny_model)
    logits = objective.head(encoded.image.tokens.mean(dim=1))
    targets = torch.zeros_like(logits)
    targets[0, [7, 9]] = 1.0
    targets[1, 8] = 1.0
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="sum") / 2
    assert output.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert objective.train_word_counts[[7, 8, 9]].tolist() == [1, 1, 1]
    assert objective.train_word_counts.sum().item() == 3
    assert output.metric_weights == {"map": 2, "prior_map": 2}
    output.loss.backward()
    # the signal reaches the vision tower itself, not only the head
    assert next(tiny_model.vision.parameters()).grad.abs().sum() > 0


def test_words_objective_builds_from_config_with_the_tokenizers_special_tokens(synth_data, tmp_path):
    from tests.conftest import compose_train_config
    from vlp.build import build_run

    cfg = compose_train_config(
        [f"data_dir={synth_data.root}", f"run_dir={tmp_path}", "objectives=[itc,itm,mlm,words]"]
    )
    run = build_run(cfg)
    words = run.system.objectives["words"]
    tokenizer = run.datamodule.tokenizer
    assert sorted(words.ignore.tolist()) == sorted(set(tokenizer.all_special_ids))
    assert words.head.out_features == len(tokenizer)


def test_caption_words_metrics_skip_a_caption_without_words(tiny_model):
    objective = CaptionWords(tiny_model.dims, special_token_ids=[0, 2, 3]).eval()
    size = tiny_model.vision.image_size
    batch = {
        "pixel_values": torch.randn(2, 3, size, size),
        "input_ids": torch.tensor([[2, 7, 3], [2, 3, 0]]),  # the second caption is empty
        "attention_mask": torch.tensor([[1, 1, 1], [1, 1, 0]]),
    }
    encoded = tiny_model.encode(batch["pixel_values"], batch["input_ids"], batch["attention_mask"])
    output = objective(batch, encoded, tiny_model)
    assert output.metric_weights == {"map": 1, "prior_map": 1}
    assert torch.isfinite(output.metrics["map"]) and 0.0 < output.metrics["map"].item() <= 1.0
