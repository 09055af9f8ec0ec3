"""Text tower: a HF encoder, pretrained from a hub name or local folder, or randomly initialised."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from transformers import AutoConfig, AutoModel


class HFTextEncoder(nn.Module):
    """HF ``AutoModel`` -> token states ``[B, L, D]``.

    Args:
        vocab_size: set by the entry point from the tokenizer, so that the two always agree.
        name_or_path: hub name or local ``save_pretrained`` folder; ``None`` builds from ``config``.
        config: ``AutoConfig.for_model`` arguments (``model_type`` plus sizes) for random init.
        model_kwargs: extra ``from_pretrained``/``from_config`` arguments (e.g. ``add_pooling_layer``).
    """

    def __init__(
        self,
        vocab_size: int,
        name_or_path: str | None = None,
        config: dict[str, Any] | None = None,
        model_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        model_kwargs = dict(model_kwargs or {})
        if name_or_path is not None:
            self.encoder = AutoModel.from_pretrained(name_or_path, **model_kwargs)
            if self.encoder.config.vocab_size != vocab_size:
                raise ValueError(
                    f"model.text.name_or_path={name_or_path} has vocab_size {self.encoder.config.vocab_size} "
                    f"but the tokenizer has {vocab_size} tokens: use the tokenizer saved with that model"
                )
        else:
            if not config or "model_type" not in config:
                raise ValueError("model.text.config needs a model_type (e.g. bert) when name_or_path is null")
            hf_config = AutoConfig.for_model(**{**config, "vocab_size": vocab_size})
            self.encoder = AutoModel.from_config(hf_config, **model_kwargs)
        self.width: int = self.encoder.config.hidden_size
        self.vocab_size = vocab_size

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """input_ids, attention_mask ``[B, L]`` -> token states ``[B, L, D]``."""
        return self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
