"""The chat world: schema, sampler, renderer and the on-the-fly torch datasets."""

import dataclasses
import itertools
from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from svq.data import (
    ATTRIBUTES,
    IDENTITY_ATTRIBUTES,
    SCENE_ATTRIBUTES,
    SCHEMA,
    SPLITS,
    VALID_SCENES,
    ChatWorldDataset,
    ChatWorldStream,
    Identity,
    Layout,
    Scene,
    WorldItem,
    WorldRecord,
    invalid_reason,
    render,
    render_tensor,
    sample_scene,
    split_seed,
    world_record,
)


def pixels(record: WorldRecord, size: int = 64) -> np.ndarray:
    return np.asarray(render(record, size), dtype=np.int16)


def replace(record: WorldRecord, name: str, value: str) -> WorldRecord:
    """The same picture with one attribute changed (ValueError if that makes it invalid)."""
    part = "identity" if name in IDENTITY_ATTRIBUTES else "scene"
    changed = dataclasses.replace(getattr(record, part), **{name: value})
    return dataclasses.replace(record, **{part: changed})


# --- schema


def test_schema_is_data_and_labels_index_it():
    assert ATTRIBUTES == IDENTITY_ATTRIBUTES + SCENE_ATTRIBUTES
    assert all(len(set(values)) == len(values) >= 2 for values in SCHEMA.values())
    record = world_record(0, "train", 3)
    labels = record.labels()
    assert len(labels) == len(ATTRIBUTES)
    for name, label in zip(ATTRIBUTES, labels, strict=True):
        assert SCHEMA[name][label] == record.attributes()[name]


def test_record_round_trips_through_dict_and_rejects_bad_values():
    record = world_record(0, "train", 5)
    assert WorldRecord.from_dict(record.to_dict()) == record
    with pytest.raises(ValueError, match="hair_colour='green'"):
        Identity("green", "short", "light", "red", "none", "none")
    with pytest.raises(ValueError, match="no swimming in winter"):
        WorldRecord(record.identity, Scene("beach", "winter", "swimming", "day", "no"))
    with pytest.raises(ValueError, match="missing attributes"):
        WorldRecord.from_dict({"attributes": {"place": "city"}})
    with pytest.raises(ValueError, match="scale"):
        Layout(x=0.5, scale=5.0)


# --- sampler


def test_sampler_never_yields_an_invalid_combination_and_covers_every_value():
    records = [world_record(1, "train", i) for i in range(3000)]
    assert all(invalid_reason(r.scene) is None for r in records)
    seen = {name: {r.attributes()[name] for r in records} for name in ATTRIBUTES}
    assert seen == {name: set(values) for name, values in SCHEMA.items()}
    # Place, season and time of day are drawn uniformly.
    places = Counter(r.scene.place for r in records)
    assert min(places.values()) > 0.8 * len(records) / 4


def test_valid_scenes_are_exactly_those_without_a_reason():
    every = [Scene(*values) for values in itertools.product(*(SCHEMA[n] for n in SCENE_ATTRIBUTES))]
    assert set(VALID_SCENES) == {s for s in every if invalid_reason(s) is None}
    assert 0 < len(VALID_SCENES) < len(every)
    assert Scene("beach", "winter", "swimming", "day", "no") not in VALID_SCENES
    assert Scene("huangshan", "winter", "skiing", "day", "yes") in VALID_SCENES


def test_sample_scene_keeps_pins_and_rejects_impossible_ones():
    import random

    rng = random.Random(0)
    for _ in range(50):
        scene = sample_scene(rng, place="changbai", season="winter")
        assert (scene.place, scene.season) == ("changbai", "winter")
    assert sample_scene(rng, activity="skiing").season == "winter"
    with pytest.raises(ValueError, match="no valid scene"):
        sample_scene(rng, activity="swimming", place="city")
    with pytest.raises(ValueError, match="unknown scene attributes"):
        sample_scene(rng, colour="red")


def test_splits_have_disjoint_seeds_and_heldout_identities_never_train():
    seeds = {split: {split_seed(0, split, i) for i in range(500)} for split in SPLITS}
    for a, b in itertools.combinations(SPLITS, 2):
        assert not seeds[a] & seeds[b]
    seen = {
        world_record(0, s, i).identity for s in ("train", "validation", "test") for i in range(400)
    }
    held = {world_record(0, "heldout", i).identity for i in range(200)}
    assert not any(identity.held_out for identity in seen)
    assert all(identity.held_out for identity in held)
    assert not seen & held
    every = [Identity(*v) for v in itertools.product(*(SCHEMA[n] for n in IDENTITY_ATTRIBUTES))]
    fraction = sum(i.held_out for i in every) / len(every)
    assert 0.07 < fraction < 0.13
    with pytest.raises(ValueError, match="unknown split"):
        world_record(0, "dev", 0)


# --- renderer


def test_render_is_deterministic_at_any_size():
    record = world_record(7, "train", 11)
    for size in (16, 64, 100, 256):
        image = render(record, size)
        assert image.size == (size, size) and image.mode == "RGB"
        assert np.array_equal(np.asarray(image), np.asarray(render(record, size)))
    other = dataclasses.replace(record, layout=dataclasses.replace(record.layout, seed=1))
    assert not np.array_equal(pixels(record), pixels(other))  # nuisance changes fine detail
    with pytest.raises(ValueError, match="size"):
        render(record, 8)


def test_render_tensor_shape_and_range():
    images = render_tensor([world_record(0, "train", i) for i in range(3)], 32)
    assert images.shape == (3, 3, 32, 32) and images.dtype == torch.float32
    assert images.min() >= -1 and images.max() <= 1 and images.std() > 0.1


# Each value of each attribute must be readable at 64x64: changing it alone (same layout)
# must change clearly more than a few pixels. The floor is the count of pixels whose colour
# moves by more than 40 levels in some channel.
STRONG, MIN_PIXELS = 40, 8


@pytest.mark.parametrize("name", ATTRIBUTES)
def test_every_attribute_value_changes_the_pixels(name):
    checked = 0
    for index in range(4):
        base = world_record(3, "train", index)
        before = pixels(base)
        for value in SCHEMA[name]:
            if value == base.attributes()[name]:
                continue
            try:
                changed = replace(base, name, value)
            except ValueError:  # that value is invalid in this scene
                continue
            moved = (np.abs(pixels(changed) - before).max(axis=-1) > STRONG).sum()
            assert moved >= MIN_PIXELS, f"{name}: {base.attributes()[name]} -> {value}: {moved}"
            checked += 1
    assert checked >= 1


def test_sea_of_clouds_and_night_are_visible_where_they_should_be():
    base = WorldRecord(
        Identity("black", "short", "light", "red", "none", "none"),
        Scene("huangshan", "autumn", "hiking", "day", "no"),
        Layout(0.5, 0.55, 1),
    )
    clouds = replace(base, "sea_of_clouds", "yes")
    band = slice(40, 49)  # the valley, below the peaks and above the ground, at 64 px
    assert pixels(clouds)[band].mean() > pixels(base)[band].mean() + 40  # white clouds
    night = replace(base, "time_of_day", "night")
    assert pixels(night)[:12].mean() < pixels(base)[:12].mean() - 80  # a dark sky


# --- torch datasets


def test_chat_world_dataset_is_deterministic_and_labelled():
    data = ChatWorldDataset(size=32, length=5, seed=2, labels=True)
    item = data[3]
    assert isinstance(item, WorldItem)
    assert item.image.shape == (3, 32, 32)
    assert item.labels.tolist() == data.record(3).labels()
    assert torch.equal(
        item.image, ChatWorldDataset(size=32, length=5, seed=2, labels=True)[3].image
    )
    assert not torch.equal(item.image, data[2].image)
    batch = next(iter(DataLoader(data, batch_size=4)))
    assert batch.image.shape == (4, 3, 32, 32) and batch.labels.shape == (4, len(ATTRIBUTES))
    with pytest.raises(IndexError):
        data[5]
    with pytest.raises(ValueError, match="split"):
        ChatWorldDataset(split="dev")


def _take(stream, n):
    return torch.stack([x for x, _ in zip(stream, range(n), strict=False)])


def test_chat_world_stream_shards_over_ranks(monkeypatch):
    whole = _take(iter(ChatWorldStream(size=16, seed=4)), 8)
    shards = []
    for rank in range(2):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        shards.append(_take(iter(ChatWorldStream(size=16, seed=4)), 4))
    assert torch.equal(shards[0], whole[0::2]) and torch.equal(shards[1], whole[1::2])
    monkeypatch.setenv("RANK", "1")
    unsharded = _take(iter(ChatWorldStream(size=16, seed=4, shard_by_rank=False)), 8)
    assert torch.equal(unsharded, whole)


def test_chat_world_stream_gives_each_worker_its_own_pictures():
    stream = ChatWorldStream(size=16, seed=5, labels=True)
    loader = DataLoader(stream, batch_size=3, num_workers=2)
    batches = [b for b, _ in zip(loader, range(4), strict=False)]
    images = torch.cat([b.image for b in batches])  # 12 pictures, 6 from each worker
    expected = _take((item.image for item in iter(stream)), 12)
    assert sorted(map(_key, images)) == sorted(map(_key, expected))


def _key(image: torch.Tensor) -> bytes:
    return image.numpy().tobytes()
