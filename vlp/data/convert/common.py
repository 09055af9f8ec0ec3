"""What every converter shares: pending samples, parallel image checks, progress, the report, restarts.

A converter turns official files into a list of :class:`PendingSample` per split (skipping, with a
reason, entries whose metadata is unusable) and hands each list to :func:`convert_split`, which reads
and fully decodes every image on a thread pool, writes the good samples as shards, counts the rest by
reason, and records a fingerprint of the inputs so that re-running an unchanged conversion is a no-op.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sized
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from vlp.data.images import BadImage, inspect_image
from vlp.data.shards import INDEX_FILE, SplitIndex, write_split

T = TypeVar("T")
R = TypeVar("R")

console = Console(stderr=True)


@dataclass
class ConversionReport:
    """What a converter wrote and skipped, per split and per reason."""

    written: Counter = field(default_factory=Counter)  # split -> samples
    contents: dict[str, Counter] = field(default_factory=dict)  # split -> {"captions": n, ...}
    skipped: Counter = field(default_factory=Counter)  # reason -> samples
    examples: dict[str, str] = field(default_factory=dict)  # reason -> first offending item
    kept_notes: Counter = field(default_factory=Counter)  # e.g. "grayscale" -> images kept as such
    up_to_date: list[str] = field(default_factory=list)  # splits left as they were
    upstream: Counter = field(default_factory=Counter)  # failures that happened before us (img2dataset)

    def skip(self, reason: str, item: str) -> None:
        self.skipped[reason] += 1
        self.examples.setdefault(reason, item)

    def add_contents(self, split: str, counts: dict[str, int]) -> None:
        self.contents.setdefault(split, Counter()).update(counts)

    def summary(self) -> str:
        lines = []
        for split in sorted(set(self.written) | set(self.up_to_date)):
            if split in self.up_to_date:
                lines.append(f"  {split}: up to date, not rewritten (pass --overwrite to redo)")
                continue
            parts = [f"{self.written[split]} samples"]
            counts = sorted(self.contents.get(split, Counter()).items())
            parts += [f"{n} {what.replace('_', ' ')}" for what, n in counts if n]
            lines.append(f"  {split}: " + ", ".join(parts))
        total_skipped = sum(self.skipped.values())
        lines.append(f"  skipped: {total_skipped}")
        for reason, n in self.skipped.most_common():
            lines.append(f"    {reason}: {n} (e.g. {self.examples[reason]})")
        if self.kept_notes:
            kept = ", ".join(f"{what} {n}" for what, n in self.kept_notes.most_common())
            lines.append(f"  kept and converted to RGB when read: {kept}")
        for what, n in self.upstream.most_common():
            lines.append(f"  not in the input shards ({what}): {n}")
        return "\n".join(lines)


@dataclass
class PendingSample:
    """One output sample before its images are read.

    ``images`` maps a member prefix to the image's source (a file path, or bytes already in memory):
    ``""`` gives ``<key>.<ext>`` (one-image samples), ``"img0"`` gives ``<key>.img0.<ext>``. ``meta``
    becomes ``<key>.json``; ``contents`` is what the sample adds to the split's counts.
    """

    key: str
    images: dict[str, Path | bytes]
    meta: dict[str, Any]
    contents: dict[str, int] = field(default_factory=dict)
    label: str = ""  # how the sample is named in skip messages


def ordered_parallel_map(fn: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[R]:
    """``map`` on a thread pool, in order, with at most a few items per worker in flight (bounded memory).

    Image reads and PIL decodes release the GIL, so threads overlap them well.
    """
    window = max(1, workers) * 8
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        pending = []
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= window:
                yield pending.pop(0).result()
        for future in pending:
            yield future.result()


def read_image_source(source: Path | bytes) -> bytes:
    if isinstance(source, bytes):
        return source
    try:
        return source.read_bytes()
    except FileNotFoundError as error:
        raise BadImage("missing image file") from error
    except OSError as error:
        raise BadImage(f"unreadable image file ({type(error).__name__})") from error


@dataclass
class LoadedSample:
    pending: PendingSample
    members: dict[str, bytes] = field(default_factory=dict)  # "jpg" / "img0.png" -> original bytes
    notes: list[str] = field(default_factory=list)
    reason: str = ""
    offender: str = ""


def load_sample(pending: PendingSample) -> LoadedSample:
    """Read and fully decode every image of a sample; the bytes are kept as they are (never re-encoded)."""
    loaded = LoadedSample(pending)
    for prefix, source in pending.images.items():
        try:
            data = read_image_source(source)
            extension, note = inspect_image(data)
        except BadImage as error:
            loaded.reason = error.reason
            loaded.offender = str(source) if isinstance(source, Path) else pending.label or pending.key
            return loaded
        loaded.members[f"{prefix}.{extension}" if prefix else extension] = data
        if note:
            loaded.notes.append(note)
    return loaded


def fingerprint(inputs: Iterable[Path], settings: dict[str, Any]) -> str:
    """Identifies a conversion: the input files (path, size, mtime) and every setting that shapes output."""
    digest = hashlib.sha256()
    for path in sorted(Path(p).resolve() for p in inputs):
        stat = path.stat()
        digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def is_up_to_date(folder: Path, expected_fingerprint: str) -> bool:
    if not (folder / INDEX_FILE).is_file():
        return False
    try:
        index = SplitIndex.read(folder)
    except (ValueError, KeyError):
        return False
    complete = all((folder / name).is_file() for name in index.shards)
    return complete and index.extra.get("fingerprint") == expected_fingerprint


def progress_bar() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def convert_split(
    pending: Iterable[PendingSample],
    out: Path,
    split: str,
    source: str,
    schema: dict[str, str],
    report: ConversionReport,
    shard_size: int,
    workers: int,
    split_fingerprint: str,
    overwrite: bool = False,
    extra_index: dict[str, Any] | None = None,
) -> None:
    """Write ``out/<split>/`` from pending samples, unless an identical conversion is already there.

    The index is written last, after the shards are complete, so an interrupted run leaves no index and
    the next run redoes the split; a finished split with the same fingerprint is left as it is.
    """
    folder = Path(out) / split
    if not overwrite and is_up_to_date(folder, split_fingerprint):
        report.up_to_date.append(split)
        return

    def good_samples() -> Iterator[dict[str, Any]]:
        with progress_bar() as progress:
            total = len(pending) if isinstance(pending, Sized) else None  # streamed sources: unknown
            task = progress.add_task(f"{source} {split}", total=total)
            for loaded in ordered_parallel_map(load_sample, pending, workers):
                progress.advance(task)
                if loaded.reason:
                    report.skip(loaded.reason, loaded.offender)
                    continue
                report.kept_notes.update(loaded.notes)
                report.written[split] += 1
                report.add_contents(split, loaded.pending.contents)
                yield {"__key__": loaded.pending.key, **loaded.members, "json": loaded.pending.meta}

    index = write_split(good_samples(), folder, split, source=source, shard_size=shard_size, schema=schema)
    index.extra.update(extra_index or {})
    index.extra.update({f"num_{what}": n for what, n in report.contents.get(split, Counter()).items()})
    index.extra["fingerprint"] = split_fingerprint
    index.write(folder)


def require_keys(payload: Any, keys: tuple[str, ...], path: Path, what: str) -> None:
    """A one-line error when an official file lacks the fields its format has (wrong file passed)."""
    if not isinstance(payload, dict) or any(key not in payload for key in keys):
        raise ValueError(f"{path} has no {' / '.join(repr(k) for k in keys)}: is it {what}?")
