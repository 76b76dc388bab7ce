"""Who reads which part of a stream: the rank among processes and the DataLoader worker.

Streams (IterableDatasets) deal items round-robin over `slots = world_size * num_workers`
readers, so each rank sees its own shard and, inside a rank, each worker its own part of it.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def rank_and_world_size() -> tuple[int, int]:
    """(rank, world_size) from torch.distributed when initialised, else from the RANK and
    WORLD_SIZE variables that torchrun and `accelerate launch` set before initialisation."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if not 0 <= rank < world:
        raise ValueError(f"RANK={rank} is not in [0, WORLD_SIZE={world})")
    return rank, world


def reader_slot(shard_by_rank: bool = True) -> tuple[int, int]:
    """(slot, slots): this reader's index among all readers (ranks x DataLoader workers).
    With shard_by_rank=False every rank reads everything (e.g. when accelerate dispatches)."""
    rank, world = rank_and_world_size() if shard_by_rank else (0, 1)
    info = torch.utils.data.get_worker_info()
    worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
    return rank * workers + worker, world * workers
