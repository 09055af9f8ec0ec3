"""ALBEF's momentum distillation for ITC: exponential-moving-average copies of the unimodal towers, and a
queue of their past embeddings that serves as extra contrastive negatives (MoCo-style).

Everything here is state of the run, kept in persistent buffers so that a checkpoint carries it and a
resumed run continues with the same momentum weights and the same queue.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vlp.model.vlp import VLPModel


class FeatureQueue(nn.Module):
    """A ring buffer of the last ``size`` (image embedding, text embedding, image id) triples.

    Any number of rows can be pushed (a short last batch simply advances the ring less); ``contents()``
    returns only the slots written so far, so an unfilled queue never contributes zero vectors as fake
    negatives. The queue belongs to one run: ``model.init_from`` leaves it empty (``reset_on_init_from``),
    because another run's image ids would mark the wrong pairs as positives.
    """

    reset_on_init_from = True

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        if size <= 0:
            raise ValueError(f"objectives.itc.queue_size must be positive, got {size}")
        self.size = size
        self.register_buffer("images", torch.zeros(size, dim))
        self.register_buffer("texts", torch.zeros(size, dim))
        self.register_buffer("image_ids", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("position", torch.zeros((), dtype=torch.long))  # next slot to write
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))  # slots holding real rows

    def contents(self) -> tuple[Tensor, Tensor, Tensor]:
        filled = int(self.filled)
        return self.images[:filled], self.texts[:filled], self.image_ids[:filled]

    @torch.no_grad()
    def push(self, images: Tensor, texts: Tensor, image_ids: Tensor) -> None:
        rows = images.shape[0]
        if rows > self.size:  # only the newest rows fit
            images, texts, image_ids = images[-self.size :], texts[-self.size :], image_ids[-self.size :]
            rows = self.size
        slots = (self.position + torch.arange(rows, device=self.position.device)) % self.size
        self.images[slots] = images.to(self.images.dtype)
        self.texts[slots] = texts.to(self.texts.dtype)
        self.image_ids[slots] = image_ids.to(self.image_ids.device)
        self.position.copy_((self.position + rows) % self.size)
        self.filled.copy_(torch.clamp(self.filled + rows, max=self.size))


class MomentumEncoders(nn.Module):
    """EMA copies of a model's towers and contrastive projections (no fusion), never trained by the
    optimizer: ``update`` moves them towards the online weights by ``1 - decay`` per training step.

    They are copied from the online model at the first ``update`` (``synced`` is False until then), so
    a model whose weights arrive after construction (``model.init_from``) starts its momentum copy from
    those weights, not from the random initialisation; a resumed run loads ``synced=True`` and keeps its
    saved momentum weights.
    """

    def __init__(self, model: VLPModel, decay: float) -> None:
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"objectives.itc.momentum must be in [0, 1), got {decay}")
        self.decay = decay
        self.encoders = model.unimodal_copy()
        self.encoders.requires_grad_(False)
        self.register_buffer("synced", torch.zeros((), dtype=torch.bool))

    def _pairs(self, model: VLPModel) -> list[tuple[Tensor, Tensor]]:
        online = dict(model.named_parameters()) | dict(model.named_buffers())
        mine = list(self.encoders.named_parameters()) + list(self.encoders.named_buffers())
        return [(tensor, online[name]) for name, tensor in mine]

    @torch.no_grad()
    def update(self, model: VLPModel, step: bool) -> None:
        """Copy the online weights if never done; then, when ``step`` (training), take one EMA step."""
        if not bool(self.synced):
            for momentum, online in self._pairs(model):
                momentum.copy_(online)
            self.synced.fill_(True)
        elif step:
            for momentum, online in self._pairs(model):
                if momentum.is_floating_point():
                    momentum.lerp_(online.detach().to(momentum.dtype), 1.0 - self.decay)
                else:  # integer buffers (e.g. BatchNorm's num_batches_tracked) follow the online model
                    momentum.copy_(online)

    @torch.no_grad()
    def embed(self, pixel_values: Tensor, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        """Normalised image and text embeddings from the momentum towers."""
        encoded = self.encoders.encode(pixel_values, input_ids, attention_mask)
        return encoded.image.embedding, encoded.text.embedding
