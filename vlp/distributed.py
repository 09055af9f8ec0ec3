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


def _communication_device(tensor: Tensor) -> torch.device:
    """NCCL only moves CUDA tensors: CPU tensors (evaluation results kept off the GPU) travel through the
    current GPU and come back; gloo takes them as they are."""
    if tensor.device.type == "cpu" and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return tensor.device


def all_reduce(tensor: Tensor, op: dist.ReduceOp.RedOpType = dist.ReduceOp.SUM) -> Tensor:
    """``all_reduce`` that also accepts CPU tensors under NCCL; returns the result on ``tensor``'s device."""
    if world_size() == 1:
        return tensor
    moved = tensor.to(_communication_device(tensor))
    dist.all_reduce(moved, op=op)
    return moved.to(tensor.device)


def gather_variable_length(tensor: Tensor) -> Tensor:
    """Concatenate tensors whose first dimension differs across ranks (evaluation shards), no gradient."""
    if world_size() == 1:
        return tensor
    home = tensor.device
    tensor = tensor.to(_communication_device(tensor))
    local_length = torch.tensor([tensor.shape[0]], device=tensor.device)
    lengths = [torch.zeros_like(local_length) for _ in range(world_size())]
    dist.all_gather(lengths, local_length)
    longest = int(max(length.item() for length in lengths))
    padded = torch.zeros((longest, *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
    padded[: tensor.shape[0]] = tensor
    parts = [torch.empty_like(padded) for _ in range(world_size())]
    dist.all_gather(parts, padded.contiguous())
    gathered = [part[: int(length.item())] for part, length in zip(parts, lengths, strict=True)]
    return torch.cat(gathered, dim=0).to(home)
