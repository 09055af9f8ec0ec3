"""Caption datasets: COCO and Flickr30k in the Karpathy split format, and COCO's official caption files.

Karpathy files (``dataset_coco.json``, ``dataset_flickr30k.json``; vlp-synth writes the same): images at
``<image-root>/<filepath>/<filename>`` (Flickr30k has no ``filepath``); ``restval`` joins ``train``, as
every paper that reports on this split does. Official files (``captions_<subtype>.json``): one split per
file, named by its subtype (``train2014``, ``val2014``), images at ``<image-root>/<subtype>/<file_name>``
or directly under ``<image-root>``. Every caption of an image is kept: some have more than 5.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from vlp.data.convert.common import (
    ConversionReport,
    PendingSample,
    convert_split,
    fingerprint,
    require_keys,
)
from vlp.data.shards import CAPTION_SCHEMA

SPLIT_ALIASES = {"restval": "train"}


def clean_captions(raws: list[Any]) -> list[str]:
    """Raw caption strings, surrounding whitespace removed; non-strings and empty ones dropped."""
    return [raw.strip() for raw in raws if isinstance(raw, str) and raw.strip()]


def caption_sample(
    image_id: int, image_path: Path, captions: list[str], source: str, file_name: str
) -> PendingSample:
    return PendingSample(
        key=f"{image_id:012d}",
        images={"": image_path},
        meta={"image_id": image_id, "captions": captions, "source": source, "file": file_name},
        contents={"captions": len(captions)},
        label=file_name,
    )


def _karpathy_image_id(entry: dict[str, Any]) -> int | None:
    """COCO: ``cocoid``; Flickr30k: the photo id in the file name (``1000092795.jpg``), else ``imgid``."""
    if isinstance(entry.get("cocoid"), int):
        return entry["cocoid"]
    stem = Path(str(entry.get("filename", ""))).stem
    if stem.isdigit():
        return int(stem)
    return entry["imgid"] if isinstance(entry.get("imgid"), int) else None


def convert_karpathy(
    karpathy_json: Path,
    image_root: Path,
    out: Path,
    shard_size: int = 1000,
    workers: int = 1,
    overwrite: bool = False,
    source: str | None = None,
) -> ConversionReport:
    """Convert a Karpathy-format json into ``out/<split>/`` shards; returns what was written and skipped."""
    karpathy_json, image_root = Path(karpathy_json), Path(image_root)
    payload = json.loads(karpathy_json.read_text())
    require_keys(payload, ("images",), karpathy_json, "a Karpathy dataset_*.json")
    first = payload["images"][0] if payload["images"] else {}
    if "annotations" in payload or not isinstance(first, dict) or "sentences" not in first:
        raise ValueError(
            f"{karpathy_json} is not a Karpathy dataset_*.json (its images have no 'sentences'); "
            "official captions_<subtype>.json files go with --captions-json"
        )
    source = source or str(payload.get("dataset") or "coco")
    report = ConversionReport()
    by_split: dict[str, list[PendingSample]] = defaultdict(list)
    for entry in payload["images"]:
        name = str(entry.get("filename")) if isinstance(entry, dict) else repr(entry)[:60]
        if not isinstance(entry, dict) or not isinstance(entry.get("split"), str):
            report.skip("missing split", name)
            continue
        image_id = _karpathy_image_id(entry)
        if not isinstance(entry.get("filename"), str) or image_id is None:
            report.skip("missing filename or image id", json.dumps(entry)[:80])
            continue
        sentences = entry.get("sentences") if isinstance(entry.get("sentences"), list) else []
        captions = clean_captions([s.get("raw") for s in sentences if isinstance(s, dict)])
        if not captions:
            report.skip("no usable caption", name)
            continue
        path = image_root / str(entry.get("filepath", "")) / entry["filename"]
        split = SPLIT_ALIASES.get(entry["split"], entry["split"])
        by_split[split].append(caption_sample(image_id, path, captions, source, entry["filename"]))
    settings = {"converter": "karpathy", "shard_size": shard_size, "image_root": image_root, "source": source}
    for split, pending in sorted(by_split.items()):
        convert_split(
            pending, out, split, source, CAPTION_SCHEMA, report, shard_size, workers,
            fingerprint([karpathy_json], {**settings, "split": split}), overwrite,
        )  # fmt: skip
    return report


def official_subtype(captions_json: Path) -> str:
    """``captions_val2014.json`` -> ``val2014`` (the split name and the image folder)."""
    match = re.fullmatch(r"captions_(.+)\.json", captions_json.name)
    if match is None:
        raise ValueError(f"{captions_json} is not named captions_<subtype>.json, as COCO's caption files are")
    return match.group(1)


def convert_official_captions(
    captions_jsons: list[Path],
    image_root: Path,
    out: Path,
    shard_size: int = 1000,
    workers: int = 1,
    overwrite: bool = False,
) -> ConversionReport:
    """Convert COCO's ``captions_<subtype>.json`` files, one split per file, named by its subtype."""
    report = ConversionReport()
    image_root = Path(image_root)
    for captions_json in map(Path, captions_jsons):
        subtype = official_subtype(captions_json)
        payload = json.loads(captions_json.read_text())
        require_keys(payload, ("images", "annotations"), captions_json, "a COCO captions_*.json")
        captions_by_image: dict[int, list[tuple[int, Any]]] = defaultdict(list)
        for annotation in payload["annotations"]:
            if isinstance(annotation, dict) and isinstance(annotation.get("image_id"), int):
                order = annotation.get("id") if isinstance(annotation.get("id"), int) else 0
                captions_by_image[annotation["image_id"]].append((order, annotation.get("caption")))
            else:
                report.skip("caption annotation without image_id", json.dumps(annotation)[:80])
        folder = image_root / subtype if (image_root / subtype).is_dir() else image_root
        pending = []
        for image in payload["images"]:
            if (
                not isinstance(image, dict)
                or not isinstance(image.get("id"), int)
                or "file_name" not in image
            ):
                report.skip("missing file_name or image id", json.dumps(image)[:80])
                continue
            captions = clean_captions([c for _, c in sorted(captions_by_image.get(image["id"], []))])
            if not captions:
                report.skip("no usable caption", image["file_name"])
                continue
            pending.append(
                caption_sample(image["id"], folder / image["file_name"], captions, "coco", image["file_name"])
            )
        settings = {"converter": "coco-official", "shard_size": shard_size, "image_root": image_root}
        convert_split(
            pending, out, subtype, "coco", CAPTION_SCHEMA, report, shard_size, workers,
            fingerprint([captions_json], settings), overwrite,
        )  # fmt: skip
    return report
