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
        checkpoint_path: a local weights file (a timm state dict, .pth / .bin / .safetensors) to load
            instead of the hub; position embeddings are interpolated to ``image_size`` as for hub weights.
        image_size: input resolution; passed to timm, which resizes pretrained position embeddings to it.
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
        weights: dict[str, Any] = {"pretrained": pretrained}
        if checkpoint_path:
            # Through timm's pretrained loader rather than create_model(checkpoint_path=...): its filter
            # interpolates position embeddings when image_size differs from the file's resolution and
            # drops a classifier the file may have.
            weights = {"pretrained": True, "pretrained_cfg_overlay": {"file": checkpoint_path}}
        self.backbone = _create_backbone(name, image_size, num_classes=0, **weights, **(model_kwargs or {}))
        self.image_size = image_size
        if gradient_checkpointing:
            self.backbone.set_grad_checkpointing(True)
        self.width: int = self.backbone.num_features
        data_config = timm.data.resolve_model_data_config(self.backbone)
        self.mean: tuple[float, ...] = tuple(data_config["mean"])
        self.std: tuple[float, ...] = tuple(data_config["std"])

    @property
    def prefix_tokens(self) -> int:
        """Tokens before the patch grid in :meth:`forward`'s output (a ViT's class token); the rest are
        the patches row by row. Swin and convnet grids have none."""
        return int(getattr(self.backbone, "num_prefix_tokens", 0))

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
