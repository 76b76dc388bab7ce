"""Real images as torch datasets: (3, size, size) tensors in [-1, 1] from any source.

- `ImageDataset` (map-style) for indexable sources (files, HF datasets): use it with a
  DistributedSampler, or let `accelerator.prepare(loader)` shard it, LlamaGen-style.
- `ImageStream` (iterable) for every source, tar shards included: it shards itself over ranks
  and DataLoader workers, TiTok-style, so give its loader to accelerate unprepared (or pass
  shard_by_rank=False and let accelerate dispatch the batches).

Bad input: a corrupt, truncated, empty or non-image item is skipped with one warning naming
it (UnreadableImageWarning); a stream ends each pass with a warning counting them; a source
where nothing is readable raises ValueError instead of retrying for ever. An image smaller
than the crop is upsampled, with one SmallImageWarning naming it.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset, IterableDataset

from .distributed import reader_slot
from .preprocess import Preprocess, UnreadableImageError, load_image
from .sources import HFImages, ImageFiles, Source, TarShards, open_source


class UnreadableImageWarning(UserWarning):
    """An item was skipped because it is not a readable image."""


class SmallImageWarning(UserWarning):
    """An image smaller than the crop was upsampled."""


class _Report:
    """Warn once per bad or small item (per process) and count them."""

    def __init__(self, source: str):
        self.source = source
        self.bad: set[str] = set()
        self.small: set[str] = set()

    def unreadable(self, name: str, reason: str) -> None:
        if name not in self.bad:
            self.bad.add(name)
            warnings.warn(
                f"skipping unreadable image {name} ({reason}); {len(self.bad)} skipped so far "
                f"in {self.source}",
                UnreadableImageWarning,
                stacklevel=3,
            )

    def check_size(self, name: str, image: Image.Image, size: int) -> None:
        if min(image.size) < size and name not in self.small:
            self.small.add(name)
            warnings.warn(
                f"image {name} is {image.width}x{image.height}, smaller than the {size}px "
                "crop: upsampled",
                SmallImageWarning,
                stacklevel=3,
            )


class ImageDataset(Dataset):
    """Map-style: item i is image i of an indexable source, preprocessed. An unreadable item
    is replaced by the next readable one (warning once); if none is, ValueError.

    `source` is an ImageFiles / HFImages or anything `open_source` understands (a folder, a
    file list, a saved dataset, a `datasets.Dataset`)."""

    def __init__(self, source: Any, size: int, train: bool = False, hflip: bool = False):
        self.source = open_source(source)
        if isinstance(self.source, TarShards):
            raise ValueError("tar shards have no random access: use ImageStream for them")
        self.preprocess = Preprocess(size, train=train, hflip=hflip)
        self.report = _Report(repr(self.source))
        self._bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.source)

    @property
    def skipped(self) -> int:
        """Unreadable items met so far by this process."""
        return len(self._bad)

    def __getitem__(self, index: int) -> torch.Tensor:
        n = len(self.source)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} images")
        for step in range(n):  # at most one pass over the source: never an endless retry
            i = (index + step) % n
            if i in self._bad:
                continue
            name, raw = self.source.item(i)
            try:
                image = _decode(raw)
            except (UnreadableImageError, FileNotFoundError) as error:
                self._bad.add(i)
                self.report.unreadable(name, str(error))
                continue
            self.report.check_size(name, image, self.preprocess.size)
            return self.preprocess(image)
        raise ValueError(f"no readable image in {self.source}: all {n} items failed to decode")


class ImageStream(IterableDataset):
    """Iterable: every reader (rank x DataLoader worker) takes its own share of the source
    (items of files / datasets, whole shards of tars when there are enough of them, else every
    slots-th sample), decodes and preprocesses it.

    shuffle: a new order each pass from (seed, epoch); tar shards shuffle their order and
    samples pass through a buffer of `shuffle_buffer`. repeat: start over for ever (use for
    step-counted training, so that no rank runs dry first). Random crops draw from a generator
    seeded by (seed, epoch, reader), so a stream replays exactly."""

    def __init__(
        self,
        source: Any,
        size: int,
        train: bool = False,
        hflip: bool = False,
        shuffle: bool = False,
        seed: int = 0,
        repeat: bool = False,
        shard_by_rank: bool = True,
        shuffle_buffer: int = 1000,
    ):
        self.source: Source = open_source(source)
        self.preprocess = Preprocess(size, train=train, hflip=hflip)
        self.shuffle, self.seed, self.repeat = shuffle, seed, repeat
        self.shard_by_rank, self.shuffle_buffer = shard_by_rank, shuffle_buffer
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the pass (its shuffle order and crops), like DistributedSampler.set_epoch."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[torch.Tensor]:
        slot, slots = reader_slot(self.shard_by_rank)
        report = _Report(repr(self.source))
        epoch = self.epoch
        while True:
            generator = _generator(self.seed, epoch, slot)
            good = bad = 0
            for name, raw in self._raw(epoch, slot, slots, report):
                try:
                    image = _decode(raw)
                except (UnreadableImageError, FileNotFoundError) as error:
                    bad += 1
                    report.unreadable(name, str(error))
                    continue
                good += 1
                report.check_size(name, image, self.preprocess.size)
                yield self.preprocess(image, generator)
            where = f" (reader {slot} of {slots})" if slots > 1 else ""
            if bad and epoch == self.epoch:
                warnings.warn(
                    f"{self.source}: skipped {bad} unreadable of {good + bad} items{where}",
                    UnreadableImageWarning,
                    stacklevel=2,
                )
            if good == 0 and (bad or report.bad):
                raise ValueError(
                    f"no readable image in {self.source}{where}: "
                    f"{bad or len(report.bad)} items failed"
                )
            if not self.repeat:
                return
            if good == 0:
                raise ValueError(
                    f"{self.source} has nothing for this reader{where}: fewer items than "
                    "readers; use fewer workers or more shards"
                )
            epoch += 1

    def _raw(self, epoch: int, slot: int, slots: int, report: _Report) -> Iterator[tuple[str, Any]]:
        """(name, raw item) pairs of this reader's share for one pass."""
        source = self.source
        if isinstance(source, ImageFiles | HFImages):
            order = torch.arange(len(source))
            if self.shuffle:
                order = torch.randperm(len(source), generator=_generator(self.seed, epoch))
            for i in order[slot::slots].tolist():
                yield source.item(i)
            return
        shards = list(source.shards)
        if self.shuffle:
            random.Random(f"{self.seed}/{epoch}").shuffle(shards)
        whole = len(shards) >= slots  # enough shards: deal them out; else deal samples
        samples = (
            sample
            for shard in (shards[slot::slots] if whole else shards)
            for sample in source.samples(shard, lambda s, why: report.unreadable(s, why))
        )
        pairs = (
            (sample.name, sample.image)
            for k, sample in enumerate(samples)
            if whole or k % slots == slot
        )
        if self.shuffle and self.shuffle_buffer > 1:
            pairs = _buffer_shuffle(
                pairs, self.shuffle_buffer, random.Random(f"{self.seed}/{epoch}/{slot}")
            )
        yield from pairs


def _decode(raw: Any) -> Image.Image:
    if raw is None:
        raise UnreadableImageError("no image in this item")
    return load_image(raw)


def _generator(*parts: int) -> torch.Generator:
    """A torch generator seeded from a tuple of ints, the same on every run."""
    return torch.Generator().manual_seed(random.Random("/".join(map(str, parts))).getrandbits(63))


def _buffer_shuffle(items: Iterator, size: int, rng: random.Random) -> Iterator:
    """Yield items in a random order using a buffer of `size` (WebDataset-style)."""
    buffer: list = []
    for item in items:
        buffer.append(item)
        if len(buffer) >= size:
            k = rng.randrange(len(buffer))
            buffer[k], buffer[-1] = buffer[-1], buffer[k]
            yield buffer.pop()
    rng.shuffle(buffer)
    yield from buffer
