"""Turn any image file into a model input: decode, honour EXIF orientation, convert any mode
to RGB, crop to the model's square size (ADM-style random crop for training, centre crop for
evaluation) and scale to [-1, 1].

The crops follow guided-diffusion's `random_crop_arr` / `center_crop_arr` (also used by
LlamaGen and the reference): halve with a box filter while the short side is at least twice the
target, resize with bicubic so the short side is the target (centre) or a random length in
[size / max_crop_frac, size / min_crop_frac] (random), then cut a square.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageCms, ImageOps

WHITE = (255, 255, 255)
GREY_MODES = ("1", "L", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")


class UnreadableImageError(ValueError):
    """The bytes are not a decodable image: empty, truncated, corrupt or another format."""


def to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> (3, H, W) float32 in [-1, 1]."""
    pixels = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy())  # (H, W, 3)
    return pixels.permute(2, 0, 1).float().div_(127.5).sub_(1.0)


def load_image(
    source: str | Path | bytes | Image.Image, short_side: int | None = None
) -> Image.Image:
    """Decode a file path, encoded bytes or a PIL image into an upright RGB image.
    Raises UnreadableImageError (naming the reason) for anything that is not a whole image.

    short_side: the short side the caller will resize to (`Preprocess.size`). A grey picture
    is then box-halved while its short side is >= 2 * short_side *before* it becomes RGB: the
    same pixels as halving after (the three channels are equal), a third of the memory.

    Pixel ranges: 8-bit modes are 0..255; 16-bit grey 0..65535; 32-bit integer grey (mode I)
    0..65535 (read as 8-bit when it stays within 0..255); float grey (mode F) is taken as
    0..1 when its maximum is <= 1, else as 0..255 (PIL's own `convert("F")` scale). Values
    outside these ranges (negative, or above 65535 / 255) raise UnreadableImageError rather
    than being clipped into a wrong picture.
    """
    try:
        if isinstance(source, Image.Image):
            return _decoded(source, short_side, own=False)
        if isinstance(source, bytes | bytearray):
            if len(source) == 0:
                raise UnreadableImageError("empty file (0 bytes)")
            return _decoded(Image.open(io.BytesIO(source)), short_side)
        if Path(source).stat().st_size == 0:
            raise UnreadableImageError("empty file (0 bytes)")
        # our own handle, closed on every path: PIL leaves its own open when decoding fails
        with open(source, "rb") as file:
            return _decoded(Image.open(file), short_side)
    except (UnreadableImageError, FileNotFoundError, IsADirectoryError):
        raise
    except Exception as error:  # PIL raises many types (OSError, SyntaxError, struct.error...)
        raise UnreadableImageError(f"{type(error).__name__}: {error}") from error


def load_image_file(path: str | Path, short_side: int | None = None) -> Image.Image:
    """`load_image` for a file a user named: every error names it (missing, a folder,
    unreadable)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"image {path} is a folder, not an image file")
    if not path.is_file():
        raise FileNotFoundError(f"image {path} does not exist")
    try:
        return load_image(path, short_side)
    except UnreadableImageError as error:
        raise UnreadableImageError(f"image {path}: {error}") from error


def _decoded(image: Image.Image, short_side: int | None, own: bool = True) -> Image.Image:
    """Decode, turn upright and convert `image`; `own`: it is ours to change in place (not a
    caller's), which spares a full-size copy."""
    image.load()  # decode now: truncation and corruption surface here, not later
    if own:
        ImageOps.exif_transpose(image, in_place=True)
    else:
        image = ImageOps.exif_transpose(image)
    if short_side is not None and image.mode in GREY_MODES:
        image = _halve_while(_to_grey(image), short_side)
    return to_rgb(image)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB. Transparency is composited over white; 16- and 32-bit grey is
    rescaled (PIL's own conversion would clip it to white); L*a*b* goes through a colour
    transform; CMYK, palette, YCbCr, HSV go through PIL's conversion. Embedded ICC profiles
    are not applied."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info):
        rgba = _unpremultiply(image) if mode in ("RGBa", "La") else image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*WHITE, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    if mode.startswith("I") or mode == "F":
        return _to_grey(image).convert("RGB")
    if mode == "LAB":  # PIL's plain conversion treats L*a*b* as if it were RGB
        return ImageCms.applyTransform(image, _lab_to_srgb())
    return image.convert("RGB")


@lru_cache(maxsize=1)
def _lab_to_srgb() -> ImageCms.ImageCmsTransform:
    lab, srgb = ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB")
    return ImageCms.buildTransform(lab, srgb, "LAB", "RGB")


def _unpremultiply(image: Image.Image) -> Image.Image:
    """Premultiplied-alpha modes (RGBa, La) -> straight RGBA."""
    values = np.asarray(image, np.float32)  # (H, W, 4) for RGBa, (H, W, 2) for La
    colour, alpha = values[..., :-1], values[..., -1:]
    if colour.shape[-1] == 1:
        colour = np.repeat(colour, 3, axis=-1)
    colour = np.where(alpha > 0, colour * 255.0 / np.maximum(alpha, 1.0), 0.0)
    out = np.concatenate([colour, alpha], axis=-1).clip(0, 255).round().astype(np.uint8)
    return Image.fromarray(out, "RGBA")


def _to_grey(image: Image.Image) -> Image.Image:
    """Any grey mode (1, L, I, I;16, F) -> L, high bit depths rescaled (`_to_uint8`)."""
    if image.mode == "L":
        return image
    if image.mode == "1":
        return image.convert("L")
    return Image.fromarray(_to_uint8(np.asarray(image), image.mode), "L")


def _to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """High-bit-depth grey -> uint8. I;16 spans 0..65535; 32-bit I is read as 16-bit data when
    it exceeds 255 (how 16-bit PNG/TIFF often arrive) and as 8-bit otherwise; F spans 0..1
    when its maximum is <= 1, else 0..255. Values outside the range are an error."""
    values = values.astype(np.float64)
    low, top = values.min(initial=0.0), values.max(initial=0.0)
    if mode == "F":
        peak = 1.0 if top <= 1.0 else 255.0
    elif mode.startswith("I;16") or top > 255:
        peak = 65535.0
    else:
        peak = 255.0
    if low < 0 or top > peak or not np.isfinite(values).all():
        expected = "0..1 or 0..255" if mode == "F" else f"0..{peak:.0f}"
        raise UnreadableImageError(
            f"grey mode {mode} values span [{low:g}, {top:g}]: expected {expected}"
        )
    return (values / peak * 255.0).round().astype(np.uint8)


@dataclass
class Preprocess:
    """RGB PIL image -> (3, size, size) float tensor in [-1, 1]."""

    size: int
    train: bool = False  # random crop (and flip, if hflip) instead of the centre crop
    hflip: bool = False  # random horizontal flip when training (the reference used none)
    min_crop_frac: float = 0.8  # training short side <= size / min_crop_frac (ADM: 0.8)
    max_crop_frac: float = 1.0  # training short side >= size / max_crop_frac

    def __post_init__(self) -> None:
        if not isinstance(self.size, int) or self.size < 1:
            raise ValueError(f"Preprocess: size must be a positive int, got {self.size!r}")
        if not 0 < self.min_crop_frac <= self.max_crop_frac <= 1:
            raise ValueError(
                "Preprocess: need 0 < min_crop_frac <= max_crop_frac <= 1, got "
                f"{self.min_crop_frac}, {self.max_crop_frac}"
            )

    def __call__(
        self, image: Image.Image, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        if self.train:
            low = math.ceil(self.size / self.max_crop_frac)
            high = math.ceil(self.size / self.min_crop_frac)
            short = _randint(low, high + 1, generator)
        else:
            short = self.size
        image = _resize_short_side(image, short)
        width, height = image.size
        if self.train:
            x, y = (
                _randint(0, width - self.size + 1, generator),
                _randint(0, height - self.size + 1, generator),
            )
        else:
            x, y = (width - self.size) // 2, (height - self.size) // 2
        image = image.crop((x, y, x + self.size, y + self.size))
        if self.train and self.hflip and _randint(0, 2, generator) == 1:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return to_tensor(image)


def _halve_while(image: Image.Image, short: int) -> Image.Image:
    """Box-halve while the short side is >= 2 * short."""
    while min(image.size) >= 2 * short:
        image = image.resize((image.width // 2, image.height // 2), resample=Image.Resampling.BOX)
    return image


def _resize_short_side(image: Image.Image, short: int) -> Image.Image:
    """Box-halve while the short side is >= 2 * short, then bicubic to exactly `short`."""
    image = _halve_while(image, short)
    scale = short / min(image.size)
    size = (max(short, round(image.width * scale)), max(short, round(image.height * scale)))
    return image.resize(size, resample=Image.Resampling.BICUBIC)


def _randint(low: int, high: int, generator: torch.Generator | None) -> int:
    return int(torch.randint(low, high, (), generator=generator))
