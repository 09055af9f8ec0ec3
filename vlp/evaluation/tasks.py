"""VQA and NLVR2 evaluation: official scores over a whole pass, and prediction files in the official formats.

The task objectives put their per-example predictions in ``ObjectiveOutput.predictions``; these
evaluators collect them with the ids and ground truth the batches carry, gather them from every rank,
score them with vlp.metrics (the official semantics) and write the files the official servers and
tools take: VQA ``[{"question_id", "answer"}]``, NLVR2 CSV lines ``identifier,prediction``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from vlp.distributed import world_size
from vlp.metrics.nlvr2 import nlvr2_scores, write_predictions_csv
from vlp.metrics.vqa import vqa_accuracy
from vlp.model.vlp import VLPModel
from vlp.types import Batch, Encoded


def gather_objects(items: list[Any]) -> list[Any]:
    """Concatenate python lists from every rank (evaluation only: small, once per pass)."""
    if world_size() == 1:
        return items
    parts: list[list[Any]] = [[] for _ in range(world_size())]
    dist.all_gather_object(parts, items)
    return [item for part in parts for item in part]


class VQAEvaluation:
    """Official VQA accuracy (vqaEval.py rules, ``revision`` current or 2016) of the predicted answers.

    Args:
        answers: the answer vocabulary (given by vlp.build from the datamodule's answers.json).
        objective: name of the VQA objective whose predictions are scored.
        predictions_dir: where ``vqa_<stage>_results.json`` is written (None: not written).
    """

    def __init__(
        self,
        answers: list[str],
        objective: str = "vqa",
        predictions_dir: str | None = None,
        revision: str = "current",
    ) -> None:
        self.answers = list(answers)
        self.objective = objective
        self.predictions_dir = Path(predictions_dir) if predictions_dir else None
        self.revision = revision
        self.reset()

    def reset(self) -> None:
        self._rows: list[dict[str, Any]] = []
        self._gathered: list[dict[str, Any]] = []

    @torch.no_grad()
    def update(self, batch: Batch, encoded: Encoded, model: VLPModel, outputs: dict | None = None) -> None:
        if not outputs or self.objective not in outputs:
            raise KeyError(f"VQAEvaluation needs the predictions of objectives.{self.objective}")
        labels = outputs[self.objective].predictions["labels"].tolist()
        for position, question_id in enumerate(batch["question_id"].tolist()):
            self._rows.append(
                {
                    "question_id": int(question_id),
                    "answer": self.answers[labels[position]],
                    "answers": batch["answers"][position],
                    "answer_type": batch["answer_type"][position],
                    "question_type": batch["question_type"][position],
                }
            )

    def compute(self) -> dict[str, float]:
        self._gathered = gather_objects(self._rows)
        annotated = [row for row in self._gathered if row["answers"]]
        if not annotated:  # test-dev / test: predictions only
            return {"num_questions": float(len(self._gathered))}
        annotations = [
            {
                "question_id": row["question_id"],
                "answer_type": row["answer_type"],
                "question_type": row["question_type"],
                "answers": [
                    {"answer": answer, "answer_id": i + 1} for i, answer in enumerate(row["answers"])
                ],
            }
            for row in annotated
        ]
        report = vqa_accuracy(
            {row["question_id"]: row["answer"] for row in annotated}, annotations, self.revision
        )
        metrics = {"accuracy": float(report["overall"]), "num_questions": float(report["num_questions"])}
        for answer_type, value in report["per_answer_type"].items():
            metrics[f"accuracy_{answer_type.replace('/', '_')}"] = float(value)
        return metrics

    def save(self, stage: str) -> Path | None:
        if self.predictions_dir is None:
            return None
        self.predictions_dir.mkdir(parents=True, exist_ok=True)
        path = self.predictions_dir / f"vqa_{stage}_results.json"
        results = [{"question_id": row["question_id"], "answer": row["answer"]} for row in self._gathered]
        path.write_text(json.dumps(sorted(results, key=lambda r: r["question_id"])))
        return path


class NLVR2Evaluation:
    """NLVR2 accuracy and consistency (lil-lab/nlvr metrics.py rules, in %) of the predicted labels."""

    def __init__(self, objective: str = "nlvr2", predictions_dir: str | None = None) -> None:
        self.objective = objective
        self.predictions_dir = Path(predictions_dir) if predictions_dir else None
        self.reset()

    def reset(self) -> None:
        self._rows: list[tuple[str, bool, int]] = []
        self._gathered: list[tuple[str, bool, int]] = []

    @torch.no_grad()
    def update(self, batch: Batch, encoded: Encoded, model: VLPModel, outputs: dict | None = None) -> None:
        if not outputs or self.objective not in outputs:
            raise KeyError(f"NLVR2Evaluation needs the predictions of objectives.{self.objective}")
        predicted = outputs[self.objective].predictions["labels"].tolist()
        for identifier, prediction, label in zip(
            batch["identifier"], predicted, batch["labels"].tolist(), strict=True
        ):
            self._rows.append((identifier, bool(prediction), int(label)))

    def compute(self) -> dict[str, float]:
        self._gathered = gather_objects(self._rows)
        labelled = [row for row in self._gathered if row[2] >= 0]
        if not labelled:
            return {"num_rows": float(len(self._gathered))}
        rows = [{"identifier": identifier, "label": str(bool(label))} for identifier, _, label in labelled]
        scores = nlvr2_scores({identifier: prediction for identifier, prediction, _ in labelled}, rows)
        return {key: float(value) for key, value in scores.items()}

    def save(self, stage: str) -> Path | None:
        if self.predictions_dir is None:
            return None
        self.predictions_dir.mkdir(parents=True, exist_ok=True)
        path = self.predictions_dir / f"nlvr2_{stage}_predictions.csv"
        write_predictions_csv(
            path, {identifier: prediction for identifier, prediction, _ in sorted(self._gathered)}
        )
        return path
