"""NLVR2 accuracy/consistency (lil-lab/nlvr ``nlvr2/eval/metrics.py`` semantics) on a hand-worked fixture."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vlp.metrics.nlvr2 import (
    load_nlvr2_rows,
    nlvr2_scores,
    read_predictions_csv,
    sentence_key,
    write_predictions_csv,
)

SENTENCES = {
    "dev-850--0": "The right image shows a curving walkway of dark glass circles embedded in dirt.",
    "dev-850--1": "One image contains exactly two bottles.",
    "dev-851--0": "There are at least three dogs in total.",
}
# identifier -> (label, prediction); 8 rows over 3 sentences
FIXTURE: dict[str, tuple[str, bool | str]] = {
    # sentence dev-850--0: 3 rows, all right -> consistent
    "dev-850-0-0": ("False", False),
    "dev-850-1-0": ("True", "True"),
    "dev-850-2-0": ("False", "false"),  # case-insensitive
    # sentence dev-850--1: 3 rows, pair 1 wrong -> inconsistent
    "dev-850-0-1": ("True", True),
    "dev-850-1-1": ("False", "True"),
    "dev-850-2-1": ("True", "TRUE"),
    # sentence dev-851--0 (another set, same sentence index): 2 rows, both right -> consistent
    "dev-851-0-0": ("True", True),
    "dev-851-1-0": ("False", False),
}
PREDICTIONS = {identifier: prediction for identifier, (_, prediction) in FIXTURE.items()}


def _row(identifier: str, label: str) -> dict:
    """One line of dev.json with every official field."""
    key = sentence_key(identifier)
    return {
        "validation": {"61": label},
        "sentence": SENTENCES[key],
        "left_url": f"https://example.com/{identifier}-left.jpg",
        "writer": "61",
        "label": label,
        "right_url": f"https://example.com/{identifier}-right.jpg",
        "synset": "beer bottle",
        "query": "some beer bottles38",
        "identifier": identifier,
        "extra_validations": {"154": label, "139": label, "149": label, "62": label},
    }


ROWS = [_row(identifier, label) for identifier, (label, _) in FIXTURE.items()]


def _write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8"))
    return path


def test_sentence_key_blanks_the_pair_field() -> None:
    assert sentence_key("dev-850-1-0") == "dev-850--0"
    assert sentence_key("train-10171-3-2") == "train-10171--2"
    for bad in ("dev-850-0", "dev-850-0-0-img0", "dev--0-0", "dev-850-0-0.png-"):
        with pytest.raises(ValueError, match="split-set-pair-sentence"):
            sentence_key(bad)


def test_scores_on_fixture() -> None:
    scores = nlvr2_scores(PREDICTIONS, ROWS)
    assert scores["accuracy"] == 87.5  # 7 of 8 rows right
    assert scores["consistency"] == pytest.approx(66.6666666667, abs=1e-9)  # 2 of 3 sentences
    assert scores["num_rows"] == 8
    assert scores["num_sentences"] == 3


def test_one_wrong_pair_breaks_its_sentence_only() -> None:
    assert nlvr2_scores(PREDICTIONS | {"dev-850-1-1": False}, ROWS) == {
        "accuracy": 100.0,
        "consistency": 100.0,
        "num_rows": 8,
        "num_sentences": 3,
    }
    # also get dev-851-1-0 wrong: 6 of 8 rows, and only dev-850--0 stays consistent
    scores = nlvr2_scores(PREDICTIONS | {"dev-851-1-0": "True"}, ROWS)
    assert scores["accuracy"] == 75.0
    assert scores["consistency"] == pytest.approx(33.3333333333, abs=1e-9)
    # every row wrong
    flipped = {identifier: label == "False" for identifier, (label, _) in FIXTURE.items()}
    assert nlvr2_scores(flipped, ROWS)["accuracy"] == 0.0
    assert nlvr2_scores(flipped, ROWS)["consistency"] == 0.0


def test_extra_predictions_are_ignored() -> None:
    # as in the official script, so a full-dev file can score a subset (e.g. balanced dev)
    assert nlvr2_scores(PREDICTIONS | {"dev-999-0-0": True}, ROWS)["accuracy"] == 87.5


def test_missing_predictions_are_an_error() -> None:
    partial = {k: v for k, v in PREDICTIONS.items() if k not in ("dev-850-2-0", "dev-851-1-0")}
    with pytest.raises(
        ValueError, match=r"2 of 8 rows have no prediction \(first: \['dev-850-2-0', 'dev-851-1-0'\]\)"
    ):
        nlvr2_scores(partial, ROWS)


def test_bad_values_are_errors() -> None:
    with pytest.raises(ValueError, match="prediction for dev-850-0-0: expected True/False, got 'yes'"):
        nlvr2_scores(PREDICTIONS | {"dev-850-0-0": "yes"}, ROWS)
    with pytest.raises(ValueError, match="duplicate"):
        nlvr2_scores(PREDICTIONS, ROWS + ROWS[:1])
    with pytest.raises(ValueError, match="empty"):
        nlvr2_scores(PREDICTIONS, [])


def test_load_rows_from_official_json_lines(tmp_path: Path) -> None:
    path = _write(tmp_path / "dev.json", "".join(json.dumps(row) + "\n" for row in ROWS))
    rows = load_nlvr2_rows(path)
    assert rows == ROWS
    assert nlvr2_scores(PREDICTIONS, rows)["accuracy"] == 87.5


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"identifier": "dev-850-0-0", "label": "True"}\n{"identifier": \n', r"dev.json:2: invalid JSON"),
        ('{"label": "True"}\n', r"dev.json:1: expected an object with 'identifier' and 'label'"),
        ('["dev-850-0-0", "True"]\n', r"dev.json:1: expected an object"),
        (
            '{"identifier": "dev-850-0-0", "label": "True"}\n' * 2,
            r"dev.json:2: duplicate identifier 'dev-850-0-0'",
        ),
    ],
)
def test_load_rows_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as error:
        load_nlvr2_rows(_write(tmp_path / "dev.json", text))
    assert "\n" not in str(error.value)


def test_csv_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "predictions.csv"
    write_predictions_csv(path, PREDICTIONS)
    assert path.read_text() == (
        "dev-850-0-0,False\n"
        "dev-850-1-0,True\n"
        "dev-850-2-0,False\n"
        "dev-850-0-1,True\n"
        "dev-850-1-1,True\n"
        "dev-850-2-1,True\n"
        "dev-851-0-0,True\n"
        "dev-851-1-0,False\n"
    )
    read = read_predictions_csv(path)
    assert read == {
        "dev-850-0-0": "False",
        "dev-850-1-0": "True",
        "dev-850-2-0": "False",
        "dev-850-0-1": "True",
        "dev-850-1-1": "True",
        "dev-850-2-1": "True",
        "dev-851-0-0": "True",
        "dev-851-1-0": "False",
    }
    assert nlvr2_scores(read, ROWS) == nlvr2_scores(PREDICTIONS, ROWS)


def test_csv_reader_tolerates_final_newlines_and_any_case(tmp_path: Path) -> None:
    for text in ("dev-850-0-0,true\r\ndev-850-1-0,FALSE", "dev-850-0-0,true\ndev-850-1-0,FALSE\n\n"):
        assert read_predictions_csv(_write(tmp_path / "p.csv", text)) == {
            "dev-850-0-0": "true",
            "dev-850-1-0": "FALSE",
        }
    assert read_predictions_csv(_write(tmp_path / "empty.csv", "")) == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("dev-850-0-0,True\ndev-850-1-0\n", r"p.csv:2: expected 'identifier,prediction', got 'dev-850-1-0'"),
        ("dev-850-0-0,True,0.9\n", r"p.csv:1: expected 'identifier,prediction'"),
        (
            "identifier,prediction\ndev-850-0-0,True\n",
            r"p.csv:1: prediction must be True or False, got 'prediction'",
        ),
        ("dev-850-0-0,yes\n", r"p.csv:1: prediction must be True or False, got 'yes'"),
        ("dev-850-0-0, True\n", r"p.csv:1: prediction must be True or False, got ' True'"),
        (",True\n", r"p.csv:1: bad identifier ''"),
        ("dev-850-0-0 ,True\n", r"p.csv:1: bad identifier 'dev-850-0-0 '"),
        ("dev-850-0-0,True\n\ndev-850-1-0,True\n", r"p.csv:2: expected 'identifier,prediction', got ''"),
        ("dev-850-0-0,True\ndev-850-0-0,False\n", r"p.csv:2: duplicate identifier 'dev-850-0-0'"),
    ],
)
def test_csv_reader_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as error:
        read_predictions_csv(_write(tmp_path / "p.csv", text))
    assert "\n" not in str(error.value)


def test_csv_writer_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot be written"):
        write_predictions_csv(tmp_path / "p.csv", {"dev,850-0-0": True})
    with pytest.raises(ValueError, match="expected True/False, got 1"):
        write_predictions_csv(tmp_path / "p.csv", {"dev-850-0-0": 1})  # type: ignore[dict-item]
    assert not (tmp_path / "p.csv").exists()
