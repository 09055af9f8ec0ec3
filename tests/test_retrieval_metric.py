import pytest
import torch

from vlp.evaluation.retrieval import RetrievalEvaluation
from vlp.metrics.retrieval import retrieval_recall


def test_perfect_scores_give_full_recall():
    # 3 images; texts 0,1 belong to image 0, text 2 to image 1, texts 3,4 to image 2
    text_image = torch.tensor([0, 0, 1, 2, 2])
    similarity = torch.zeros(3, 5)
    similarity[text_image, torch.arange(5)] = 1.0
    metrics = retrieval_recall(similarity, text_image, ks=(1,))
    assert metrics["txt_r1"] == 100.0 and metrics["img_r1"] == 100.0 and metrics["r_mean"] == 100.0


def test_hand_computed_ranks():
    text_image = torch.tensor([0, 1, 2])
    similarity = torch.tensor(
        [
            [0.9, 0.1, 0.8],  # image 0: own text 0 is best        -> i2t rank 0
            [0.5, 0.2, 0.3],  # image 1: own text 1 is last of 3    -> i2t rank 2
            [0.1, 0.0, 0.4],  # image 2: own text 2 beats 0.1, 0.0  -> i2t rank 0
        ]
    )
    # t2i: text 0 column [.9,.5,.1] -> rank 0; text 1 [.1,.2,.0] -> rank 0; text 2 [.8,.3,.4] -> rank 1
    metrics = retrieval_recall(similarity, text_image, ks=(1, 2, 3))
    assert metrics["txt_r1"] == pytest.approx(200 / 3)
    assert metrics["txt_r2"] == pytest.approx(200 / 3)
    assert metrics["txt_r3"] == 100.0
    assert metrics["img_r1"] == pytest.approx(200 / 3)
    assert metrics["img_r2"] == 100.0


def test_image_to_text_counts_the_best_of_several_captions():
    text_image = torch.tensor([0, 0, 1])
    similarity = torch.tensor([[0.1, 0.9, 0.5], [0.3, 0.0, 1.0]])
    metrics = retrieval_recall(similarity, text_image, ks=(1,))
    # image 0's first caption (0.1) loses to image 1's caption (0.5), but its second one (0.9) wins
    assert metrics["txt_r1"] == 100.0
    # text->image is per caption: text 0 scores image 1 (0.3) above its own image (0.1)
    assert metrics["img_r1"] == pytest.approx(200 / 3)


def test_ties_count_against_the_model():
    metrics = retrieval_recall(torch.zeros(10, 10), torch.arange(10), ks=(1, 5, 10))
    assert metrics["img_r1"] == 0.0 and metrics["txt_r1"] == 0.0
    assert metrics["img_r10"] == 100.0


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="text_image"):
        retrieval_recall(torch.zeros(2, 3), torch.tensor([0, 1]))


class FakeTextTower:
    """encode_text that embeds token id t as the one-hot vector e_t."""

    def encode_text(self, input_ids, attention_mask):
        from types import SimpleNamespace

        return SimpleNamespace(embedding=torch.nn.functional.one_hot(input_ids[:, 0], 4).float())


def test_evaluator_deduplicates_images_seen_twice_and_scores_all_captions():
    from types import SimpleNamespace

    evaluator = RetrievalEvaluation(ks=(1,))
    eye = torch.eye(4)
    # two batches; image 2 appears in both (as with padded DDP evaluation); captions point at their image
    for image_ids, caption_owner in [([0, 1, 2], [0, 0, 1, 2]), ([2, 3], [0, 1])]:
        image_ids = torch.tensor(image_ids)
        owner = torch.tensor(caption_owner)
        batch = {
            "image_id": image_ids,
            "retrieval_input_ids": image_ids[owner][:, None],
            "retrieval_attention_mask": torch.ones(len(owner), 1),
            "retrieval_text_image": owner,
        }
        encoded = SimpleNamespace(image=SimpleNamespace(embedding=eye[image_ids]))
        evaluator.update(batch, encoded, FakeTextTower())
    metrics = evaluator.compute()
    # image 2's caption that came with its second occurrence is not counted twice
    assert metrics["num_images"] == 4 and metrics["num_texts"] == 5
    assert metrics["img_r1"] == 100.0 and metrics["txt_r1"] == 100.0
    evaluator.reset()
    assert evaluator.compute() == {}
