"""Data-parallel training under `torchrun`: gloo on CPU, nccl on GPU, rank 0 publishes.

`torchrun --nproc_per_node=N -m training ...` sets RANK / WORLD_SIZE / LOCAL_RANK; without them
everything here is a no-op and training runs in one process.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world_size: int = 1
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup(device: str) -> Context:
    """Join the process group when launched by torchrun; pick this rank's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Context(device=device)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return Context(rank=rank, world_size=world_size, device=device)


@contextmanager
def main_first(context: Context) -> Iterator[None]:
    """Run the block on rank 0 first, then on the other ranks (e.g. a download into a cache)."""
    if context.distributed and not context.is_main:
        dist.barrier()
    yield
    if context.distributed and context.is_main:
        dist.barrier()


def teardown(context: Context) -> None:
    if context.distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def shard(indices: torch.Tensor) -> torch.Tensor:
    """This rank's share of an epoch's shuffled indices (every rank drew the same order).

    Trimmed to a multiple of the world size so each rank takes the same number of steps and the
    gradient all-reduce never waits on a rank that has finished.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return indices
    world, rank = dist.get_world_size(), dist.get_rank()
    usable = len(indices) - len(indices) % world
    return indices[rank:usable:world]


def wrap(model: torch.nn.Module) -> torch.nn.Module:
    """DistributedDataParallel around `model` when a process group is up (averages gradients)."""
    if not (dist.is_available() and dist.is_initialized()):
        return model
    return torch.nn.parallel.DistributedDataParallel(model)
