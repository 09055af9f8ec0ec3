"""Multi-head attention on PyTorch's fused scaled_dot_product_attention, for our own fusion layers."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class MultiHeadAttention(nn.Module):
    """Self- or cross-attention: queries ``[B, Lq, D]`` attend to keys/values ``[B, Lk, Dk]``.

    ``key_padding_mask [B, Lk]`` is 1 (True) for real tokens, 0 for padding, as HF attention masks are.
    """

    def __init__(
        self, width: int, num_heads: int, key_width: int | None = None, dropout: float = 0.0
    ) -> None:
        super().__init__()
        if width % num_heads:
            raise ValueError(f"fusion width {width} is not divisible by num_heads {num_heads}")
        key_width = key_width or width
        self.num_heads = num_heads
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(key_width, width)
        self.value = nn.Linear(key_width, width)
        self.out = nn.Linear(width, width)
        self.dropout = dropout

    def _heads(self, x: Tensor) -> Tensor:
        batch, length, width = x.shape
        return x.view(batch, length, self.num_heads, width // self.num_heads).transpose(1, 2)

    def forward(self, queries: Tensor, keys: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        q, k, v = self._heads(self.query(queries)), self._heads(self.key(keys)), self._heads(self.value(keys))
        mask = None if key_padding_mask is None else key_padding_mask.bool()[:, None, None, :]
        attended = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )
        batch, _, length, _ = attended.shape
        return self.out(attended.transpose(1, 2).reshape(batch, length, -1))
