"""Vision tower: any timm model that yields a sequence of patch tokens."""

from __future__ import annotations

from typing import Any

import timm
from torch import Tensor, nn


class TimmVisionEncoder(nn.Module):
    """``timm.create_model(name, ...)`` -> tokens ``[B, N, D]`` and a pooled vector ``[B, D]``.

    Args:
        name: any timm model name (``vit_base_patch16_224``, ``deit_small_patch16_224``, ...).
        pretrained: load timm's pretrained weights (from the hub cache, or ``checkpoint_path``).
        checkpoint_path: a local weights file to load instead of the hub.
        image_size: input resolution; passed to timm so that position embeddings match.
        model_kwargs: further ``create_model`` arguments (``depth``, ``embed_dim``, ``patch_size`` ...).
        gradient_checkpointing: recompute each block's activations in the backward pass (timm's own).
    """

    def __init__(
        self,
        name: str,
        image_size: int,
        pretrained: bool = False,
        checkpoint_path: str | None = None,
        model_kwargs: dict[str, Any] | None = None,
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.backbone = _create_backbone(
            name,
            image_size,
            pretrained=pretrained,
            checkpoint_path=checkpoint_path or "",
            num_classes=0,
            **(model_kwargs or {}),
        )
        self.image_size = image_size
        if gradient_checkpointing:
            self.backbone.set_grad_checkpointing(True)
        self.width: int = self.backbone.num_features
        data_config = timm.data.resolve_model_data_config(self.backbone)
        self.mean: tuple[float, ...] = tuple(data_config["mean"])
        self.std: tuple[float, ...] = tuple(data_config["std"])

    def forward(self, pixel_values: Tensor) -> tuple[Tensor, Tensor]:
        """pixel_values ``[B, 3, H, W]`` -> (tokens ``[B, N, D]``, pooled ``[B, D]``)."""
        features = self.backbone.forward_features(pixel_values)
        pooled = self.backbone.forward_head(features, pre_logits=True)
        if features.ndim == 4:  # NHWC (Swin) or NCHW (convnets): flatten the grid into tokens
            channels_last = getattr(self.backbone, "output_fmt", "NCHW") == "NHWC"
            features = features if channels_last else features.permute(0, 2, 3, 1)
            features = features.flatten(1, 2)
        elif features.ndim != 3:
            raise ValueError(f"timm model gives features of shape {tuple(features.shape)}, not tokens")
        return features, pooled


def _create_backbone(name: str, image_size: int, **kwargs: Any) -> nn.Module:
    """``timm.create_model`` with ``img_size`` for the models that have one (transformers size their
    position embeddings from it); convnets take any size and reject the argument, so retry without."""
    try:
        return timm.create_model(name, img_size=image_size, **kwargs)
    except TypeError as error:
        if "img_size" not in str(error):
            raise
        return timm.create_model(name, **kwargs)
