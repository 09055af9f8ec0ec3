import math

import pytest
import torch

from vlp.objectives.itc import ImageTextContrastive, contrastive_targets, symmetric_infonce
from vlp.objectives.itm import ImageTextMatching, sample_negatives
from vlp.objectives.mlm import MaskedLanguageModeling


def random_batch(model, image_ids: list[int], length: int = 7) -> dict[str, torch.Tensor]:
    size = model.vision.image_size
    batch_size = len(image_ids)
    input_ids = torch.randint(5, model.dims.vocab_size, (batch_size, length))
    labels = torch.full_like(input_ids, -100)
    labels[:, 2] = input_ids[:, 2]
    masked = input_ids.clone()
    masked[:, 2] = 4
    return {
        "pixel_values": torch.randn(batch_size, 3, size, size),
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "mlm_input_ids": masked,
        "mlm_labels": labels,
        "image_id": torch.tensor(image_ids),
    }


# --- ITC -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 4, 32])
def test_infonce_of_equal_logits_is_log_batch_size(batch_size):
    logits = torch.full((batch_size, batch_size), 3.7)
    loss = symmetric_infonce(logits, contrastive_targets(torch.arange(batch_size)))
    assert loss.item() == pytest.approx(math.log(batch_size), abs=1e-6)


def test_infonce_matches_closed_form_on_hand_made_logits():
    # diagonal a, off-diagonal b: each row's loss is -log(e^a / (e^a + (B-1) e^b)), in both directions
    batch_size, a, b = 5, 2.0, -1.0
    logits = torch.full((batch_size, batch_size), b)
    logits.fill_diagonal_(a)
    expected = -math.log(math.exp(a) / (math.exp(a) + (batch_size - 1) * math.exp(b)))
    loss = symmetric_infonce(logits, contrastive_targets(torch.arange(batch_size)))
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_infonce_averages_the_two_directions():
    logits = torch.tensor([[3.0, 0.0], [1.0, 2.0]])
    targets = contrastive_targets(torch.arange(2))
    rows = -torch.log_softmax(logits, dim=1).diagonal().mean()
    columns = -torch.log_softmax(logits, dim=0).diagonal().mean()
    assert symmetric_infonce(logits, targets).item() == pytest.approx(((rows + columns) / 2).item())


def test_contrastive_targets_share_mass_between_captions_of_one_image():
    targets = contrastive_targets(torch.tensor([7, 7, 9]))
    expected = torch.tensor([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    assert torch.equal(targets, expected)


def test_itc_objective_uses_its_temperature_and_backpropagates(tiny_model):
    objective = ImageTextContrastive(tiny_model.dims, temperature=0.5)
    batch = random_batch(tiny_model, [0, 1, 2, 3])
    encoded = tiny_model.encode(batch["pixel_values"], batch["input_ids"], batch["attention_mask"])
    output = objective(batch, encoded, tiny_model)
    logits = 2.0 * encoded.image.embedding @ encoded.text.embedding.t()
    expected = symmetric_infonce(logits, torch.eye(4))
    assert output.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert output.metrics["temperature"].item() == pytest.approx(0.5)
    output.loss.backward()
    assert objective.log_logit_scale.grad is not None
    assert tiny_model.vision_proj.weight.grad.abs().sum() > 0


# --- ITM -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [None, 0.07])
def test_itm_negatives_never_show_the_positive_image(temperature):
    generator = torch.Generator().manual_seed(0)
    image_ids = torch.tensor([0, 0, 1, 2, 2, 2, 3, 4])  # repeated images: other captions of the same image
    similarity = torch.randn(8, 8, generator=generator)
    similarity.fill_diagonal_(10.0)  # the positive is by far the most similar: must still never be drawn
    similarity[0, 1] = similarity[1, 0] = 10.0
    for _ in range(300):
        rows, columns = sample_negatives(similarity, image_ids, temperature, generator)
        assert torch.equal(rows, torch.arange(8))
        assert not (image_ids[rows] == image_ids[columns]).any()


def test_itm_hard_negatives_follow_similarity():
    generator = torch.Generator().manual_seed(0)
    similarity = torch.zeros(3, 3)
    similarity[0, 2] = 0.5  # for query 0, candidate 2 is much more similar than candidate 1
    draws = [sample_negatives(similarity, torch.arange(3), 0.07, generator)[1][0].item() for _ in range(200)]
    assert draws.count(2) > 190
    uniform = [
        sample_negatives(similarity, torch.arange(3), None, generator)[1][0].item() for _ in range(400)
    ]
    assert 150 < uniform.count(2) < 250


def test_itm_skips_queries_without_any_valid_negative():
    rows, columns = sample_negatives(torch.zeros(3, 3), torch.tensor([5, 5, 5]), None)
    assert rows.numel() == 0 and columns.numel() == 0
    rows, _ = sample_negatives(torch.zeros(3, 3), torch.tensor([5, 5, 6]), None)
    assert rows.tolist() == [0, 1, 2]


def test_itm_objective_scores_one_positive_and_two_negatives_per_pair(tiny_model):
    objective = ImageTextMatching(tiny_model.dims)
    batch = random_batch(tiny_model, [0, 1, 2, 3, 4])
    encoded = tiny_model.encode(batch["pixel_values"], batch["input_ids"], batch["attention_mask"])
    output = objective(batch, encoded, tiny_model)
    assert output.metric_weights["acc"] == 15
    assert output.metric_weights["neg_acc"] == 10
    pos, neg = output.metrics["pos_acc"].item(), output.metrics["neg_acc"].item()
    assert output.metrics["balanced_acc"].item() == pytest.approx((pos + neg) / 2)
    output.loss.backward()
    assert objective.head.weight.grad.abs().sum() > 0


# --- MLM -------------------------------------------------------------------------------------------


def test_mlm_scores_only_masked_positions_and_tracks_the_majority_baseline(tiny_model):
    objective = MaskedLanguageModeling(tiny_model.dims).train()
    batch = random_batch(tiny_model, [0, 1, 2, 3])
    batch["mlm_labels"][:, 2] = 11  # every masked token is 11: the majority answer is right every time
    encoded = tiny_model.encode(batch["pixel_values"], batch["input_ids"], batch["attention_mask"])
    output = objective(batch, encoded, tiny_model)
    assert output.metric_weights["acc"].item() == 4
    assert objective.train_label_counts[11].item() == 4
    assert output.metrics["majority_acc"].item() == 1.0
    logits_head = objective.head
    with torch.no_grad():
        masked = tiny_model.text(batch["mlm_input_ids"], batch["attention_mask"])
        fused = tiny_model.fuse(masked, batch["attention_mask"], encoded.image.tokens).tokens
        expected = torch.nn.functional.cross_entropy(logits_head(fused[:, 2]), batch["mlm_labels"][:, 2])
    assert output.loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_mlm_without_masked_tokens_gives_a_connected_zero_loss(tiny_model):
    objective = MaskedLanguageModeling(tiny_model.dims).train()
    batch = random_batch(tiny_model, [0, 1])
    batch["mlm_labels"].fill_(-100)
    encoded = tiny_model.encode(batch["pixel_values"], batch["input_ids"], batch["attention_mask"])
    output = objective(batch, encoded, tiny_model)
    assert output.loss.item() == 0.0
    output.loss.backward()
    assert objective.head[0].weight.grad is not None


def test_mean_pooling_ignores_padding():
    from vlp.objectives.base import pool_fused
    from vlp.objectives.nlvr2 import NLVR2PairClassification
    from vlp.types import Fused, ModelDims

    tokens = torch.tensor([[[1.0, 2.0, 3.0], [3.0, 4.0, 5.0], [100.0, 100.0, 100.0]]])
    fused = Fused(tokens=tokens, pooled=torch.tensor([[7.0, 8.0]]))
    pooled = pool_fused(fused, torch.tensor([[1, 1, 0]]), "mean")
    assert torch.equal(pooled, torch.tensor([[2.0, 3.0, 4.0]]))
    assert torch.equal(pool_fused(fused, torch.tensor([[1, 1, 0]]), "cls"), fused.pooled)
    dims = ModelDims(vision_width=3, text_width=3, fusion_width=3, embed_dim=2, vocab_size=5)
    with pytest.raises(ValueError, match="objectives.itm.pooling"):
        ImageTextMatching(dims, pooling="max")
    with pytest.raises(ValueError, match="objectives.nlvr2.pooling"):
        NLVR2PairClassification(dims, pooling="max")
