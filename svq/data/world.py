"""The chat world as torch datasets, rendered on the fly (no files): a map-style dataset of
fixed length and an endless stream, both deterministic per (seed, split, index).

    stream = ChatWorldStream(size=64, seed=0)                 # (3, 64, 64) tensors in [-1, 1]
    loader = DataLoader(stream, batch_size=64, num_workers=2)  # each worker its own pictures
    judge = ChatWorldDataset(size=64, length=50_000, labels=True)  # WorldItem(image, labels)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import torch
from torch.utils.data import Dataset, IterableDataset

from .distributed import reader_slot
from .preprocess import to_tensor
from .render import MIN_SIZE, render
from .sampler import SPLITS, world_record
from .schema import WorldRecord


class WorldItem(NamedTuple):
    """A picture and its labels; DataLoader's default collate stacks both."""

    image: torch.Tensor  # (3, S, S) float in [-1, 1]
    labels: torch.Tensor  # (len(ATTRIBUTES),) int64: SCHEMA[name].index(value), schema order


def _check(size: int, split: str) -> None:
    if not isinstance(size, int) or size < MIN_SIZE:
        raise ValueError(f"size must be an int >= {MIN_SIZE}, got {size!r}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}, expected one of {SPLITS}")


def _item(record: WorldRecord, size: int, labels: bool) -> torch.Tensor | WorldItem:
    image = to_tensor(render(record, size))
    if not labels:
        return image
    return WorldItem(image, torch.tensor(record.labels(), dtype=torch.long))


class ChatWorldDataset(Dataset):
    """Pictures 0 .. length-1 of `split`; item i is the same on every run and in every worker.
    Returns (3, S, S) tensors in [-1, 1], or WorldItem(image, labels) with labels=True."""

    def __init__(
        self,
        size: int = 64,
        length: int = 10_000,
        seed: int = 0,
        split: str = "train",
        labels: bool = False,
    ):
        _check(size, split)
        if length < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        self.size, self.length, self.seed, self.split, self.labels = (
            size,
            length,
            seed,
            split,
            labels,
        )

    def __len__(self) -> int:
        return self.length

    def record(self, index: int) -> WorldRecord:
        """The attribute record of item `index`."""
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for length {self.length}")
        return world_record(self.seed, self.split, index)

    def __getitem__(self, index: int) -> torch.Tensor | WorldItem:
        return _item(self.record(index), self.size, self.labels)


class ChatWorldStream(IterableDataset):
    """Pictures start, start+1, ... of `split`, without end. Under torch.distributed /
    accelerate each rank, and each DataLoader worker inside it, takes every `slots`-th picture,
    so no two readers render the same one (pass shard_by_rank=False when accelerate's
    `prepare` dispatches or shards the loader itself)."""

    def __init__(
        self,
        size: int = 64,
        seed: int = 0,
        split: str = "train",
        labels: bool = False,
        start: int = 0,
        shard_by_rank: bool = True,
    ):
        _check(size, split)
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        self.size, self.seed, self.split, self.labels = size, seed, split, labels
        self.start, self.shard_by_rank = start, shard_by_rank

    def __iter__(self) -> Iterator[torch.Tensor | WorldItem]:
        slot, slots = reader_slot(self.shard_by_rank)
        index = self.start + slot
        while True:
            yield _item(world_record(self.seed, self.split, index), self.size, self.labels)
            index += slots
