"""VLPModel: a vision tower, a text tower, projections into a shared embedding space, and a fusion encoder.

It holds architecture only. Heads and losses belong to objectives (vlp.objectives); the training loop
belongs to the system (vlp.system).
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from vlp.model.text import HFTextEncoder
from vlp.model.vision import TimmVisionEncoder
from vlp.types import Encoded, ImageEncoding, ModelDims, TextEncoding

FusionFactory = Callable[..., nn.Module]  # called as factory(text_width=..., image_width=...)


class VLPModel(nn.Module):
    """Args:
    vision: the image tower.
    text: the text tower.
    fusion: a partially configured fusion class; called here with the towers' widths.
    embed_dim: size of the shared contrastive embedding space.
    """

    def __init__(
        self, vision: TimmVisionEncoder, text: HFTextEncoder, fusion: FusionFactory, embed_dim: int
    ) -> None:
        super().__init__()
        self.vision = vision
        self.text = text
        self.fusion = fusion(text_width=text.width, image_width=vision.width)
        self.vision_proj = nn.Linear(vision.width, embed_dim)
        self.text_proj = nn.Linear(text.width, embed_dim)
        self.dims = ModelDims(
            vision_width=vision.width,
            text_width=text.width,
            fusion_width=self.fusion.width,
            embed_dim=embed_dim,
            vocab_size=text.vocab_size,
            fusion_layers=len(getattr(self.fusion, "layers", ())),
        )

    def encode_image(self, pixel_values: Tensor) -> ImageEncoding:
        tokens, pooled = self.vision(pixel_values)
        return ImageEncoding(tokens=tokens, embedding=F.normalize(self.vision_proj(pooled), dim=-1))

    def encode_text(self, input_ids: Tensor, attention_mask: Tensor) -> TextEncoding:
        tokens = self.text(input_ids, attention_mask)
        embedding = F.normalize(self.text_proj(tokens[:, 0]), dim=-1)
        return TextEncoding(tokens=tokens, attention_mask=attention_mask, embedding=embedding)

    def encode(self, pixel_values: Tensor, input_ids: Tensor, attention_mask: Tensor) -> Encoded:
        return Encoded(
            image=self.encode_image(pixel_values), text=self.encode_text(input_ids, attention_mask)
        )

    def fuse(self, text_tokens: Tensor, text_mask: Tensor, image_tokens: Tensor) -> Tensor:
        """Fused text states ``[B, L, D]`` for (text, image) pairs aligned along the batch."""
        return self.fusion(text_tokens, text_mask, image_tokens)
