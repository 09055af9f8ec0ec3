"""Zero-shot image-text retrieval from the contrastive embeddings, evaluated at each validation end."""

from __future__ import annotations

import torch
from torch import Tensor

from vlp.distributed import gather_variable_length
from vlp.metrics.retrieval import retrieval_recall
from vlp.model.vlp import VLPModel
from vlp.types import Batch, Encoded


class ZeroShotRetrieval:
    """Collects image embeddings and the embeddings of *every* caption over an evaluation pass, then
    scores all pairs by cosine similarity. Ranks may each see a part of the split: the embeddings are
    gathered before scoring, and images are de-duplicated by id.
    """

    def __init__(self, ks: tuple[int, ...] = (1, 5, 10)) -> None:
        self.ks = tuple(ks)
        self.reset()

    def reset(self) -> None:
        self._image_ids: list[Tensor] = []
        self._image_embeddings: list[Tensor] = []
        self._text_image_ids: list[Tensor] = []
        self._text_embeddings: list[Tensor] = []

    @torch.no_grad()
    def update(self, batch: Batch, encoded: Encoded, model: VLPModel, outputs: dict | None = None) -> None:
        if "retrieval_input_ids" not in batch:
            raise KeyError(
                "ZeroShotRetrieval needs evaluation batches with retrieval_input_ids (all captions)"
            )
        texts = model.encode_text(batch["retrieval_input_ids"], batch["retrieval_attention_mask"])
        self._image_ids.append(batch["image_id"])
        self._image_embeddings.append(encoded.image.embedding.float())
        self._text_image_ids.append(batch["image_id"][batch["retrieval_text_image"]])
        self._text_embeddings.append(texts.embedding.float())

    def compute(self) -> dict[str, float]:
        """Recall@K over everything seen since the last reset, on all ranks alike."""
        if not self._image_ids:
            return {}
        image_ids = gather_variable_length(torch.cat(self._image_ids))
        image_embeddings = gather_variable_length(torch.cat(self._image_embeddings))
        text_image_ids = gather_variable_length(torch.cat(self._text_image_ids))
        text_embeddings = gather_variable_length(torch.cat(self._text_embeddings))
        unique_ids, first_position = _first_occurrence(image_ids)
        image_embeddings = image_embeddings[first_position]
        text_image = torch.searchsorted(unique_ids, text_image_ids)
        similarity = image_embeddings @ text_embeddings.t()
        metrics = retrieval_recall(similarity.cpu(), text_image.cpu(), self.ks)
        metrics["num_images"] = float(len(unique_ids))
        metrics["num_texts"] = float(len(text_image_ids))
        return metrics


def _first_occurrence(ids: Tensor) -> tuple[Tensor, Tensor]:
    """Sorted unique ids and, for each, the position of its first occurrence in ``ids``."""
    unique_ids, inverse = torch.unique(ids, sorted=True, return_inverse=True)
    positions = torch.arange(len(ids), device=ids.device)
    first = torch.full((len(unique_ids),), len(ids), dtype=torch.long, device=ids.device)
    first.scatter_reduce_(0, inverse, positions, reduce="amin")
    return unique_ids, first
