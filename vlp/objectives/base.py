"""The interface every objective honours."""

from __future__ import annotations

from torch import Tensor, nn

from vlp.model.vlp import VLPModel
from vlp.types import Batch, Encoded, Fused, ModelDims, ObjectiveOutput


class Objective(nn.Module):
    """An objective owns what exists only to produce its training signal (heads, temperatures).

    ``forward(batch, encoded, model)`` returns the *unweighted* loss; the system multiplies by ``weight``.
    The model is passed explicitly for objectives that need extra passes (ITM negatives, masked text).
    ``needs`` names the model capabilities (``vlp.types.CONTRASTIVE``, ``FUSION``, ...) it cannot work
    without; vlp.build refuses a model family that lacks one, before anything is built around it.
    """

    needs: tuple[str, ...] = ()

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        self.weight = weight

    def forward(self, batch: Batch, encoded: Encoded, model: VLPModel) -> ObjectiveOutput:
        raise NotImplementedError


POOLINGS = ("cls", "mean")


def pool_fused(fused: Fused, mask: Tensor, pooling: str) -> Tensor:
    """One vector per fused pair: ``cls`` is the family's own pooled state (ALBEF: the first fused token;
    ViLT: its pooler over that token; METER: both streams' poolers, concatenated); ``mean`` averages the
    fused text states of the real tokens, each of which has looked at the image for its own word (a
    stronger signal for a small model trained from little data)."""
    if pooling == "cls":
        return fused.pooled
    weights = mask.to(fused.tokens.dtype).unsqueeze(-1)
    return (fused.tokens * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def pooled_width(dims: ModelDims, pooling: str) -> int:
    """Width of what :func:`pool_fused` returns for this model."""
    return dims.pooled_width if pooling == "cls" else dims.fusion_width


def check_pooling(objective: str, pooling: str) -> str:
    if pooling not in POOLINGS:
        raise ValueError(f"objectives.{objective}.pooling must be one of {POOLINGS}, got {pooling!r}")
    return pooling
