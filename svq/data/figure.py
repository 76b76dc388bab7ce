"""The character: a big-headed ("chibi") figure, so that face, hair, hat and glasses stay a
dozen pixels wide at 64x64, with a pose and props for each activity.

Coordinates here are relative to the feet: `Figure.at(dx, dy)` is dx figure-heights to the
right of the feet and dy figure-heights above them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from . import palette as pal
from .canvas import Painter, Point
from .palette import RGB
from .schema import Identity, Scene

ARM = 0.075  # sleeve width, in figure heights
HEAD_Y, HEAD_RX, HEAD_RY = 0.8, 0.16, 0.17


@dataclass
class Figure:
    p: Painter
    x: float  # feet, unit coordinates
    y: float
    h: float  # height, unit coordinates

    def at(self, dx: float, dy: float) -> Point:
        return (self.x + dx * self.h, self.y - dy * self.h)

    # The Painter's shapes, in figure coordinates (sizes in figure heights).
    def ellipse(
        self, dx: float, dy: float, rx: float, ry: float, fill: RGB, outline: RGB | None = None
    ) -> None:
        x, y = self.at(dx, dy)
        self.p.ellipse(x, y, rx * self.h, ry * self.h, fill, outline)

    def chord(
        self,
        dx: float,
        dy: float,
        rx: float,
        ry: float,
        start: float,
        end: float,
        fill: RGB,
        outline: RGB | None = None,
    ) -> None:
        x, y = self.at(dx, dy)
        self.p.chord(x, y, rx * self.h, ry * self.h, start, end, fill, outline)

    def polygon(self, points: list[Point], fill: RGB, outline: RGB | None = None) -> None:
        self.p.polygon([self.at(dx, dy) for dx, dy in points], fill, outline)

    def line(self, points: list[Point], fill: RGB, width: float) -> None:
        self.p.line([self.at(dx, dy) for dx, dy in points], fill, width * self.h)


def draw_figure(
    p: Painter, identity: Identity, scene: Scene, x: float, y: float, h: float, rng: random.Random
) -> None:
    """Draw the character with feet at (x, y) and height h (unit coordinates)."""
    f = Figure(p, x, y, h)
    activity = scene.activity
    skin, shirt = pal.SKIN[identity.skin_tone], pal.SHIRT[identity.shirt_colour]
    hands = _hands(activity)
    if activity == "hiking":  # a big backpack: it shows above and beside the shoulders
        f.polygon([(-0.27, 0.3), (-0.27, 0.7), (0.27, 0.7), (0.27, 0.3)], pal.BACKPACK, pal.OUTLINE)
    if activity == "flying_kite":
        _kite(f, hands[1], rng)
    _hair_back(f, identity)
    if activity == "skiing":
        for dy in (0.0, -0.04):
            f.line([(-0.5, dy + 0.02), (0.5, dy)], pal.SKIS, 0.045)
    # Legs and shoes.
    for side in (-1, 1):
        f.polygon(
            [(side * 0.02, 0.34), (side * 0.12, 0.34), (side * 0.11, 0.04), (side * 0.03, 0.04)],
            pal.TROUSERS,
            pal.OUTLINE,
        )
        f.ellipse(side * 0.08, 0.03, 0.07, 0.035, pal.SHOES)
    # Sleeves go behind the shirt so the body outline stays clean.
    for side, hand in zip((-1, 1), hands, strict=True):
        f.line([(side * 0.13, 0.58), hand], pal.OUTLINE, ARM + 0.03)
        f.line([(side * 0.13, 0.58), hand], shirt, ARM)
        f.ellipse(*hand, 0.045, 0.045, skin, pal.OUTLINE)
    f.polygon([(-0.16, 0.62), (0.16, 0.62), (0.14, 0.32), (-0.14, 0.32)], shirt, pal.OUTLINE)
    if activity == "hiking":  # the backpack's straps
        for side in (-1, 1):
            f.line([(side * 0.1, 0.62), (side * 0.11, 0.36)], pal.BACKPACK, 0.04)
    if identity.hair_style == "long":  # long hair falls over the shoulders, in front
        for side in (-1, 1):
            f.polygon(
                [(side * 0.1, HEAD_Y), (side * 0.24, HEAD_Y), (side * 0.25, 0.44),
                 (side * 0.13, 0.47)],
                pal.HAIR[identity.hair_colour],
                pal.OUTLINE,
            )  # fmt: skip
    f.ellipse(0.0, HEAD_Y, HEAD_RX, HEAD_RY, skin, pal.OUTLINE)
    _hair_front(f, identity)
    _face(f, identity)
    _hat(f, identity.hat)
    if activity == "hiking":
        f.line([(0.27, 0.55), (0.3, 0.0)], pal.STICK, 0.035)
    elif activity == "skiing":
        for side, hand in zip((-1, 1), hands, strict=True):
            f.line([hand, (side * 0.4, -0.01)], pal.POLES, 0.025)
    elif activity == "taking_photos":
        hx, hy = hands[1]
        f.polygon(
            [
                (hx - 0.09, hy - 0.06),
                (hx + 0.09, hy - 0.06),
                (hx + 0.09, hy + 0.07),
                (hx - 0.09, hy + 0.07),
            ],
            pal.CAMERA,
        )
        f.ellipse(hx, hy, 0.045, 0.045, pal.CAMERA_LENS, pal.CAMERA)
        f.polygon(
            [
                (hx - 0.06, hy + 0.07),
                (hx - 0.01, hy + 0.07),
                (hx - 0.01, hy + 0.1),
                (hx - 0.06, hy + 0.1),
            ],
            pal.CAMERA,
        )


def _hands(activity: str) -> tuple[Point, Point]:
    """Where the left and right hands are for each activity's pose."""
    return {
        "hiking": ((-0.2, 0.33), (0.27, 0.42)),
        "skiing": ((-0.27, 0.38), (0.27, 0.38)),
        "swimming": ((-0.3, 0.88), (0.3, 0.88)),
        "taking_photos": ((-0.2, 0.33), (0.33, 0.72)),
        "flying_kite": ((-0.2, 0.33), (0.24, 0.95)),
    }[activity]


def _kite(f: Figure, hand: Point, rng: random.Random) -> None:
    """A diamond kite high in the sky on the roomier side, its string to the raised hand."""
    side = 1 if f.x < 0.5 else -1
    kx = min(0.9, max(0.1, f.x + side * rng.uniform(0.2, 0.3)))
    ky = rng.uniform(0.1, 0.2)
    r = 0.07
    f.p.line([f.at(*hand), (kx, ky + r)], pal.KITE_STRING, 0.006)
    f.p.line([(kx, ky + r), (kx - 0.03, ky + 2 * r), (kx + 0.02, ky + 2.6 * r)], pal.KITE[1], 0.01)
    f.p.polygon(
        [(kx, ky - r), (kx + r * 0.7, ky), (kx, ky + r), (kx - r * 0.7, ky)],
        pal.KITE[0],
        pal.OUTLINE,
    )
    f.p.polygon([(kx, ky - r), (kx + r * 0.7, ky), (kx, ky)], pal.KITE[1])


def _hair_back(f: Figure, identity: Identity) -> None:
    colour, style = pal.HAIR[identity.hair_colour], identity.hair_style
    if style == "long":  # falls past the shoulders on both sides of the face
        f.polygon([(-0.22, 0.85), (0.22, 0.85), (0.26, 0.44), (-0.26, 0.44)], colour, pal.OUTLINE)
    elif style == "curly":  # a wide round mass of curls
        f.ellipse(0.0, HEAD_Y + 0.02, 0.28, 0.24, colour, pal.OUTLINE)
    elif style == "ponytail":  # a tail sticking out behind, to the figure's left
        f.ellipse(-0.27, 0.74, 0.1, 0.17, colour, pal.OUTLINE)


def _hair_front(f: Figure, identity: Identity) -> None:
    colour, style = pal.HAIR[identity.hair_colour], identity.hair_style
    # The crown, and sideburns that still show the colour under any hat.
    f.chord(0.0, HEAD_Y + 0.01, HEAD_RX + 0.015, HEAD_RY + 0.015, 172, 368, colour)
    reach = 0.06 if style == "short" else 0.1
    for side in (-1, 1):
        f.polygon(
            [
                (side * 0.09, HEAD_Y + 0.05),
                (side * (HEAD_RX + 0.02), HEAD_Y + 0.05),
                (side * (HEAD_RX + 0.01), HEAD_Y - reach),
                (side * 0.13, HEAD_Y - reach),
            ],
            colour,
        )
    if style == "ponytail":
        f.ellipse(-0.16, 0.83, 0.04, 0.04, pal.SHIRT["red"])  # the hair tie


def _face(f: Figure, identity: Identity) -> None:
    eye_y = HEAD_Y - 0.03
    if identity.glasses == "glasses":  # clear lenses in thick frames: the eyes show through
        f.line([(-0.04, eye_y), (0.04, eye_y)], pal.OUTLINE, 0.025)
        for side in (-1, 1):
            f.ellipse(side * 0.08, eye_y, 0.07, 0.06, pal.OUTLINE)
            f.ellipse(side * 0.08, eye_y, 0.048, 0.04, pal.LENS)
            f.ellipse(side * 0.08, eye_y, 0.015, 0.015, pal.EYES)
    elif identity.glasses == "sunglasses":
        f.line([(-0.04, eye_y), (0.04, eye_y)], pal.SHADES, 0.025)
        for side in (-1, 1):
            f.ellipse(side * 0.08, eye_y, 0.075, 0.058, pal.SHADES)
            f.ellipse(side * 0.08 - 0.025, eye_y + 0.02, 0.022, 0.016, pal.GLINT)
    else:
        for side in (-1, 1):
            f.ellipse(side * 0.065, eye_y, 0.022, 0.024, pal.EYES)
    f.line([(-0.035, HEAD_Y - 0.1), (0.035, HEAD_Y - 0.1)], pal.OUTLINE, 0.015)  # mouth


def _hat(f: Figure, hat: str) -> None:
    if hat == "cap":  # a teal dome with a brim pointing right
        f.chord(0.0, HEAD_Y + 0.09, HEAD_RX + 0.01, HEAD_RY, 180, 360, pal.CAP, pal.OUTLINE)
        f.polygon(
            [
                (0.0, HEAD_Y + 0.11),
                (0.33, HEAD_Y + 0.1),
                (0.33, HEAD_Y + 0.07),
                (0.0, HEAD_Y + 0.06),
            ],
            pal.CAP,
            pal.OUTLINE,
        )
    elif hat == "beanie":  # a tall pink knit with a white pompom
        f.chord(
            0.0, HEAD_Y + 0.1, HEAD_RX + 0.02, HEAD_RY + 0.05, 180, 360, pal.BEANIE, pal.OUTLINE
        )
        f.polygon(
            [
                (-0.19, HEAD_Y + 0.11),
                (0.19, HEAD_Y + 0.11),
                (0.19, HEAD_Y + 0.06),
                (-0.19, HEAD_Y + 0.06),
            ],
            pal.BEANIE,
            pal.OUTLINE,
        )
        f.ellipse(0.0, HEAD_Y + 0.32, 0.06, 0.06, pal.POMPOM, pal.OUTLINE)


def draw_water_front(p: Painter, scene: Scene, x: float, waterline: float, h: float) -> None:
    """For swimming: the water in front of the body, up to the chest, with a ripple ring."""
    water = pal.WATER_FOREGROUND[scene.place]
    p.rect(0.0, waterline, 1.0, 1.0, water)
    p.ellipse(x, waterline, 0.3 * h, 0.04 * h, pal.mix(water, (255, 255, 255), 0.45))
    p.ellipse(x, waterline + 0.01 * h, 0.22 * h, 0.025 * h, water)
