"""The image-blind baselines the demo table compares against, checked by hand and by enumeration."""

import itertools

import pytest
import torch

from vlp.baselines import nlvr2_majority, retrieval_chance, vqa_prior_baselines
from vlp.metrics.retrieval import ranks_among


def test_retrieval_chance_equals_enumerating_every_ranking():
    # 3 images with 2, 1, 1 captions; a query's rank depends only on the order of its own row of scores,
    # so averaging over every order of each row gives the exact expectation under random scores
    text_image = torch.tensor([0, 0, 1, 2])
    own = torch.arange(3)[:, None] == text_image[None, :]
    row_orders = torch.tensor(list(itertools.permutations(range(4))), dtype=torch.float32)  # [24, 4]
    column_orders = torch.tensor(list(itertools.permutations(range(3))), dtype=torch.float32)  # [6, 3]
    exact = retrieval_chance([2, 1, 1], ks=(1, 2))
    for k in (1, 2):
        image_hits = [(ranks_among(row_orders, own[i].expand(24, 4)) < k).float().mean() for i in range(3)]
        text_hits = [
            (ranks_among(column_orders, own[:, t].expand(6, 3)) < k).float().mean() for t in range(4)
        ]
        assert exact[f"txt_r{k}"] == pytest.approx(100 * float(sum(image_hits)) / 3)
        assert exact[f"img_r{k}"] == pytest.approx(100 * float(sum(text_hits)) / 4)
    # by hand: image 0 holds 2 of the 4 captions: R@1 = (1/2 + 1/4 + 1/4) / 3, R@2 = (5/6 + 1/2 + 1/2) / 3
    assert exact["txt_r1"] == pytest.approx(100 / 3)
    assert exact["txt_r2"] == pytest.approx(100 * (5 / 6 + 1 / 2 + 1 / 2) / 3)
    assert exact["r_mean"] == pytest.approx((exact["txt_r_mean"] + exact["img_r_mean"]) / 2)


def annotation(question_id, question_type, answer):
    return {
        "question_id": question_id,
        "question_type": question_type,
        "answer_type": "other",
        "multiple_choice_answer": answer,
        "answers": [{"answer": answer, "answer_id": i + 1} for i in range(10)],
    }


def test_vqa_priors_answer_without_the_image():
    train = [
        *(annotation(i, "what color", "red") for i in (1, 2)),
        *(annotation(i, "how many", answer) for i, answer in ((3, "2"), (4, "two"), (5, "2"))),
        annotation(6, "is there", "yes"),
    ]
    val = [
        annotation(10, "what color", "red"),
        annotation(11, "how many", "2"),
        annotation(12, "is there", "no"),
    ]
    baselines = vqa_prior_baselines(train, val)
    # "two" normalises to "2", so the most frequent training answer is "2" (3 votes): right once of 3
    assert baselines["most_frequent"] == pytest.approx(33.33)
    # per type: red for colour, 2 for counts, yes for "is there": right twice of 3
    assert baselines["per_question_type"] == pytest.approx(66.67)


def test_nlvr2_majority_label():
    train = [{"label": "True"}, {"label": "False"}, {"label": "False"}]
    assert (
        nlvr2_majority(train, [{"label": "False"}, {"label": "True"}, {"label": "False"}, {"label": "False"}])
        == 75.0
    )
