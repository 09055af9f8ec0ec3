"""Optimizer parameter groups, freezing and learning-rate schedules."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence

from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

log = logging.getLogger(__name__)

# Layer ids follow BEiT/MAE's ViT numbering (stem 0, block i at i + 1, final norm and heads at L + 1), read
# from names. timm's group_matcher() is not used: it puts the final norm in the last block's group, so its
# param_groups_layer_decay gives the stem d^L and the last block the full rate, a layer off BEiT's.
# Blocks inside stages, counted across stages (timm Swin: layers.S.blocks.J, and the stage's downsample,
# which timm puts at the stage's start, with block J = 0).
_STAGE_BLOCK = re.compile(r"(?:^|\.)layers\.(\d+)\.(?:blocks\.(\d+)|downsample)\.")
# Flat blocks: timm ViT/DeiT blocks.N (not a convnet's stages.S.blocks.N), HF BERT/RoBERTa encoder.layer.N,
# CLIP encoder.layers.N, our fusions layers.N (METER's parallel text_layers.N / image_layers.N share depth N).
# search() finds the leftmost, i.e. outermost, one.
_BLOCK = re.compile(r"(?:^|\.)(?<!\d\.)blocks\.(\d+)\.|(?:^|[._])layers?\.(\d+)\.")
_STEM = re.compile(
    r"(?:^|[._])embeddings?\."  # HF embeddings.*, CLIP's token_embedding / position_embedding
    r"|(?:^|\.)(?:patch_embed|norm_pre)\."  # timm
    r"|(?:^|\.)(?:cls_token|reg_token|pos_embed|absolute_pos_embed)$"
)


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
    pulls normalisation scales towards zero for no regularisation benefit. Frozen parameters are left out.
    Groups carry a ``name``, which Lightning's LearningRateMonitor uses in the logged key.
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
        {"name": "decay", "params": decay, "weight_decay": weight_decay},
        {"name": "no_decay", "params": no_decay, "weight_decay": 0.0},
    ]


def _longest_prefix(name: str, prefixes: Sequence[str]) -> str | None:
    """The longest of ``prefixes`` that is ``name`` or a module path above it: ``vision`` holds
    ``vision.backbone.x`` but not ``vision_proj.weight``."""
    matches = [p for p in prefixes if name == p.rstrip(".") or name.startswith(p.rstrip(".") + ".")]
    return max(matches, key=len) if matches else None


def lr_multiplier(name: str, multipliers: dict[str, float]) -> float:
    """The multiplier of the longest prefix of ``name`` in ``multipliers`` (1.0 when none matches)."""
    prefix = _longest_prefix(name, list(multipliers))
    return 1.0 if prefix is None else float(multipliers[prefix])


def layer_ids(names: Sequence[str]) -> tuple[dict[str, int], int]:
    """Layer id of each parameter name (relative to an encoder) and the encoder's number of blocks L.

    BEiT's numbering: 0 for the stem (embeddings, patch embedding, class token, position embedding,
    ``norm_pre``), i + 1 for block i, and L + 1 for everything else, which in these encoders follows the
    last block (final norm, pooler). L is 0 when no name lies in a block.
    """
    position: dict[str, tuple[int, int]] = {}  # name -> (stage, block in the stage); flat blocks: stage 0
    for name in names:
        if match := _STAGE_BLOCK.search(name):
            position[name] = (int(match.group(1)), int(match.group(2) or 0))
        elif match := _BLOCK.search(name):
            position[name] = (0, int(match.group(1) or match.group(2)))
    depths: dict[int, int] = {}  # blocks per stage
    for stage, block in position.values():
        depths[stage] = max(depths.get(stage, 0), block + 1)
    num_layers = sum(depths.values())
    ids = {}
    for name in names:
        if name in position:
            stage, block = position[name]
            ids[name] = sum(depths[s] for s in depths if s < stage) + block + 1
        else:
            ids[name] = 0 if _STEM.search(name) else num_layers + 1
    return ids, num_layers


def _layer_depths(module: nn.Module, decays: dict[str, float]) -> dict[str, tuple[str, int, int]]:
    """Full parameter name -> (its longest ``layer_decay`` prefix, its layer id, that encoder's L)."""
    names = [name for name, _ in module.named_parameters()]
    depth = {}
    for prefix in sorted(decays, key=len):  # a longer prefix overrides a shorter one
        if not 0 < decays[prefix] <= 1:
            raise ValueError(f"system.layer_decay.{prefix}={decays[prefix]} is not in (0, 1]: use e.g. 0.65")
        inside = {name[len(prefix) + 1 :]: name for name in names if name.startswith(prefix + ".")}
        ids, num_layers = layer_ids(list(inside))
        if num_layers < 1:
            raise ValueError(
                f"system.layer_decay prefix {prefix!r} holds no blocks (blocks.N, layers.S.blocks.N, "
                "layer.N, layers.N): use an encoder's path, e.g. model.vision or model.text"
            )
        for relative, layer in ids.items():
            depth[inside[relative]] = (prefix, layer, num_layers)
    return depth


def parameter_groups(
    module: nn.Module,
    weight_decay: float,
    base_lr: float | None = None,
    lr_multipliers: dict | None = None,
    layer_decay: dict | None = None,
) -> list[dict]:
    """:func:`weight_decay_groups`, further split by learning rate; each group has its ``lr`` and a name
    saying where its parameters lie (``model.vision/layer_3/decay``).

    ``lr_multipliers`` maps parameter-name prefixes to factors of ``base_lr`` (the longest prefix wins),
    e.g. ``{"model": 0.2}`` to finetune pretrained encoders five times slower than new task heads.
    ``layer_decay`` maps encoder prefixes to a decay d (BEiT's layer-wise lr decay): a parameter with layer
    id i (:func:`layer_ids`) in an encoder of L blocks has its factor multiplied by
    ``d ** (L + 1 - i)``, so the embeddings move slowest and what follows the last block at the full rate.
    A prefix that matches no parameter raises, as does a layer_decay prefix without layers: a typo would
    otherwise train at the default rate unnoticed.
    """
    multipliers = {prefix.rstrip("."): float(f) for prefix, f in (lr_multipliers or {}).items()}
    decays = {prefix.rstrip("."): float(d) for prefix, d in (layer_decay or {}).items()}
    if not multipliers and not decays:
        return weight_decay_groups(module, weight_decay)
    if base_lr is None:
        raise ValueError(
            "system.lr_multipliers and system.layer_decay need the optimizer's base lr (system.optimizer.lr)"
        )
    names = {id(p): n for n, p in module.named_parameters()}
    for prefix in multipliers:
        if not any(_longest_prefix(name, [prefix]) for name in names.values()):
            raise ValueError(
                f"system.lr_multipliers prefix {prefix!r} matches no parameter name: use a module path, "
                "e.g. model.fusion or objectives"
            )
    depth = _layer_depths(module, decays)
    groups: dict[str, dict] = {}
    for group in weight_decay_groups(module, weight_decay):
        for parameter in group["params"]:
            name = names[id(parameter)]
            where = _longest_prefix(name, list(multipliers))
            factor, parts = (1.0 if where is None else multipliers[where]), [where]
            if name in depth:
                prefix, layer, num_layers = depth[name]
                factor *= decays[prefix] ** (num_layers + 1 - layer)
                parts = [where if where != prefix else None, f"{prefix}/layer_{layer}"]
            # The name determines the rate, so one group per name; LearningRateMonitor needs them unique.
            key = "/".join([part for part in parts if part] + [group["name"]])
            new = {"name": key, "params": [], "weight_decay": group["weight_decay"], "lr": base_lr * factor}
            groups.setdefault(key, new)["params"].append(parameter)
    # Ordered by rate, as before groups had names, so that optimizer states saved then still resume.
    return sorted(groups.values(), key=lambda g: (g["lr"], g["weight_decay"], g["name"]))


def freeze_parameters(module: nn.Module, patterns: Sequence[str]) -> list[str]:
    r"""Stop training every parameter whose full name matches one of ``patterns`` as a whole
    (``re.fullmatch``), e.g. ``model\.vision\..*`` for a locked image tower (LiT); returns their names.

    Whole names, so that a pattern says all it catches: with ``re.match``, ``model.vision`` would also
    catch ``model.vision_proj.weight``. A pattern that matches nothing raises, as a typo would otherwise
    leave the tower training unnoticed. Only gradients stop: dropout and batch-norm statistics still
    follow ``train()`` / ``eval()``.
    """
    named = list(module.named_parameters(remove_duplicate=False))  # a shared tensor under any of its names
    frozen: dict[int, str] = {}
    for pattern in patterns:
        try:
            regex = re.compile(pattern)
        except re.error as error:
            raise ValueError(f"system.freeze pattern {pattern!r} is not a regex: {error}") from None
        hits = [(name, parameter) for name, parameter in named if regex.fullmatch(name)]
        if not hits:
            raise ValueError(
                f"system.freeze pattern {pattern!r} matches no whole parameter name (re.fullmatch): "
                r"e.g. 'model\.vision\..*'"
            )
        for name, parameter in hits:
            parameter.requires_grad_(False)
            frozen.setdefault(id(parameter), name)
    if frozen:
        tensors = {id(parameter): parameter for _, parameter in named}
        count = sum(tensors[key].numel() for key in frozen)
        total = sum(parameter.numel() for parameter in tensors.values())
        log.info(
            "system.freeze: %d of %d tensors frozen, %s of %s parameters",
            len(frozen),
            len(tensors),
            f"{count:,}",
            f"{total:,}",
        )
    return list(frozen.values())


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
