"""img2dataset output folders (the usual form of CC3M, CC12M, LAION): re-index or pass through.

An img2dataset folder holds ``00000.tar`` (+ ``00000.parquet``, ``00000_stats.json``); each tar member
group is ``<key>.jpg`` + ``<key>.txt`` (the caption) + ``<key>.json`` (caption, url, key, status,
error_message, width, height, original_width, original_height, exif, sha256 and any extra columns).
Failed downloads are only in the parquet files; the stats files count them, and the report shows that.

- ``reindex``: every sample's image is decoded and checked, and the good ones are rewritten into vlp
  shards (key kept, caption in ``captions``, every other column under ``metadata``).
- ``passthrough``: nothing is copied; the index points at the original tars (absolute paths) with the
  number of usable samples counted in them. Bad images are then skipped (and counted) at training time.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vlp.data.convert.common import (
    ConversionReport,
    PendingSample,
    convert_split,
    fingerprint,
    is_up_to_date,
    progress_bar,
)
from vlp.data.samples import BadSample, check_download_status, sample_captions, sample_json
from vlp.data.shards import CAPTION_SCHEMA, IMAGE_EXTENSIONS, IMG2DATASET_SCHEMA, SplitIndex

# Columns that become first-class fields (or are only about the download) rather than metadata.
CONSUMED_COLUMNS = ("caption", "key", "status", "error_message")


def input_shards(folder: Path) -> list[Path]:
    shards = sorted(Path(folder).glob("*.tar"))
    if not shards:
        raise FileNotFoundError(f"no .tar shards in {folder}: is it an img2dataset output folder?")
    return shards


def upstream_failures(folder: Path) -> dict[str, int]:
    """What img2dataset counted as failed in its ``*_stats.json`` files (those are not in the tars)."""
    totals: dict[str, int] = {}
    for stats_path in sorted(Path(folder).glob("*_stats.json")):
        try:
            stats = json.loads(stats_path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        for field_name in ("failed_to_download", "failed_to_resize"):
            if isinstance(stats.get(field_name), int):
                totals[field_name.replace("_", " ")] = (
                    totals.get(field_name.replace("_", " "), 0) + stats[field_name]
                )
    return totals


def tar_samples(path: Path, report: ConversionReport) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {extension: bytes}) per member group, in tar order; a damaged tar is reported, not fatal."""
    key, members = None, {}
    try:
        with tarfile.open(path) as tar:
            for member in tar:
                if not member.isfile() or "." not in Path(member.name).name:
                    continue
                name = Path(member.name).name
                member_key, extension = name.split(".", 1)
                if member_key != key:
                    if key is not None:
                        yield key, members
                    key, members = member_key, {}
                handle = tar.extractfile(member)
                members[extension.lower()] = handle.read() if handle is not None else b""
    except (tarfile.TarError, OSError, EOFError) as error:
        report.skip("unreadable tar data (rest of that shard)", f"{path.name}: {type(error).__name__}")
    if key is not None:
        yield key, members


def image_id_of(key: str) -> int:
    """img2dataset keys are digits (``shard * 10**k + index``); other keys get a stable 63-bit hash."""
    return int(key) if key.isdigit() else int(hashlib.sha1(key.encode()).hexdigest()[:15], 16)


def _parse_sample(key: str, members: dict[str, bytes]) -> tuple[dict[str, Any] | None, str]:
    """(meta with caption and columns, '') or (None, skip reason) for one member group: the checks the
    training pipeline makes (vlp.data.samples), so that passthrough counts what training will accept."""
    image_extension = next((ext for ext in IMAGE_EXTENSIONS if ext in members), None)
    if image_extension is None:
        return None, "no image member"
    try:
        columns = sample_json(members)
        check_download_status(columns)
        captions = sample_captions(members, columns)
    except BadSample as error:
        return None, error.reason
    return {"captions": captions, "image_extension": image_extension, "columns": columns}, ""


def _pending_samples(shards: list[Path], source: str, report: ConversionReport) -> Iterator[PendingSample]:
    for shard in shards:
        for key, members in tar_samples(shard, report):
            parsed, reason = _parse_sample(key, members)
            if parsed is None:
                report.skip(reason, f"{shard.name}:{key}")
                continue
            metadata = {k: v for k, v in parsed["columns"].items() if k not in CONSUMED_COLUMNS}
            yield PendingSample(
                key=key,
                images={"": members[parsed["image_extension"]]},
                meta={
                    "image_id": image_id_of(key),
                    "captions": parsed["captions"],
                    "source": source,
                    "key": key,
                    "metadata": metadata,
                },
                contents={"captions": len(parsed["captions"])},
                label=f"{shard.name}:{key}",
            )


def convert_img2dataset(
    input_folder: Path,
    out: Path,
    split: str = "train",
    mode: str = "reindex",
    source: str = "img2dataset",
    shard_size: int = 10000,
    workers: int = 1,
    overwrite: bool = False,
) -> ConversionReport:
    """Re-index (check and rewrite) or pass through an img2dataset folder as ``out/<split>/``."""
    if mode not in ("reindex", "passthrough"):
        raise ValueError(f"mode must be 'reindex' or 'passthrough', got {mode!r}")
    shards = input_shards(input_folder)
    report = ConversionReport()
    report.upstream.update(upstream_failures(input_folder))
    settings = {"converter": f"img2dataset-{mode}", "shard_size": shard_size, "source": source}
    split_fingerprint = fingerprint(shards, settings)
    if mode == "reindex":
        convert_split(
            _pending_samples(shards, source, report), out, split, source, CAPTION_SCHEMA, report,
            shard_size, workers, split_fingerprint, overwrite,
        )  # fmt: skip
        return report
    folder = Path(out) / split
    if not overwrite and is_up_to_date(folder, split_fingerprint):
        report.up_to_date.append(split)
        return report
    with progress_bar() as progress:
        task = progress.add_task(f"{source} {split} (counting)", total=len(shards))
        for shard in shards:
            for key, members in tar_samples(shard, report):
                parsed, reason = _parse_sample(key, members)
                if parsed is None:
                    report.skip(reason, f"{shard.name}:{key}")
                else:
                    report.written[split] += 1
                    report.add_contents(split, {"captions": len(parsed["captions"])})
            progress.advance(task)
    folder.mkdir(parents=True, exist_ok=True)
    index = SplitIndex(
        split=split,
        source=source,
        num_samples=report.written[split],
        shards=[str(shard.resolve()) for shard in shards],
        schema=IMG2DATASET_SCHEMA,
        extra={
            "mode": "passthrough",
            "fingerprint": split_fingerprint,
            "num_captions": report.contents.get(split, {}).get("captions", 0),
        },
    )
    index.write(folder)
    return report
