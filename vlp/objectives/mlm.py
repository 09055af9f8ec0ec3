"""Masked language modelling (MLM) on the fused text states, conditioned on the image."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vlp.distributed import global_sum, world_size
from vlp.model.vlp import VLPModel
from vlp.objectives.base import Objective
from vlp.types import FUSION, Batch, Encoded, ModelDims, ObjectiveOutput, zero_loss


class MaskedLanguageModeling(Objective):
    """Predict the masked tokens of ``mlm_input_ids`` (masking happens in the data pipeline).

    Besides accuracy on masked tokens it reports ``majority_acc``: the accuracy of always answering the
    token that was most often masked in training so far, on the same masked tokens. That is the baseline
    the learned accuracy has to beat.
    """

    needs = (FUSION,)

    def __init__(self, dims: ModelDims, weight: float = 1.0) -> None:
        super().__init__(weight)
        width = dims.fusion_width
        self.head = nn.Sequential(
            nn.Linear(width, width), nn.GELU(), nn.LayerNorm(width), nn.Linear(width, dims.vocab_size)
        )
        # Counts of masked training labels; under DDP buffers follow rank 0, so this is rank 0's count.
        self.register_buffer("train_label_counts", torch.zeros(dims.vocab_size, dtype=torch.long))

    def forward(self, batch: Batch, encoded: Encoded, model: VLPModel) -> ObjectiveOutput:
        attention_mask = batch["attention_mask"]
        masked_text = model.text(batch["mlm_input_ids"], attention_mask)
        fused = model.fuse(masked_text, attention_mask, encoded.image.tokens).tokens
        labels = batch["mlm_labels"]
        picked = labels != -100
        # every rank takes part in the count (a collective), even one without masked tokens
        masked_per_rank = global_sum(picked.sum(), labels.device) / world_size()
        if not picked.any():  # keep the head in the graph: DDP expects a gradient for every parameter
            return ObjectiveOutput(loss=zero_loss(self.head(fused[:, 0])))
        logits = self.head(fused[picked])  # only masked positions: the head is the widest layer
        targets = labels[picked]
        # sum / mean masked tokens per rank: DDP's average over ranks is the mean over every masked token
        # of the global batch, however they fall on the ranks (a per-rank mean would weigh them unequally)
        loss = F.cross_entropy(logits.float(), targets, reduction="sum") / masked_per_rank
        with torch.no_grad():
            if self.training:
                self.train_label_counts += torch.bincount(targets, minlength=self.train_label_counts.numel())
            majority_token = self.train_label_counts.argmax()
            accuracy = (logits.argmax(dim=1) == targets).float().mean()
            majority_accuracy = (targets == majority_token).float().mean()
        count = picked.sum()
        return ObjectiveOutput(
            loss=loss,
            metrics={"acc": accuracy, "majority_acc": majority_accuracy},
            metric_weights={"acc": count, "majority_acc": count},
        )
