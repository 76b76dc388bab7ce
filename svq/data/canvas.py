"""A thin drawing layer over PIL.ImageDraw in unit coordinates: (0, 0) is the top-left corner,
(1, 1) the bottom-right, so one drawing routine serves every image size."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw

from .palette import RGB, tinted

Point = tuple[float, float]


class Painter:
    """Draws on a square RGB image; every fill colour is multiplied by `tint` (the light).
    With `rim`, every outline is drawn in that colour instead (untinted): a rim light."""

    def __init__(
        self,
        image: Image.Image,
        tint: tuple[float, float, float] = (1.0, 1.0, 1.0),
        rim: RGB | None = None,
    ):
        self.image = image
        self.draw = ImageDraw.Draw(image)
        self.side = image.width
        self.tint = tint
        self.rim = rim
        # Outlines are about 1 px at 64 px output, thicker at larger sizes.
        self.outline_width = max(1, round(self.side / 128))

    def colour(self, colour: RGB) -> RGB:
        return tinted(colour, self.tint)

    def _xy(self, points: Sequence[Point]) -> list[tuple[float, float]]:
        s = self.side
        return [(x * s, y * s) for x, y in points]

    def _box(self, cx: float, cy: float, rx: float, ry: float) -> tuple[float, ...]:
        s = self.side
        return ((cx - rx) * s, (cy - ry) * s, (cx + rx) * s, (cy + ry) * s)

    def _outline(self, outline: RGB | None) -> dict:
        if outline is None:
            return {}
        colour = self.rim if self.rim is not None else self.colour(outline)
        return {"outline": colour, "width": self.outline_width}

    def ellipse(
        self, cx: float, cy: float, rx: float, ry: float, fill: RGB, outline: RGB | None = None
    ) -> None:
        self.draw.ellipse(
            self._box(cx, cy, rx, ry), fill=self.colour(fill), **self._outline(outline)
        )

    def chord(
        self,
        cx: float,
        cy: float,
        rx: float,
        ry: float,
        start: float,
        end: float,
        fill: RGB,
        outline: RGB | None = None,
    ) -> None:
        """The part of an ellipse cut off by the chord from angle `start` to `end` (degrees,
        clockwise from 3 o'clock, as in PIL)."""
        self.draw.chord(
            self._box(cx, cy, rx, ry), start, end, fill=self.colour(fill), **self._outline(outline)
        )

    def polygon(self, points: Sequence[Point], fill: RGB, outline: RGB | None = None) -> None:
        self.draw.polygon(self._xy(points), fill=self.colour(fill), **self._outline(outline))

    def rect(
        self, x0: float, y0: float, x1: float, y1: float, fill: RGB, outline: RGB | None = None
    ) -> None:
        s = self.side
        box = (x0 * s, y0 * s, x1 * s - 1, y1 * s - 1)
        self.draw.rectangle(box, fill=self.colour(fill), **self._outline(outline))

    def line(self, points: Sequence[Point], fill: RGB, width: float) -> None:
        """A polyline `width` wide (unit coordinates; never thinner than one pixel)."""
        w = max(1, round(width * self.side))
        self.draw.line(self._xy(points), fill=self.colour(fill), width=w, joint="curve")

    def dot(self, x: float, y: float, radius: float, fill: RGB) -> None:
        """A small disc, at least one pixel across."""
        r = max(radius * self.side, 0.5)
        s = self.side
        self.draw.ellipse((x * s - r, y * s - r, x * s + r, y * s + r), fill=self.colour(fill))
