"""ViLT's single stream: one ViT runs over [text embeddings ; image patch embeddings].

There are no unimodal encoders: the "image encoding" is the ViT's patch embedding with its class token and
position embeddings, the "text encoding" is BERT's embedding layer, and all the transformer layers are
cross-modal. So the family has a fusion (ITM, MLM, VQA, NLVR2) but no contrastive embeddings (ITC and
two-stage retrieval are refused by vlp.build). A modality-type embedding tells text from image tokens,
and the pooled state is a dense + tanh pooler over the first (text [CLS]) token, as ViLT's heads read.

The ViT is an ordinary timm model (``model.vision``), so its pretrained weights, position-embedding
resizing and gradient checkpointing are timm's; its blocks simply run here, over both modalities.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor, nn

from vlp.model.fusion import checkpointed, init_bert_weights
from vlp.model.text import HFTextEncoder
from vlp.model.vision import TimmVisionEncoder
from vlp.types import FUSION, Encoded, Fused, ImageEncoding, ModelDims, TextEncoding


class SingleStreamFusion(nn.Module):
    """What the single stream adds to the ViT: modality-type embeddings and the pooler.

    ``modality_types``: 2 (text, image), or 3 where a checkpoint has a second image type (ViLT's NLVR2).
    """

    def __init__(self, width: int, modality_types: int = 2) -> None:
        super().__init__()
        self.width = width
        self.modality_embeddings = nn.Embedding(modality_types, width)
        self.pooler = nn.Linear(width, width)
        self.apply(init_bert_weights)


class SingleStreamModel(nn.Module):
    """Args:
    vision: a timm ViT (patch embedding, blocks, final norm) whose blocks are the single stream.
    text: a text tower built with ``embeddings_only=True`` and the ViT's width.
    modality_types: rows of the modality-type embedding (see SingleStreamFusion).
    family: the family's name, for messages.
    """

    def __init__(
        self, vision: TimmVisionEncoder, text: HFTextEncoder, modality_types: int = 2, family: str = "vilt"
    ) -> None:
        super().__init__()
        backbone = vision.backbone
        if not all(hasattr(backbone, part) for part in ("patch_embed", "blocks", "norm", "_pos_embed")):
            raise ValueError(f"model.vision={type(backbone).__name__}: the single stream needs a timm ViT")
        if not text.embeddings_only:
            raise ValueError(
                "model.text: the single stream takes text embeddings only (embeddings_only=true)"
            )
        if text.width != vision.width:
            raise ValueError(f"model.text width {text.width} differs from the ViT's {vision.width}")
        self.vision = vision
        self.text = text
        self.fusion = SingleStreamFusion(vision.width, modality_types)
        # ViLT's NLVR2 model tags the second image of a pair with its own type (2): with a third type
        # row, the NLVR2 objective asks for it
        self.second_image_type = 2 if modality_types >= 3 else None
        self.dims = ModelDims(
            vision_width=vision.width,
            text_width=text.width,
            fusion_width=vision.width,
            embed_dim=0,
            vocab_size=text.vocab_size,
            fusion_layers=len(backbone.blocks),
            family=family,
            capabilities=frozenset({FUSION}),
        )

    def encode_image(self, pixel_values: Tensor) -> ImageEncoding:
        """Patch embeddings with the class token and position embeddings ``[B, 1 + N, D]``."""
        backbone = self.vision.backbone
        tokens = backbone.norm_pre(
            backbone.patch_drop(backbone._pos_embed(backbone.patch_embed(pixel_values)))
        )
        return ImageEncoding(tokens=tokens, embedding=None)

    def encode_text(self, input_ids: Tensor, attention_mask: Tensor) -> TextEncoding:
        return TextEncoding(
            tokens=self.text(input_ids, attention_mask), attention_mask=attention_mask, embedding=None
        )

    def encode(self, pixel_values: Tensor, input_ids: Tensor, attention_mask: Tensor) -> Encoded:
        return Encoded(
            image=self.encode_image(pixel_values), text=self.encode_text(input_ids, attention_mask)
        )

    def fuse(
        self, text_tokens: Tensor, text_mask: Tensor, image_tokens: Tensor, image_type: int | Tensor = 1
    ) -> Fused:
        """Run the ViT's blocks over [text ; image]; the fused text states are the first ``L`` outputs.
        ``image_type``: the image tokens' modality type, one for all rows or one per row ``[B]``."""
        backbone, types = self.vision.backbone, self.fusion.modality_embeddings.weight
        length = text_tokens.shape[1]
        image_types = types[image_type] if isinstance(image_type, int) else types[image_type][:, None]
        stream = torch.cat([text_tokens + types[0], image_tokens + image_types], dim=1)
        image_mask = text_mask.new_ones(image_tokens.shape[:2])
        attention_mask = torch.cat([text_mask, image_mask], dim=1).bool()[:, None, None, :]
        remat = bool(getattr(backbone, "grad_checkpointing", False))
        for block in backbone.blocks:
            stream = checkpointed(partial(_run_block, block), remat, stream, attention_mask)
        stream = backbone.norm(stream)
        pooled = torch.tanh(self.fusion.pooler(stream[:, 0]))
        return Fused(tokens=stream[:, :length], pooled=pooled)


def _run_block(block: nn.Module, stream: Tensor, attention_mask: Tensor) -> Tensor:
    """A timm block with its attention mask passed positionally (as torch's checkpoint passes inputs)."""
    return block(stream, attn_mask=attention_mask)
