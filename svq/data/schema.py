"""The chat world's attribute schema, as data, and the record that describes one picture.

Every judged attribute is a name with a fixed tuple of string values, so an integer label is
`SCHEMA[name].index(value)` and the order of `ATTRIBUTES` is the order of a label vector.
Identity attributes describe the person (they stay fixed for a persona); scene attributes
describe where, when and what. `Layout` holds the nuisance factors (position, scale, cloud and
scenery layout): fine detail that no check judges.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Any

IDENTITY_SCHEMA: dict[str, tuple[str, ...]] = {
    "hair_colour": ("black", "brown", "blonde", "red", "white", "blue"),
    "hair_style": ("short", "long", "ponytail", "curly"),
    "skin_tone": ("light", "medium", "tan", "dark"),
    "shirt_colour": ("red", "yellow", "green", "blue", "purple", "white"),
    "hat": ("none", "cap", "beanie"),
    "glasses": ("none", "glasses", "sunglasses"),
}
SCENE_SCHEMA: dict[str, tuple[str, ...]] = {
    "place": ("huangshan", "changbai", "beach", "city"),
    "season": ("spring", "summer", "autumn", "winter"),
    "activity": ("hiking", "skiing", "swimming", "taking_photos", "flying_kite"),
    "time_of_day": ("day", "sunset", "night"),
    "sea_of_clouds": ("no", "yes"),
}
SCHEMA: dict[str, tuple[str, ...]] = {**IDENTITY_SCHEMA, **SCENE_SCHEMA}
IDENTITY_ATTRIBUTES: tuple[str, ...] = tuple(IDENTITY_SCHEMA)
SCENE_ATTRIBUTES: tuple[str, ...] = tuple(SCENE_SCHEMA)
ATTRIBUTES: tuple[str, ...] = tuple(SCHEMA)

# A deterministic ~10% of identity tuples never appear in train/validation/test: the
# "heldout" split is drawn only from them, to check generalisation to unseen people.
HELD_OUT_FRACTION = 0.1


@dataclass(frozen=True)
class Identity:
    """Who is in the picture. A persona keeps one Identity for a whole dialogue."""

    hair_colour: str
    hair_style: str
    skin_tone: str
    shirt_colour: str
    hat: str
    glasses: str

    def __post_init__(self) -> None:
        _check_values(self, IDENTITY_SCHEMA)

    def key(self) -> str:
        """A stable text key, e.g. 'black/short/light/red/none/none'."""
        return "/".join(getattr(self, name) for name in IDENTITY_ATTRIBUTES)

    @property
    def held_out(self) -> bool:
        """Whether this identity is reserved for the heldout split (stable across runs)."""
        digest = hashlib.sha256(self.key().encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < HELD_OUT_FRACTION


@dataclass(frozen=True)
class Scene:
    """Where, when and what. Not every combination is valid: see `invalid_reason`."""

    place: str
    season: str
    activity: str
    time_of_day: str
    sea_of_clouds: str

    def __post_init__(self) -> None:
        _check_values(self, SCENE_SCHEMA)


@dataclass(frozen=True)
class Layout:
    """Nuisance factors: fine detail that changes pixels but is never judged."""

    x: float = 0.5  # character centre, fraction of the width
    scale: float = 0.55  # character height, fraction of the image side
    seed: int = 0  # clouds, stars, trees, buildings: their count and placement

    def __post_init__(self) -> None:
        if not (0.0 <= self.x <= 1.0 and 0.2 <= self.scale <= 0.9):
            raise ValueError(f"Layout: x must be in [0, 1] and scale in [0.2, 0.9], got {self}")


@dataclass(frozen=True)
class WorldRecord:
    """Everything needed to draw one picture: render(record, size) is a pure function of it."""

    identity: Identity
    scene: Scene
    layout: Layout = Layout()

    def __post_init__(self) -> None:
        reason = invalid_reason(self.scene)
        if reason is not None:
            raise ValueError(f"WorldRecord: invalid scene {self.scene}: {reason}")

    def attributes(self) -> dict[str, str]:
        """All judged attributes by name, in schema order."""
        return {**dataclasses.asdict(self.identity), **dataclasses.asdict(self.scene)}

    def labels(self) -> list[int]:
        """Integer labels in `ATTRIBUTES` order: SCHEMA[name].index(value)."""
        return [SCHEMA[name].index(value) for name, value in self.attributes().items()]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: {'attributes': {...}, 'layout': {...}}."""
        return {"attributes": self.attributes(), "layout": dataclasses.asdict(self.layout)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorldRecord:
        """Inverse of `to_dict`; also accepts a bare attribute dict (default layout)."""
        attributes = data.get("attributes", data)
        missing = [name for name in ATTRIBUTES if name not in attributes]
        if missing:
            raise ValueError(f"WorldRecord.from_dict: missing attributes {missing}")
        return cls(
            Identity(**{name: attributes[name] for name in IDENTITY_ATTRIBUTES}),
            Scene(**{name: attributes[name] for name in SCENE_ATTRIBUTES}),
            Layout(**data.get("layout", {})),
        )


# Which places have water to swim in, snow slopes to ski on, trails to hike.
WATER_PLACES = ("changbai", "beach")  # Changbai's crater lake, the sea
SKI_PLACES = ("huangshan", "changbai")
HIKE_PLACES = ("huangshan", "changbai")


def invalid_reason(scene: Scene) -> str | None:
    """Why a scene cannot happen, or None when it can. The sampler never yields these."""
    if scene.activity == "swimming" and scene.place not in WATER_PLACES:
        return f"no water to swim in at {scene.place}"
    if scene.activity == "swimming" and scene.season == "winter":
        return "no swimming in winter snow"
    if scene.activity == "skiing" and (scene.season != "winter" or scene.place not in SKI_PLACES):
        return "skiing needs winter snow on a mountain"
    if scene.activity == "hiking" and scene.place not in HIKE_PLACES:
        return "hiking needs a mountain"
    if scene.activity == "flying_kite" and scene.time_of_day == "night":
        return "a kite cannot be seen at night"
    if scene.sea_of_clouds == "yes" and scene.place != "huangshan":
        return "a sea of clouds is seen from Huangshan's peaks"
    return None


def _check_values(record: Any, schema: dict[str, tuple[str, ...]]) -> None:
    for name, values in schema.items():
        value = getattr(record, name)
        if value not in values:
            raise ValueError(f"{type(record).__name__}: {name}={value!r}, expected one of {values}")
