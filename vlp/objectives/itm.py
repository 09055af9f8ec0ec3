"""Image-text matching (ITM) with hard negatives sampled from the contrastive similarities (ALBEF)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vlp.model.vlp import VLPModel
from vlp.objectives.base import Objective, check_pooling, pool_fused, pooled_width
from vlp.types import CONTRASTIVE, FUSION, Batch, Encoded, ModelDims, ObjectiveOutput


def sample_negatives(
    similarity: Tensor, image_ids: Tensor, temperature: float | None, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """For each row of ``similarity [B, B]`` (rows: queries, columns: candidates), draw one negative column.

    Candidates showing the same image as the query (the positive, and other captions of that image) are
    never drawn. ``temperature=None`` samples uniformly; otherwise with probability softmax(sim / T), so
    that similar-looking (hard) negatives are drawn more often. Returns (row indices that had a valid
    candidate, drawn column per such row).
    """
    forbidden = image_ids[:, None] == image_ids[None, :]
    if temperature is None:
        weights = torch.ones_like(similarity)
    else:
        weights = F.softmax(similarity.float() / temperature, dim=1) + 1e-5  # never exactly zero
    weights = weights.masked_fill(forbidden, 0.0)
    rows = torch.nonzero(weights.sum(dim=1) > 0).squeeze(1)
    columns = torch.multinomial(weights[rows], 1, generator=generator).squeeze(1)
    return rows, columns


class ImageTextMatching(Objective):
    """Binary match / no-match head on the fused [CLS] state.

    Each step fuses B positive pairs, one negative text per image and one negative image per text
    (3B pairs, as ALBEF does), in a single fusion pass.

    Args:
        hard_negatives: sample negatives in proportion to contrastive similarity (else uniformly, as ViLT
            does; a family without contrastive embeddings must set it to false).
        sampling_temperature: the softmax temperature for hard-negative sampling.
        pooling: ``cls`` reads the fused first token (ALBEF); ``mean`` averages the fused states of all real
            tokens, each of which has looked at the image for its own word (learns faster from scratch).
    """

    def __init__(
        self,
        dims: ModelDims,
        weight: float = 1.0,
        hard_negatives: bool = True,
        sampling_temperature: float = 0.07,
        pooling: str = "cls",
    ) -> None:
        super().__init__(weight)
        if hard_negatives and CONTRASTIVE not in dims.capabilities:
            raise ValueError(
                f"objectives.itm.hard_negatives=true samples negatives by contrastive similarity, which "
                f"model family {dims.family} has no embeddings for: set objectives.itm.hard_negatives=false"
            )
        self.pooling = check_pooling("itm", pooling)
        self.head = nn.Linear(pooled_width(dims, self.pooling), 2)
        self.temperature = sampling_temperature if hard_negatives else None

    needs = (FUSION,)

    def match_logits(
        self, model: VLPModel, text_tokens: Tensor, text_mask: Tensor, image_tokens: Tensor
    ) -> Tensor:
        """``[P, 2]`` no-match / match logits for pairs aligned along the batch (one fusion pass each):
        what a two-stage retrieval evaluation re-ranks with."""
        fused = model.fuse(text_tokens, text_mask, image_tokens)
        return self.head(pool_fused(fused, text_mask, self.pooling))

    def forward(self, batch: Batch, encoded: Encoded, model: VLPModel) -> ObjectiveOutput:
        image, text = encoded.image, encoded.text
        with torch.no_grad():
            if self.temperature is None:  # uniform negatives: the similarities are not read
                similarity = text.tokens.new_zeros(image.tokens.shape[0], text.tokens.shape[0])
            else:
                similarity = image.embedding @ text.embedding.t()  # [images, texts]
            image_rows, negative_texts = sample_negatives(similarity, batch["image_id"], self.temperature)
            text_rows, negative_images = sample_negatives(similarity.t(), batch["image_id"], self.temperature)
        text_tokens = torch.cat([text.tokens, text.tokens[negative_texts], text.tokens[text_rows]])
        text_mask = torch.cat(
            [text.attention_mask, text.attention_mask[negative_texts], text.attention_mask[text_rows]]
        )
        image_tokens = torch.cat([image.tokens, image.tokens[image_rows], image.tokens[negative_images]])
        logits = self.match_logits(model, text_tokens, text_mask, image_tokens)
        positives = image.tokens.shape[0]
        labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        labels[:positives] = 1
        loss = F.cross_entropy(logits, labels)
        with torch.no_grad():
            correct = (logits.argmax(dim=1) == labels).float()
            pos_acc, neg_acc = correct[:positives].mean(), correct[positives:].mean()
        return ObjectiveOutput(
            loss=loss,
            metrics={
                "acc": correct.mean(),
                "pos_acc": pos_acc,
                "neg_acc": neg_acc,
                # chance level 0.5 whatever the class balance (a constant answer scores 0.5)
                "balanced_acc": (pos_acc + neg_acc) / 2,
            },
            metric_weights={
                "acc": len(labels),
                "neg_acc": len(labels) - positives,
                "balanced_acc": len(labels),
            },
        )
