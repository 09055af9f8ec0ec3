"""The interface every objective honours."""

from __future__ import annotations

from torch import Tensor, nn

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


POOLINGS = ("cls", "mean")


def pool_fused(fused: Tensor, mask: Tensor, pooling: str) -> Tensor:
    """One vector per fused sequence ``[B, L, D]``: ``cls`` reads the first token (ALBEF, ViLT); ``mean``
    averages the fused states of the real tokens, each of which has looked at the image for its own word
    (a stronger signal for a small model trained from little data)."""
    if pooling == "cls":
        return fused[:, 0]
    weights = mask.to(fused.dtype).unsqueeze(-1)
    return (fused * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def check_pooling(objective: str, pooling: str) -> str:
    if pooling not in POOLINGS:
        raise ValueError(f"objectives.{objective}.pooling must be one of {POOLINGS}, got {pooling!r}")
    return pooling
