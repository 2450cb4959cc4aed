"""Where a run executes: process rank, world size and the device, torchrun-aware.

Launched under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) a run joins the
process group (NCCL with CUDA, gloo otherwise) unless the caller already did; every
process trains on its shard of each batch, and only rank 0 writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from transferlens import devices


@dataclass(frozen=True)
class DistContext:
    """Rank and size of the process group (0 and 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def current_context() -> DistContext:
    """The process group this process belongs to, joining torchrun's if not yet joined."""
    if not (dist.is_available() and dist.is_initialized()):
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size <= 1 or "RANK" not in os.environ or not dist.is_available():
            return DistContext()
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    rank, world_size = dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank)


def resolve_device(requested: str, context: DistContext) -> torch.device:
    """``auto`` -> this process's GPU if there is one, else the CPU; ``cuda`` -> its GPU."""
    return devices.resolve_device(requested, local_rank=context.local_rank)


def all_reduce_sum(value: torch.Tensor, context: DistContext) -> torch.Tensor:
    """Sum of ``value`` over processes (a copy; unchanged when not distributed)."""
    if not context.distributed:
        return value
    reduced = value.clone()
    if dist.get_backend() != "nccl":
        reduced = reduced.cpu()
    dist.all_reduce(reduced)
    return reduced.to(value.device)
