"""VQA as multi-label classification over the answer vocabulary (ViLT / METER): a classifier on the fused
[CLS] state, trained with binary cross-entropy against the soft targets (0.3 / 0.6 / 0.9 / 1.0)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vlp.model.vlp import VLPModel
from vlp.objectives.base import Objective, check_pooling, pool_fused, pooled_width
from vlp.types import FUSION, Batch, Encoded, ModelDims, ObjectiveOutput


def classifier_head(in_width: int, hidden: int, classes: int) -> nn.Sequential:
    """The two-layer head ViLT and METER put on pooled fused states."""
    return nn.Sequential(
        nn.Linear(in_width, hidden), nn.LayerNorm(hidden), nn.GELU(), nn.Linear(hidden, classes)
    )


class VQAClassification(Objective):
    """Args:
    num_answers: size of the answer vocabulary (read from the datamodule's answers.json by vlp.build).
    """

    needs = (FUSION,)

    def __init__(self, dims: ModelDims, num_answers: int, weight: float = 1.0, pooling: str = "cls") -> None:
        super().__init__(weight)
        self.num_answers = num_answers
        self.pooling = check_pooling("vqa", pooling)
        width = pooled_width(dims, self.pooling)
        self.head = classifier_head(width, 2 * width, num_answers)

    def logits(self, encoded: Encoded, model: VLPModel) -> torch.Tensor:
        mask = encoded.text.attention_mask
        fused = model.fuse(encoded.text.tokens, mask, encoded.image.tokens)
        return self.head(pool_fused(fused, mask, self.pooling))

    def forward(self, batch: Batch, encoded: Encoded, model: VLPModel) -> ObjectiveOutput:
        logits = self.logits(encoded, model)
        targets = batch["vqa_targets"].to(logits.dtype)
        # Summed over answers (ViLT scales the mean by the vocabulary size): the gradient of the few
        # positive answers is not drowned by thousands of negatives.
        loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="mean") * self.num_answers
        with torch.no_grad():
            predicted = logits.argmax(dim=1)
            # The soft score of the predicted answer equals the official per-question accuracy
            # (min(1, matches / 3) averaged over the 10 leave-one-out subsets gives the same 0/.3/.6/.9/1).
            score = targets.gather(1, predicted[:, None]).squeeze(1)
            best_possible = targets.max(dim=1).values
        return ObjectiveOutput(
            loss=loss,
            metrics={"score": score.mean(), "upper_bound": best_possible.mean()},
            predictions={"labels": predicted},
        )
