"""Collectives that objectives and evaluators share. All of them are no-ops on a single process."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import Tensor


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather_with_grad(tensor: Tensor) -> Tensor:
    """Concatenate ``tensor [B, ...]`` from all ranks along dim 0; gradients flow back to every rank."""
    if world_size() == 1:
        return tensor
    return torch.cat(dist_fn.all_gather(tensor), dim=0)


def gather_without_grad(tensor: Tensor) -> Tensor:
    """Like :func:`gather_with_grad`, but only this rank's slice keeps its gradient (ALBEF/BLIP behaviour)."""
    if world_size() == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(parts, tensor.detach().contiguous())
    parts[dist.get_rank()] = tensor
    return torch.cat(parts, dim=0)


def gather_variable_length(tensor: Tensor) -> Tensor:
    """Concatenate tensors whose first dimension differs across ranks (evaluation shards), no gradient."""
    if world_size() == 1:
        return tensor
    local_length = torch.tensor([tensor.shape[0]], device=tensor.device)
    lengths = [torch.zeros_like(local_length) for _ in range(world_size())]
    dist.all_gather(lengths, local_length)
    longest = int(max(length.item() for length in lengths))
    padded = torch.zeros((longest, *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
    padded[: tensor.shape[0]] = tensor
    parts = [torch.empty_like(padded) for _ in range(world_size())]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([part[: int(length.item())] for part, length in zip(parts, lengths, strict=True)], dim=0)
