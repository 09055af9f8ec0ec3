"""The interface every objective honours."""

from __future__ import annotations

from torch import nn

from vlp.model.vlp import VLPModel
from vlp.types import Batch, Encoded, ObjectiveOutput


class Objective(nn.Module):
    """An objective owns what exists only to produce its training signal (heads, temperatures).

    ``forward(batch, encoded, model)`` returns the *unweighted* loss; the system multiplies by ``weight``.
    The model is passed explicitly for objectives that need extra passes (ITM negatives, masked text).
    """

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        self.weight = weight

    def forward(self, batch: Batch, encoded: Encoded, model: VLPModel) -> ObjectiveOutput:
        raise NotImplementedError
