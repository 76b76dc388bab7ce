"""The pictures the tokenizer stages train and validate on (stage 1, stage 2's fine-tune, the
spatial VQ), read from their `ImageDataOptions` (svq/train/options.py)."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader

from svq.data import ChatWorldDataset, ImageDataset, ImageStream, TarShards, open_source


def train_loader(o: Any, size: int, labels: bool = False) -> tuple[DataLoader, bool]:
    """The training loader and whether accelerate should shard it (map-style sources) or not
    (streams, which shard themselves over ranks and workers). With `labels` (the world only)
    the batches are WorldItem(image, labels)."""
    generator = torch.Generator().manual_seed(o.seed)  # never touches the global RNG
    common_args = {
        "batch_size": o.per_device_train_batch_size,
        "num_workers": o.dataloader_num_workers,
        "drop_last": True,
        "generator": generator,
    }
    if o.train_data == "world":  # every index a new picture: read in order, no shuffling
        dataset = ChatWorldDataset(size, o.world_length, o.world_seed, "train", labels=labels)
        return DataLoader(dataset, shuffle=False, **common_args), True
    source = open_source(o.train_data, o.dataset_split)
    if isinstance(source, TarShards):
        stream = ImageStream(
            source, size, train=o.random_crop, hflip=o.hflip, shuffle=True, seed=o.seed, repeat=True
        )
        return DataLoader(stream, **common_args), False
    dataset = ImageDataset(source, size, train=o.random_crop, hflip=o.hflip)
    return DataLoader(dataset, shuffle=True, **common_args), True


def validation_images(o: Any, size: int, need: int = 1) -> torch.Tensor | None:
    """The held-out images (num_val_images, 3, size, size), the same on every run; at least
    `need` of them. (Also used by svq/train/vq.py, whose options share these data fields.)"""
    if o.validation_data is None:
        return None
    if o.validation_data == "world":
        dataset = ChatWorldDataset(size, o.num_val_images, o.world_seed, "validation")
    else:
        dataset = ImageDataset(open_source(o.validation_data, "validation"), size, train=False)
    count = min(o.num_val_images, len(dataset))
    if count < need:
        raise ValueError(f"{o.validation_data} has {count} images, fewer than the {need} needed")
    return torch.stack([dataset[i] for i in range(count)])
