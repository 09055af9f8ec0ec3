"""NLVR2: the official JSON-lines files and image folders -> one sample per row holding both images.

Files, as published by lil-lab/nlvr (images downloaded separately)::

    <json-dir>/{train,dev,test1}.json                  one JSON object per line
    <image-root>/train/<directory>/train-<set>-<pair>-img0.png   (train rows carry ``directory``)
    <image-root>/dev/dev-<set>-<pair>-img1.png

A row's ``identifier`` is ``split-set-pair-sentence``; its images are ``split-set-pair-img0`` (left) and
``-img1`` (right). Some files named .png are JPEGs: the converter stores each under its real format.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vlp.data.convert.common import ConversionReport, PendingSample, convert_split, fingerprint
from vlp.data.shards import NLVR2_SCHEMA

LABELS = {"true": True, "false": False}


def parse_label(value: Any) -> bool | None:
    """'True'/'False' (any case) or a bool -> bool; missing -> None; anything else raises ValueError."""
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in LABELS:
        return LABELS[value.strip().lower()]
    raise ValueError(f"label {value!r} is neither True nor False")


def pair_image_paths(image_root: Path, split: str, row: dict[str, Any]) -> tuple[Path, Path]:
    """Left and right image paths of a row, from its identifier (and train's ``directory``)."""
    parts = str(row["identifier"]).split("-")
    if len(parts) != 4 or not all(parts):
        raise ValueError(f"identifier {row['identifier']!r} is not split-set-pair-sentence")
    stem = "-".join(parts[:3])
    folder = Path(image_root) / split
    if row.get("directory") is not None:
        folder = folder / str(row["directory"])
    return folder / f"{stem}-img0.png", folder / f"{stem}-img1.png"


def pending_nlvr2_split(
    json_path: Path, image_root: Path, split: str, report: ConversionReport
) -> list[PendingSample]:
    pending = []
    for line_number, line in enumerate(json_path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{json_path.name}:{line_number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            report.skip("unparseable json line", where)
            continue
        if not isinstance(row, dict) or not isinstance(row.get("identifier"), str):
            report.skip("row without identifier", where)
            continue
        sentence = row.get("sentence")
        if not isinstance(sentence, str) or not sentence.strip():
            report.skip("no usable sentence", row["identifier"])
            continue
        try:
            label = parse_label(row.get("label"))
            left, right = pair_image_paths(image_root, split, row)
        except ValueError as error:
            report.skip("malformed identifier or label", f"{row['identifier']}: {error}")
            continue
        pending.append(
            PendingSample(
                key=row["identifier"],
                images={"img0": left, "img1": right},
                meta={
                    "source": "nlvr2",
                    "identifier": row["identifier"],
                    "sentence": sentence.strip(),
                    "label": label,
                },
                contents={"labelled_true": int(label is True), "labelled_false": int(label is False)},
                label=row["identifier"],
            )
        )
    return pending


def convert_nlvr2(
    json_dir: Path,
    image_root: Path,
    out: Path,
    splits: list[str] | tuple[str, ...] = ("train", "dev", "test1"),
    shard_size: int = 1000,
    workers: int = 1,
    overwrite: bool = False,
) -> ConversionReport:
    """Convert ``<json-dir>/<split>.json`` rows and their image pairs into ``out/<split>/`` shards."""
    report = ConversionReport()
    for split in splits:
        json_path = Path(json_dir) / f"{split}.json"
        if not json_path.is_file():
            raise FileNotFoundError(f"{json_path} not found (NLVR2 publishes data/{split}.json)")
        pending = pending_nlvr2_split(json_path, Path(image_root), split, report)
        settings = {"converter": "nlvr2", "shard_size": shard_size, "image_root": image_root}
        convert_split(
            pending, out, split, "nlvr2", NLVR2_SCHEMA, report, shard_size, workers,
            fingerprint([json_path], settings), overwrite,
        )  # fmt: skip
    return report
