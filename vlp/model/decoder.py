"""Caption decoder: a causal text decoder with cross-attention to the image tokens (BLIP, SimVLM).

Its input is the text tower's own embedding module (word + position embeddings, LayerNorm): the words
mean the same to the encoder and the decoder, and the LM head is tied to those word embeddings. The BERT
layers of the text tower are *not* used: they are bidirectional and would let a token see the tokens it
is trained to predict. Then come ``num_layers`` pre-norm layers (causal self-attention, cross-attention to
the image tokens, MLP), a final LayerNorm and the tied LM head.

With ``share_with_fusion=True`` (BLIP's sharing) the decoder owns only a causal self-attention per layer,
the final norm and the LM bias; the cross-attention and MLP of layer ``i`` are those of the model's fusion
layer ``i``. The shared modules are reached through ``model`` at forward time instead of being registered
a second time under the decoder, so every parameter has one name (``model.fusion.*``), a pretraining
checkpoint loads into it, and the optimizer sees each parameter once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vlp.model.attention import KVCache, MultiHeadAttention
from vlp.model.fusion import CrossAttentionLayer, init_bert_weights
from vlp.model.generation import NextLogits
from vlp.model.vlp import VLPModel


class CausalSelfAttention(nn.Module):
    """Pre-norm causal self-attention with its residual: the part of a decoder layer that is never shared."""

    def __init__(self, width: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.attention = MultiHeadAttention(width, num_heads, dropout=dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, text: Tensor, cache: KVCache | None = None) -> Tensor:
        normed = self.norm(text)
        return text + self.dropout(self.attention(normed, normed, is_causal=True, cache=cache))


class DecodingState:
    """What step-by-step generation keeps between steps: per layer a KV cache for the causal
    self-attention (grows by a token per step) and one for the cross-attention (the image keys, projected
    once), and how many tokens the caches hold."""

    def __init__(self, num_layers: int) -> None:
        self.text = [KVCache(static=False) for _ in range(num_layers)]
        self.image = [KVCache(static=True) for _ in range(num_layers)]
        self.length = 0

    def reorder(self, rows: Tensor) -> None:
        for cache in self.text + self.image:
            cache.reorder(rows)


class CaptionDecoder(nn.Module):
    """Caption token ids ``[B, L]`` + image tokens ``[B, N, Dv]`` -> next-token logits ``[B, L, V]``.

    Position ``i`` of the logits scores token ``i + 1`` and depends on tokens ``0..i`` only. Sequences are
    right-padded, so the causal mask alone keeps real tokens from reading padding.

    Args:
        width, image_width, vocab_size: the text tower's width, the vision tower's and the vocabulary
            size (the objective reads them from ``model.dims``).
        fusion_layers: how many layers the model's fusion encoder has (``model.dims.fusion_layers``).
        num_layers: decoder depth; ``None`` = as deep as the fusion encoder, which sharing requires.
        share_with_fusion: reuse the fusion layers' cross-attention and MLP (see the module docstring).
    """

    def __init__(
        self,
        width: int,
        image_width: int,
        vocab_size: int,
        fusion_layers: int,
        num_layers: int | None = None,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        share_with_fusion: bool = False,
    ) -> None:
        super().__init__()
        num_layers = fusion_layers if num_layers is None else num_layers
        if share_with_fusion and num_layers != fusion_layers:
            raise ValueError(
                f"objectives.captioning.decoder.num_layers={num_layers} but share_with_fusion needs one "
                f"layer per fusion layer ({fusion_layers}): set num_layers=null"
            )
        if num_layers < 1:
            raise ValueError(
                f"objectives.captioning.decoder.num_layers={num_layers}: the decoder needs a layer at least "
                "(num_layers=null takes the fusion's depth, which is 0 for this model: set it)"
            )
        self.share_with_fusion = share_with_fusion
        self.layers: nn.ModuleList
        if share_with_fusion:
            self.layers = nn.ModuleList(
                CausalSelfAttention(width, num_heads, dropout) for _ in range(num_layers)
            )
        else:
            self.layers = nn.ModuleList(
                CrossAttentionLayer(width, image_width, num_heads, mlp_ratio, dropout, causal=True)
                for _ in range(num_layers)
            )
        self.norm = nn.LayerNorm(width)
        self.apply(init_bert_weights)
        # The LM head's weight is the text tower's word embedding matrix; only its bias lives here.
        self.lm_bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(
        self, input_ids: Tensor, image_tokens: Tensor, model: VLPModel, state: DecodingState | None = None
    ) -> Tensor:
        """Logits ``[B, L, V]``; with a ``state``, ``input_ids`` are the tokens after the cached ones."""
        embeddings = model.text.encoder.embeddings
        offset = {"past_key_values_length": state.length} if state is not None and state.length else {}
        hidden = embeddings(input_ids=input_ids, **offset)
        for position, layer in enumerate(self.layers):
            text_cache = None if state is None else state.text[position]
            image_cache = None if state is None else state.image[position]
            if self.share_with_fusion:
                hidden = layer(hidden, text_cache)
                image_layer: CrossAttentionLayer = model.fusion.layers[position]  # BLIP's sharing
            else:
                hidden = layer.attend_text(hidden, None, text_cache)
                image_layer = layer
            hidden = image_layer.attend_image(hidden, image_tokens, None, image_cache)
            hidden = image_layer.feed_forward(hidden)
        if state is not None:
            state.length += input_ids.shape[1]
        return F.linear(self.norm(hidden), embeddings.word_embeddings.weight, self.lm_bias)

    def scorer(self, image_tokens: Tensor, model: VLPModel) -> NextLogits:
        """The next-token scorer that vlp.model.generation searches with, decoding one token per step
        with a KV cache. ``image_tokens [N, ...]`` has one row per search row (beams included)."""
        state = DecodingState(len(self.layers))

        def next_logits(tokens: Tensor, parents: Tensor | None) -> Tensor:
            if parents is not None:
                state.reorder(parents)
            return self(tokens[:, state.length :], image_tokens, model, state)[:, -1]

        return next_logits
