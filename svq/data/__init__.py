"""svq's data layer: the chat world (a procedural, attribute-labelled picture world with
captions and dialogues, rendered on the CPU) and loaders for real image collections.

Chat world:
    SCHEMA / ATTRIBUTES            attribute names -> value tuples; labels are SCHEMA[n].index(v)
    WorldRecord, Identity, Scene   what one picture shows; Layout holds the nuisance factors
    world_record(seed, split, i)   picture i of a split; sample_record / sample_scene for more
    render(record, size)           the picture as a PIL image; render_tensor for (B, 3, S, S)
    caption(record, lang)          one sentence naming every attribute ("en" or "zh")
    make_dialogue(...)             a chat in transformers' message format
    ChatWorldDataset / Stream      torch datasets rendering on the fly
    write_world(out, n, size)      the on-disk image folder (`svq world`)

Real images:
    ImageFiles, HFImages, TarShards, open_source   where images come from
    load_image, Preprocess                         decode to RGB; crop and scale to [-1, 1]
    ImageDataset, ImageStream                      torch datasets with bad-file handling
"""

from .captions import caption, captions, describe_identity, describe_scene
from .dialogues import Dialogue, make_dialogue
from .loaders import ImageDataset, ImageStream, SmallImageWarning, UnreadableImageWarning
from .preprocess import (
    Preprocess,
    UnreadableImageError,
    load_image,
    load_image_file,
    to_rgb,
    to_tensor,
)
from .render import render, render_tensor
from .sampler import (
    SPLITS,
    VALID_SCENES,
    sample_identity,
    sample_layout,
    sample_record,
    sample_scene,
    split_seed,
    world_record,
)
from .schema import (
    ATTRIBUTES,
    IDENTITY_ATTRIBUTES,
    SCENE_ATTRIBUTES,
    SCHEMA,
    Identity,
    Layout,
    Scene,
    WorldRecord,
    invalid_reason,
)
from .sources import HFImages, ImageFiles, TarShards, open_source
from .world import ChatWorldDataset, ChatWorldStream, WorldItem
from .writer import load_dialogues, write_world

__all__ = [
    "ATTRIBUTES",
    "IDENTITY_ATTRIBUTES",
    "SCENE_ATTRIBUTES",
    "SCHEMA",
    "SPLITS",
    "VALID_SCENES",
    "ChatWorldDataset",
    "ChatWorldStream",
    "Dialogue",
    "HFImages",
    "Identity",
    "ImageDataset",
    "ImageFiles",
    "ImageStream",
    "Layout",
    "Preprocess",
    "Scene",
    "SmallImageWarning",
    "TarShards",
    "UnreadableImageError",
    "UnreadableImageWarning",
    "WorldItem",
    "WorldRecord",
    "caption",
    "captions",
    "describe_identity",
    "describe_scene",
    "invalid_reason",
    "load_dialogues",
    "load_image",
    "load_image_file",
    "make_dialogue",
    "open_source",
    "render",
    "render_tensor",
    "sample_identity",
    "sample_layout",
    "sample_record",
    "sample_scene",
    "split_seed",
    "to_rgb",
    "to_tensor",
    "world_record",
    "write_world",
]
