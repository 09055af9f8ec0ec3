"""Image captioning: a causal decoder trained with the language-modelling loss (BLIP's LM, SimVLM's
PrefixLM without a text prefix), which in evaluation also writes captions for the batch's images."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from vlp.model.decoder import CaptionDecoder
from vlp.model.generation import beam_search, greedy_search
from vlp.model.vlp import VLPModel
from vlp.objectives.base import Objective
from vlp.types import CROSS_ATTENTION_LAYERS, Batch, Encoded, ModelDims, ObjectiveOutput

DecoderFactory = Callable[..., CaptionDecoder]  # called with the model's widths (see Captioning)


class Captioning(Objective):
    """Next-token cross-entropy of the batch's captions given the image; ``acc`` is the accuracy of the
    most likely next token and ``nll`` the cross-entropy without label smoothing, both per real token.

    The captions come tokenized from the data: ``input_ids`` start with [CLS] (the decoder's BOS) and end
    with [SEP] (its EOS), so the inputs are ``input_ids[:, :-1]`` and the targets ``input_ids[:, 1:]``,
    padding ignored. In evaluation mode the objective also generates a caption for every image of the
    batch and returns its token ids, [CLS] first and [PAD] after [SEP], as ``predictions["caption_ids"]``.

    Args:
        dims: the model's sizes.
        decoder: a partially configured CaptionDecoder; called here with the model's widths.
        bos_token_id, eos_token_id, pad_token_id: the tokenizer's [CLS], [SEP] and [PAD] (from vlp.build).
        label_smoothing: spread over the vocabulary; BLIP trains with 0.1.
        num_beams: 1 = greedy search, more = beam search (see vlp.model.generation for how hypotheses
            are ranked and when the search stops).
        max_length, min_length: tokens of a generated caption, [CLS] and [SEP] included.
        length_penalty: the exponent of the length that a hypothesis' log-probability is divided by.
        repetition_penalty: CTRL's penalty on tokens already generated (1 = none).
    """

    # BLIP's decoder: the text tower's embeddings and (optionally) the fusion's cross-attention layers
    needs = (CROSS_ATTENTION_LAYERS,)

    def __init__(
        self,
        dims: ModelDims,
        decoder: DecoderFactory,
        bos_token_id: int,
        eos_token_id: int,
        pad_token_id: int,
        weight: float = 1.0,
        label_smoothing: float = 0.1,
        num_beams: int = 3,
        max_length: int = 40,
        min_length: int = 5,
        length_penalty: float = 1.0,
        repetition_penalty: float = 1.0,
    ) -> None:
        super().__init__(weight)
        if num_beams < 1:
            raise ValueError(f"objectives.captioning.num_beams={num_beams}: use 1 (greedy) or more")
        self.decoder = decoder(
            width=dims.text_width,
            image_width=dims.vision_width,
            vocab_size=dims.vocab_size,
            fusion_layers=dims.fusion_layers,
        )
        self.bos_token_id, self.eos_token_id, self.pad_token_id = bos_token_id, eos_token_id, pad_token_id
        self.label_smoothing = label_smoothing
        self.num_beams = num_beams
        self.max_length = max_length
        self.min_length = min_length
        self.length_penalty = length_penalty
        self.repetition_penalty = repetition_penalty

    def forward(self, batch: Batch, encoded: Encoded, model: VLPModel) -> ObjectiveOutput:
        self._check_positions(model)
        input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
        logits = self.decoder(input_ids[:, :-1], encoded.image.tokens, model).float()
        targets = input_ids[:, 1:].masked_fill(attention_mask[:, 1:] == 0, -100)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), label_smoothing=self.label_smoothing)
        with torch.no_grad():
            real = targets != -100
            accuracy = (logits.argmax(dim=-1)[real] == targets[real]).float().mean()
            nll = F.cross_entropy(logits[real], targets[real])
        predictions = {} if self.training else {"caption_ids": self.generate(encoded.image.tokens, model)}
        count = real.sum()
        return ObjectiveOutput(
            loss=loss,
            metrics={"acc": accuracy, "nll": nll},
            metric_weights={"acc": count, "nll": count},
            predictions=predictions,
        )

    @torch.no_grad()
    def generate(self, image_tokens: Tensor, model: VLPModel, num_beams: int | None = None) -> Tensor:
        """Caption token ids ``[B, T]`` for image tokens ``[B, N, Dv]``: greedy or beam search, with this
        objective's ``num_beams`` unless one is given (``None``: the configured one)."""
        num_beams = self.num_beams if num_beams is None else num_beams
        if num_beams < 1:
            raise ValueError(f"num_beams={num_beams}: use 1 (greedy) or more")
        tokens = dict(bos_id=self.bos_token_id, eos_id=self.eos_token_id, pad_id=self.pad_token_id)
        lengths = dict(max_length=self.max_length, min_length=self.min_length)
        batch_size, device = image_tokens.shape[0], image_tokens.device
        if num_beams == 1:
            return greedy_search(
                self.decoder.scorer(image_tokens, model),
                batch_size, **tokens, **lengths, repetition_penalty=self.repetition_penalty, device=device,
            )  # fmt: skip
        images = image_tokens.repeat_interleave(num_beams, dim=0)  # beams of an example are adjacent
        return beam_search(
            self.decoder.scorer(images, model),
            batch_size, **tokens, num_beams=num_beams, **lengths, length_penalty=self.length_penalty,
            repetition_penalty=self.repetition_penalty, device=device,
        )  # fmt: skip

    def _check_positions(self, model: VLPModel) -> None:
        positions = getattr(model.text.encoder.config, "max_position_embeddings", None)
        if positions is not None and self.max_length > positions:
            raise ValueError(
                f"objectives.captioning.max_length={self.max_length} is longer than the text tower's "
                f"{positions} position embeddings: lower it"
            )
