"""The official VQA report (vqaEval.py ``evaluate`` + ``setAccuracy``) on hand-worked fixtures.

The fixture is written in the official file formats; every expected number below was worked out by hand
from the rules in docs/FORMATS.md (and agrees with the official Python 2 script run on the same files).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vlp.metrics.vqa import load_vqa_results, question_accuracy, vqa_accuracy

# (question_id, question, question_type, answer_type, 10 answers, prediction)
_CASES: list[tuple[int, str, str, str, list[str], str]] = [
    # unanimous: compared exactly, both revisions -> 1.0
    (1000, "Is the man smiling?", "is the", "yes/no", ["yes"] * 10, "yes"),
    # unanimous: "No" != "no" exactly -> 0.0; 2016 normalizes the prediction -> 1.0
    (1001, "Is the ground wet?", "is the", "yes/no", ["no"] * 10, "No"),
    # number words: "two" and "2" all become "2" -> 5 matches, 1.0; 2016 keeps the answers' "two" -> 3, 0.9
    (1002, "How many dogs are there?", "how many", "number", ["2"] * 3 + ["two"] * 2 + ["3"] * 5, "two"),
    # articles: "a dog" -> "dog", 3 matches, 0.9; 2016 keeps "a dog" -> 1 match, 0.3
    (1003, "What animal is this?", "what", "other", ["a dog"] * 2 + ["dog"] + ["cat"] * 7, "dog"),
    # digit comma: "1,000" -> "1000" in both revisions (punctuation is processed in 2016 too) -> 0.9
    (
        1004,
        "How many people live here?",
        "how many",
        "number",
        ["1,000"] * 2 + ["1000"] + ["100"] * 7,
        "1000",
    ),
    # contraction: "dont walk" -> "don't walk", 4 matches, 1.0; 2016 keeps "dont walk" -> 2 matches, 0.6
    (
        1005,
        "What does the sign say?",
        "what",
        "other",
        ["dont walk"] * 2 + ["don't walk"] * 2 + ["walk"] * 6,
        "don't walk",
    ),
    # periods: "3.5." -> "3.5" (period before a digit kept), "3 5" differs -> 3 matches, 0.9 in both
    (
        1006,
        "How many feet tall is it?",
        "how many",
        "number",
        ["3.5"] * 2 + ["3.5.", "3 5"] + ["4"] * 6,
        "3.5",
    ),
    # unanimous with a padded prediction: stripped first -> 1.0 in both
    (1007, "What color is the fence?", "what color is the", "other", ["white"] * 10, " white\n"),
]


def _annotation(question_id: int, question_type: str, answer_type: str, answers: list[str]) -> dict:
    return {
        "question_id": question_id,
        "image_id": 393000 + question_id,
        "question_type": question_type,
        "answer_type": answer_type,
        "multiple_choice_answer": max(set(answers), key=answers.count),
        "answers": [
            {"answer": answer, "answer_confidence": "yes", "answer_id": i}
            for i, answer in enumerate(answers, 1)
        ],
    }


ANNOTATIONS: list[dict] = [
    _annotation(qid, qtype, atype, answers) for qid, _, qtype, atype, answers, _ in _CASES
]
QUESTIONS: list[dict] = [
    {"image_id": 393000 + qid, "question": question, "question_id": qid} for qid, question, *_ in _CASES
]
PREDICTIONS: dict[int, str] = {qid: prediction for qid, *_, prediction in _CASES}


def _write_official_files(directory: Path) -> tuple[Path, Path, Path]:
    """Annotation, question and result files exactly as the official tools read them."""
    annotation_file = directory / "v2_mscoco_val2014_annotations.json"
    question_file = directory / "v2_OpenEnded_mscoco_val2014_questions.json"
    result_file = directory / "v2_OpenEnded_mscoco_val2014_fake_results.json"
    info = {"info": {}, "license": {}, "data_type": "mscoco", "data_subtype": "val2014"}
    annotation_file.write_text(json.dumps(info | {"annotations": ANNOTATIONS}))
    question_file.write_text(json.dumps(info | {"task_type": "Open-Ended", "questions": QUESTIONS}))
    results = [{"question_id": qid, "answer": answer} for qid, answer in PREDICTIONS.items()]
    result_file.write_text(json.dumps(results))
    return annotation_file, question_file, result_file


@pytest.mark.parametrize(
    ("prediction", "answers", "current", "old"),
    [
        ("yes", ["yes"] * 10, 1.0, 1.0),
        ("No", ["no"] * 10, 0.0, 1.0),
        ("two", ["2"] * 3 + ["two"] * 2 + ["3"] * 5, 1.0, 0.9),
        ("2", ["two"] * 4 + ["3"] * 6, 1.0, 0.0),
        ("dog", ["a dog"] * 2 + ["dog"] + ["cat"] * 7, 0.9, 0.3),
        ("the dog", ["dog"] * 4 + ["cat"] * 6, 1.0, 1.0),
        ("don't walk", ["dont walk"] * 2 + ["don't walk"] * 2 + ["walk"] * 6, 1.0, 0.6),
        ("1,000", ["1,000"] * 2 + ["1000"] + ["100"] * 7, 0.9, 0.9),
        ("3.5", ["3.5"] * 2 + ["3.5.", "3 5"] + ["4"] * 6, 0.9, 0.9),
        ("3 5", ["3.5"] * 2 + ["3.5.", "3 5"] + ["4"] * 6, 0.3, 0.3),
    ],
)
def test_question_accuracy_cases(prediction: str, answers: list[str], current: float, old: float) -> None:
    assert question_accuracy(prediction, answers) == pytest.approx(current)
    assert question_accuracy(prediction, answers, revision="2016") == pytest.approx(old)


def test_report_current_revision() -> None:
    report = vqa_accuracy(PREDICTIONS, ANNOTATIONS, questions=QUESTIONS)
    # per question: 1.0, 0.0, 1.0, 0.9, 0.9, 1.0, 0.9, 1.0 -> 6.7 / 8
    assert report["overall"] == 83.75
    assert report["per_answer_type"] == {
        "yes/no": 50.0,  # (1.0 + 0.0) / 2
        "number": 93.33,  # (1.0 + 0.9 + 0.9) / 3 = 93.333...
        "other": 96.67,  # (0.9 + 1.0 + 1.0) / 3 = 96.666...
    }
    assert report["per_question_type"] == {
        "is the": 50.0,
        "how many": 93.33,
        "what": 95.0,  # (0.9 + 1.0) / 2
        "what color is the": 100.0,
    }
    assert report["num_questions"] == 8


def test_report_2016_revision() -> None:
    report = vqa_accuracy(PREDICTIONS, ANNOTATIONS, revision="2016")
    # per question: 1.0, 1.0, 0.9, 0.3, 0.9, 0.6, 0.9, 1.0 -> 6.6 / 8
    assert report["overall"] == 82.5
    assert report["per_answer_type"] == {
        "yes/no": 100.0,
        "number": 90.0,
        "other": 63.33,  # (0.3 + 0.6 + 1.0) / 3 = 63.333...
    }
    assert report["per_question_type"] == {
        "is the": 100.0,
        "how many": 90.0,
        "what": 45.0,  # (0.3 + 0.6) / 2
        "what color is the": 100.0,
    }
    assert report["num_questions"] == 8


def test_report_from_official_files(tmp_path: Path) -> None:
    annotation_file, question_file, result_file = _write_official_files(tmp_path)
    annotations = json.loads(annotation_file.read_text())["annotations"]
    questions = json.loads(question_file.read_text())["questions"]
    predictions = load_vqa_results(result_file)
    assert predictions == PREDICTIONS
    report = vqa_accuracy(predictions, annotations, questions=questions)
    assert report["overall"] == 83.75
    # unlike vqaEval.py, scoring leaves the annotations untouched
    assert annotations == ANNOTATIONS


def test_type_means_are_over_questions_not_over_types() -> None:
    # 3 "other" questions right, 1 "yes/no" wrong: overall 75.0, not the mean of the type means (50.0)
    annotations = [
        _annotation(1, "what", "other", ["cat"] * 10),
        _annotation(2, "what", "other", ["cat"] * 10),
        _annotation(3, "what", "other", ["cat"] * 10),
        _annotation(4, "is the", "yes/no", ["yes"] * 10),
    ]
    report = vqa_accuracy({1: "cat", 2: "cat", 3: "cat", 4: "no"}, annotations)
    assert report["overall"] == 75.0
    assert report["per_answer_type"] == {"other": 100.0, "yes/no": 0.0}
    assert report["per_question_type"] == {"what": 100.0, "is the": 0.0}


def test_rounding_is_python2_half_away_from_zero() -> None:
    # 1 right of 32: 100 * 1 / 32 = 3.125 exactly; Python 2's round (the official script) gives 3.13,
    # Python 3's round(3.125, 2) would give 3.12
    annotations = [_annotation(i, "how many", "number", ["2"] * 10) for i in range(32)]
    predictions = {i: ("2" if i == 0 else "3") for i in range(32)}
    report = vqa_accuracy(predictions, annotations)
    assert report["overall"] == 3.13
    assert report["per_answer_type"] == {"number": 3.13}
    # 2 right of 3: 66.666... -> 66.67
    report = vqa_accuracy({0: "2", 1: "2", 2: "3"}, annotations[:3])
    assert report["overall"] == 66.67


def test_missing_and_extra_results_are_errors() -> None:
    partial = {qid: answer for qid, answer in PREDICTIONS.items() if qid not in (1001, 1005)}
    with pytest.raises(ValueError, match=r"2 annotated question ids missing \(first: \[1001, 1005\]\)"):
        vqa_accuracy(partial, ANNOTATIONS)
    with pytest.raises(ValueError, match=r"1 question ids not in the annotations \(first: \[7\]\)"):
        vqa_accuracy(PREDICTIONS | {7: "yes"}, ANNOTATIONS)
    many_missing = {1000: "yes"}
    with pytest.raises(
        ValueError, match=r"7 annotated question ids missing \(first: \[1001, 1002, 1003, 1004, 1005\]\)"
    ):
        vqa_accuracy(many_missing, ANNOTATIONS)


def test_questions_must_match_annotations() -> None:
    with pytest.raises(
        ValueError, match=r"questions do not match.*1 annotated question ids missing \(first: \[1007\]\)"
    ):
        vqa_accuracy(PREDICTIONS, ANNOTATIONS, questions=QUESTIONS[:-1])


def test_bad_annotations_are_errors() -> None:
    with pytest.raises(ValueError, match="duplicate question_id 1000"):
        vqa_accuracy(PREDICTIONS, ANNOTATIONS + [ANNOTATIONS[0]])
    with pytest.raises(ValueError, match="not the whole file"):
        vqa_accuracy(PREDICTIONS, {"annotations": ANNOTATIONS})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="revision"):
        vqa_accuracy(PREDICTIONS, ANNOTATIONS, revision="2017")
    with pytest.raises(ValueError, match="empty"):
        vqa_accuracy({}, [])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"question_id": 1, "answer": "yes"}, "must be a JSON list"),
        ([{"question_id": 1}], "entry 0 is not an object with 'question_id' and 'answer'"),
        ([{"question_id": 1, "answer": "yes"}, "yes"], "entry 1 is not an object"),
        ([{"question_id": "1", "answer": "yes"}], "entry 0: question_id must be an int, got '1'"),
        ([{"question_id": True, "answer": "yes"}], "question_id must be an int, got True"),
        ([{"question_id": 1, "answer": 2}], "entry 0: answer must be a string, got 2"),
        (
            [{"question_id": 1, "answer": "yes"}, {"question_id": 1, "answer": "no"}],
            "entry 1: duplicate question_id 1",
        ),
    ],
)
def test_load_vqa_results_errors(tmp_path: Path, content: object, message: str) -> None:
    path = tmp_path / "results.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=message) as error:
        load_vqa_results(path)
    assert "\n" not in str(error.value)
