"""``resume=true``: continue a run from the newest checkpoint of its folder that can be read.

A checkpoint cut short (the process killed while writing, a full disk) must not end the run's history:
candidates are tried newest first, and one that does not load is reported and passed over for the one
before it.
"""

from __future__ import annotations

import logging
import pickle
import zipfile
from pathlib import Path

import torch

log = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint that cannot or must not be loaded, with the file in the message."""


def checkpoint_step(path: Path) -> int:
    """The global step of a complete checkpoint made of plain data; CheckpointError naming the file otherwise
    (it is read with ``weights_only=True``: nothing in it is executed; ``mmap``: tensors stay on disk)."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"{path} holds pickled objects other than tensors and plain containers: refused (weights_only)"
        ) from error
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile) as error:
        raise CheckpointError(f"{path} is truncated or corrupt and cannot be read ({error})") from error
    if not isinstance(payload, dict) or "state_dict" not in payload or "global_step" not in payload:
        raise CheckpointError(f"{path} is not a Lightning training checkpoint (no state_dict / global_step)")
    return int(payload["global_step"])


def newest_checkpoint(checkpoint_dir: Path) -> Path | None:
    """The checkpoint under ``checkpoint_dir`` furthest into training (by global step, then by time
    written) among those that load, or None if there is none. Unreadable ones are logged and skipped."""
    if not checkpoint_dir.is_dir():
        return None
    readable = []
    for candidate in checkpoint_dir.glob("*.ckpt"):
        try:
            readable.append((checkpoint_step(candidate), candidate.stat().st_mtime, candidate))
        except CheckpointError as error:
            log.warning("resume: passing over %s", error)
    return max(readable)[2] if readable else None
