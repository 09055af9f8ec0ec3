"""Multi-head attention on PyTorch's fused scaled_dot_product_attention, for our own fusion layers."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class KVCache:
    """Keys and values ``[B, H, L, d]`` an attention layer has projected, kept between decoding steps, so
    that generating token ``t`` costs one token's work rather than a pass over the whole prefix.

    ``static=True``: the keys never change (cross-attention to image tokens) and are projected once.
    ``static=False``: every call's keys are appended (causal self-attention over a growing prefix).
    """

    static: bool
    keys: Tensor | None = None
    values: Tensor | None = None

    def reorder(self, rows: Tensor) -> None:
        """Keep row ``rows[i]`` as row ``i`` (beam search: each new beam continues one old beam)."""
        if self.keys is not None and self.values is not None:
            self.keys, self.values = self.keys[rows], self.values[rows]


class MultiHeadAttention(nn.Module):
    """Self- or cross-attention: queries ``[B, Lq, D]`` attend to keys/values ``[B, Lk, Dk]``.

    ``key_padding_mask [B, Lk]`` is 1 (True) for real tokens, 0 for padding, as HF attention masks are.
    ``is_causal=True`` (self-attention) lets a query see only the keys up to its own position, the
    decoder's view, where a token must not read the tokens it is trained to predict; the queries are the
    *last* ``Lq`` positions, so that with a ``cache`` of earlier keys a new token sees the whole prefix.
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
        # Set by vlp.explain: compute the attention weights explicitly (SDPA never forms them) and keep
        # them in ``recorded``, for Grad-CAM. Off on every training path.
        self.record_weights = False
        self.recorded: list[Tensor] = []

    def _heads(self, x: Tensor) -> Tensor:
        batch, length, width = x.shape
        return x.view(batch, length, self.num_heads, width // self.num_heads).transpose(1, 2)

    def _keys_values(self, keys: Tensor, cache: KVCache | None) -> tuple[Tensor, Tensor]:
        if cache is not None and cache.static and cache.keys is not None and cache.values is not None:
            return cache.keys, cache.values
        k, v = self._heads(self.key(keys)), self._heads(self.value(keys))
        if cache is not None:
            if not cache.static and cache.keys is not None and cache.values is not None:
                k, v = torch.cat([cache.keys, k], dim=2), torch.cat([cache.values, v], dim=2)
            cache.keys, cache.values = k, v
        return k, v

    def forward(
        self,
        queries: Tensor,
        keys: Tensor,
        key_padding_mask: Tensor | None = None,
        is_causal: bool = False,
        cache: KVCache | None = None,
    ) -> Tensor:
        q = self._heads(self.query(queries))
        k, v = self._keys_values(keys, cache)
        mask = None if key_padding_mask is None else key_padding_mask.bool()[:, None, None, :]
        query_length, key_length = q.shape[2], k.shape[2]
        if is_causal and (mask is not None or query_length != key_length):
            # SDPA's is_causal aligns the triangle top-left and takes no mask besides: build it here,
            # aligned bottom-right (the queries are the last positions), folded into the padding mask.
            causal = torch.ones(query_length, key_length, dtype=torch.bool, device=q.device)
            causal = causal.tril(diagonal=key_length - query_length)
            mask, is_causal = causal if mask is None else mask & causal, False
        if self.record_weights and not is_causal:
            attended = self._recorded_attention(q, k, v, mask)
        else:
            attended = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0, is_causal=is_causal
            )
        batch, _, length, _ = attended.shape
        return self.out(attended.transpose(1, 2).reshape(batch, length, -1))

    def _recorded_attention(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        """Attention as SDPA computes it (no dropout: explanation runs in eval mode), with the weights
        ``[B, H, Lq, Lk]`` kept in ``recorded``."""
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        weights = scores.softmax(dim=-1)
        self.recorded.append(weights)
        return weights @ v
