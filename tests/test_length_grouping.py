"""svq.train.length_grouping: every index once per pass, batches of similar length, a pass per
seed and epoch, the short last batch last, through a DataLoader and `accelerator.prepare`."""

import random

import pytest
import torch
from accelerate import Accelerator, DataLoaderConfiguration
from conftest import reset_accelerate
from torch.utils.data import DataLoader

from svq.train.length_grouping import SimilarLengthSampler


def lengths(n: int = 203, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(150, 590) for _ in range(n)]


def batches(sampler: SimilarLengthSampler, size: int) -> list[list[int]]:
    order = list(sampler)
    return [order[i : i + size] for i in range(0, len(order), size)]


def spread(groups: list[list[int]], sizes: list[int]) -> float:
    """Mean over full batches of (longest - shortest)."""
    full = [g for g in groups if len(g) == len(groups[0])]
    return sum(max(sizes[i] for i in g) - min(sizes[i] for i in g) for g in full) / len(full)


def test_each_index_once_in_batches_of_similar_length():
    sizes = lengths()
    sampler = SimilarLengthSampler(sizes, batch_size=8, seed=0)
    order = list(sampler)
    assert sorted(order) == list(range(len(sizes))) and len(sampler) == len(sizes)
    grouped = batches(sampler, 8)
    shuffled = list(range(len(sizes)))
    random.Random(1).shuffle(shuffled)
    random_batches = [shuffled[i : i + 8] for i in range(0, len(shuffled), 8)]
    assert spread(grouped, sizes) < 0.3 * spread(random_batches, sizes)
    # the batches' order is shuffled: not long-to-short within the mega-batches
    heads = [sizes[b[0]] for b in grouped[:-1]]
    assert heads != sorted(heads, reverse=True)
    assert len(grouped[-1]) == len(sizes) % 8  # the short batch stays last (drop_last drops it)


def test_a_pass_per_seed_and_epoch():
    sizes = lengths()
    a, b = SimilarLengthSampler(sizes, 8, seed=0), SimilarLengthSampler(sizes, 8, seed=0)
    assert list(a) == list(b)
    b.set_epoch(1)
    assert list(a) != list(b)
    a.set_epoch(1)
    assert list(a) == list(b)
    assert list(SimilarLengthSampler(sizes, 8, seed=1)) != list(SimilarLengthSampler(sizes, 8))
    with pytest.raises(ValueError, match="batch_size"):
        SimilarLengthSampler(sizes, 0)
    with pytest.raises(ValueError, match="need lengths"):
        SimilarLengthSampler([], 8)


def test_a_prepared_loader_sets_the_pass():
    """`accelerator.prepare` keeps the sampler (it replaces only RandomSampler) and its
    set_epoch reaches it: the data position of a resumed run."""
    reset_accelerate()
    sizes = lengths(64)
    sampler = SimilarLengthSampler(sizes, 8, seed=3)
    loader = DataLoader(torch.tensor(sizes), batch_size=8, sampler=sampler, drop_last=True)
    accelerator = Accelerator(
        cpu=True, dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True)
    )
    prepared = accelerator.prepare(loader)
    prepared.set_epoch(2)
    assert sampler.epoch == 2
    seen = [batch.tolist() for batch in prepared]
    expected = SimilarLengthSampler(sizes, 8, seed=3)
    expected.set_epoch(2)
    assert seen == [[sizes[i] for i in group] for group in batches(expected, 8)]
