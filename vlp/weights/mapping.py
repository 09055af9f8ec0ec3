"""What every converter shares: a source state dict walked key by key, each tensor mapped or accounted for.

A converter never drops a tensor silently. Each source key is either mapped (to one target, or merged
with others into one, as q/k/v into a fused qkv), listed as deliberately skipped with the reason (a
non-persistent buffer some versions save), or left over; left-over keys make the conversion fail.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor


class UnmappedWeights(ValueError):
    """Source tensors that no rule maps: the checkpoint holds something this converter does not know."""


@dataclass
class Conversion:
    source: dict[str, Tensor]
    target: dict[str, Tensor] = field(default_factory=dict)
    used: set[str] = field(default_factory=set)
    skipped: dict[str, str] = field(default_factory=dict)  # source key -> why it is not needed

    def take(self, key: str) -> Tensor:
        if key not in self.source:
            raise KeyError(f"the checkpoint has no {key}: is it the model this converter expects?")
        self.used.add(key)
        return self.source[key]

    def copy(
        self, source_key: str, target_key: str, transform: Callable[[Tensor], Tensor] | None = None
    ) -> None:
        tensor = self.take(source_key)
        self.target[target_key] = (transform(tensor) if transform else tensor).contiguous()

    def copy_prefix(self, source_prefix: str, target_prefix: str) -> None:
        """Every key under ``source_prefix`` as is, under ``target_prefix`` (a module vlp uses unchanged)."""
        for key in [k for k in self.source if k.startswith(source_prefix)]:
            self.copy(key, target_prefix + key[len(source_prefix) :])

    def fuse_qkv(self, query: str, key: str, value: str, target: str) -> None:
        """Separate query/key/value projections (``<name>.weight``/``.bias``) -> timm's fused ``qkv``."""
        for suffix in ("weight", "bias"):
            parts = [self.take(f"{name}.{suffix}") for name in (query, key, value)]
            self.target[f"{target}.{suffix}"] = torch.cat(parts, dim=0).contiguous()

    def transformer_layer(
        self, layer: str, qkv: tuple[str, str, str], parts: dict[str, str], block: str
    ) -> None:
        """One HF transformer layer (prefix ``layer``) -> one timm block (prefix ``block``): the separate
        ``qkv`` projections fused, and each of ``parts`` (HF sub-module -> timm sub-module) copied."""
        query, key, value = (f"{layer}{name}" for name in qkv)
        self.fuse_qkv(query, key, value, f"{block}attn.qkv")
        for hf_part, timm_part in parts.items():
            for suffix in ("weight", "bias"):
                self.copy(f"{layer}{hf_part}.{suffix}", f"{block}{timm_part}.{suffix}")

    def skip(self, key: str, reason: str) -> None:
        self.used.add(key)
        self.skipped[key] = reason

    def finish(self, what: str) -> dict[str, Tensor]:
        left = sorted(set(self.source) - self.used)
        if left:
            shown = ", ".join(left[:10]) + (f", ... ({len(left)} in all)" if len(left) > 10 else "")
            raise UnmappedWeights(f"{what}: {len(left)} source tensors have no mapping: {shown}")
        # own storage per tensor: tied source tensors (an MLM decoder and the word embeddings) would
        # otherwise share memory, which safetensors refuses to write
        return {key: tensor.clone() for key, tensor in self.target.items()}

    def report(self) -> str:
        lines = [
            f"mapped {len(self.used) - len(self.skipped)} source tensors to {len(self.target)} vlp tensors"
        ]
        lines += [f"skipped {key}: {reason}" for key, reason in sorted(self.skipped.items())]
        return "\n".join(lines)


def skip_position_id_buffers(conversion: Conversion) -> None:
    """``*.position_ids`` / ``*.token_type_ids`` index buffers that older transformers saved: vlp's towers
    rebuild them, so they carry no weights."""
    for key in list(conversion.source):
        if key.endswith((".position_ids", ".token_type_ids")):
            conversion.skip(key, "index buffer rebuilt by the model, not a weight")
