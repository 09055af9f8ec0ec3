"""Fusion encoders: how text and image tokens meet.

Every fusion module has the same interface, so objectives never care which family they talk to::

    fusion(text_tokens [B, L, Dt], text_mask [B, L], image_tokens [B, N, Dv], image_mask [B, N] | None)
        -> fused text states [B, L, D]   (position 0 is the pooled, [CLS]-like state)

This file holds the ALBEF/BLIP family: text layers with cross-attention to the image tokens.
"""

from __future__ import annotations

from torch import Tensor, nn

from vlp.model.attention import KVCache, MultiHeadAttention


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
    ) -> None:
        super().__init__()
        self.width = text_width
        self.layers = nn.ModuleList(
            CrossAttentionLayer(text_width, image_width, num_heads, mlp_ratio, dropout)
            for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(text_width)
        self.apply(_init_weights)

    def forward(
        self, text_tokens: Tensor, text_mask: Tensor, image_tokens: Tensor, image_mask: Tensor | None = None
    ) -> Tensor:
        hidden = text_tokens
        for layer in self.layers:
            hidden = layer(hidden, text_mask, image_tokens, image_mask)
        return self.norm(hidden)


def _init_weights(module: nn.Module) -> None:
    """BERT's initialisation (normal, std 0.02) for the layers we write ourselves."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
