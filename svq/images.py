"""Tensor <-> picture helpers shared by the demo, scripts and eval."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from PIL import Image


def check_images(images: torch.Tensor, channels: int, size: int) -> None:
    """Raise ValueError unless images is a floating (B, channels, size, size) batch."""
    if images.ndim != 4 or tuple(images.shape[1:]) != (channels, size, size):
        raise ValueError(
            f"expected images of shape (B, {channels}, {size}, {size}) in [-1, 1], got "
            f"{tuple(images.shape)}"
        )
    if not images.is_floating_point():
        raise ValueError(f"expected floating-point images in [-1, 1], got {images.dtype}")


PIXEL_LIMIT = 1.5  # |value| beyond which a batch is not a picture in [-1, 1]


def check_pixel_range(images: torch.Tensor) -> None:
    """Raise ValueError when images are clearly not in [-1, 1] (beyond +-PIXEL_LIMIT)."""
    if images.numel() == 0:
        return
    low, high = float(images.min()), float(images.max())
    if low < -PIXEL_LIMIT or high > PIXEL_LIMIT or low != low or high != high:
        raise ValueError(
            f"images span [{low:g}, {high:g}]: expected pixels in [-1, 1] (from 0..255: "
            "x / 127.5 - 1)"
        )


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] (unbounded model output allowed) -> (B, H, W, 3) uint8.
    Clamps here, and only here: model outputs stay unbounded."""
    pixels = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round()
    return rearrange(pixels.to(torch.uint8), "b c h w -> b h w c").numpy()


def save_grid(rows: list[torch.Tensor], path: str | Path, pad: int = 2) -> Path:
    """Write a grid PNG: each row a (B, 3, H, W) batch in [-1, 1], all of one shape.
    E.g. rows = [originals, reconstructions] puts them side by side, one column per image."""
    if not rows or any(r.shape != rows[0].shape for r in rows):
        raise ValueError(f"rows must be non-empty and of one shape, got {[r.shape for r in rows]}")
    b, _, h, w = rows[0].shape
    canvas = np.full((len(rows) * (h + pad) + pad, b * (w + pad) + pad, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, tile in enumerate(to_uint8(row)):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            canvas[y : y + h, x : x + w] = tile
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(canvas).save(path)
    return path


def save_image(image: torch.Tensor, path: str | Path) -> Path:
    """Write one (3, H, W) picture in [-1, 1] as a PNG (or any format PIL infers from path)."""
    if image.ndim != 3:
        raise ValueError(f"expected one picture (3, H, W), got shape {tuple(image.shape)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_uint8(image[None])[0]).save(path)
    return path


def upscale_nearest(image: Image.Image, min_side: int = 128) -> Image.Image:
    """A view of a small picture for a screen: each pixel repeated (nearest neighbour) by the
    smallest whole factor that makes both sides >= min_side; pictures that big are returned
    as they are. E.g. 32 x 32 -> 128 x 128 (factor 4), 64 x 64 -> 128 x 128 (factor 2)."""
    factor = -(-min_side // min(image.size))  # ceil
    if factor <= 1:
        return image
    return image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)
