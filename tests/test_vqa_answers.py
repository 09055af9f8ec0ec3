"""VQA v2 answer processing and accuracy, checked against hand-worked vqaEval.py semantics."""

from __future__ import annotations

import pytest

from vlp.metrics.vqa import (
    CONTRACTIONS,
    answer_score,
    normalize_answer,
    process_digits_and_articles,
    process_punctuation,
    question_accuracy,
    soft_scores,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("yes!", "yes "),  # "!" touches no space -> replaced by a space (stripped only later)
        ("yes !", "yes "),  # " !" touches a space -> deleted
        ("t-shirt", "t shirt"),
        ("1,000", "1000"),  # digit,digit comma -> deleted, not spaced
        ("red,white", "red white"),
        ("1, 2", "1 2"),  # ", " touches a space -> deleted
        ("1,000-2,000", "10002000"),  # a digit,digit comma deletes *every* punctuation mark
        ("a-b - c", "ab  c"),  # one "-" touching a space deletes all of them
        ("a.m.", "am"),  # periods not followed by a digit go
        ("3.5", "3.5"),
        ("5.0.", "5.0"),
        (".5", ".5"),
        ("Mr. Smith?", "Mr Smith "),  # case untouched here
        ("10:30", "10:30"),  # ":" and "'" are not punctuation marks
        ("don't", "don't"),
    ],
)
def test_process_punctuation(text: str, expected: str) -> None:
    assert process_punctuation(text) == expected


def test_period_rule_deletes_at_most_32_periods() -> None:
    # the original passes re.UNICODE (32) where re.sub expects `count`
    assert process_punctuation("." * 40) == "." * 8


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Two", "2"),
        ("none", "0"),
        ("zero", "0"),
        ("ten", "10"),
        ("eleven", "eleven"),
        ("The Dog", "dog"),
        ("a an the", ""),
        ("an apple", "apple"),
        ("theater", "theater"),  # only whole words are articles
        ("one two three", "1 2 3"),
        ("dont", "don't"),
        ("Isnt", "isn't"),
        ("yall'd've", "y'all'd've"),
        ("somebody'd", "somebodyd"),  # reversed entry in the official table
        ("Im", "im"),  # the table's "Im" key is dead: words are lower-cased first
        ("  yes   no ", "yes no"),
    ],
)
def test_process_digits_and_articles(text: str, expected: str) -> None:
    assert process_digits_and_articles(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (" Yes!\n", "yes"),
        ("yes.", "yes"),
        ("The T-Shirt", "t shirt"),
        ("Two Dogs.", "2 dogs"),
        ("1,000", "1000"),
        ("3.5 ft", "3.5 ft"),
        ("A.M.", "am"),
        ("Dont know", "don't know"),
        ("isnt", "isn't"),
        ("red\tblue", "red blue"),
        ("the", ""),
    ],
)
def test_normalize_answer(text: str, expected: str) -> None:
    assert normalize_answer(text) == expected


def test_contractions_table_shape() -> None:
    assert len(CONTRACTIONS) == 120
    # two-apostrophe forms: each single-apostrophe drop is a key, the fully dropped form is not
    assert CONTRACTIONS["couldnt've"] == CONTRACTIONS["couldn'tve"] == "couldn't've"
    assert "couldntve" not in CONTRACTIONS
    assert CONTRACTIONS["twas"] == "'twas"
    assert CONTRACTIONS["let's"] == "let's" and "lets" not in CONTRACTIONS


def test_answer_score_table_is_exact() -> None:
    # exact literals, as in ViLT's get_score
    assert [answer_score(n) for n in range(7)] == [0.0, 0.3, 0.6, 0.9, 1.0, 1.0, 1.0]
    with pytest.raises(ValueError):
        answer_score(-1)


def test_soft_scores_count_normalized_answers() -> None:
    # "yes" x6 and "Yes." x3 all normalize to "yes" (9 -> 1.0); "no" once -> 0.3
    assert soft_scores(["yes"] * 6 + ["Yes."] * 3 + ["no"]) == pytest.approx({"yes": 1.0, "no": 0.3})
    answers = ["two", "two", "2", "a dog", "a dog", "a dog", "the dog", "the dog", "dogs", "Dog!"]
    # "2": 3 -> 0.9; "dog": 3 + 2 + 1 = 6 -> 1.0; "dogs": 1 -> 0.3
    assert soft_scores(answers) == pytest.approx({"2": 0.9, "dog": 1.0, "dogs": 0.3})


@pytest.mark.parametrize(
    ("matching", "expected"),
    [
        (0, 0.0),
        (1, 0.3),  # (1 * 0 + 9 * 1/3) / 10
        (2, 0.6),  # (2 * 1/3 + 8 * 2/3) / 10
        (3, 0.9),  # (3 * 2/3 + 7 * 1) / 10
        (4, 1.0),  # (4 * 1 + 6 * 1) / 10
        (7, 1.0),
        (10, 1.0),
    ],
)
def test_question_accuracy_leave_one_out(matching: int, expected: float) -> None:
    answers = ["cat"] * matching + ["dog"] * (10 - matching)
    assert question_accuracy("cat", answers) == pytest.approx(expected)


def test_question_accuracy_normalizes_both_sides_when_answers_differ() -> None:
    # "Two", "2", " two." all become "2": 4 matches
    answers = ["Two", "2", " two.", "2", "3", "3", "3", "4", "4", "5"]
    assert question_accuracy("two!", answers) == pytest.approx(1.0)
    # "yes" x9 + "Yes" x1 is not unanimous, so everything is normalized
    assert question_accuracy("YES", ["yes"] * 9 + ["Yes"]) == pytest.approx(1.0)


def test_question_accuracy_unanimous_answers_compare_exactly() -> None:
    assert question_accuracy("Yes", ["yes"] * 10) == 0.0
    assert question_accuracy("yes.", ["yes"] * 10) == 0.0
    # stripping still happens first
    assert question_accuracy(" yes\n", ["yes"] * 10) == pytest.approx(1.0)


def test_question_accuracy_2016_revision_differs() -> None:
    # 2016 always normalizes the prediction, so "Yes" -> "yes" matches ten "yes"
    assert question_accuracy("Yes", ["yes"] * 10, revision="2016") == pytest.approx(1.0)
    assert question_accuracy("Yes", ["yes"] * 10) == 0.0
    # ...and leaves unanimous answers untouched: "yes" never equals ten "Yes"
    assert question_accuracy("Yes", ["Yes"] * 10, revision="2016") == 0.0
    assert question_accuracy("Yes", ["Yes"] * 10) == pytest.approx(1.0)
    # 2016 only punctuation-processes the answers: "Two" keeps its case and word, so "2" never matches
    answers = ["Two"] * 4 + ["no"] * 6
    assert question_accuracy("2", answers, revision="2016") == 0.0
    assert question_accuracy("2", answers) == pytest.approx(1.0)
    # and "yes!" becomes "yes " (trailing space), which the normalized prediction "yes" does not equal
    assert question_accuracy("yes", ["yes!"] * 4 + ["no"] * 6, revision="2016") == 0.0


def test_question_accuracy_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="revision"):
        question_accuracy("yes", ["yes"] * 10, revision="2017")
    with pytest.raises(ValueError):
        question_accuracy("yes", [])
