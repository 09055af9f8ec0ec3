"""NLVR2 accuracy and consistency, with the official predictions CSV and data JSON-lines formats.

Follows lil-lab/nlvr ``nlvr2/eval/metrics.py``: accuracy is the share of rows whose prediction equals
the label, compared case-insensitively; consistency is the share of sentences all of whose rows are
correct, a sentence being the identifier ``split-set-pair-sentence`` with its pair field blanked
(``dev-850-1-0`` -> ``dev-850--0``), so one sentence is scored over all the image pairs it was written for.

Deliberate differences, none of which changes a number the official script prints:

- the official script prints fractions in [0, 1]; ``nlvr2_scores`` returns percentages (x 100, unrounded);
- it only checks that there are at least as many predictions as rows (extra ids can hide missing ones,
  which then crash with a KeyError); here any missing id is a ``ValueError``. Predictions for ids that
  are not among the rows are ignored, as there, so a full-dev file can score a subset (balanced dev);
- malformed CSV lines, duplicate ids and predictions other than true/false are errors rather than rows
  silently kept, overwritten or scored wrong.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

__all__ = [
    "load_nlvr2_rows",
    "nlvr2_scores",
    "read_predictions_csv",
    "sentence_key",
    "write_predictions_csv",
]

_BOOLEAN_STRINGS = {"true": True, "false": False}


def _as_bool(value: bool | str, what: str) -> bool:
    """Labels and predictions are "True"/"False" in any case (or bools); anything else is a bug upstream."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in _BOOLEAN_STRINGS:
        return _BOOLEAN_STRINGS[value.lower()]
    raise ValueError(f"{what}: expected True/False, got {value!r}")


def sentence_key(identifier: str) -> str:
    """The consistency group of a row: ``split-set-pair-sentence`` with the pair field blanked."""
    parts = identifier.split("-")
    if len(parts) != 4 or not all(parts):
        raise ValueError(f"identifier {identifier!r} is not of the form split-set-pair-sentence")
    parts[2] = ""
    return "-".join(parts)


def nlvr2_scores(predictions: Mapping[str, bool | str], rows: list[dict]) -> dict:
    """Official NLVR2 ``accuracy`` and ``consistency`` of ``predictions`` ({identifier: label}) on ``rows``.

    Both are percentages in [0, 100], not rounded (the official script prints the same quantities as
    fractions). Also returns ``num_rows`` and ``num_sentences``. Every row needs a prediction: a missing
    one is a ``ValueError`` naming how many are missing, since scoring a subset is not comparable.
    """
    if not rows:
        raise ValueError("rows must not be empty")
    identifiers = [row["identifier"] for row in rows]
    if len(set(identifiers)) != len(identifiers):
        raise ValueError("rows: duplicate identifiers")
    missing = [identifier for identifier in identifiers if identifier not in predictions]
    if missing:
        raise ValueError(f"{len(missing)} of {len(rows)} rows have no prediction (first: {missing[:5]})")

    num_correct = 0
    consistent: dict[str, bool] = {}
    for row in rows:
        identifier = row["identifier"]
        label = _as_bool(row["label"], f"row {identifier} label")
        correct = _as_bool(predictions[identifier], f"prediction for {identifier}") == label
        num_correct += correct
        key = sentence_key(identifier)
        consistent[key] = consistent.get(key, True) and correct
    return {
        "accuracy": 100 * num_correct / len(rows),
        "consistency": 100 * sum(consistent.values()) / len(consistent),
        "num_rows": len(rows),
        "num_sentences": len(consistent),
    }


def read_predictions_csv(path: str | Path) -> dict[str, str]:
    """Read the official predictions file: lines ``identifier,prediction``, no header.

    Predictions are kept as written ("True", "false", ...). Trailing blank lines (a final newline) are
    fine; any other malformed line is a one-line ``ValueError`` with its line number.
    """
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    predictions: dict[str, str] = {}
    for number, line in enumerate(lines, start=1):
        fields = line.strip().split(",")
        if len(fields) != 2:
            raise ValueError(f"{path}:{number}: expected 'identifier,prediction', got {line!r}")
        identifier, prediction = fields
        if not identifier or identifier != identifier.strip():
            raise ValueError(f"{path}:{number}: bad identifier {identifier!r}")
        # the official script compares the raw field, so " True" would silently score as wrong there
        if prediction.lower() not in _BOOLEAN_STRINGS:
            raise ValueError(f"{path}:{number}: prediction must be True or False, got {prediction!r}")
        if identifier in predictions:
            raise ValueError(f"{path}:{number}: duplicate identifier {identifier!r}")
        predictions[identifier] = prediction
    return predictions


def write_predictions_csv(path: str | Path, predictions: Mapping[str, bool | str]) -> None:
    """Write ``identifier,True|False`` lines (no header, newline-terminated) in the mapping's order."""
    lines = []
    for identifier, prediction in predictions.items():
        if not identifier or any(char in identifier for char in ",\r\n") or identifier != identifier.strip():
            raise ValueError(f"identifier {identifier!r} cannot be written to a CSV line")
        lines.append(f"{identifier},{_as_bool(prediction, f'prediction for {identifier}')}\n")
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.writelines(lines)


def load_nlvr2_rows(path: str | Path) -> list[dict]:
    """Read an official NLVR2 file (``train/dev/test1.json``): one JSON object per line, blank lines skipped.

    Rows are returned as stored (all fields kept); each must be an object with a string ``identifier``
    and a ``label``, and identifiers must be unique, since scoring keys everything by identifier.
    """
    rows: list[dict] = []
    seen: set[str] = set()
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: invalid JSON ({error.msg})") from None
            if not isinstance(row, dict) or not isinstance(row.get("identifier"), str) or "label" not in row:
                raise ValueError(f"{path}:{number}: expected an object with 'identifier' and 'label'")
            if row["identifier"] in seen:
                raise ValueError(f"{path}:{number}: duplicate identifier {row['identifier']!r}")
            seen.add(row["identifier"])
            rows.append(row)
    return rows
