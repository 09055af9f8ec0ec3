"""COCO-style captions in the Karpathy split format (``dataset_coco.json``; vlp-synth writes the same).

Karpathy ``restval`` images join ``train``, as every paper that reports on this split does. All
captions of an image are kept (some COCO images have more than 5).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from vlp.data.convert.report import ConversionReport
from vlp.data.shards import CAPTION_SCHEMA, image_extension, write_split

SPLIT_ALIASES = {"restval": "train"}


def _captions(entry: dict[str, Any]) -> list[str]:
    sentences = entry.get("sentences") or []
    raws = [s.get("raw") for s in sentences if isinstance(s, dict)]
    return [raw.strip() for raw in raws if isinstance(raw, str) and raw.strip()]


def _load_image(path: Path) -> tuple[bytes | None, str, str]:
    """Read and validate one image file: (bytes, extension, '') or (None, '', skip reason)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None, "", "missing image file"
    except OSError as error:
        return None, "", f"unreadable image file ({type(error).__name__})"
    try:
        return data, image_extension(data), ""
    except Exception:  # PIL raises many types for corrupt data; the reason is what matters here
        return None, "", "undecodable image"


def _samples(
    entries: list[dict[str, Any]], image_root: Path, report: ConversionReport, split: str, workers: int
) -> Iterator[dict[str, Any]]:
    usable = []
    for entry in entries:
        captions = _captions(entry)
        image_id = entry.get("cocoid", entry.get("imgid"))
        if "filename" not in entry or image_id is None:
            report.skip("missing filename or image id", json.dumps(entry)[:80])
        elif not captions:
            report.skip("no usable caption", entry["filename"])
        else:
            usable.append((entry, captions, int(image_id)))
    paths = [image_root / entry.get("filepath", "") / entry["filename"] for entry, _, _ in usable]
    # Reading and verifying images is I/O and C code, so threads overlap well; map keeps the order.
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for (entry, captions, image_id), path, (data, ext, reason) in zip(
            usable, paths, pool.map(_load_image, paths), strict=True
        ):
            if data is None:
                report.skip(reason, str(path))
                continue
            report.written[split] += 1
            report.captions[split] += len(captions)
            yield {
                "__key__": f"{image_id:012d}",
                ext: data,
                "json": {
                    "image_id": image_id,
                    "captions": captions,
                    "source": "coco",
                    "file": entry["filename"],
                },
            }


def convert_karpathy(
    karpathy_json: Path, image_root: Path, out: Path, shard_size: int = 1000, workers: int = 1
) -> ConversionReport:
    """Convert a Karpathy-format json into ``out/<split>/`` shards; returns what was written and skipped."""
    payload = json.loads(Path(karpathy_json).read_text())
    if "images" not in payload:
        raise ValueError(f"{karpathy_json} has no 'images' list: is it a Karpathy dataset_*.json?")
    by_split: dict[str, list[dict[str, Any]]] = {}
    report = ConversionReport()
    for entry in payload["images"]:
        split = entry.get("split")
        if not isinstance(split, str):
            report.skip("missing split", str(entry.get("filename")))
            continue
        by_split.setdefault(SPLIT_ALIASES.get(split, split), []).append(entry)
    for split, entries in sorted(by_split.items()):
        folder = Path(out) / split
        samples = _samples(entries, Path(image_root), report, split, workers)
        index = write_split(
            samples, folder, split, source="coco", shard_size=shard_size, schema=CAPTION_SCHEMA
        )
        index.extra["num_captions"] = report.captions[split]
        index.write(folder)
    return report
