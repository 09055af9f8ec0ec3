"""Image-text retrieval recall with ALBEF/BLIP ``itm_eval`` semantics.

- text->image: the rank of a text's one image among all images;
- image->text: the best rank among *all* captions of the image;
- ``R@K = 100 * mean(rank < K)``; keys ``txt_r1 txt_r5 txt_r10 img_r1 img_r5 img_r10 txt_r_mean
  img_r_mean r_mean`` ("txt" = image->text, "img" = text->image, as in ALBEF).

Ties count against the model: a candidate scoring exactly as high as the right answer ranks ahead of
it. A collapsed model that gives every pair the same score therefore gets chance-level recall, not 100%.
"""

from __future__ import annotations

import torch
from torch import Tensor


def retrieval_recall(
    similarity: Tensor, text_image: Tensor, ks: tuple[int, ...] = (1, 5, 10)
) -> dict[str, float]:
    """``similarity [N_images, N_texts]``; ``text_image [N_texts]`` is the image index of each text."""
    num_images, num_texts = similarity.shape
    if text_image.shape != (num_texts,):
        raise ValueError(f"text_image has shape {tuple(text_image.shape)}, expected ({num_texts},)")
    similarity = similarity.float()
    own = torch.zeros_like(similarity, dtype=torch.bool)
    own[text_image, torch.arange(num_texts)] = True

    # text -> image: how many *other* images score at least as high as the right one
    true_scores = similarity[text_image, torch.arange(num_texts)]
    text_ranks = (similarity >= true_scores[None, :]).sum(dim=0) - 1

    # image -> text: the best own caption, against every caption of other images
    best_own = similarity.masked_fill(~own, float("-inf")).max(dim=1).values
    has_caption = own.any(dim=1)
    image_ranks = ((similarity >= best_own[:, None]) & ~own).sum(dim=1)[has_caption]

    metrics: dict[str, float] = {}
    for k in ks:
        metrics[f"txt_r{k}"] = 100.0 * (image_ranks < k).float().mean().item()
    for k in ks:
        metrics[f"img_r{k}"] = 100.0 * (text_ranks < k).float().mean().item()
    metrics["txt_r_mean"] = sum(metrics[f"txt_r{k}"] for k in ks) / len(ks)
    metrics["img_r_mean"] = sum(metrics[f"img_r{k}"] for k in ks) / len(ks)
    metrics["r_mean"] = (metrics["txt_r_mean"] + metrics["img_r_mean"]) / 2
    return metrics
