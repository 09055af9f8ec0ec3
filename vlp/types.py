"""The contracts between pipeline stages: what the data gives the model, and what flows after it.

A batch is a plain ``dict[str, Tensor]`` with HF-style keys, made by the data pipeline:

- ``pixel_values [B, 3, H, W]``, ``input_ids [B, L]``, ``attention_mask [B, L]``: one caption per image;
- ``mlm_input_ids [B, L]``, ``mlm_labels [B, L]``: the same caption with MLM masking (-100 = not masked);
- ``image_id [B]``: integer id of the image, so that objectives can tell true negatives from other
  captions of the same image;
- evaluation batches may add ``retrieval_input_ids [T, L]``, ``retrieval_attention_mask [T, L]`` and
  ``retrieval_text_image [T]`` (index into the batch) holding *all* captions of the batch's images, and
  ``captions``, a plain list (one list of raw caption strings per image) that caption metrics score
  against.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

Batch = dict[str, Tensor]


@dataclass
class ImageEncoding:
    tokens: Tensor  # [B, N, Dv] patch (and class) tokens from the vision tower
    embedding: Tensor | None  # [B, E] L2-normalised projection for contrastive scores (None: no such space)


@dataclass
class TextEncoding:
    tokens: Tensor  # [B, L, Dt] token states from the text tower
    attention_mask: Tensor  # [B, L] 1 = real token
    embedding: Tensor | None  # [B, E] L2-normalised projection of the pooled text state (None: no space)


@dataclass
class Fused:
    """What a fusion encoder gives for (text, image) pairs aligned along the batch."""

    tokens: Tensor  # [B, L, D] fused text states: MLM and caption decoders read these
    pooled: Tensor  # [B, P] the pair's pooled state that ITM / VQA / NLVR2 heads read (P may differ from D)


@dataclass
class Encoded:
    """Unimodal encodings of a batch, computed once per step and shared by all objectives."""

    image: ImageEncoding
    text: TextEncoding


# What a model family can do; objectives and evaluators name the capabilities they need (vlp.build checks).
CONTRASTIVE = "contrastive"  # unimodal embeddings in a shared space (ITC, zero-shot retrieval)
FUSION = "fusion"  # a cross-modal encoder over (text, image) pairs (ITM, MLM, VQA, NLVR2)
CROSS_ATTENTION_LAYERS = "cross_attention_layers"  # text layers with cross-attention (BLIP caption sharing)


@dataclass(frozen=True)
class ModelDims:
    """Sizes that heads and objectives must agree with, read from the built model."""

    vision_width: int
    text_width: int
    fusion_width: int  # width of the fused text states (``Fused.tokens``); 0 without fusion
    embed_dim: int  # shared contrastive space; 0 for families without one
    vocab_size: int
    # layers of the fusion encoder (0 for fusions without layers): a caption decoder that shares their
    # weights needs one causal self-attention per layer, known before the first step
    fusion_layers: int = 0
    pooled_width: int = 0  # width of ``Fused.pooled``; defaults to fusion_width
    family: str = "albef"  # for messages: which model family this is
    capabilities: frozenset[str] = frozenset({CONTRASTIVE, FUSION, CROSS_ATTENTION_LAYERS})

    def __post_init__(self) -> None:
        if not self.pooled_width:
            object.__setattr__(self, "pooled_width", self.fusion_width)


@dataclass
class ObjectiveOutput:
    """What an objective returns: its unweighted loss and batch metrics (scalars).

    ``metric_weights[name]`` is the number of items a metric averages over in this batch (masked tokens,
    pairs, ...); metrics without a weight count once per batch element.
    """

    loss: Tensor
    metrics: dict[str, Tensor] = field(default_factory=dict)
    metric_weights: dict[str, Tensor | int] = field(default_factory=dict)
    # per-example outputs that evaluators turn into prediction files (e.g. predicted answer labels)
    predictions: dict[str, Tensor] = field(default_factory=dict)

    def detached_metrics(self) -> dict[str, Tensor]:
        return {name: value.detach() for name, value in self.metrics.items()}


def zero_loss(reference: Tensor) -> Tensor:
    """A zero that keeps the graph connected (DDP needs every parameter to get a gradient)."""
    return reference.sum() * 0.0 if reference.requires_grad else torch.zeros((), device=reference.device)
