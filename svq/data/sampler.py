"""Sample chat-world records: valid scenes only, identities split into seen and held-out, and a
stable seed for picture `index` of `split` so every split is reproducible on its own.

Scenes are sampled one attribute at a time (place, season, time of day, activity, sea of
clouds), each uniformly among the values that still leave a valid completion. Place, season and
time of day are therefore uniform; activity and sea of clouds follow from what is possible.
"""

from __future__ import annotations

import hashlib
import itertools
import random
from functools import lru_cache

from .schema import (
    IDENTITY_SCHEMA,
    SCENE_SCHEMA,
    Identity,
    Layout,
    Scene,
    WorldRecord,
    invalid_reason,
)

SPLITS: tuple[str, ...] = ("train", "validation", "test", "heldout")
SCENE_ORDER: tuple[str, ...] = ("place", "season", "time_of_day", "activity", "sea_of_clouds")
# Nuisance ranges: where the character stands and how tall it is (fractions of the side).
X_RANGE = (0.3, 0.7)
SCALE_RANGE = (0.5, 0.62)


def _all_scenes() -> tuple[Scene, ...]:
    names = tuple(SCENE_SCHEMA)
    combos = itertools.product(*SCENE_SCHEMA.values())
    scenes = (Scene(**dict(zip(names, values, strict=True))) for values in combos)
    return tuple(scene for scene in scenes if invalid_reason(scene) is None)


VALID_SCENES: tuple[Scene, ...] = _all_scenes()


def split_seed(seed: int, split: str, index: int, kind: str = "image") -> int:
    """A 63-bit seed for item `index` (a picture, or a dialogue) of `split` in the world of
    `seed`: a hash of all four, so splits and kinds never share a random stream."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}, expected one of {SPLITS}")
    if index < 0:
        raise ValueError(f"index must be >= 0, got {index}")
    key = f"svq-world/{seed}/{split}/{kind}/{index}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") >> 1


def sample_identity(rng: random.Random, held_out: bool = False) -> Identity:
    """A uniformly random identity from the held-out pool or from the seen pool."""
    while True:  # ~10% of identities are held out: a few tries at most, on average
        identity = Identity(*(rng.choice(values) for values in IDENTITY_SCHEMA.values()))
        if identity.held_out == held_out:
            return identity


@lru_cache(maxsize=4096)
def _options(fixed: tuple[tuple[str, str], ...], chosen: tuple[str, ...]) -> tuple[str, ...]:
    """Values of the next attribute in SCENE_ORDER that keep a valid completion."""
    name = SCENE_ORDER[len(chosen)]
    constraints = dict(fixed) | dict(zip(SCENE_ORDER, chosen, strict=False))
    values = {
        getattr(scene, name)
        for scene in VALID_SCENES
        if all(getattr(scene, k) == v for k, v in constraints.items())
    }
    return tuple(v for v in SCENE_SCHEMA[name] if v in values)


def sample_scene(rng: random.Random, **fixed: str) -> Scene:
    """A valid scene; keyword arguments pin attributes (e.g. place="changbai", season="winter").
    Raises ValueError when the pinned values have no valid scene."""
    unknown = set(fixed) - set(SCENE_SCHEMA)
    if unknown:
        raise ValueError(f"sample_scene: unknown scene attributes {sorted(unknown)}")
    pinned = tuple(sorted(fixed.items()))
    chosen: list[str] = []
    for _ in SCENE_ORDER:
        options = _options(pinned, tuple(chosen))
        if not options:
            raise ValueError(f"sample_scene: no valid scene with {fixed}")
        chosen.append(rng.choice(options))
    return Scene(**dict(zip(SCENE_ORDER, chosen, strict=True)))


def sample_layout(rng: random.Random) -> Layout:
    return Layout(
        x=round(rng.uniform(*X_RANGE), 4),
        scale=round(rng.uniform(*SCALE_RANGE), 4),
        seed=rng.getrandbits(31),
    )


def sample_record(
    rng: random.Random, identity: Identity | None = None, held_out: bool = False, **scene: str
) -> WorldRecord:
    """One picture: the given identity (or a random one from the chosen pool), a valid scene
    (with any pinned attributes) and a random layout."""
    identity = identity if identity is not None else sample_identity(rng, held_out)
    return WorldRecord(identity, sample_scene(rng, **scene), sample_layout(rng))


def world_record(seed: int, split: str, index: int) -> WorldRecord:
    """Picture `index` of `split` in the world of `seed`: identities come from the held-out
    pool for "heldout" and from the seen pool otherwise."""
    rng = random.Random(split_seed(seed, split, index))
    return sample_record(rng, held_out=split == "heldout")
