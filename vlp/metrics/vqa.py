"""VQA v2 answer normalization, training soft targets, per-question accuracy and the official report.

Follows the semantics of the official evaluation script, GT-Vision-Lab/VQA
``PythonEvaluationTools/vqaEvaluation/vqaEval.py`` (current revision, commit a013f00, 2021), quirks
included, so that numbers computed here match the leaderboard's:

- ``process_punctuation``: each of ``; / [ ] " { } ( ) = + \\ _ - > < @ ` , ? !`` is deleted when some
  occurrence of it touches a space, or when the text contains a digit,digit comma anywhere; otherwise it
  becomes a space. Then every ``.`` not followed by a digit is deleted (at most 32 of them, see below).
- ``process_digits_and_articles``: lower-case, split on whitespace, number words -> digits, drop
  ``a an the``, expand apostrophe-free contractions (``dont`` -> ``don't``), join with single spaces.
- ``question_accuracy``: after stripping, both sides are normalized only if the answers are not all
  identical; the score is the mean over answers i of ``min(1, #matches among the others / 3)``.
  ``revision="2016"`` reproduces the 2016-2021 script (copied by ALBEF and LAVIS).

``vqa_accuracy`` is the official report (``VQAEval.evaluate`` + ``setAccuracy``): overall = mean over
questions, per answer/question type = mean over the questions of that type, each ``round(100 * mean, 2)``
with Python 2 rounding (ties away from zero), since the official script is Python 2 code.
``load_vqa_results`` reads a results file with the checks of ``VQA.loadRes`` plus the ones it lacks
(duplicates).

Training soft targets follow ViLT/METER: an answer given n times scores 0, 0.3, 0.6, 0.9, 1.0 for
n = 0, 1, 2, 3, >=4. Unlike ViLT, which counts raw answer strings, ``soft_scores`` counts normalized ones.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

__all__ = [
    "CONTRACTIONS",
    "NUMBER_WORDS",
    "answer_score",
    "load_vqa_results",
    "normalize_answer",
    "process_digits_and_articles",
    "process_punctuation",
    "question_accuracy",
    "soft_scores",
    "vqa_accuracy",
]

PUNCTUATION: tuple[str, ...] = tuple(';/[]"{}()=+\\_-><@`,?!')
ARTICLES: frozenset[str] = frozenset({"a", "an", "the"})
NUMBER_WORDS: dict[str, str] = {"none": "0"} | {
    word: str(value)
    for value, word in enumerate(
        ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
    )
}

# The contracted forms the official table knows. Its keys are these forms with exactly one apostrophe
# dropped (both single-drop variants for two-apostrophe forms, never the all-dropped one).
_CONTRACTED_FORMS: tuple[str, ...] = tuple(
    """
    ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've hasn't haven't
    he'd he'd've he's how'd how'll how's I'd've I'm I've isn't it'd it'd've it'll ma'am mightn't
    mightn't've might've mustn't must've needn't not've o'clock oughtn't 'ow's'at shan't she'd've
    should've shouldn't shouldn't've somebody'd've somebody'll somebody's someone'd someone'd've
    someone'll someone's something'd something'd've something'll that's there'd there'd've there're
    there's they'd they'd've they'll they're they've 'twas wasn't we'd've we've weren't what'll what're
    what's what've when's where'd where's where've who'd who'd've who'll who's who've why'll why're
    why's won't would've wouldn't wouldn't've y'all y'all'll y'all'd've you'd you'd've you'll you're
    you've
    """.split()  # noqa: SIM905 -- a word block reads better than 95 quoted strings
)
# Entries of the official table that break the pattern above; kept so the mapping is identical.
_IRREGULAR_CONTRACTIONS: dict[str, str] = {
    "let's": "let's",
    "she's": "she's",
    "somebody'd": "somebodyd",  # reversed in the original
}


def _drop_one_apostrophe(form: str) -> list[str]:
    return [form[:i] + form[i + 1 :] for i, char in enumerate(form) if char == "'"]


CONTRACTIONS: dict[str, str] = {
    key: form for form in _CONTRACTED_FORMS for key in _drop_one_apostrophe(form)
} | _IRREGULAR_CONTRACTIONS
# Keys with capitals ("Im", "Ive", "Id've", "I'dve") never match: words are lower-cased before lookup.

# vqaEval.py is Python 2 code compiling these without re.UNICODE, so its \d meant [0-9] only.
_DIGIT_COMMA_DIGIT = re.compile(r"[0-9],[0-9]")
_PERIOD_NOT_BEFORE_DIGIT = re.compile(r"\.(?![0-9])")
# The original passes re.UNICODE (== 32) positionally to Pattern.sub, where it lands in `count`.
_MAX_PERIODS_STRIPPED = 32

_REVISIONS = ("current", "2016")


def _strip(text: str) -> str:
    # newlines and tabs become spaces (not deleted), then the ends are stripped
    return text.replace("\n", " ").replace("\t", " ").strip()


def process_punctuation(text: str) -> str:
    """The official ``processPunctuation``; case is untouched and the result may keep stray spaces."""
    # both tests look at the input text, so one occurrence touching a space deletes every occurrence
    has_digit_comma = _DIGIT_COMMA_DIGIT.search(text) is not None
    out = text
    for p in PUNCTUATION:
        if has_digit_comma or p + " " in text or " " + p in text:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_NOT_BEFORE_DIGIT.sub("", out, count=_MAX_PERIODS_STRIPPED)


def process_digits_and_articles(text: str) -> str:
    """The official ``processDigitArticle``: lower-casing happens here, not in the punctuation step."""
    words = [NUMBER_WORDS.get(word, word) for word in text.lower().split()]
    return " ".join(CONTRACTIONS.get(word, word) for word in words if word not in ARTICLES)


def normalize_answer(text: str) -> str:
    """Full official processing of one answer: strip, punctuation, then digits/articles/contractions."""
    return process_digits_and_articles(process_punctuation(_strip(text)))


def answer_score(count: int) -> float:
    """ViLT/METER soft-target score of an answer given ``count`` times among the 10."""
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    return (0.0, 0.3, 0.6, 0.9, 1.0)[min(count, 4)]


def soft_scores(answers: list[str]) -> dict[str, float]:
    """Map each distinct normalized answer of one question to ``answer_score`` of its count."""
    counts = Counter(normalize_answer(answer) for answer in answers)
    return {answer: answer_score(count) for answer, count in counts.items()}


def question_accuracy(prediction: str, answers: list[str], revision: str = "current") -> float:
    """Official VQA accuracy of one prediction against the human answers of its question (in [0, 1])."""
    if revision not in _REVISIONS:
        raise ValueError(f"unknown revision {revision!r}, expected one of {_REVISIONS}")
    if not answers:
        raise ValueError("answers must not be empty")
    if revision == "current":
        prediction = _strip(prediction)
        answers = [_strip(answer) for answer in answers]
        # unanimous answers are compared exactly, without any normalization of either side
        if len(set(answers)) > 1:
            prediction = normalize_answer(prediction)
            answers = [normalize_answer(answer) for answer in answers]
    else:
        # 2016: the prediction is always fully normalized; the answers are neither stripped nor
        # lower-cased, only punctuation-processed, and only when they are not all identical
        prediction = normalize_answer(prediction)
        if len(set(answers)) > 1:
            answers = [process_punctuation(answer) for answer in answers]
    matches = [answer == prediction for answer in answers]
    total = sum(matches)
    # leave-one-out over the answers, summed in order and divided as the original does
    per_answer = [min(1, float(total - matched) / 3) for matched in matches]
    return float(sum(per_answer)) / len(per_answer)


def load_vqa_results(path: str | Path) -> dict[int, str]:
    """Read an official results file ``[{"question_id": int, "answer": str}, ...]`` into ``{id: answer}``.

    ``VQA.loadRes`` only asserts that the file is a list and that the id *sets* match, so a duplicated id
    silently keeps its last answer there; here every malformed entry is a one-line ``ValueError``.
    """
    with open(path, encoding="utf-8") as f:
        entries = json.load(f)
    if not isinstance(entries, list):
        raise ValueError(f"{path}: results must be a JSON list of objects, got {type(entries).__name__}")
    results: dict[int, str] = {}
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or "question_id" not in entry or "answer" not in entry:
            raise ValueError(f"{path}: entry {index} is not an object with 'question_id' and 'answer'")
        question_id, answer = entry["question_id"], entry["answer"]
        # bool is an int subclass, but `true` is never a question id
        if not isinstance(question_id, int) or isinstance(question_id, bool):
            raise ValueError(f"{path}: entry {index}: question_id must be an int, got {question_id!r}")
        if not isinstance(answer, str):
            raise ValueError(f"{path}: entry {index}: answer must be a string, got {answer!r}")
        if question_id in results:
            raise ValueError(f"{path}: entry {index}: duplicate question_id {question_id}")
        results[question_id] = answer
    return results


def _round_like_python2(value: float, ndigits: int = 2) -> float:
    """Python 2's ``round``: the exact binary value rounded, ties away from zero (``round(3.125, 2)`` is
    3.13 there, 3.12 in Python 3). Ties are reachable, e.g. 1 right out of 32 questions gives 3.125."""
    quantum = Decimal(1).scaleb(-ndigits)
    return float(Decimal(value).quantize(quantum, rounding=ROUND_HALF_UP))


def _percent(accuracies: list[float]) -> float:
    # same operation order as setAccuracy: 100 * float(sum(acc)) / len(acc), summed in annotation order
    return _round_like_python2(100 * float(sum(accuracies)) / len(accuracies))


def _id_mismatch(what: str, expected: Iterable[int], got: Iterable[int], limit: int = 5) -> str | None:
    expected_set, got_set = set(expected), set(got)
    missing, extra = sorted(expected_set - got_set), sorted(got_set - expected_set)
    if not missing and not extra:
        return None
    parts = []
    if missing:
        parts.append(f"{len(missing)} annotated question ids missing (first: {missing[:limit]})")
    if extra:
        parts.append(f"{len(extra)} question ids not in the annotations (first: {extra[:limit]})")
    return f"{what}: " + "; ".join(parts)


def _check_list(name: str, value: object) -> None:
    if isinstance(value, dict):
        raise ValueError(f"pass the {name!r} list of the official file, not the whole file")
    if not isinstance(value, list):
        raise ValueError(f"{name} must be a list of dicts, got {type(value).__name__}")


def vqa_accuracy(
    predictions: Mapping[int, str],
    annotations: list[dict],
    revision: str = "current",
    questions: list[dict] | None = None,
) -> dict:
    """The official VQA report of ``predictions`` (``{question_id: answer}``) on ``annotations``.

    ``annotations`` is the ``"annotations"`` list of ``v2_mscoco_<subtype>_annotations.json`` and
    ``questions`` (optional, only cross-checked) the ``"questions"`` list of the questions file. Returns
    ``{"overall", "per_answer_type", "per_question_type", "num_questions"}``; every accuracy is a percentage
    rounded to 2 decimals as ``VQAEval.setAccuracy`` does. The official tool refuses results that do not
    cover exactly the annotated question ids, so any missing or extra id is a ``ValueError`` here too:
    scoring a silent subset would give a number that is not comparable to anyone else's.
    """
    if revision not in _REVISIONS:
        raise ValueError(f"unknown revision {revision!r}, expected one of {_REVISIONS}")
    _check_list("annotations", annotations)
    if not annotations:
        raise ValueError("annotations must not be empty")
    annotation_ids: list[int] = []
    seen: set[int] = set()
    for index, annotation in enumerate(annotations):
        missing_fields = [
            key
            for key in ("question_id", "question_type", "answer_type", "answers")
            if not isinstance(annotation, dict) or key not in annotation
        ]
        if missing_fields:
            raise ValueError(f"annotation {index} lacks {missing_fields}")
        question_id = annotation["question_id"]
        if question_id in seen:
            # the official index keeps the last one but evaluates the id twice
            raise ValueError(f"annotation {index}: duplicate question_id {question_id}")
        seen.add(question_id)
        annotation_ids.append(question_id)
    if questions is not None:
        _check_list("questions", questions)
        if not all(isinstance(question, dict) and "question_id" in question for question in questions):
            raise ValueError("questions: every entry must be a dict with a 'question_id'")
        question_ids = [question["question_id"] for question in questions]
        if len(set(question_ids)) != len(question_ids):
            raise ValueError("questions: duplicate question_id")
        mismatch = _id_mismatch("questions do not match the annotations", annotation_ids, question_ids)
        if mismatch:
            raise ValueError(mismatch)
    mismatch = _id_mismatch("results do not match the annotations", annotation_ids, predictions)
    if mismatch:
        raise ValueError(mismatch)

    per_question: list[float] = []
    per_answer_type: dict[str, list[float]] = {}
    per_question_type: dict[str, list[float]] = {}
    for annotation in annotations:
        question_id = annotation["question_id"]
        prediction = predictions[question_id]
        if not isinstance(prediction, str):
            raise ValueError(f"question {question_id}: answer must be a string, got {prediction!r}")
        answers = [answer["answer"] for answer in annotation["answers"]]
        accuracy = question_accuracy(prediction, answers, revision)
        per_question.append(accuracy)
        per_answer_type.setdefault(annotation["answer_type"], []).append(accuracy)
        per_question_type.setdefault(annotation["question_type"], []).append(accuracy)
    return {
        "overall": _percent(per_question),
        "per_answer_type": {name: _percent(accs) for name, accs in per_answer_type.items()},
        "per_question_type": {name: _percent(accs) for name, accs in per_question_type.items()},
        "num_questions": len(per_question),
    }
