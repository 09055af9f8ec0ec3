"""METER's fusion (also LXMERT / ViLBERT's): two stacks of co-attention layers, one per modality.

Each layer of the text stack attends to its own text, then to the image stream; each layer of the image
stack attends to its own image tokens, then to the text stream. Both read the *other* stream as it was
before the layer (the two stacks advance in step), and both are post-norm BERT layers, as METER builds
them from its BertCrossLayer. The towers' outputs are first mapped to the fusion width and tagged with
a modality-type embedding. The pooled pair state is [text pooler ; image pooler], each a dense + tanh
over the stream's first token, so heads see twice the fusion width (METER's 1536 at width 768).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vlp.model.attention import MultiHeadAttention
from vlp.model.fusion import checkpointed, init_bert_weights
from vlp.types import Fused


class PostNormCoAttentionLayer(nn.Module):
    """``x = LN(x + SelfAttn(x)); x = LN(x + CrossAttn(x, other)); x = LN(x + FFN(x))`` (BERT's order)."""

    def __init__(self, width: int, num_heads: int, mlp_ratio: float, dropout: float, eps: float) -> None:
        super().__init__()
        self.self_attention = MultiHeadAttention(width, num_heads, dropout=dropout)
        self.self_norm = nn.LayerNorm(width, eps=eps)
        self.cross_attention = MultiHeadAttention(width, num_heads, dropout=dropout)
        self.cross_norm = nn.LayerNorm(width, eps=eps)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))
        self.mlp_norm = nn.LayerNorm(width, eps=eps)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, own: Tensor, own_mask: Tensor | None, other: Tensor, other_mask: Tensor | None
    ) -> Tensor:
        own = self.self_norm(own + self.dropout(self.self_attention(own, own, own_mask)))
        own = self.cross_norm(own + self.dropout(self.cross_attention(own, other, other_mask)))
        return self.mlp_norm(own + self.dropout(self.mlp(own)))


class Pooler(nn.Module):
    """Dense + tanh over the first token (BERT's pooler; METER has one per stream)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.dense = nn.Linear(width, width)

    def forward(self, states: Tensor) -> Tensor:
        return torch.tanh(self.dense(states[:, 0]))


class CoAttentionFusion(nn.Module):
    """Args:
    text_width, image_width: the towers' widths (from the built towers, not the config).
    width: the fusion width both streams are mapped to (METER: 768).
    num_layers: co-attention layers per stream (METER: 6).
    layer_norm_eps: BERT's 1e-12 in METER.
    gradient_checkpointing: recompute each layer pair's activations in the backward pass.
    """

    def __init__(
        self,
        text_width: int,
        image_width: int,
        width: int = 768,
        num_layers: int = 6,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        layer_norm_eps: float = 1e-12,
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.width = width
        self.pooled_width = 2 * width
        self.text_transform = nn.Linear(text_width, width)
        self.image_transform = nn.Linear(image_width, width)
        self.modality_embeddings = nn.Embedding(2, width)  # 0 = text, 1 = image
        self.text_layers = nn.ModuleList(
            PostNormCoAttentionLayer(width, num_heads, mlp_ratio, dropout, layer_norm_eps)
            for _ in range(num_layers)
        )
        self.image_layers = nn.ModuleList(
            PostNormCoAttentionLayer(width, num_heads, mlp_ratio, dropout, layer_norm_eps)
            for _ in range(num_layers)
        )
        self.text_pooler = Pooler(width)
        self.image_pooler = Pooler(width)
        self.gradient_checkpointing = gradient_checkpointing
        self.apply(init_bert_weights)

    def forward(
        self, text_tokens: Tensor, text_mask: Tensor, image_tokens: Tensor, image_mask: Tensor | None = None
    ) -> Fused:
        text = self.text_transform(text_tokens) + self.modality_embeddings.weight[0]
        image = self.image_transform(image_tokens) + self.modality_embeddings.weight[1]
        for text_layer, image_layer in zip(self.text_layers, self.image_layers, strict=True):
            text, image = (  # both read the other stream as it was before this layer
                checkpointed(text_layer, self.gradient_checkpointing, text, text_mask, image, image_mask),
                checkpointed(image_layer, self.gradient_checkpointing, image, image_mask, text, text_mask),
            )
        pooled = torch.cat([self.text_pooler(text), self.image_pooler(image)], dim=-1)
        return Fused(tokens=text, pooled=pooled)
