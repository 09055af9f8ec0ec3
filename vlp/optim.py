"""Optimizer parameter groups and learning-rate schedules."""

from __future__ import annotations

import math

from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def _declared_no_decay(module: nn.Module) -> set[str]:
    """Full names of parameters that submodules declare exempt from weight decay (timm's
    ``no_weight_decay()``: position embeddings, class tokens)."""
    names: set[str] = set()
    for prefix, submodule in module.named_modules():
        declare = getattr(submodule, "no_weight_decay", None)
        if callable(declare):
            names.update(f"{prefix}.{name}" if prefix else name for name in declare())
    return names


def weight_decay_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: decayed weights, and biases / norm weights / declared exemptions with no decay.

    Biases and every 1-d parameter (LayerNorm/BatchNorm scales, temperatures) are exempt: decaying them
    pulls normalisation scales towards zero for no regularisation benefit.
    """
    decay, no_decay = [], []
    exempt = _declared_no_decay(module)
    for name, parameter in module.named_parameters():
        if not parameter.requires_grad:
            continue
        if parameter.ndim <= 1 or name.endswith(".bias") or name in exempt:
            no_decay.append(parameter)
        else:
            decay.append(parameter)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def lr_multiplier(name: str, multipliers: dict[str, float]) -> float:
    """The multiplier of the longest prefix of ``name`` in ``multipliers`` (1.0 when none matches)."""
    matches = [
        prefix for prefix in multipliers if name == prefix or name.startswith(prefix.rstrip(".") + ".")
    ]
    return float(multipliers[max(matches, key=len)]) if matches else 1.0


def parameter_groups(
    module: nn.Module, weight_decay: float, base_lr: float | None = None, lr_multipliers: dict | None = None
) -> list[dict]:
    """:func:`weight_decay_groups`, further split by learning-rate multiplier.

    ``lr_multipliers`` maps parameter-name prefixes to factors of ``base_lr``, e.g. ``{"model": 0.2}``
    to finetune pretrained encoders five times slower than new task heads (the longest prefix wins).
    """
    multipliers = dict(lr_multipliers or {})
    if not multipliers:
        return weight_decay_groups(module, weight_decay)
    if base_lr is None:
        raise ValueError("system.lr_multipliers needs the optimizer's base lr (system.optimizer.lr)")
    names = {id(p): n for n, p in module.named_parameters()}
    groups: dict[tuple[float, float], list] = {}
    for group in weight_decay_groups(module, weight_decay):
        for parameter in group["params"]:
            factor = lr_multiplier(names[id(parameter)], multipliers)
            groups.setdefault((factor, group["weight_decay"]), []).append(parameter)
    return [
        {"params": params, "weight_decay": decay, "lr": base_lr * factor}
        for (factor, decay), params in sorted(groups.items())
    ]


def warmup_cosine(
    optimizer: Optimizer, total_steps: int, warmup_steps: int = 0, min_lr_ratio: float = 0.0
) -> LambdaLR:
    """Linear warmup from 0 over ``warmup_steps``, then cosine decay to ``min_lr_ratio * lr`` at
    ``total_steps``. Stepped once per optimizer step."""
    if total_steps < 1:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    warmup_steps = min(warmup_steps, total_steps)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)
