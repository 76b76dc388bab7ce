"""Colours of the chat world, as data. Every attribute value gets a colour (or a shape in
figure.py) chosen to stay distinct from its siblings at 64x64 under every time of day."""

from __future__ import annotations

RGB = tuple[int, int, int]

HAIR: dict[str, RGB] = {
    "black": (25, 22, 25),
    "brown": (120, 70, 30),
    "blonde": (245, 210, 90),
    "red": (205, 45, 25),
    "white": (245, 245, 245),
    "blue": (40, 110, 235),
}
SKIN: dict[str, RGB] = {  # evenly spaced in brightness, so night light cannot merge two
    "light": (255, 228, 205),
    "medium": (222, 162, 108),
    "tan": (160, 100, 58),
    "dark": (88, 52, 30),
}
SHIRT: dict[str, RGB] = {
    "red": (220, 30, 40),
    "yellow": (255, 215, 0),
    "green": (30, 160, 60),
    "blue": (30, 70, 210),
    "purple": (140, 50, 180),
    "white": (250, 250, 250),
}
# Hats differ in shape (a cap has a brim, a beanie a pompom) and colour (neither is a hair colour).
CAP: RGB = (0, 130, 130)
BEANIE: RGB = (235, 70, 160)
POMPOM: RGB = (255, 255, 255)
TROUSERS: RGB = (55, 60, 85)
SHOES: RGB = (40, 30, 30)
OUTLINE: RGB = (20, 20, 25)
EYES: RGB = (20, 20, 20)
LENS: RGB = (205, 235, 255)
SHADES: RGB = (10, 10, 10)
GLINT: RGB = (210, 225, 255)  # the reflection that tells sunglasses from a dark face
BACKPACK: RGB = (95, 105, 40)  # olive: no hair colour is near it
STICK: RGB = (110, 75, 40)
SKIS: RGB = (240, 120, 0)
POLES: RGB = (60, 60, 60)
CAMERA: RGB = (15, 15, 15)
CAMERA_LENS: RGB = (150, 160, 175)
KITE: tuple[RGB, RGB] = ((255, 40, 60), (255, 220, 0))
KITE_STRING: RGB = (240, 240, 240)

# Sky gradient (top, bottom) by time of day; winter pales the day sky.
SKY: dict[str, tuple[RGB, RGB]] = {
    "day": ((60, 130, 230), (170, 210, 250)),
    "sunset": ((120, 60, 150), (255, 150, 60)),
    "night": ((5, 8, 30), (30, 40, 90)),
}
WINTER_DAY_SKY: tuple[RGB, RGB] = ((140, 165, 195), (210, 220, 232))
SUN: dict[str, RGB] = {"day": (255, 240, 120), "sunset": (255, 90, 40)}
MOON: RGB = (245, 245, 220)
STAR: RGB = (255, 255, 230)
CLOUD: dict[str, RGB] = {"day": (250, 250, 255), "sunset": (255, 200, 180), "night": (70, 75, 100)}

# How light falls on the scenery and, more gently, on the character (who stays readable).
SCENE_TINT: dict[str, tuple[float, float, float]] = {
    "day": (1.0, 1.0, 1.0),
    "sunset": (1.0, 0.78, 0.62),
    "night": (0.32, 0.36, 0.55),
}
# At night the character's outlines catch the moonlight, so dark hair and hats keep their
# silhouette against the dark sky.
RIM: dict[str, RGB | None] = {"day": None, "sunset": None, "night": (150, 165, 215)}
FIGURE_TINT: dict[str, tuple[float, float, float]] = {
    "day": (1.0, 1.0, 1.0),
    "sunset": (1.0, 0.92, 0.85),
    "night": (0.75, 0.78, 0.9),
}

# Season: ground cover, foliage and falling things.
GROUND: dict[str, RGB] = {
    "spring": (150, 210, 105),
    "summer": (50, 145, 50),
    "autumn": (210, 120, 40),
    "winter": (238, 242, 250),
}
FOLIAGE: dict[str, RGB] = {
    "spring": (255, 160, 200),  # blossom
    "summer": (30, 120, 40),
    "autumn": (230, 95, 20),
    "winter": (250, 250, 255),  # snow on bare branches
}
PARTICLE: dict[str, RGB | None] = {
    "spring": (255, 175, 210),  # petals
    "summer": None,
    "autumn": (225, 90, 20),  # leaves
    "winter": (255, 255, 255),  # snowflakes
}
TRUNK: RGB = (95, 60, 35)
PINE: RGB = (25, 80, 45)
GRANITE: tuple[RGB, RGB] = ((170, 170, 165), (120, 120, 118))  # far, near
SEA_OF_CLOUDS: RGB = (250, 250, 252)
SEA_OF_CLOUDS_TINT: dict[str, tuple[float, float, float]] = {
    "day": (1.0, 1.0, 1.0),
    "sunset": (1.0, 0.85, 0.8),
    "night": (0.62, 0.66, 0.82),
}
VOLCANO: RGB = (125, 105, 95)
CRATER_LAKE: RGB = (40, 170, 200)
SEA: RGB = (30, 110, 190)
WINTER_SEA: RGB = (80, 100, 125)
SAND: RGB = (235, 210, 150)
WINTER_SAND: RGB = (222, 225, 230)
BUILDINGS: tuple[RGB, ...] = ((120, 120, 135), (150, 130, 120), (95, 105, 125), (165, 160, 150))
WINDOW: dict[str, RGB] = {
    "day": (170, 200, 230),
    "sunset": (255, 200, 120),
    "night": (255, 225, 110),
}
PAVEMENT: RGB = (140, 140, 145)
WATER_FOREGROUND: dict[str, RGB] = {"changbai": (30, 150, 185), "beach": (25, 105, 185)}


def tinted(colour: RGB, tint: tuple[float, float, float]) -> RGB:
    """Multiply a colour by a light tint, channel by channel."""
    return (int(colour[0] * tint[0]), int(colour[1] * tint[1]), int(colour[2] * tint[2]))


def mix(a: RGB, b: RGB, t: float) -> RGB:
    """(1 - t) * a + t * b."""
    return (
        int(a[0] + (b[0] - a[0]) * t),
        int(a[1] + (b[1] - a[1]) * t),
        int(a[2] + (b[2] - a[2]) * t),
    )
