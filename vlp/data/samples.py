"""Decoding one raw webdataset sample into what a task needs, or raising BadSample with a countable reason.

Raw samples are dicts of bytes keyed by member extension (``jpg``, ``img0.png``, ``json``, ``txt``), as
``wds.tarfile_to_samples`` yields them from shards written by ``vlp-shards`` (see vlp.data.shards). Every
check a converter makes is made again here, because shards may come from elsewhere (img2dataset
passthrough, a damaged disk): a bad sample must be skipped and counted, never crash a run.
"""

from __future__ import annotations

import json
from typing import Any

from PIL import Image

from vlp.data.images import BadImage, decode_rgb
from vlp.data.shards import IMAGE_EXTENSIONS


class BadSample(ValueError):
    """A sample the pipeline skips; ``reason`` is what it is counted under."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def sample_json(sample: dict[str, Any]) -> dict[str, Any]:
    raw = sample.get("json")
    if raw is None:
        return {}
    try:
        meta = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BadSample("unparseable json") from error
    if not isinstance(meta, dict):
        raise BadSample("unparseable json")
    return meta


def sample_image(sample: dict[str, Any], prefix: str = "") -> Image.Image:
    """The decoded RGB image stored under ``<prefix>.<ext>`` (or ``<ext>`` when prefix is empty)."""
    names = [f"{prefix}.{ext}" if prefix else ext for ext in IMAGE_EXTENSIONS]
    data = next((sample[name] for name in names if name in sample), None)
    if data is None:
        raise BadSample("missing image" if not prefix else f"missing {prefix} image")
    try:
        return decode_rgb(data)
    except BadImage as error:
        raise BadSample(error.reason) from error


def _image_id(sample: dict[str, Any], meta: dict[str, Any]) -> int:
    value = meta.get("image_id")
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    key = str(sample.get("__key__", ""))
    if key.isdigit():  # img2dataset passthrough: the key is the id
        return int(key)
    raise BadSample("missing image_id")


def sample_captions(sample: dict[str, Any], meta: dict[str, Any]) -> list[str]:
    """``captions`` (vlp shards), else img2dataset's ``txt`` member or ``caption`` column."""
    if "captions" in meta:
        raw = meta["captions"] if isinstance(meta["captions"], list) else []
    elif "txt" in sample:
        try:
            raw = [sample["txt"].decode("utf-8")]
        except (UnicodeDecodeError, AttributeError) as error:
            raise BadSample("caption is not utf-8") from error
    else:
        raw = [meta.get("caption")]
    captions = [c.strip() for c in raw if isinstance(c, str) and c.strip()]
    if not captions:
        raise BadSample("no usable caption")
    return captions


def check_download_status(meta: dict[str, Any]) -> None:
    """img2dataset rows of failed downloads carry a status other than success."""
    if meta.get("status", "success") != "success":
        raise BadSample("not a successful download")


def decode_caption_sample(sample: dict[str, Any]) -> dict[str, Any]:
    """-> {'image', 'image_id', 'captions', 'key'}."""
    meta = sample_json(sample)
    check_download_status(meta)
    captions = sample_captions(sample, meta)
    return {
        "image": sample_image(sample),
        "image_id": _image_id(sample, meta),
        "captions": captions,
        "key": sample["__key__"],
    }


def _question(entry: Any) -> dict[str, Any]:
    if not isinstance(entry, dict) or not isinstance(entry.get("question"), str) or not entry["question"]:
        raise BadSample("question without text")
    if not isinstance(entry.get("question_id"), int):
        raise BadSample("question without question_id")
    targets = entry.get("targets")
    if targets is not None:
        labels, scores = targets.get("labels"), targets.get("scores")
        if not isinstance(labels, list) or not isinstance(scores, list) or len(labels) != len(scores):
            raise BadSample("malformed VQA targets")
    return entry


def decode_vqa_sample(sample: dict[str, Any]) -> dict[str, Any]:
    """-> {'image', 'image_id', 'questions', 'key'}; the questions are expanded into samples later."""
    meta = sample_json(sample)
    questions = meta.get("questions")
    if not isinstance(questions, list) or not questions:
        raise BadSample("no questions")
    return {
        "image": sample_image(sample),
        "image_id": _image_id(sample, meta),
        "questions": [_question(q) for q in questions],
        "key": sample["__key__"],
    }


def decode_nlvr2_sample(sample: dict[str, Any]) -> dict[str, Any]:
    """-> {'images': [left, right], 'sentence', 'label' (bool or None), 'identifier', 'key'}."""
    meta = sample_json(sample)
    sentence = meta.get("sentence")
    if not isinstance(sentence, str) or not sentence.strip():
        raise BadSample("no usable sentence")
    label = meta.get("label")
    if label is not None and not isinstance(label, bool):
        raise BadSample("label is not a bool")
    return {
        "images": [sample_image(sample, "img0"), sample_image(sample, "img1")],
        "sentence": sentence.strip(),
        "label": label,
        "identifier": str(meta.get("identifier", sample["__key__"])),
        "key": sample["__key__"],
    }
