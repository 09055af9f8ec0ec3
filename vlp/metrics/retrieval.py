"""Image-text retrieval recall with ALBEF/BLIP ``itm_eval`` semantics.

- text->image: the rank of a text's one image among all images;
- image->text: the best rank among *all* captions of the image;
- ``R@K = 100 * mean(rank < K)``; keys ``txt_r1 txt_r5 txt_r10 img_r1 img_r5 img_r10 txt_r_mean
  img_r_mean r_mean`` ("txt" = image->text, "img" = text->image, as in ALBEF).

Ties count against the model: a candidate scoring exactly as high as the right answer ranks ahead of
it. A collapsed model that gives every pair the same score therefore gets chance-level recall, not 100%.

Everything is computed from ranks, and a rank only needs the scores of one query's candidates, so the
same rule serves a dense score matrix, row chunks of one (:func:`chunked_ranks`, never the whole matrix
at once), and the top-k candidates a re-ranker has re-scored (:func:`ranks_among`, where a query whose
right answer is not among its candidates gets rank ``k``: a miss for every ``R@K`` with ``K <= k``).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor


def ranks_among(scores: Tensor, is_positive: Tensor) -> Tensor:
    """``scores, is_positive [Q, C]`` -> ``[Q]``: how many negatives score at least as high as the
    best positive of each query (0 = the best positive is first). A query without a positive among its
    candidates gets the number of its negatives, i.e. it is ranked after all of them."""
    scores = scores.float()
    best_positive = scores.masked_fill(~is_positive, float("-inf")).max(dim=1).values
    return ((scores >= best_positive[:, None]) & ~is_positive).sum(dim=1)


def recall_from_ranks(
    image_ranks: Tensor, text_ranks: Tensor, ks: tuple[int, ...] = (1, 5, 10)
) -> dict[str, float]:
    """``image_ranks [N_images with a caption]`` (image->text) and ``text_ranks [N_texts]`` -> R@K keys."""
    metrics: dict[str, float] = {}
    for k in ks:
        metrics[f"txt_r{k}"] = 100.0 * (image_ranks < k).float().mean().item()
    for k in ks:
        metrics[f"img_r{k}"] = 100.0 * (text_ranks < k).float().mean().item()
    metrics["txt_r_mean"] = sum(metrics[f"txt_r{k}"] for k in ks) / len(ks)
    metrics["img_r_mean"] = sum(metrics[f"img_r{k}"] for k in ks) / len(ks)
    metrics["r_mean"] = (metrics["txt_r_mean"] + metrics["img_r_mean"]) / 2
    return metrics


def score_chunks(queries: Tensor, candidates: Tensor, chunk_size: int) -> Iterator[tuple[int, Tensor]]:
    """``(start, queries[start:start+chunk] @ candidates.T)`` for consecutive row chunks: dot-product
    scores of every pair without holding the ``[Q, C]`` matrix at once."""
    for start in range(0, queries.shape[0], chunk_size):
        yield start, queries[start : start + chunk_size] @ candidates.t()


def chunked_ranks(
    image_embeddings: Tensor, text_embeddings: Tensor, text_image: Tensor, chunk_size: int = 1024
) -> tuple[Tensor, Tensor]:
    """Image->text ranks (images that have a caption) and text->image ranks from embedding dot products,
    computed in row chunks of ``chunk_size`` queries."""
    image_index = torch.arange(image_embeddings.shape[0], device=text_image.device)
    image_ranks, has_caption = [], []
    for start, scores in score_chunks(image_embeddings, text_embeddings, chunk_size):
        own = image_index[start : start + scores.shape[0], None] == text_image[None, :]
        image_ranks.append(ranks_among(scores, own))
        has_caption.append(own.any(dim=1))
    text_ranks = []
    for start, scores in score_chunks(text_embeddings, image_embeddings, chunk_size):
        own = text_image[start : start + scores.shape[0], None] == image_index[None, :]
        text_ranks.append(ranks_among(scores, own))
    return torch.cat(image_ranks)[torch.cat(has_caption)], torch.cat(text_ranks)


def _check_text_image(num_texts: int, text_image: Tensor) -> None:
    if text_image.shape != (num_texts,):
        raise ValueError(f"text_image has shape {tuple(text_image.shape)}, expected ({num_texts},)")


def retrieval_recall(
    similarity: Tensor,
    text_image: Tensor,
    ks: tuple[int, ...] = (1, 5, 10),
    text_to_image: Tensor | None = None,
) -> dict[str, float]:
    """``similarity [N_images, N_texts]``; ``text_image [N_texts]`` is the image index of each text.

    ``text_to_image [N_texts, N_images]``: separate scores for the text->image direction (a re-ranker
    re-scores different candidates per direction, as ALBEF's ``score_matrix_t2i``); by default
    ``similarity.T``.
    """
    num_images, num_texts = similarity.shape
    _check_text_image(num_texts, text_image)
    text_to_image = similarity.t() if text_to_image is None else text_to_image
    if text_to_image.shape != (num_texts, num_images):
        raise ValueError(
            f"text_to_image has shape {tuple(text_to_image.shape)}, expected ({num_texts}, {num_images})"
        )
    own = torch.arange(num_images)[:, None] == text_image[None, :].cpu()
    own = own.to(similarity.device)
    has_caption = own.any(dim=1)
    image_ranks = ranks_among(similarity, own)[has_caption]
    text_ranks = ranks_among(text_to_image, own.t().to(text_to_image.device))
    return recall_from_ranks(image_ranks.cpu(), text_ranks.cpu(), ks)


def topk_recall(
    image_candidates: Tensor,
    image_scores: Tensor,
    text_candidates: Tensor,
    text_scores: Tensor,
    text_image: Tensor,
    ks: tuple[int, ...] = (1, 5, 10),
) -> dict[str, float]:
    """Recall from re-scored top-k candidates, everything outside them left out (ALBEF/BLIP).

    ``image_candidates, image_scores [N_images, k]``: the text indices each image's re-ranker scored and
    their scores; ``text_candidates, text_scores [N_texts, k]`` likewise with image indices. ``R@K`` is
    only defined for ``K <= k``, or for any K when the candidates are all there are (a small gallery).
    """
    num_images, num_texts = image_candidates.shape[0], text_candidates.shape[0]
    _check_text_image(num_texts, text_image)
    for k, everything in ((image_candidates.shape[1], num_texts), (text_candidates.shape[1], num_images)):
        if max(ks) > k and k < everything:
            raise ValueError(f"R@{max(ks)} needs at least {max(ks)} re-ranked candidates per query, got {k}")
    image_index = torch.arange(image_candidates.shape[0], device=text_image.device)
    has_caption = torch.zeros(len(image_index), dtype=torch.bool, device=text_image.device)
    has_caption[text_image] = True
    image_own = text_image[image_candidates] == image_index[:, None]
    text_own = text_candidates == text_image[:, None]
    image_ranks = ranks_among(image_scores, image_own)[has_caption]
    return recall_from_ranks(image_ranks.cpu(), ranks_among(text_scores, text_own).cpu(), ks)


def score_retrieval_file(path: str, ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    """Recall from a ``.npz`` of retrieval scores, as ``vlp-score retrieval`` reads it. Either

    - dense: ``similarity [N_images, N_texts]`` and ``text_image [N_texts]`` (image index of each text),
      optionally ``text_to_image [N_texts, N_images]``; or
    - top-k, as vlp's retrieval evaluation writes it (``predictions/retrieval_<stage>_topk.npz``):
      ``text_image_ids``, ``image_ids``, ``i2t_candidates``/``i2t_similarity``, ``t2i_candidates``/
      ``t2i_similarity`` and, when re-ranked, ``i2t_rescored``/``t2i_rescored`` (``rerank_*`` keys).
      Contrastive R@K from the top-k alone is exact for K <= k (a right answer outside them ranks >= k),
      barring exact ties with the k-th score.
    """
    import numpy as np

    with np.load(path) as data:
        arrays = {
            key: torch.from_numpy(data[key])
            for key in data.files
            if data[key].dtype != object and data[key].ndim
        }
    if "similarity" in arrays:
        if "text_image" not in arrays:
            raise ValueError(f"{path}: a dense similarity needs text_image (the image index of each text)")
        return retrieval_recall(
            arrays["similarity"], arrays["text_image"].long(), ks, arrays.get("text_to_image")
        )
    needed = (
        "image_ids",
        "text_image_ids",
        "i2t_candidates",
        "i2t_similarity",
        "t2i_candidates",
        "t2i_similarity",
    )
    absent = [key for key in needed if key not in arrays]
    if absent:
        raise ValueError(f"{path} has neither a dense 'similarity' nor the top-k arrays (missing {absent})")
    text_image = torch.searchsorted(arrays["image_ids"], arrays["text_image_ids"])
    if not torch.equal(
        arrays["image_ids"][text_image.clamp(max=len(arrays["image_ids"]) - 1)], arrays["text_image_ids"]
    ):
        raise ValueError(f"{path}: some text_image_ids are not in image_ids")
    candidates = (arrays["i2t_candidates"].long(), arrays["t2i_candidates"].long())
    metrics = topk_recall(
        candidates[0], arrays["i2t_similarity"], candidates[1], arrays["t2i_similarity"], text_image, ks
    )
    if "i2t_rescored" in arrays:
        reranked = topk_recall(
            candidates[0], arrays["i2t_rescored"], candidates[1], arrays["t2i_rescored"], text_image, ks
        )
        metrics.update({f"rerank_{key}": value for key, value in reranked.items()})
    return metrics
