"""What each downstream task scores without looking at the image: the levels a finetuned model must beat.

Every baseline is computed from the data with the task's own metric, not quoted: the answer prior for
VQA (official accuracy), the majority label for NLVR2, random ranking for retrieval (exact expectation),
and one fixed caption for captioning (CIDEr-D and friends through pycocoevalcap's scorers).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from math import comb
from typing import Any

from vlp.metrics.vqa import normalize_answer, vqa_accuracy


def vqa_prior_baselines(train_annotations: list[dict], val_annotations: list[dict]) -> dict[str, float]:
    """Official accuracy (%) on ``val_annotations`` of answering, without the image,

    - ``most_frequent``: the most common training answer to every question;
    - ``per_question_type``: the most common training answer of each question type (e.g. "what color"),
      the prior a language-only model can learn.
    """
    overall: Counter[str] = Counter()
    by_type: dict[str, Counter[str]] = defaultdict(Counter)
    for annotation in train_annotations:
        answer = normalize_answer(annotation["multiple_choice_answer"])
        overall[answer] += 1
        by_type[annotation["question_type"]][answer] += 1
    most_frequent = overall.most_common(1)[0][0]
    constant = {a["question_id"]: most_frequent for a in val_annotations}
    typed = {
        a["question_id"]: (by_type[a["question_type"]] or overall).most_common(1)[0][0]
        for a in val_annotations
    }
    return {
        "most_frequent": float(vqa_accuracy(constant, val_annotations)["overall"]),
        "per_question_type": float(vqa_accuracy(typed, val_annotations)["overall"]),
    }


def nlvr2_majority(train_rows: Sequence[Mapping[str, Any]], eval_rows: Sequence[Mapping[str, Any]]) -> float:
    """Accuracy (%) on ``eval_rows`` of always answering the training set's majority label."""
    labels = Counter(str(row["label"]).lower() == "true" for row in train_rows)
    majority = labels.most_common(1)[0][0]
    hits = sum((str(row["label"]).lower() == "true") == majority for row in eval_rows)
    return 100.0 * hits / len(eval_rows)


def retrieval_chance(captions_per_image: Sequence[int], ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    """Expected recall (%) of uniformly random scores, exactly: text->image ``K / N_images``; image->text
    ``1 - C(M - c, K) / C(M, K)`` for an image with ``c`` of the ``M`` captions (any of them counts)."""
    num_images, num_texts = len(captions_per_image), sum(captions_per_image)
    metrics: dict[str, float] = {}
    for k in ks:
        misses = [comb(num_texts - c, k) / comb(num_texts, k) for c in captions_per_image]
        metrics[f"txt_r{k}"] = 100.0 * (1.0 - sum(misses) / num_images)
    for k in ks:
        metrics[f"img_r{k}"] = 100.0 * min(k, num_images) / num_images
    metrics["txt_r_mean"] = sum(metrics[f"txt_r{k}"] for k in ks) / len(ks)
    metrics["img_r_mean"] = sum(metrics[f"img_r{k}"] for k in ks) / len(ks)
    metrics["r_mean"] = (metrics["txt_r_mean"] + metrics["img_r_mean"]) / 2
    return metrics


def constant_caption_baseline(
    train_captions: Sequence[str], references: Mapping[int, Sequence[str]], use_java: bool | None = False
) -> tuple[str, dict[str, float]]:
    """The most frequent training caption (after lower-casing and trimming), given for every image, and
    its caption metrics against ``references``."""
    from vlp.metrics.caption import caption_scores

    counts = Counter(" ".join(caption.lower().split()) for caption in train_captions)
    caption = counts.most_common(1)[0][0]
    results = [{"image_id": image_id, "caption": caption} for image_id in references]
    return caption, caption_scores(results, references, use_java=use_java)
