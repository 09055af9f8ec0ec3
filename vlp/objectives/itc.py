"""Image-text contrastive learning (ITC): symmetric InfoNCE over the global batch."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vlp import distributed
from vlp.model.vlp import VLPModel
from vlp.objectives.base import Objective
from vlp.objectives.momentum import FeatureQueue, MomentumEncoders
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
        momentum: float | None = None,
        queue_size: int = 0,
        distill_alpha: float = 0.0,
        distill_warmup_steps: int = 0,
    ) -> None:
        super().__init__(weight)
        log_scale = torch.tensor(math.log(1.0 / temperature))
        self.log_logit_scale = nn.Parameter(log_scale, requires_grad=learn_temperature)
        self.max_log_scale = math.log(max_logit_scale)
        self.gather_rows = (
            distributed.gather_rows_with_grad if gather_with_grad else distributed.gather_rows_without_grad
        )
        self.local_loss = local_loss
        if momentum is None and (queue_size or distill_alpha):
            raise ValueError(
                "objectives.itc.queue_size and distill_alpha need momentum encoders: set "
                "objectives.itc.momentum (e.g. 0.995)"
            )
        if not 0.0 <= distill_alpha <= 1.0:
            raise ValueError(f"objectives.itc.distill_alpha must be in [0, 1], got {distill_alpha}")
        self.momentum_decay = momentum
        self.queue = FeatureQueue(queue_size, dims.embed_dim) if queue_size else None
        self.momentum: MomentumEncoders | None = None  # made by bind(), which sees the model
        self.distill_alpha = distill_alpha
        self.distill_warmup_steps = distill_warmup_steps
        if momentum is not None:  # training batches seen, for the distillation warm-up
            self.register_buffer("training_steps", torch.zeros((), dtype=torch.long))

    def bind(self, model: VLPModel) -> None:
        """Called once by the system with the model it trains: builds the momentum copies."""
        if self.momentum_decay is not None:
            self.momentum = MomentumEncoders(model, self.momentum_decay)

    def logit_scale(self) -> Tensor:
        return self.log_logit_scale.clamp(0.0, self.max_log_scale).exp()

    def forward(self, batch: Batch, encoded: Encoded, model: VLPModel) -> ObjectiveOutput:
        if self.momentum is not None:
            return self._momentum_forward(batch, encoded, model)
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

    def _alpha(self) -> float:
        if self.distill_warmup_steps <= 0:
            return self.distill_alpha
        return self.distill_alpha * min(1.0, int(self.training_steps) / self.distill_warmup_steps)

    def _momentum_forward(self, batch: Batch, encoded: Encoded, model: VLPModel) -> ObjectiveOutput:
        """ALBEF's ITC: online embeddings of this rank's rows against momentum keys (the global batch, then
        the queue), with targets softened by the momentum model's own similarities."""
        assert self.momentum is not None
        self.momentum.update(model, step=self.training)
        scale = self.logit_scale()
        with torch.no_grad():
            momentum_images, momentum_texts = self.momentum.embed(
                batch["pixel_values"], batch["input_ids"], batch["attention_mask"]
            )
            key_images = distributed.gather_variable_length(momentum_images)
            key_texts = distributed.gather_variable_length(momentum_texts)
            key_ids = distributed.gather_variable_length(batch["image_id"])
            batch_keys = (key_images, key_texts, key_ids)
            if self.queue is not None:
                queued = self.queue.contents()
                key_images, key_texts, key_ids = (
                    torch.cat([fresh, old.to(fresh.dtype)])
                    for fresh, old in zip(batch_keys, queued, strict=True)
                )
            same = (batch["image_id"][:, None] == key_ids[None, :]).float()
            hard_targets = same / same.sum(dim=1, keepdim=True)
            alpha = self._alpha()
            image_targets = text_targets = hard_targets
            if alpha > 0:
                momentum_i2t = F.softmax(scale * momentum_images @ key_texts.t(), dim=1)
                momentum_t2i = F.softmax(scale * momentum_texts @ key_images.t(), dim=1)
                image_targets = alpha * momentum_i2t + (1 - alpha) * hard_targets
                text_targets = alpha * momentum_t2i + (1 - alpha) * hard_targets
        image_to_text = scale * encoded.image.embedding @ key_texts.t().to(encoded.image.embedding.dtype)
        text_to_image = scale * encoded.text.embedding @ key_images.t().to(encoded.text.embedding.dtype)
        # sums over this rank's rows / (2 x global rows), times the world size that DDP's average divides by
        rows = encoded.image.embedding.shape[0]
        per_rank = 2 * distributed.global_sum(rows, image_to_text.device) / distributed.world_size()
        loss = (
            F.cross_entropy(image_to_text, image_targets, reduction="sum")
            + F.cross_entropy(text_to_image, text_targets, reduction="sum")
        ) / per_rank
        if self.training:
            if self.queue is not None:
                self.queue.push(*batch_keys)  # every rank pushes the same global batch, in rank order
            self.training_steps += 1
        with torch.no_grad():
            hits = hard_targets.gather(1, image_to_text.argmax(dim=1, keepdim=True)) > 0
        metrics = {"i2t_acc": hits.float().mean(), "temperature": 1.0 / scale.detach()}
        metrics["distill_alpha"] = scale.detach().new_tensor(alpha)
        if self.queue is not None:
            metrics["queue_filled"] = self.queue.filled.float()
        return ObjectiveOutput(loss=loss, metrics=metrics)
