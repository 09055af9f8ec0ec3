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
        local_loss: each rank scores only its own images and texts against the global batch (open_clip's
            ``--local-loss``): ``2 B N`` logits per rank instead of ``N^2``, the same gradient when
            gathering with gradient. Batches may differ in size across ranks (a short last batch).
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
        local_loss: bool = False,
    ) -> None:
        super().__init__(weight)
        log_scale = torch.tensor(math.log(1.0 / temperature))
        self.log_logit_scale = nn.Parameter(log_scale, requires_grad=learn_temperature)
        self.max_log_scale = math.log(max_logit_scale)
        self.gather_rows = (
            distributed.gather_rows_with_grad if gather_with_grad else distributed.gather_rows_without_grad
        )
        self.local_loss = local_loss

    def logit_scale(self) -> Tensor:
        return self.log_logit_scale.clamp(0.0, self.max_log_scale).exp()

    def forward(self, batch: Batch, encoded: Encoded, model: VLPModel) -> ObjectiveOutput:
        images, offset = self.gather_rows(encoded.image.embedding)
        texts, _ = self.gather_rows(encoded.text.embedding)
        image_ids = distributed.gather_variable_length(batch["image_id"])
        scale = self.logit_scale()
        if self.local_loss:
            mine = slice(offset, offset + encoded.image.embedding.shape[0])
            targets = contrastive_targets(image_ids)[mine]  # this rank's rows against every column
            image_to_text = scale * images[mine] @ texts.t()
            text_to_image = scale * texts[mine] @ images.t()
            # sums over this rank's rows / (2 N), times the world size that DDP's average divides by
            per_rank = 2 * len(image_ids) / distributed.world_size()
            loss = (
                F.cross_entropy(image_to_text, targets, reduction="sum")
                + F.cross_entropy(text_to_image, targets, reduction="sum")
            ) / per_rank
            logits = image_to_text
        else:
            logits = scale * images @ texts.t()
            targets = contrastive_targets(image_ids)
            loss = symmetric_infonce(logits, targets)
        with torch.no_grad():
            hits = targets.gather(1, logits.argmax(dim=1, keepdim=True)) > 0
        return ObjectiveOutput(
            loss=loss,
            metrics={"i2t_acc": hits.float().mean(), "temperature": 1.0 / self.logit_scale().detach()},
        )
