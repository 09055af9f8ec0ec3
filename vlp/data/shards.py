"""Shard layout shared by every converter and by the data pipeline: one schema for every task.

A converted dataset is a folder with one sub-folder per split::

    OUT/<split>/<split>-000000.tar   webdataset shards
    OUT/<split>/index.json           {"num_samples", "num_shards", "shards", "schema", "source", ...}
    OUT/answers.json                 VQA only: the answer vocabulary (label i = answers[i])

A sample is one image (NLVR2: one image pair) with everything the task needs in ``<key>.json``:

- the image as ``<key>.jpg|png|webp``: the original bytes, never re-encoded, under the extension of
  their real format; NLVR2's pair as ``<key>.img0.<ext>`` (left) and ``<key>.img1.<ext>`` (right);
- ``json.source``: the dataset; ``json.image_id``: int (NLVR2: the pair's ``identifier`` instead);
- captions: ``json.captions``: every caption, raw text;
- VQA: ``json.questions``: every question on the image, each with ``question_id``, ``question``,
  ``question_type``, ``answer_type``, ``multiple_choice_answer``, the 10 raw ``answers`` and the soft
  ``targets`` (``labels``/``scores`` over answers.json) -- or only id and text for test splits;
- NLVR2: ``json.identifier``, ``json.sentence``, ``json.label`` (bool, or null when unknown).

img2dataset shards read in place (``vlp-shards img2dataset --mode passthrough``) keep their own members
(``<key>.txt`` caption, ``<key>.json`` metadata); the pipeline reads both forms.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import webdataset as wds

INDEX_FILE = "index.json"
# Every member's modification time. An integer keeps each member to one plain ustar header (webdataset's
# default, the current time as a float, makes tarfile add a PAX header per member: reading then takes
# twice as long, measured 0.45 vs 0.24 ms a sample), and fixed, it makes shards byte-reproducible.
SHARD_MTIME = 0
ANSWERS_FILE = "answers.json"
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")

_COMMON = {
    "image": "original encoded bytes under the extension of their real format (jpg|png|webp)",
    "json.source": "str, the dataset the sample came from",
    "json.image_id": "int, the dataset's image id",
}
CAPTION_SCHEMA = {**_COMMON, "json.captions": "list[str], every caption of the image, raw text"}
VQA_SCHEMA = {
    **_COMMON,
    "json.questions": "list of {question_id, question, question_type, answer_type, "
    "multiple_choice_answer, answers: 10 raw answers, targets: {labels, scores}} (test: id and text)",
}
NLVR2_SCHEMA = {
    "img0": "left image, original bytes (jpg|png)",
    "img1": "right image, original bytes (jpg|png)",
    "json.source": "str, 'nlvr2'",
    "json.identifier": "str, split-set-pair-sentence",
    "json.sentence": "str",
    "json.label": "bool, or null when the split has no labels",
}
IMG2DATASET_SCHEMA = {
    "image": "original encoded bytes (jpg|png|webp)",
    "txt": "caption",
    "json": "img2dataset metadata: caption, url, key, status, width, height, original_*, exif, sha256, ...",
}


def is_remote(url: str) -> bool:
    """Webdataset urls that are not local paths: ``pipe:cmd``, ``http(s)://``, ``s3://``, ``gs://``..."""
    return url.startswith("pipe:") or "://" in url


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
        """Shard locations: names relative to the split folder, or absolute paths / urls (passthrough)."""
        return [name if is_remote(name) else str(folder / name) for name in self.shards]


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
    with wds.ShardWriter(pattern, maxcount=shard_size, verbose=0, mtime=SHARD_MTIME) as writer:
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
