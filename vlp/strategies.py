"""Distributed strategies that need Python objects a YAML file cannot hold (module classes)."""

from __future__ import annotations

from typing import Any

from hydra.utils import get_class
from pytorch_lightning.strategies import FSDPStrategy


def block_classes(names: list[str]) -> set[type]:
    """The module classes named by dotted paths; names whose package is not installed are left out
    (``wrap`` lists the blocks of every family, a model uses some of them), a typo in a class name is not."""
    classes = set()
    for name in names:
        module_path = name.rpartition(".")[0]
        try:
            __import__(module_path)
        except ImportError:
            continue
        try:
            classes.add(get_class(name))
        except Exception as error:  # hydra wraps the AttributeError of a missing class
            raise ValueError(f"trainer.strategy.wrap: {name} is not a class that can be imported") from error
    return classes


def fsdp(wrap: list[str], activation_checkpointing: bool = False, **kwargs: Any) -> FSDPStrategy:
    """Lightning's FSDPStrategy with every transformer block of ``wrap`` (dotted class paths) as its own
    FSDP unit, and optionally each such block's activations checkpointed; ``kwargs`` go to FSDPStrategy
    (``sharding_strategy``, ``state_dict_type``, ``use_orig_params``, ...)."""
    classes = block_classes(wrap)
    if not classes:
        raise ValueError("trainer.strategy.wrap names no importable block class: FSDP would shard nothing")
    return FSDPStrategy(
        auto_wrap_policy=classes,
        activation_checkpointing_policy=classes if activation_checkpointing else None,
        **kwargs,
    )
