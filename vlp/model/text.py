"""Text tower: a HF encoder, pretrained from a hub name or local folder, or randomly initialised."""

from __future__ import annotations

from typing import Any

import torch
import transformers
from torch import Tensor, nn
from transformers import AutoConfig, AutoModel

POOLED_OUTPUTS = ("first_token", "last_token")


class HFTextEncoder(nn.Module):
    """HF ``AutoModel`` (or ``model_class``) -> token states ``[B, L, D]`` and a pooled state ``[B, D]``.

    Args:
        vocab_size: set by the entry point from the tokenizer, so that the two always agree.
        name_or_path: hub name or local ``save_pretrained`` folder; ``None`` builds from ``config``.
        config: ``AutoConfig.for_model`` arguments (``model_type`` plus sizes) for random init.
        model_kwargs: extra ``from_pretrained``/``from_config`` arguments (e.g. ``add_pooling_layer``); when
            building from ``config``, those that are config attributes (``num_hidden_layers``) go there.
        model_class: a transformers class name to build instead of ``AutoModel``: ``CLIPTextModel`` reads
            the text half of a whole ``CLIPModel`` folder, which AutoModel would load as both towers.
        pooled_output: what the contrastive projection reads: ``first_token`` ([CLS]: BERT, ALBEF) or
            ``last_token``, the last real token (CLIP's end-of-text token, after its final norm; read from
            the attention mask, so it does not depend on which id the tokenizer gives that token).
        embeddings_only: keep only the embedding layer (word + position + type embeddings and their
            norm): ViLT's text input, whose transformer is the shared single stream.
        gradient_checkpointing: recompute each layer's activations in the backward pass (HF's own).
    """

    def __init__(
        self,
        vocab_size: int,
        name_or_path: str | None = None,
        config: dict[str, Any] | None = None,
        model_kwargs: dict[str, Any] | None = None,
        model_class: str | None = None,
        pooled_output: str = "first_token",
        embeddings_only: bool = False,
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        if pooled_output not in POOLED_OUTPUTS:
            raise ValueError(
                f"model.text.pooled_output must be one of {POOLED_OUTPUTS}, got {pooled_output!r}"
            )
        factory = _model_class(model_class)
        model_kwargs = dict(model_kwargs or {})
        if name_or_path is not None:
            encoder = factory.from_pretrained(name_or_path, **model_kwargs)
            if encoder.config.vocab_size != vocab_size:
                raise ValueError(
                    f"model.text.name_or_path={name_or_path} has vocab_size {encoder.config.vocab_size} "
                    f"but the tokenizer has {vocab_size} tokens: use the tokenizer saved with that model"
                )
        else:
            if not config or "model_type" not in config:
                raise ValueError("model.text.config needs a model_type (e.g. bert) when name_or_path is null")
            hf_config = AutoConfig.for_model(**{**config, "vocab_size": vocab_size})
            for key in [key for key in model_kwargs if hasattr(hf_config, key)]:
                setattr(hf_config, key, model_kwargs.pop(key))
            build = factory.from_config if factory is AutoModel else factory  # model classes take a config
            encoder = build(hf_config, **model_kwargs)
        self.width: int = encoder.config.hidden_size
        # The HF config the tower was built with, also when only its embeddings are kept: vlp-export
        # writes it down so that an exported model rebuilds without name_or_path (the hub or a folder).
        self.hf_config = encoder.config
        self.vocab_size = vocab_size
        self.pooled_output = pooled_output
        self.embeddings_only = embeddings_only
        if embeddings_only:
            if pooled_output != "first_token":
                raise ValueError("model.text.embeddings_only has no pooler: use pooled_output=first_token")
            if not hasattr(encoder, "embeddings"):
                raise ValueError(f"model.text.embeddings_only: {type(encoder).__name__} has no .embeddings")
            self.encoder = encoder.embeddings  # the transformer layers are dropped
        else:
            self.encoder = encoder
            if gradient_checkpointing:
                encoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """input_ids, attention_mask ``[B, L]`` -> token states ``[B, L, D]``."""
        return self.encode(input_ids, attention_mask)[0]

    def encode(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        """(token states ``[B, L, D]``, pooled state ``[B, D]``)."""
        if self.embeddings_only:
            tokens = self.encoder(input_ids=input_ids)
            return tokens, tokens[:, 0]
        tokens = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.pooled_output == "first_token":
            return tokens, tokens[:, 0]
        last = attention_mask.sum(dim=1).clamp(min=1) - 1  # right-padded: the last real token
        return tokens, tokens[torch.arange(tokens.shape[0], device=tokens.device), last]


def _model_class(name: str | None) -> Any:
    if name is None:
        return AutoModel
    factory = getattr(transformers, name, None)
    if factory is None or not hasattr(factory, "from_pretrained"):
        raise ValueError(f"model.text.model_class={name!r} is not a transformers model class")
    return factory
