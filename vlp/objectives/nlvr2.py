"""NLVR2 in the pair formulation (ViLT / METER): the sentence is fused with each image separately, the two
pooled [CLS] states are concatenated, and a classifier says whether the sentence is true of the pair."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vlp.model.vlp import VLPModel
from vlp.objectives.base import Objective, check_pooling, pool_fused, pooled_width
from vlp.objectives.vqa import classifier_head
from vlp.types import FUSION, Batch, Encoded, ModelDims, ObjectiveOutput


class NLVR2PairClassification(Objective):
    """Expects ``encoded.image`` to hold both images of each pair, ``[2B, ...]`` ordered (left0, right0,
    left1, ...), as the system encodes ``pixel_values [B, 2, 3, H, W]``; rows labelled -1 are ignored.

    ``pooling``: how each fused sequence becomes the state that goes into the classifier (see
    :func:`vlp.objectives.base.pool_fused`; ViLT and METER read the first token, ``cls``).
    """

    needs = (FUSION,)

    def __init__(self, dims: ModelDims, weight: float = 1.0, pooling: str = "cls") -> None:
        super().__init__(weight)
        self.pooling = check_pooling("nlvr2", pooling)
        width = 2 * pooled_width(dims, self.pooling)  # [left state ; right state]
        self.head = classifier_head(width, width, 2)

    def logits(self, encoded: Encoded, model: VLPModel) -> torch.Tensor:
        text = encoded.text
        pairs = text.tokens.shape[0]
        if encoded.image.tokens.shape[0] != 2 * pairs:
            raise ValueError("objectives.nlvr2 needs image pairs: use an NLVR2 datamodule (data=nlvr2)")
        tokens = text.tokens.repeat_interleave(2, dim=0)  # each sentence once per image
        mask = text.attention_mask.repeat_interleave(2, dim=0)
        second_type = getattr(model, "second_image_type", None)  # ViLT checkpoints tag right images apart
        types = (
            {}
            if second_type is None
            else {"image_type": torch.tensor([1, second_type], device=tokens.device).repeat(pairs)}
        )
        fused = pool_fused(model.fuse(tokens, mask, encoded.image.tokens, **types), mask, self.pooling)
        return self.head(fused.reshape(pairs, -1))  # [left state ; right state]

    def forward(self, batch: Batch, encoded: Encoded, model: VLPModel) -> ObjectiveOutput:
        logits = self.logits(encoded, model)
        labels = batch["labels"]
        known = labels >= 0
        loss = F.cross_entropy(logits, labels, ignore_index=-1) if known.any() else logits.sum() * 0.0
        with torch.no_grad():
            predicted = logits.argmax(dim=1)
            correct = (predicted == labels)[known].float()
        return ObjectiveOutput(
            loss=loss,
            metrics={"acc": correct.mean() if known.any() else correct.sum()},
            metric_weights={"acc": int(known.sum())},
            predictions={"labels": predicted},
        )
