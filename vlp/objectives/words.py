"""Caption words from the image alone: a bag-of-words signal for the vision tower's own tokens."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vlp.model.vlp import VLPModel
from vlp.objectives.base import Objective
from vlp.types import Batch, Encoded, ModelDims, ObjectiveOutput


def caption_word_targets(
    input_ids: Tensor, attention_mask: Tensor, vocab_size: int, ignore: Tensor
) -> Tensor:
    """``[B, V]`` multi-hot: 1 for every vocabulary entry that occurs in the row's caption, except the
    token ids in ``ignore`` (the tokenizer's special tokens) and padding."""
    targets = torch.zeros(input_ids.shape[0], vocab_size, device=input_ids.device)
    # scatter_ writes (not adds): a word that occurs twice is still 1; padding writes 0 at the pad id
    targets.scatter_(1, input_ids, attention_mask.to(targets.dtype))
    targets[:, ignore] = 0.0
    return targets


class CaptionWords(Objective):
    """Predict which words the caption contains from the image's tokens alone (multi-label BCE).

    Why: contrastive learning grounds what separates captions in a batch most easily (on the synthetic
    scenes, colour) and the fusion's gradient reaches the vision tower too weakly to build what it does
    not need for that (shape, scripts/fusion_readout_probe.py). Every word of a caption is a label of its
    image here, so the tower gets a direct gradient for each thing captions name. The head reads the mean
    of all vision tokens, so that the signal reaches the patch tokens the fusion attends to, not only the
    pooled state. Reports mean average precision over the batch's images (``map``) and that of the word
    frequencies seen in training so far (``prior_map``), the baseline it has to beat.

    Args:
        special_token_ids: token ids never counted as words ([CLS], [SEP], [PAD], ...); vlp-train fills
            them in from the tokenizer.
    """

    def __init__(self, dims: ModelDims, special_token_ids: list[int], weight: float = 1.0) -> None:
        super().__init__(weight)
        self.head = nn.Linear(dims.vision_width, dims.vocab_size)
        self.register_buffer("ignore", torch.tensor(sorted(set(special_token_ids)), dtype=torch.long))
        # how often each word occurred in the training captions seen so far (rank 0's under DDP)
        self.register_buffer("train_word_counts", torch.zeros(dims.vocab_size, dtype=torch.long))

    def forward(self, batch: Batch, encoded: Encoded, model: VLPModel) -> ObjectiveOutput:
        logits = self.head(encoded.image.tokens.mean(dim=1)).float()
        targets = caption_word_targets(
            batch["input_ids"], batch["attention_mask"], logits.shape[1], self.ignore
        )
        loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="sum") / logits.shape[0]
        with torch.no_grad():
            if self.training:
                self.train_word_counts += targets.sum(dim=0).long()
            prior = self.train_word_counts.float().expand_as(logits)
            described = targets.any(dim=1)  # rows whose caption has a word: AP is undefined for the rest
            count = int(described.sum())
            metrics = {
                "map": mean_average_precision(logits[described], targets[described]),
                "prior_map": mean_average_precision(prior[described], targets[described]),
            }
        return ObjectiveOutput(loss=loss, metrics=metrics, metric_weights={"map": count, "prior_map": count})


def mean_average_precision(scores: Tensor, targets: Tensor) -> Tensor:
    """Mean over rows of the average precision of ranking the vocabulary by ``scores`` against the row's
    words ``targets``; every row must have a word (0 for no rows: its metric weight is then 0 too).

    Written out rather than torchmetrics' ``retrieval_average_precision``: that one (1.9) treats every
    score <= 0 as not retrieved, which is wrong for logits and for never-seen words' counts."""
    if not len(scores):
        return scores.new_zeros(())
    order = scores.argsort(dim=1, descending=True)
    hits = targets.gather(1, order)
    ranks = torch.arange(1, hits.shape[1] + 1, device=hits.device)
    return ((hits.cumsum(dim=1) / ranks * hits).sum(dim=1) / hits.sum(dim=1)).mean()
