"""Image-text contrastive learning (ITC): symmetric InfoNCE over the global batch."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vlp import distributed
from vlp.model.vlp import VLPModel
from vlp.objectives.base import Objective
from vlp.types import CONTRASTIVE, Batch, Encoded, ModelDims, ObjectiveOutput


def contrastive_targets(image_ids: Tensor) -> Tensor:
    """``[B, B]`` target distribution: uniform over the pairs that show the same image.

    With unique image ids this is the identity (plain InfoNCE); with repeats, another caption of the same
    image is not pushed away as if it were a negative.
    """
    same = (image_ids[:, None] == image_ids[None, :]).float()
    return same / same.sum(dim=1, keepdim=True)


def symmetric_infonce(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean of image->text and text->image cross-entropy; ``logits [B, B]`` rows are images."""
    image_to_text = F.cross_entropy(logits, targets)
    text_to_image = F.cross_entropy(logits.t(), targets.t())
    return (image_to_text + text_to_image) / 2


class ImageTextContrastive(Objective):
    """CLIP/ALBEF contrastive loss with a learnable temperature.

    Args:
        temperature: initial softmax temperature (0.07 as in CLIP and ALBEF).
        learn_temperature: make the temperature a parameter; it is clamped to [1/max_logit_scale, 1].
        gather_with_grad: gather embeddings across ranks with gradient (correct gradient of the global
            loss); ``False`` gathers without, as ALBEF/BLIP do.
    """

    needs = (CONTRASTIVE,)

    def __init__(
        self,
        dims: ModelDims,
        weight: float = 1.0,
        temperature: float = 0.07,
        learn_temperature: bool = True,
        gather_with_grad: bool = True,
        max_logit_scale: float = 100.0,
    ) -> None:
        super().__init__(weight)
        log_scale = torch.tensor(math.log(1.0 / temperature))
        self.log_logit_scale = nn.Parameter(log_scale, requires_grad=learn_temperature)
        self.max_log_scale = math.log(max_logit_scale)
        self.gather = distributed.gather_with_grad if gather_with_grad else distributed.gather_without_grad

    def logit_scale(self) -> Tensor:
        return self.log_logit_scale.clamp(0.0, self.max_log_scale).exp()

    def forward(self, batch: Batch, encoded: Encoded, model: VLPModel) -> ObjectiveOutput:
        image = self.gather(encoded.image.embedding)
        text = self.gather(encoded.text.embedding)
        image_ids = self.gather(batch["image_id"])
        logits = self.logit_scale() * image @ text.t()
        targets = contrastive_targets(image_ids)
        loss = symmetric_infonce(logits, targets)
        with torch.no_grad():
            hits = targets.gather(1, logits.argmax(dim=1, keepdim=True)) > 0
        return ObjectiveOutput(
            loss=loss,
            metrics={"i2t_acc": hits.float().mean(), "temperature": 1.0 / self.logit_scale().detach()},
        )
