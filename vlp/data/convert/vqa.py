"""VQA v2: official question and annotation files -> one sample per image holding all its questions.

Files, as published (``<subtype>`` = train2014, val2014, test-dev2015, test2015)::

    <root>/v2_OpenEnded_mscoco_<subtype>_questions.json
    <root>/v2_mscoco_<subtype>_annotations.json          (not for test splits)
    <image-root>/<image subtype>/COCO_<image subtype>_<image_id:012d>.jpg

test-dev2015 is a subset of test2015 and its images live in the test2015 folder.

The answer vocabulary (``OUT/answers.json``) holds the normalized ``multiple_choice_answer``s seen at least
``min_answer_count`` times over the vocabulary splits (VQA v2 convention: 9 over train+val -> 3,129
answers). Every annotated question carries its 10 raw answers and its soft targets over that vocabulary,
so training needs no second pass over the json files.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from vlp.data.convert.common import (
    ConversionReport,
    PendingSample,
    convert_split,
    fingerprint,
    require_keys,
)
from vlp.data.shards import ANSWERS_FILE, VQA_SCHEMA
from vlp.metrics.vqa import normalize_answer, soft_scores


def questions_file(root: Path, subtype: str) -> Path:
    return Path(root) / f"v2_OpenEnded_mscoco_{subtype}_questions.json"


def annotations_file(root: Path, subtype: str) -> Path:
    return Path(root) / f"v2_mscoco_{subtype}_annotations.json"


def image_subtype(subtype: str) -> str:
    return "test2015" if subtype.startswith("test-dev") else subtype


def image_path(image_root: Path, subtype: str, image_id: int) -> Path:
    folder = image_subtype(subtype)
    return Path(image_root) / folder / f"COCO_{folder}_{image_id:012d}.jpg"


def load_annotations(root: Path, subtype: str) -> list[dict[str, Any]] | None:
    """The split's annotations, or None for a split published without them (test-dev, test)."""
    path = annotations_file(root, subtype)
    if not path.is_file():
        if subtype.startswith("test"):
            return None
        raise FileNotFoundError(f"{path} not found: train and val splits need their annotations file")
    payload = json.loads(path.read_text())
    require_keys(payload, ("annotations",), path, "a VQA v2 annotations file")
    return payload["annotations"]


def build_answer_vocabulary(annotation_lists: list[list[dict[str, Any]]], min_count: int) -> list[str]:
    """Normalized multiple-choice answers seen ``min_count`` times or more, most frequent first."""
    counts: Counter = Counter()
    for split_annotations in annotation_lists:
        for annotation in split_annotations:
            answer = annotation.get("multiple_choice_answer") if isinstance(annotation, dict) else None
            if isinstance(answer, str):
                counts[normalize_answer(answer)] += 1
    kept = [(answer, n) for answer, n in counts.items() if n >= min_count and answer]
    return [answer for answer, _ in sorted(kept, key=lambda item: (-item[1], item[0]))]


def soft_targets(answers: list[str], label_of: dict[str, int]) -> dict[str, list]:
    """Soft targets over the vocabulary (0.3 / 0.6 / 0.9 / 1.0 for 1 / 2 / 3 / >=4 of the 10 answers)."""
    pairs = sorted(
        (label_of[answer], score) for answer, score in soft_scores(answers).items() if answer in label_of
    )
    return {"labels": [label for label, _ in pairs], "scores": [score for _, score in pairs]}


def _question_entry(
    question: dict[str, Any], annotation: dict[str, Any] | None, label_of: dict[str, int]
) -> tuple[dict[str, Any] | None, str]:
    """A question as stored in the sample, or (None, skip reason)."""
    if not isinstance(question.get("question"), str) or not question["question"].strip():
        return None, "question without text"
    entry = {"question_id": question["question_id"], "question": question["question"].strip()}
    if annotation is None:
        return entry, ""
    answers = annotation.get("answers")
    if not isinstance(answers, list) or not answers:
        return None, "annotation without answers"
    raw = [a.get("answer") for a in answers if isinstance(a, dict)]
    if not all(isinstance(answer, str) for answer in raw) or not raw:
        return None, "annotation with a non-string answer"
    entry.update(
        question_type=annotation.get("question_type"),
        answer_type=annotation.get("answer_type"),
        multiple_choice_answer=annotation.get("multiple_choice_answer"),
        answers=raw,
        targets=soft_targets(raw, label_of),
    )
    return entry, ""


def pending_vqa_split(
    root: Path,
    image_root: Path,
    subtype: str,
    annotations: list[dict[str, Any]] | None,
    label_of: dict[str, int],
    report: ConversionReport,
) -> list[PendingSample]:
    path = questions_file(root, subtype)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (expected the official VQA v2 file name)")
    payload = json.loads(path.read_text())
    require_keys(payload, ("questions",), path, "a VQA v2 questions file")
    by_question = {}
    for annotation in annotations or []:
        if isinstance(annotation, dict) and "question_id" in annotation:
            by_question[annotation["question_id"]] = annotation
    by_image: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for question in payload["questions"]:
        if not isinstance(question, dict) or not isinstance(question.get("image_id"), int):
            report.skip("question without image_id", json.dumps(question)[:80])
            continue
        if "question_id" not in question:
            report.skip("question without question_id", json.dumps(question)[:80])
            continue
        annotation = by_question.get(question["question_id"])
        if annotations is not None and annotation is None:
            report.skip("question without annotation", str(question["question_id"]))
            continue
        entry, reason = _question_entry(question, annotation, label_of)
        if entry is None:
            report.skip(reason, str(question["question_id"]))
            continue
        by_image[question["image_id"]].append(entry)
    pending = []
    for image_id, questions in sorted(by_image.items()):
        questions.sort(key=lambda q: q["question_id"])
        without_target = sum(1 for q in questions if "targets" in q and not q["targets"]["labels"])
        pending.append(
            PendingSample(
                key=f"{image_id:012d}",
                images={"": image_path(image_root, subtype, image_id)},
                meta={"image_id": image_id, "source": "vqa", "questions": questions},
                contents={"questions": len(questions), "questions_without_vocabulary_answer": without_target},
                label=f"image {image_id}",
            )
        )
    return pending


def convert_vqa(
    root: Path,
    out: Path,
    splits: list[str],
    image_root: Path | None = None,
    vocab_splits: list[str] | None = None,
    min_answer_count: int = 9,
    shard_size: int = 1000,
    workers: int = 1,
    overwrite: bool = False,
) -> ConversionReport:
    """Convert the given VQA v2 subtypes into ``out/<subtype>/`` shards and ``out/answers.json``.

    ``vocab_splits`` defaults to the converted splits that have annotations (train + val by convention).
    """
    root, out = Path(root), Path(out)
    image_root = Path(image_root) if image_root is not None else root
    report = ConversionReport()
    annotations = {subtype: load_annotations(root, subtype) for subtype in splits}
    if vocab_splits is None:
        vocab_splits = [s for s in splits if annotations[s] is not None]
    vocab_annotations = [
        annotations[s] if s in annotations else load_annotations(root, s) or [] for s in vocab_splits
    ]
    vocabulary = build_answer_vocabulary(vocab_annotations, min_answer_count) if vocab_splits else []
    if any(annotations[s] is not None for s in splits) and not vocabulary:
        raise ValueError(
            f"no answer is seen {min_answer_count} times in {vocab_splits}: lower --min-answer-count"
        )
    label_of = {answer: label for label, answer in enumerate(vocabulary)}
    vocabulary_hash = hashlib.sha256(json.dumps(vocabulary).encode()).hexdigest()[:16]
    if vocabulary:
        out.mkdir(parents=True, exist_ok=True)
        vocabulary_payload = {
            "answers": vocabulary,
            "min_answer_count": min_answer_count,
            "vocab_splits": vocab_splits,
        }
        (out / ANSWERS_FILE).write_text(json.dumps(vocabulary_payload, indent=1) + "\n")
    for subtype in splits:
        pending = pending_vqa_split(root, image_root, subtype, annotations[subtype], label_of, report)
        inputs = [questions_file(root, subtype)]
        if annotations[subtype] is not None:
            inputs.append(annotations_file(root, subtype))
        settings = {"converter": "vqa", "shard_size": shard_size, "image_root": image_root}
        settings["vocabulary"] = vocabulary_hash if annotations[subtype] is not None else None
        extra = {"num_answers": len(vocabulary), "vocabulary": vocabulary_hash} if vocabulary else {}
        convert_split(
            pending, out, subtype, "vqa", VQA_SCHEMA, report, shard_size, workers,
            fingerprint(inputs, settings), overwrite, extra_index=extra,
        )  # fmt: skip
    return report
