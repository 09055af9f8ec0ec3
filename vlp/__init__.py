"""vlp: config-driven vision-language pretraining and finetuning.

``vlp.load(folder)`` serves a model exported with vlp-export (see vlp.inference). It is imported on first
use, so that ``import vlp`` stays cheap (no torch, transformers or timm until then).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["load"]


def __getattr__(name: str) -> Any:
    if name == "load":
        from vlp.inference import load

        return load
    raise AttributeError(f"module 'vlp' has no attribute {name!r}")
