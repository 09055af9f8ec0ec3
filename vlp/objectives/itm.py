"""Image-text matching (ITM) with hard negatives sampled from the contrastive similarities (ALBEF)."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from vlp.distributed import (
    all_reduce,
    gather_rows_with_grad,
    gather_variable_length,
    global_sum,
    pad_dim1,
    shared_generator,
    world_size,
)
from vlp.model.vlp import VLPModel
from vlp.objectives.base import Objective, check_pooling, pool_fused, pooled_width
from vlp.types import CONTRASTIVE, FUSION, Batch, Encoded, ModelDims, ObjectiveOutput


def sample_negatives(
    similarity: Tensor, image_ids: Tensor, temperature: float | None, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """For each row of ``similarity [B, B]`` (rows: queries, columns: candidates), draw one negative column.

    Candidates showing the same image as the query (the positive, and other captions of that image) are
    never drawn. ``temperature=None`` samples uniformly; otherwise with probability softmax(sim / T), so
    that similar-looking (hard) negatives are drawn more often. Returns (row indices that had a valid
    candidate, drawn column per such row).
    """
    forbidden = image_ids[:, None] == image_ids[None, :]
    if temperature is None:
        weights = torch.ones_like(similarity)
    else:
        weights = F.softmax(similarity.float() / temperature, dim=1) + 1e-5  # never exactly zero
    weights = weights.masked_fill(forbidden, 0.0)
    rows = torch.nonzero(weights.sum(dim=1) > 0).squeeze(1)
    columns = torch.multinomial(weights[rows], 1, generator=generator).squeeze(1)
    return rows, columns


def _own(rows: Tensor, columns: Tensor, mine: slice) -> tuple[Tensor, Tensor]:
    """The draws whose query row is this rank's (``mine``, global rows), with rows made local."""
    keep = (rows >= mine.start) & (rows < mine.stop)
    return rows[keep] - mine.start, columns[keep]


class ImageTextMatching(Objective):
    """Binary match / no-match head on the fused [CLS] state.

    Each step fuses B positive pairs, one negative text per image and one negative image per text
    (3B pairs, as ALBEF does), in a single fusion pass.

    Args:
        hard_negatives: sample negatives in proportion to contrastive similarity (else uniformly, as ViLT
            does; a family without contrastive embeddings must set it to false).
        sampling_temperature: the softmax temperature for hard-negative sampling.
        pooling: ``cls`` reads the fused first token (ALBEF); ``mean`` averages the fused states of all real
            tokens, each of which has looked at the image for its own word (learns faster from scratch).
        negatives: ``local`` draws each rank's negatives from its own batch (ALBEF's pretraining);
            ``global`` from the whole global batch (BLIP's retrieval finetuning): the candidates' token
            states are gathered with gradient and every rank draws with the same generator, so the step
            equals a single process on the global batch.

    Under DDP the loss is the sum over this rank's pairs divided by the mean number of pairs per rank, so
    that DDP's average over ranks is the mean over all pairs, however they are spread.
    """

    def __init__(
        self,
        dims: ModelDims,
        weight: float = 1.0,
        hard_negatives: bool = True,
        sampling_temperature: float = 0.07,
        pooling: str = "cls",
        negatives: str = "local",
    ) -> None:
        super().__init__(weight)
        if negatives not in ("local", "global"):
            raise ValueError(f"objectives.itm.negatives must be local or global, got {negatives!r}")
        self.global_negatives = negatives == "global"
        if hard_negatives and CONTRASTIVE not in dims.capabilities:
            raise ValueError(
                f"objectives.itm.hard_negatives=true samples negatives by contrastive similarity, which "
                f"model family {dims.family} has no embeddings for: set objectives.itm.hard_negatives=false"
            )
        self.pooling = check_pooling("itm", pooling)
        self.head = nn.Linear(pooled_width(dims, self.pooling), 2)
        self.temperature = sampling_temperature if hard_negatives else None

    needs = (FUSION,)

    def match_logits(
        self, model: VLPModel, text_tokens: Tensor, text_mask: Tensor, image_tokens: Tensor
    ) -> Tensor:
        """``[P, 2]`` no-match / match logits for pairs aligned along the batch (one fusion pass each):
        what a two-stage retrieval evaluation re-ranks with."""
        fused = model.fuse(text_tokens, text_mask, image_tokens)
        return self.head(pool_fused(fused, text_mask, self.pooling))

    def forward(self, batch: Batch, encoded: Encoded, model: VLPModel) -> ObjectiveOutput:
        image, text = encoded.image, encoded.text
        length = text.tokens.shape[1]
        if self.global_negatives:  # every rank's candidates, with gradient back to their ranks
            length = int(all_reduce(torch.tensor([length], device=text.tokens.device), dist.ReduceOp.MAX))
            pool_images, offset = gather_rows_with_grad(image.tokens)
            pool_texts, _ = gather_rows_with_grad(pad_dim1(text.tokens, length))
            pool_masks = gather_variable_length(pad_dim1(text.attention_mask, length))
            pool_ids = gather_variable_length(batch["image_id"])
            generator = shared_generator()
        else:
            pool_images, pool_texts, pool_masks, pool_ids = (
                image.tokens,
                text.tokens,
                text.attention_mask,
                batch["image_id"],
            )
            offset, generator = 0, None
        mine = slice(offset, offset + image.tokens.shape[0])
        with torch.no_grad():
            if self.temperature is None:  # uniform negatives: the similarities are not read
                similarity = pool_images.new_zeros(len(pool_ids), len(pool_ids))
            else:
                gather = gather_variable_length if self.global_negatives else (lambda tensor: tensor)
                similarity = gather(image.embedding) @ gather(text.embedding).t()  # [images, texts]
            if generator is not None:  # the shared draw needs its inputs where the generator is
                similarity, pool_ids = similarity.cpu(), pool_ids.cpu()
            image_rows, negative_texts = _own(
                *sample_negatives(similarity, pool_ids, self.temperature, generator), mine
            )
            text_rows, negative_images = _own(
                *sample_negatives(similarity.t(), pool_ids, self.temperature, generator), mine
            )
        device = pool_texts.device
        image_rows, negative_texts = image_rows.to(device), negative_texts.to(device)
        text_rows, negative_images = text_rows.to(device), negative_images.to(device)
        text_tokens = torch.cat([pool_texts[mine], pool_texts[negative_texts], pool_texts[mine][text_rows]])
        text_mask = torch.cat([pool_masks[mine], pool_masks[negative_texts], pool_masks[mine][text_rows]])
        image_tokens = torch.cat(
            [pool_images[mine], pool_images[mine][image_rows], pool_images[negative_images]]
        )
        logits = self.match_logits(model, text_tokens, text_mask, image_tokens)
        positives = image.tokens.shape[0]
        labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        labels[:positives] = 1
        pairs = len(labels)  # loss = sum / mean pairs per rank: DDP's average is the mean over all pairs
        loss = (
            F.cross_entropy(logits, labels, reduction="sum") * world_size() / global_sum(pairs, labels.device)
        )
        with torch.no_grad():
            correct = (logits.argmax(dim=1) == labels).float()
            pos_acc, neg_acc = correct[:positives].mean(), correct[positives:].mean()
        return ObjectiveOutput(
            loss=loss,
            metrics={
                "acc": correct.mean(),
                "pos_acc": pos_acc,
                "neg_acc": neg_acc,
                # chance level 0.5 whatever the class balance (a constant answer scores 0.5)
                "balanced_acc": (pos_acc + neg_acc) / 2,
            },
            metric_weights={
                "acc": len(labels),
                "neg_acc": len(labels) - positives,
                "balanced_acc": len(labels),
            },
        )
