"""Batches of similar length: less padding, so less compute per step for the same chats.

A random batch of the chat world's dialogues is ~70% tokens and ~30% padding (lengths 150-590
tokens), and a step's attention grows with the square of the longest. `SimilarLengthSampler`
draws the order as transformers' Trainer does with `group_by_length` (random mega-batches of
many batches, sorted by length inside, `get_length_grouped_indices`), then shuffles the
batches themselves, so a pass does not run long-to-short. Seeded per pass (`set_epoch`, which
`accelerator.prepare`d loaders call), so a resumed run draws the batches of an uninterrupted
one; the DataLoader cuts its indices into batches of the same size (and `accelerate` deals
whole batches to the processes).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler
from transformers.trainer_pt_utils import get_length_grouped_indices


class SimilarLengthSampler(Sampler[int]):
    """Indices of `lengths`, every `batch_size` consecutive ones of similar length; a last
    batch that is not full stays last (where `drop_last` drops it)."""

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0):
        if batch_size < 1 or not lengths:
            raise ValueError(f"need lengths and batch_size >= 1, got {len(lengths)} / {batch_size}")
        self.lengths, self.batch_size, self.seed, self.epoch = list(lengths), batch_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the pass: its own mega-batches and batch order."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = get_length_grouped_indices(self.lengths, self.batch_size, generator=generator)
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        last = [batches.pop()] if len(batches[-1]) < self.batch_size else []
        for b in torch.randperm(len(batches), generator=generator).tolist():
            yield from batches[b]
        for batch in last:
            yield from batch
