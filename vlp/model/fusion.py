"""Fusion encoders: how text and image tokens meet.

Every fusion module has the same interface, so objectives never care which family they talk to::

    fusion(text_tokens [B, L, Dt], text_mask [B, L], image_tokens [B, N, Dv], image_mask [B, N] | None)
        -> Fused(tokens=fused text states [B, L, D], pooled=the pair's state [B, P])

The ALBEF/BLIP family (text layers with cross-attention to the image tokens) is here; METER's two-way
co-attention is in vlp.model.coattention, ViLT's single stream in vlp.model.single_stream.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.utils.checkpoint
from torch import Tensor, nn

from vlp.model.attention import KVCache, MultiHeadAttention
from vlp.types import Fused


class CrossAttentionLayer(nn.Module):
    """Pre-norm transformer layer: self-attention over text, cross-attention to image, MLP.

    ``causal=True`` makes the self-attention causal (a caption decoder's layer). The three sub-blocks are
    also callable one by one, so that a decoder can put its own causal self-attention in front of a
    fusion layer's cross-attention and MLP (BLIP's weight sharing, see vlp.model.decoder), and the two
    attentions take a KV cache for step-by-step generation.
    """

    def __init__(
        self,
        width: int,
        image_width: int,
        num_heads: int,
        mlp_ratio: float,
        dropout: float,
        causal: bool = False,
    ) -> None:
        super().__init__()
        self.causal = causal
        self.self_norm = nn.LayerNorm(width)
        self.self_attention = MultiHeadAttention(width, num_heads, dropout=dropout)
        self.cross_norm = nn.LayerNorm(width)
        self.cross_attention = MultiHeadAttention(width, num_heads, key_width=image_width, dropout=dropout)
        self.mlp_norm = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, width)
        )
        self.dropout = nn.Dropout(dropout)

    def attend_text(self, text: Tensor, text_mask: Tensor | None, cache: KVCache | None = None) -> Tensor:
        normed = self.self_norm(text)
        attended = self.self_attention(normed, normed, text_mask, is_causal=self.causal, cache=cache)
        return text + self.dropout(attended)

    def attend_image(
        self, text: Tensor, image: Tensor, image_mask: Tensor | None, cache: KVCache | None = None
    ) -> Tensor:
        attended = self.cross_attention(self.cross_norm(text), image, image_mask, cache=cache)
        return text + self.dropout(attended)

    def feed_forward(self, text: Tensor) -> Tensor:
        return text + self.dropout(self.mlp(self.mlp_norm(text)))

    def forward(
        self, text: Tensor, text_mask: Tensor | None, image: Tensor, image_mask: Tensor | None
    ) -> Tensor:
        return self.feed_forward(self.attend_image(self.attend_text(text, text_mask), image, image_mask))


class CrossAttentionFusion(nn.Module):
    """ALBEF-style fusion encoder: ``num_layers`` text layers that cross-attend to image tokens.

    ``text_width`` and ``image_width`` come from the built towers (see VLPModel), not from the config.
    """

    def __init__(
        self,
        text_width: int,
        image_width: int,
        num_layers: int = 6,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.width = text_width
        self.layers = nn.ModuleList(
            CrossAttentionLayer(text_width, image_width, num_heads, mlp_ratio, dropout)
            for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(text_width)
        self.gradient_checkpointing = gradient_checkpointing  # recompute each layer in the backward pass
        self.apply(init_bert_weights)

    def forward(
        self, text_tokens: Tensor, text_mask: Tensor, image_tokens: Tensor, image_mask: Tensor | None = None
    ) -> Fused:
        hidden = text_tokens
        for layer in self.layers:
            hidden = checkpointed(
                layer, self.gradient_checkpointing, hidden, text_mask, image_tokens, image_mask
            )
        hidden = self.norm(hidden)
        return Fused(tokens=hidden, pooled=hidden[:, 0])  # ALBEF's heads read the fused [CLS] state


def checkpointed(layer: Callable[..., Tensor], enabled: bool, *inputs: Tensor | None) -> Tensor:
    """``layer(*inputs)``, recomputed in the backward pass instead of storing its activations when
    ``enabled`` and training (gradient checkpointing: memory for compute)."""
    if enabled and torch.is_grad_enabled():
        return torch.utils.checkpoint.checkpoint(layer, *inputs, use_reentrant=False)
    return layer(*inputs)


def init_bert_weights(module: nn.Module) -> None:
    """BERT's initialisation (normal, std 0.02) for the layers we write ourselves."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=0.02)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
