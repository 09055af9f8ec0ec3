"""Caption evaluation: the generated captions of a whole pass, scored with the COCO caption metrics, and
the results file ``[{"image_id", "caption"}]`` that the COCO evaluation server and ``vlp-score caption``
take.

The captioning objective puts the generated token ids in ``ObjectiveOutput.predictions``; this evaluator
decodes them with the data's tokenizer, keeps them with the raw reference captions that evaluation
batches carry (``batch["captions"]``), gathers both from every rank and scores them with
:func:`vlp.metrics.caption.caption_scores` (pycocoevalcap's scorers).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from vlp.evaluation.tasks import gather_objects
from vlp.metrics.caption import caption_scores
from vlp.model.vlp import VLPModel
from vlp.types import Batch, Encoded


def decode_captions(tokenizer: PreTrainedTokenizerBase, caption_ids: torch.Tensor) -> list[str]:
    """Generated token ids ``[B, T]`` ([CLS] first, [PAD] after [SEP]) -> one caption string per row."""
    return [text.strip() for text in tokenizer.batch_decode(caption_ids.tolist(), skip_special_tokens=True)]


class CaptionEvaluation:
    """BLEU-1..4, ROUGE-L and CIDEr-D (METEOR too where Java runs) of the generated captions.

    Every image is scored once, however many ranks or batches it appeared in. CIDEr-D's document
    frequencies come from the references of the scored images, so a subset of a split (e.g.
    ``trainer.limit_val_batches``) scores differently from the whole split, as in pycocoevalcap.

    Args:
        tokenizer: the data's tokenizer (given by vlp.build), to turn token ids back into text.
        objective: name of the captioning objective whose predictions are scored.
        predictions_dir: where ``caption_<stage>_results.json`` is written (None: not written).
        use_java: True = Java PTB tokenizer and METEOR, False = the pure-Python path (BLEU, ROUGE-L,
            CIDEr only), None = Java when it is installed. SPICE is never run here (slow, big models).
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        objective: str = "captioning",
        predictions_dir: str | None = None,
        use_java: bool | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.objective = objective
        self.predictions_dir = Path(predictions_dir) if predictions_dir else None
        self.use_java = use_java
        self.reset()

    def reset(self) -> None:
        self._rows: list[dict[str, Any]] = []
        self._results: list[dict[str, Any]] = []

    @torch.no_grad()
    def update(self, batch: Batch, encoded: Encoded, model: VLPModel, outputs: dict | None = None) -> None:
        output = (outputs or {}).get(self.objective)
        if output is None or "caption_ids" not in output.predictions:
            raise KeyError(f"CaptionEvaluation needs the generated captions of objectives.{self.objective}")
        if "captions" not in batch:
            raise KeyError("CaptionEvaluation needs the raw captions of each image: use caption data")
        captions = decode_captions(self.tokenizer, output.predictions["caption_ids"])
        for image_id, caption, references in zip(
            batch["image_id"].tolist(), captions, batch["captions"], strict=True
        ):
            self._rows.append({"image_id": int(image_id), "caption": caption, "refs": references})

    def compute(self) -> dict[str, float]:
        unique: dict[int, dict[str, Any]] = {}
        for row in gather_objects(self._rows):
            unique.setdefault(row["image_id"], row)
        rows = [unique[image_id] for image_id in sorted(unique)]
        self._results = [{"image_id": row["image_id"], "caption": row["caption"]} for row in rows]
        references = {row["image_id"]: list(row["refs"]) for row in rows if row["refs"]}
        if not references:  # a split without captions: predictions only
            return {"num_images": float(len(rows))}
        scored = [result for result in self._results if result["image_id"] in references]
        scores = caption_scores(scored, references, use_java=self.use_java, spice=False)
        return {**scores, "num_images": float(len(references))}

    def save(self, stage: str) -> Path | None:
        if self.predictions_dir is None:
            return None
        self.predictions_dir.mkdir(parents=True, exist_ok=True)
        path = self.predictions_dir / f"caption_{stage}_results.json"
        path.write_text(json.dumps(self._results))
        return path
