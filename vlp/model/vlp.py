"""VLPModel: a vision tower, a text tower, projections into a shared embedding space, and a fusion encoder
(or none).

It holds architecture only. Heads and losses belong to objectives (vlp.objectives); the training loop
belongs to the system (vlp.system).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from vlp.model.fusion import CrossAttentionFusion
from vlp.model.text import HFTextEncoder
from vlp.model.vision import TimmVisionEncoder
from vlp.types import (
    CONTRASTIVE,
    CROSS_ATTENTION_LAYERS,
    FUSION,
    Encoded,
    Fused,
    ImageEncoding,
    ModelDims,
    TextEncoding,
)

FusionFactory = Callable[..., nn.Module]  # called as factory(text_width=..., image_width=...)


class VLPModel(nn.Module):
    """The two-tower families: ALBEF (a fusion encoder of text layers cross-attending to the image),
    METER (a two-way co-attention fusion, ``vlp.model.coattention``) and CLIP (no fusion: a dual encoder).

    Args:
        vision: the image tower.
        text: the text tower.
        fusion: a partially configured fusion class, called here with the towers' widths; ``None`` for a
            dual encoder (CLIP), which then has no ITM, MLM or downstream fusion heads.
        embed_dim: size of the shared contrastive embedding space; 0 for none (METER trains no ITC).
        projection_bias: whether the contrastive projections have a bias (CLIP's have none).
        family: the family's name, for messages (``albef``, ``meter``, ``clip``).
    """

    def __init__(
        self,
        vision: TimmVisionEncoder,
        text: HFTextEncoder,
        fusion: FusionFactory | None,
        embed_dim: int,
        projection_bias: bool = True,
        family: str = "albef",
    ) -> None:
        super().__init__()
        self.vision = vision
        self.text = text
        self.fusion = None if fusion is None else fusion(text_width=text.width, image_width=vision.width)
        self.vision_proj = nn.Linear(vision.width, embed_dim, bias=projection_bias) if embed_dim else None
        self.text_proj = nn.Linear(text.width, embed_dim, bias=projection_bias) if embed_dim else None
        capabilities = {CONTRASTIVE} if embed_dim else set()
        if self.fusion is not None:
            capabilities.add(FUSION)
        if isinstance(self.fusion, CrossAttentionFusion):
            capabilities.add(CROSS_ATTENTION_LAYERS)
        fusion_width = 0 if self.fusion is None else self.fusion.width
        self.dims = ModelDims(
            vision_width=vision.width,
            text_width=text.width,
            fusion_width=fusion_width,
            embed_dim=embed_dim,
            vocab_size=text.vocab_size,
            fusion_layers=len(getattr(self.fusion, "layers", ())),
            pooled_width=getattr(self.fusion, "pooled_width", fusion_width),
            family=family,
            capabilities=frozenset(capabilities),
        )

    def encode_image(self, pixel_values: Tensor) -> ImageEncoding:
        tokens, pooled = self.vision(pixel_values)
        embedding = None if self.vision_proj is None else F.normalize(self.vision_proj(pooled), dim=-1)
        return ImageEncoding(tokens=tokens, embedding=embedding)

    def encode_text(self, input_ids: Tensor, attention_mask: Tensor) -> TextEncoding:
        tokens, pooled = self.text.encode(input_ids, attention_mask)
        embedding = None if self.text_proj is None else F.normalize(self.text_proj(pooled), dim=-1)
        return TextEncoding(tokens=tokens, attention_mask=attention_mask, embedding=embedding)

    def encode(self, pixel_values: Tensor, input_ids: Tensor, attention_mask: Tensor) -> Encoded:
        return Encoded(
            image=self.encode_image(pixel_values), text=self.encode_text(input_ids, attention_mask)
        )

    def unimodal_copy(self) -> VLPModel:
        """A deep copy of the towers and projections without the fusion encoder (ALBEF's momentum
        encoders): ``encode`` works on it, parameter names match this model's."""
        fusion = self.fusion
        self.fusion = None  # left out of the copy, not copied and dropped (it can be the largest part)
        try:
            twin = copy.deepcopy(self)
        finally:
            self.fusion = fusion
        twin.dims = dataclasses.replace(twin.dims, capabilities=twin.dims.capabilities & {CONTRASTIVE})
        return twin

    def fuse(self, text_tokens: Tensor, text_mask: Tensor, image_tokens: Tensor) -> Fused:
        """Fused states for (text, image) pairs aligned along the batch."""
        if self.fusion is None:  # vlp.build refuses fusion objectives first; this guards direct use
            raise ValueError(f"model family {self.dims.family} has no fusion encoder (a dual encoder)")
        return self.fusion(text_tokens, text_mask, image_tokens)
