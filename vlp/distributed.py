"""Collectives that objectives and evaluators share. All of them are no-ops on a single process."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
import torch.nn.functional as F
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


def pad_dim1(tensor: Tensor, length: int) -> Tensor:
    """Zero-pad dim 1 (sequence length) of ``[B, L, ...]`` to ``length``."""
    missing = length - tensor.shape[1]
    return tensor if missing <= 0 else F.pad(tensor, [0, 0] * (tensor.ndim - 2) + [0, missing])


def gather_rows_with_grad(tensor: Tensor) -> tuple[Tensor, int]:
    """:func:`gather_with_grad` for ``tensor [B_rank, ...]`` whose B differs across ranks (a short last
    batch): rows padded to the longest, gathered with gradient, padding dropped. Returns the rows of every
    rank in rank order and where this rank's rows start."""
    if world_size() == 1:
        return tensor, 0
    sizes = gather_variable_length(torch.tensor([tensor.shape[0]], device=tensor.device)).tolist()
    padded = torch.cat([tensor, tensor.new_zeros((max(sizes) - tensor.shape[0], *tensor.shape[1:]))])
    parts = dist_fn.all_gather(padded)
    rows = torch.cat([part[:size] for part, size in zip(parts, sizes, strict=True)], dim=0)
    return rows, int(sum(sizes[: dist.get_rank()]))


def gather_rows_without_grad(tensor: Tensor) -> tuple[Tensor, int]:
    """Like :func:`gather_rows_with_grad`, but only this rank's rows keep their gradient (ALBEF/BLIP)."""
    if world_size() == 1:
        return tensor, 0
    sizes = gather_variable_length(torch.tensor([tensor.shape[0]], device=tensor.device)).tolist()
    offset = int(sum(sizes[: dist.get_rank()]))
    rows = gather_variable_length(tensor.detach())
    return torch.cat([rows[:offset], tensor, rows[offset + tensor.shape[0] :]]), offset


def shared_generator() -> torch.Generator:
    """A CPU generator seeded alike on every rank (rank 0 draws the seed from its global RNG), so that
    random choices over the global batch are the same everywhere and match a single-process run."""
    seed = torch.randint(2**62, (1,)) if world_size() == 1 or dist.get_rank() == 0 else torch.zeros(1)
    seed = all_reduce(seed.long())  # rank 0's seed, as the others contribute 0
    return torch.Generator().manual_seed(int(seed.item()))


def global_sum(value: Tensor | int | float, device: torch.device) -> Tensor:
    """The sum of a count over ranks (no gradient), e.g. masked tokens: losses divide by it so that DDP's
    average over ranks is the mean over the global batch, whatever each rank holds."""
    return all_reduce(torch.as_tensor(value, dtype=torch.float32, device=device).detach().clone())
