"""Draw a chat-world picture from its record, at any square size, with PIL on the CPU.

`render(record, size)` is a pure function of the record: the layout seed drives every random
placement, so the same record gives the same pixels on every run and machine.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch
from PIL import Image

from . import palette as pal
from .canvas import Painter
from .figure import draw_figure, draw_water_front
from .preprocess import to_tensor
from .scenery import draw_ground, draw_particles, draw_place, draw_sky, sky_gradient
from .schema import WorldRecord

MIN_SIZE = 16
# Small pictures are drawn at >= 128 px and box-downsampled: 1-pixel outlines and glasses
# frames then average into the result instead of vanishing or aliasing.
SUPERSAMPLE_TO = 128
FEET_Y = 0.94  # where a standing character's feet are, fraction of the side
SWIM_FEET_Y = 1.02  # a swimmer stands lower: the water line falls at the chest
WATERLINE = 0.42  # fraction of the character's height above the feet


def render(record: WorldRecord, size: int) -> Image.Image:
    """The picture of `record` as a size x size RGB PIL image."""
    if not isinstance(size, int) or size < MIN_SIZE:
        raise ValueError(f"render: size must be an int >= {MIN_SIZE}, got {size!r}")
    factor = max(1, -(-SUPERSAMPLE_TO // size))  # ceil
    work = size * factor
    scene, layout = record.scene, record.layout
    image = sky_gradient(scene.time_of_day, scene.season, work).copy()
    rng = random.Random(layout.seed)
    draw_sky(Painter(image), scene, rng)
    land = Painter(image, pal.SCENE_TINT[scene.time_of_day])
    draw_place(land, scene, rng)
    draw_ground(land, scene, rng, layout.x)
    draw_particles(land, scene, rng)
    swimming = scene.activity == "swimming"
    feet = SWIM_FEET_Y if swimming else FEET_Y
    figure = Painter(image, pal.FIGURE_TINT[scene.time_of_day], pal.RIM[scene.time_of_day])
    draw_figure(figure, record.identity, scene, layout.x, feet, layout.scale, rng)
    if swimming:
        draw_water_front(land, scene, layout.x, feet - WATERLINE * layout.scale, layout.scale)
    return image.reduce(factor) if factor > 1 else image


def render_tensor(records: Sequence[WorldRecord], size: int) -> torch.Tensor:
    """A batch of pictures (B, 3, size, size) in [-1, 1]."""
    if len(records) == 0:
        raise ValueError("render_tensor: no records")
    return torch.stack([to_tensor(render(record, size)) for record in records])
