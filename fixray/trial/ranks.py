"""What DDP ranks agree on in the loop: who they are, whether to stop, sums over them, one model's buffers, and how far
apart their weights are. On one process (no process group) each is the identity."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


def distributed() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_ranks_finite(finite: bool, device: torch.device) -> bool:
    """Every rank must agree to stop, or the ones that go on wait forever in the gradient all-reduce."""
    if distributed()[1] == 1:
        return finite
    flag = torch.tensor([0.0 if finite else 1.0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return flag.item() == 0.0


def sum_over_ranks(values: list[float], device: torch.device) -> list[float]:
    total = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return total.tolist()


def broadcast_buffers(model: nn.Module) -> None:
    """Gives every rank rank 0's BatchNorm statistics, as DDP does before each forward: all ranks evaluate one model."""
    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)


def max_weight_difference(model: nn.Module, device: torch.device) -> float:
    """Largest |w_rank - w_rank0| over all weights and buffers; 0 means the DDP replicas agree."""
    flat = torch.cat([t.detach().flatten().double() for t in model.state_dict().values() if t.is_floating_point()]).to(
        device
    )
    reference = flat.clone()
    dist.broadcast(reference, src=0)
    gap = (flat - reference).abs().max()
    dist.all_reduce(gap, op=dist.ReduceOp.MAX)
    return gap.item()
