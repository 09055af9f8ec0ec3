"""VQA v2 answer normalization, training soft targets and per-question accuracy.

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

Training soft targets follow ViLT/METER: an answer given n times scores 0, 0.3, 0.6, 0.9, 1.0 for
n = 0, 1, 2, 3, >=4. Unlike ViLT, which counts raw answer strings, ``soft_scores`` counts normalized ones.
"""

from __future__ import annotations

import re
from collections import Counter

__all__ = [
    "CONTRACTIONS",
    "NUMBER_WORDS",
    "answer_score",
    "normalize_answer",
    "process_digits_and_articles",
    "process_punctuation",
    "question_accuracy",
    "soft_scores",
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
