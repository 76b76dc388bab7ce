"""The scene behind the character: sky, place, season and light.

Each attribute owns a large area so that it reads at 64x64: the time of day owns the sky (and
the light on everything), the place owns the middle band (granite peaks, a crater lake under
a snowy rim, the sea, a skyline), the season owns the ground, the trees and what falls through
the air, and the sea of clouds fills the valley below Huangshan's peaks. Counts and positions
(clouds, stars, peaks, trees, buildings) come from the layout's random stream: nuisance.
"""

from __future__ import annotations

import random
from functools import lru_cache

import numpy as np
from PIL import Image

from . import palette as pal
from .canvas import Painter
from .schema import Scene

GROUND_Y = 0.78  # top of the foreground, where the middle band ends


@lru_cache(maxsize=64)
def sky_gradient(time_of_day: str, season: str, size: int) -> Image.Image:
    """The sky for a time of day (and season): a vertical gradient, cached per size."""
    top, bottom = pal.SKY[time_of_day]
    if time_of_day == "day" and season == "winter":
        top, bottom = pal.WINTER_DAY_SKY
    t = np.linspace(0.0, 1.0, size, dtype=np.float32)[:, None, None]  # (S, 1, 1)
    column = np.asarray(top, np.float32) * (1 - t) + np.asarray(bottom, np.float32) * t
    pixels = np.broadcast_to(column, (size, size, 3)).round().astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(pixels), "RGB")


def draw_sky(sky: Painter, scene: Scene, rng: random.Random) -> None:
    """Sun, moon, stars and clouds. `sky` paints without the scene tint: the sky is the light."""
    time = scene.time_of_day
    if time == "day":
        sky.ellipse(rng.uniform(0.1, 0.9), rng.uniform(0.08, 0.16), 0.06, 0.06, pal.SUN["day"])
    elif time == "sunset":
        sky.ellipse(rng.uniform(0.2, 0.8), rng.uniform(0.4, 0.5), 0.1, 0.1, pal.SUN["sunset"])
    else:
        for _ in range(rng.randint(12, 20)):
            sky.dot(rng.uniform(0.0, 1.0), rng.uniform(0.0, 0.45), 0.006, pal.STAR)
        mx, my = rng.uniform(0.15, 0.85), rng.uniform(0.08, 0.18)
        sky.ellipse(mx, my, 0.055, 0.055, pal.MOON)
        sky.ellipse(mx + 0.025, my - 0.012, 0.048, 0.048, pal.SKY["night"][0])  # crescent
    for _ in range(rng.randint(0, 3)):
        draw_cloud(
            sky,
            rng.uniform(0.05, 0.95),
            rng.uniform(0.08, 0.3),
            rng.uniform(0.05, 0.09),
            pal.CLOUD[time],
        )


def draw_cloud(p: Painter, x: float, y: float, r: float, colour: pal.RGB) -> None:
    for dx, dy, k in ((-1.0, 0.2, 0.7), (0.0, 0.0, 1.0), (1.0, 0.2, 0.75), (0.5, 0.35, 0.7)):
        p.ellipse(x + dx * r, y + dy * r, r * k * 1.1, r * k * 0.7, colour)


def draw_place(p: Painter, scene: Scene, rng: random.Random) -> None:
    """The middle band, from the horizon down to GROUND_Y."""
    draw = {"huangshan": _huangshan, "changbai": _changbai, "beach": _beach, "city": _city}
    draw[scene.place](p, scene, rng)


def _huangshan(p: Painter, scene: Scene, rng: random.Random) -> None:
    # Tall granite pillars with rounded tops and pines clinging to them; the valley below is
    # forest, or a white sea of clouds lit brighter than the land (clouds glow at night).
    winter = scene.season == "winter"
    for layer, (colour, count) in enumerate(zip(pal.GRANITE, (4, 3), strict=True)):
        for i in range(count):
            cx = (i + rng.uniform(0.2, 0.8)) / count
            top = rng.uniform(0.16, 0.3) + 0.1 * layer
            half = rng.uniform(0.05, 0.085) + 0.015 * layer
            _peak(p, cx, top, half, colour, winter)
            if rng.random() < 0.6:
                _pine(p, cx + rng.uniform(-0.3, 0.3) * half, top + 0.02, 0.045, winter)
    if scene.sea_of_clouds == "yes":
        clouds = Painter(p.image, pal.SEA_OF_CLOUDS_TINT[scene.time_of_day])
        base = rng.uniform(0.56, 0.6)
        clouds.rect(0.0, base, 1.0, GROUND_Y + 0.02, pal.SEA_OF_CLOUDS)
        x = -0.05
        while x < 1.05:
            r = rng.uniform(0.06, 0.1)
            clouds.ellipse(x, base, r, r * 0.55, pal.SEA_OF_CLOUDS)
            x += r * 1.3
    else:
        p.rect(0.0, 0.66, 1.0, GROUND_Y + 0.02, pal.mix(pal.PINE, pal.GROUND[scene.season], 0.4))


def _peak(p: Painter, cx: float, top: float, half: float, colour: pal.RGB, winter: bool) -> None:
    """A granite pillar: steep sides, a rounded top, a shaded right flank and a crack."""
    shade = pal.mix(colour, (40, 40, 45), 0.3)
    left, right = cx - half, cx + half
    p.polygon(
        [
            (left, GROUND_Y),
            (cx - half * 0.8, top + half),
            (cx + half * 0.8, top + half),
            (right, GROUND_Y),
        ],
        colour,
    )
    p.ellipse(cx, top + half, half * 0.8, half, colour)
    p.polygon(
        [
            (cx + half * 0.3, top + half * 1.5),
            (cx + half * 0.8, top + half),
            (right, GROUND_Y),
            (cx + half * 0.4, GROUND_Y),
        ],
        shade,
    )
    p.line([(cx - half * 0.3, top + half * 1.6), (cx - half * 0.2, GROUND_Y)], shade, 0.006)
    if winter:
        p.chord(cx, top + half, half * 0.8, half, 180, 360, pal.FOLIAGE["winter"])


def _pine(p: Painter, x: float, y: float, r: float, winter: bool) -> None:
    """A Huangshan pine: a short trunk under flat, layered crowns."""
    p.line([(x, y + r * 1.6), (x, y)], pal.TRUNK, r * 0.3)
    for k, dy in enumerate((0.0, 0.6)):
        w = r * (1.4 - 0.4 * k)
        p.ellipse(x, y + dy * r, w, r * 0.35, pal.PINE)
        if winter:
            p.chord(x, y + dy * r, w, r * 0.35, 180, 360, pal.FOLIAGE["winter"])


def _changbai(p: Painter, scene: Scene, rng: random.Random) -> None:
    # The crater rim: jagged dark peaks capped with snow (all year, more in winter), and the
    # turquoise crater lake filling the caldera in front of them.
    rim = 0.5 + rng.uniform(-0.03, 0.03)
    points = [(0.0, 0.66), (0.0, rim)]
    x = 0.0
    while x < 1.0:
        x = min(1.0, x + rng.uniform(0.1, 0.18))
        points.append((x - 0.05, rim - rng.uniform(0.08, 0.18)))
        points.append((x, rim + rng.uniform(-0.02, 0.03)))
    points.append((1.0, 0.66))
    p.polygon(points, pal.VOLCANO)
    snow_line = rim - (0.0 if scene.season == "winter" else 0.07)
    caps = [(x, min(y, snow_line)) for x, y in points[1:-1]]
    p.polygon([(0.0, snow_line), *caps, (1.0, snow_line)], pal.FOLIAGE["winter"])
    p.ellipse(0.5, 0.7, 0.62, 0.09, pal.CRATER_LAKE)


def _beach(p: Painter, scene: Scene, rng: random.Random) -> None:
    sea = pal.WINTER_SEA if scene.season == "winter" else pal.SEA
    p.rect(0.0, 0.55, 1.0, GROUND_Y + 0.02, sea)
    # A headland on one side wears the season's colours.
    side = rng.random() < 0.5
    x0 = 0.0 if side else 1.0
    p.ellipse(x0, 0.58, rng.uniform(0.2, 0.3), 0.08, pal.GROUND[scene.season])
    for i in range(3):
        y = 0.62 + 0.05 * i + rng.uniform(-0.01, 0.01)
        p.line([(0.1 + 0.2 * i, y), (0.3 + 0.2 * i, y)], pal.mix(sea, (255, 255, 255), 0.5), 0.008)


def _city(p: Painter, scene: Scene, rng: random.Random) -> None:
    # A skyline of blocks with windows (lit at night), and a verge of the season's colour.
    x = -rng.uniform(0.0, 0.08)
    window = pal.WINDOW[scene.time_of_day]
    while x < 1.0:
        w = rng.uniform(0.12, 0.2)
        top = rng.uniform(0.25, 0.5)
        p.rect(x, top, x + w - 0.01, GROUND_Y, rng.choice(pal.BUILDINGS))
        if scene.season == "winter":
            p.rect(x, top, x + w - 0.01, top + 0.02, pal.FOLIAGE["winter"])
        for wy in np.arange(top + 0.04, GROUND_Y - 0.06, 0.07):
            for wx in np.arange(x + 0.025, x + w - 0.04, 0.05):
                p.rect(wx, wy, wx + 0.025, wy + 0.035, window)
        x += w
    p.rect(0.0, GROUND_Y - 0.05, 1.0, GROUND_Y + 0.02, pal.GROUND[scene.season])


def draw_ground(p: Painter, scene: Scene, rng: random.Random, figure_x: float) -> None:
    """The foreground (from GROUND_Y down) and the season's trees on the far side from the
    character. For swimming the foreground is water (sea or crater lake)."""
    season = scene.season
    if scene.activity == "swimming":
        water = pal.WATER_FOREGROUND[scene.place]
        p.rect(0.0, GROUND_Y - 0.04, 1.0, 1.0, water)
        for _ in range(4):
            x, y = rng.uniform(0.0, 0.9), rng.uniform(GROUND_Y, 0.98)
            p.line([(x, y), (x + 0.1, y)], pal.mix(water, (255, 255, 255), 0.45), 0.01)
    elif scene.place == "beach":
        p.rect(0.0, GROUND_Y, 1.0, 1.0, pal.WINTER_SAND if season == "winter" else pal.SAND)
        # The tide line and the season's grass on the dune.
        p.rect(0.0, 0.9, 1.0, 1.0, pal.mix(pal.GROUND[season], pal.SAND, 0.15))
    elif scene.place == "city":
        p.rect(0.0, GROUND_Y, 1.0, 0.88, pal.PAVEMENT)
        p.rect(0.0, 0.88, 1.0, 1.0, pal.GROUND[season])
    else:
        p.polygon(
            [
                (0.0, GROUND_Y + 0.02),
                (0.5, GROUND_Y - 0.02),
                (1.0, GROUND_Y + 0.03),
                (1.0, 1.0),
                (0.0, 1.0),
            ],
            pal.GROUND[season],
        )
        if scene.place == "huangshan":  # granite boulders on the ledge
            for _ in range(2):
                bx = rng.uniform(0.0, 1.0)
                p.ellipse(bx, rng.uniform(0.86, 0.97), 0.07, 0.035, pal.GRANITE[1])
    far = (0.06, 0.34) if figure_x > 0.5 else (0.66, 0.94)
    for _ in range(rng.randint(1, 2)):
        _tree(
            p, rng.uniform(*far), GROUND_Y + rng.uniform(0.02, 0.08), rng.uniform(0.2, 0.28), season
        )


def _tree(p: Painter, x: float, base: float, height: float, season: str) -> None:
    """A broadleaf tree: blossom, green, orange, or bare branches under snow."""
    p.line([(x, base), (x, base - height * 0.55)], pal.TRUNK, height * 0.12)
    cy, r = base - height * 0.68, height * 0.32
    if season == "winter":
        for dx in (-1, 1):
            p.line(
                [(x, base - height * 0.4), (x + dx * r * 0.8, cy - r * 0.5)],
                pal.TRUNK,
                height * 0.06,
            )
        p.ellipse(x, cy - r * 0.1, r * 0.9, r * 0.55, pal.FOLIAGE["winter"], pal.TRUNK)
    else:
        if season == "spring":
            p.ellipse(x, cy, r, r * 0.9, pal.GROUND["spring"])
            p.ellipse(x, cy - r * 0.1, r * 0.8, r * 0.7, pal.FOLIAGE["spring"])
        else:
            p.ellipse(x, cy, r, r * 0.9, pal.FOLIAGE[season])


def draw_particles(p: Painter, scene: Scene, rng: random.Random) -> None:
    """Snowflakes in winter, petals in spring, leaves in autumn; none in summer."""
    colour = pal.PARTICLE[scene.season]
    if colour is None:
        return
    count = 30 if scene.season == "winter" else 14
    for _ in range(count):
        p.dot(rng.uniform(0.0, 1.0), rng.uniform(0.0, 1.0), 0.011, colour)
