"""Starting a run from another run's weights (``model.init_from=PATH``), with a report of what loaded.

Finetuning starts from a pretraining checkpoint: the towers, projections and fusion must load exactly
(an error otherwise: finetuning a randomly initialised encoder by accident is a silent disaster), heads
that exist in both runs with the same shapes are loaded too (e.g. ITM for retrieval), and new task heads
(VQA, NLVR2) keep their fresh initialisation. Everything that did not load is listed.

Checkpoints are read with ``torch.load(weights_only=True)`` (or safetensors), so a file that carries
arbitrary pickled objects is refused rather than executed.
"""

from __future__ import annotations

import logging
import math
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from timm.layers import resample_abs_pos_embed
from torch import Tensor, nn

log = logging.getLogger(__name__)

# Parameters under these prefixes must all load from the checkpoint, with the same shapes.
ENCODER_PREFIXES = ("model.vision.", "model.text.", "model.fusion.", "model.vision_proj.", "model.text_proj.")


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Tensors of a Lightning checkpoint (its ``state_dict``), a plain state dict file, or safetensors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model.init_from={path}: no such file")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except SafetensorError as error:
            raise ValueError(f"{path} is not a readable safetensors file ({error})") from error
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if not _is_torch_or_pickle_file(path):
            raise ValueError(
                f"{path} is not a readable checkpoint (neither a torch.save file nor a pickle)"
            ) from error
        raise ValueError(
            f"{path} holds pickled objects other than tensors and plain containers, which vlp does not "
            "execute (weights_only=True); convert it to a state dict or safetensors first"
        ) from error
    except (RuntimeError, EOFError) as error:
        raise ValueError(f"{path} is not a readable checkpoint ({error})") from error
    state = payload.get("state_dict", payload) if isinstance(payload, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{path} has no state dict of tensors")
    return state


def _is_torch_or_pickle_file(path: Path) -> bool:
    """A zip archive (torch.save's format) or a pickle stream (legacy torch.save, ``pickle.dump``: they open
    with the PROTO opcode); anything else that the unpickler refuses is not a checkpoint at all, rather
    than one that carries objects vlp will not run."""
    if zipfile.is_zipfile(path):
        return True
    with path.open("rb") as handle:
        return handle.read(1) == pickle.PROTO


@dataclass
class LoadReport:
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # in the run, not in the checkpoint: kept fresh
    unexpected: list[str] = field(default_factory=list)  # in the checkpoint, not in the run: ignored
    mismatched: list[str] = field(default_factory=list)  # "name: checkpoint shape -> run shape"
    resized: list[str] = field(default_factory=list)  # position embeddings interpolated to this run's grid
    reset: list[str] = field(default_factory=list)  # run state (queues) started afresh, never loaded

    def summary(self) -> str:
        def names(keys: list[str]) -> str:
            shown = ", ".join(keys[:8])
            return shown + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")

        lines = [f"loaded {len(self.loaded)} tensors"]
        if self.missing:
            lines.append(f"kept fresh (not in the checkpoint): {names(self.missing)}")
        if self.unexpected:
            lines.append(f"ignored (not in this run): {names(self.unexpected)}")
        if self.resized:
            lines.append(f"position embeddings interpolated: {names(self.resized)}")
        if self.mismatched:
            lines.append(f"kept fresh (shape differs): {names(self.mismatched)}")
        if self.reset:
            lines.append(f"started empty (run state): {names(self.reset)}")
        return "; ".join(lines)


def init_from_checkpoint(
    module: nn.Module, path: str | Path, required_prefixes: tuple[str, ...] = ENCODER_PREFIXES
) -> LoadReport:
    """Copy matching tensors of the checkpoint at ``path`` into ``module`` (a VLPSystem: keys ``model.*``,
    ``objectives.*``); raise if any parameter under ``required_prefixes`` cannot be loaded."""
    source = read_state_dict(path)
    target = module.state_dict()
    report = LoadReport()
    to_load = {}
    # Run state that means nothing in another run (ITC's queue of past embeddings and their image ids).
    run_state = tuple(
        f"{prefix}." for prefix, part in module.named_modules() if getattr(part, "reset_on_init_from", False)
    )
    for name, tensor in target.items():
        if name.startswith(run_state):
            report.reset.append(name)
            continue
        shapes = f"{name}: {tuple(source[name].shape)} -> {tuple(tensor.shape)}" if name in source else ""
        if name not in source:
            report.missing.append(name)
        elif source[name].shape == tensor.shape:
            to_load[name] = source[name]
            report.loaded.append(name)
        elif (resized := _resize_position_embedding(module, name, source[name])) is not None:
            to_load[name] = resized
            report.loaded.append(name)
            report.resized.append(shapes)
        else:
            report.mismatched.append(shapes)
    report.unexpected = sorted(set(source) - set(target))
    broken = [item for item in report.missing + report.mismatched if item.startswith(required_prefixes)]
    if broken:
        raise ValueError(
            f"model.init_from={path} does not match this model's encoders ({len(broken)} tensors missing or "
            f"of another shape, e.g. {'; '.join(broken[:3])}): check the model config against the "
            "pretraining run's"
        )
    module.load_state_dict(to_load, strict=False)
    log.info("model.init_from=%s: %s", path, report.summary())
    return report


def _resize_position_embedding(module: nn.Module, name: str, tensor: Tensor) -> Tensor | None:
    """A timm ViT's ``pos_embed`` from a checkpoint trained at another resolution, interpolated (bicubic,
    as timm resizes its own pretrained weights) to this run's patch grid; ``None`` for anything else.

    Finetuning at a higher resolution than pretraining (ViLT, ALBEF, METER: 224/256/288 -> 384) changes the
    number of patches; the class-token rows are kept as they are.
    """
    if not name.endswith(".pos_embed") or tensor.ndim != 3:
        return None
    owner = module.get_submodule(name.rsplit(".", 1)[0])
    grid = getattr(getattr(owner, "patch_embed", None), "grid_size", None)
    prefix_tokens = getattr(owner, "num_prefix_tokens", None)
    if grid is None or prefix_tokens is None or getattr(owner, "no_embed_class", False):
        return None
    old_patches = tensor.shape[1] - prefix_tokens
    old_side = math.isqrt(old_patches)
    if old_side * old_side != old_patches:
        return None  # not a square grid: leave it to the shape-mismatch report
    return resample_abs_pos_embed(
        tensor, new_size=list(grid), old_size=[old_side, old_side], num_prefix_tokens=prefix_tokens
    )
