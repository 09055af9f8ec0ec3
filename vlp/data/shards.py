"""Shard layout shared by every converter and by the data pipeline.

A converted dataset is a folder with one sub-folder per split::

    OUT/<split>/<split>-000000.tar   webdataset shards
    OUT/<split>/index.json           {"num_samples", "num_shards", "shards", "schema", "source", ...}

Each sample is one image: ``<key>.jpg|png|webp`` (the original bytes, never re-encoded) and
``<key>.json`` holding at least ``image_id`` and, for caption data, ``captions`` (all of them).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import webdataset as wds
from PIL import Image

INDEX_FILE = "index.json"
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
PIL_FORMAT_TO_EXTENSION = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}

CAPTION_SCHEMA = {
    "image": "original encoded bytes under the extension of their real format (jpg|png|webp)",
    "json.image_id": "int, the dataset's image id",
    "json.captions": "list[str], every caption of the image, raw text",
    "json.source": "str, the dataset the sample came from",
}


@dataclass
class SplitIndex:
    """What ``index.json`` records about one split."""

    split: str
    source: str
    num_samples: int
    shards: list[str]
    schema: dict[str, str]
    extra: dict[str, Any] = field(default_factory=dict)

    def write(self, folder: Path) -> None:
        payload = {
            "split": self.split,
            "source": self.source,
            "num_samples": self.num_samples,
            "num_shards": len(self.shards),
            "shards": self.shards,
            "schema": self.schema,
            **self.extra,
        }
        (folder / INDEX_FILE).write_text(json.dumps(payload, indent=2) + "\n")

    @classmethod
    def read(cls, folder: Path) -> SplitIndex:
        path = folder / INDEX_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: convert the data first with vlp-shards (see README)")
        payload = json.loads(path.read_text())
        known = {"split", "source", "num_samples", "num_shards", "shards", "schema"}
        return cls(
            split=payload["split"],
            source=payload["source"],
            num_samples=int(payload["num_samples"]),
            shards=list(payload["shards"]),
            schema=dict(payload["schema"]),
            extra={k: v for k, v in payload.items() if k not in known},
        )

    def urls(self, folder: Path) -> list[str]:
        return [str(folder / name) for name in self.shards]


def image_extension(data: bytes) -> str:
    """The extension of the image's real format (some '.png' files are JPEGs); raises if undecodable."""
    with Image.open(io.BytesIO(data)) as image:
        image_format = image.format
        image.verify()  # catches truncated or corrupt files without a full decode
    if image_format not in PIL_FORMAT_TO_EXTENSION:
        raise ValueError(f"unsupported image format {image_format}")
    return PIL_FORMAT_TO_EXTENSION[image_format]


def write_split(
    samples: Iterable[dict[str, Any]], folder: Path, split: str, source: str, shard_size: int, schema: dict
) -> SplitIndex:
    """Write samples (webdataset dicts with ``__key__``) as ``<split>-NNNNNN.tar`` shards.

    Shards are first written under a temporary prefix and renamed at the end, so that a re-run over an
    existing output replaces it (keeping it until the new shards are complete) instead of adding to it.
    The caller writes the returned index last (after adding what it counted), so an interrupted run
    leaves no index behind.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for leftover in folder.glob(f".partial-{split}-*.tar"):  # from an earlier, interrupted run
        leftover.unlink()
    pattern = str(folder / f".partial-{split}-%06d.tar")
    count = 0
    with wds.ShardWriter(pattern, maxcount=shard_size, verbose=0) as writer:
        for sample in samples:
            writer.write(sample)
            count += 1
    # Only now that the new shards are complete does the old output go.
    (folder / INDEX_FILE).unlink(missing_ok=True)
    for stale in folder.glob(f"{split}-*.tar"):
        stale.unlink()
    shards = []
    for partial in sorted(folder.glob(f".partial-{split}-*.tar")):
        final = folder / partial.name.removeprefix(".partial-")
        partial.rename(final)
        shards.append(final.name)
    return SplitIndex(split=split, source=source, num_samples=count, shards=shards, schema=schema)
