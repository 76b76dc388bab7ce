"""Chat SFT data: dialogues with pictures -> encoded conversations, through an image cache.

Sources (`load_chats`):
- "world": the chat world's dialogues of one split (`svq.data.writer.iter_split`: the same
  chats `svq world` writes), pictures rendered on the fly from their records.
- a JSONL file of your own chats, one per line:

      {"id": "trip-1", "messages": [
        {"role": "system", "content": "You are Lin, a traveller ..."},
        {"role": "user", "content": [{"type": "text", "text": "I went to Huangshan."},
                                     {"type": "image", "path": "photos/me.png"},
                                     {"type": "text", "text": "What season is it?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Winter! Here I am:"},
                                          {"type": "image", "path": "photos/lin-ski.png"}]}]}

  Messages are in the transformers chat format ("content" a string or a list of parts); an
  image part names its picture by "path" (or "image" / "url"), relative to the JSONL file's
  folder unless absolute; "id" is optional. A `svq world` split's `dialogues.jsonl` is such a
  file.

Roles of pictures: in assistant turns they are generation targets (their 36 codebook ids are
LM labels, their spatial VQ ids the VQ head's labels); in user and system turns they are
understood (36 continuous features through the projector). Labels cover assistant turns only
(`svq.llm.conversation.encode_conversation`).

The image cache (`encode_images`): every picture is encoded once (features (36, E), ids (36,),
spatial ids (h*w,)) into CACHE_DIR/images-<data hash>.safetensors. Its metadata holds a hash of
the tokenizers (svq weights, codebook, spatial VQ weights, sizes): a cache made by other
tokenizers is re-encoded and overwritten, never read.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch.utils.data import Dataset
from transformers import PreTrainedTokenizerBase

from svq.data import (
    Preprocess,
    UnreadableImageError,
    WorldRecord,
    load_image_file,
    render_tensor,
)
from svq.data.writer import iter_split
from svq.model import StyledVAEVQ
from svq.progress import progress_bar
from svq.spatial_vq import SpatialVQ

from .conversation import (
    EncodedConversation,
    encode_conversation,
    resolve_images,
)
from .vocabulary import ImageVocabulary

logger = logging.getLogger(__name__)
IMAGE_INDEX = "image_index"  # what a loaded chat's image parts carry: row in the image table


@dataclass
class ChatData:
    """Chats whose image parts carry `image_index`, and each picture's source."""

    chats: list[dict[str, Any]]  # {"id": str, "messages": [...]}
    images: list[WorldRecord | Path]  # a record to render, or an image file
    fingerprint: str  # of the chats' pictures (what the cache is named after)
    origins: list[str] = field(default_factory=list)  # "FILE.jsonl:LINE" of each file picture


# --- sources -------------------------------------------------------------------------------


def load_chats(
    source: str | Path,
    *,
    seed: int = 0,
    split: str = "train",
    num_dialogues: int = 1000,
    lang: str = "en",
    request_kinds: Sequence[str] | None = None,
    opening_season: str = "other",
    when_first: bool = False,
    asked_first: bool = False,
) -> ChatData:
    """`source` "world" (`num_dialogues` chats of `split` of the world of `seed`; lang "en",
    "zh" or "mixed": every fourth chat Chinese; `request_kinds`, `opening_season`,
    `when_first`, `asked_first`: see `make_dialogue`) or a JSONL file (see the module
    docstring)."""
    if str(source) == "world":
        return world_chats(seed, split, num_dialogues, lang, request_kinds, opening_season,
                           when_first, asked_first)  # fmt: skip
    return jsonl_chats(source)


def world_chats(
    seed: int,
    split: str,
    num_dialogues: int,
    lang: str = "en",
    request_kinds: Sequence[str] | None = None,
    opening_season: str = "other",
    when_first: bool = False,
    asked_first: bool = False,
) -> ChatData:
    """The first `num_dialogues` chats of a chat-world split, with their records."""
    if lang not in ("en", "zh", "mixed"):
        raise ValueError(f"lang must be 'en', 'zh' or 'mixed', got {lang!r}")
    chats, images = [], []
    langs = ("en", "zh") if lang == "mixed" else (lang,)
    for language in langs:
        count = num_dialogues if lang != "mixed" else _mixed_share(num_dialogues, language)
        dialogues = iter_split(  # 10**12 pictures: never the limit
            seed, split, 10**12, language, request_kinds, opening_season, when_first, asked_first
        )
        for _, records, chat in itertools.islice(dialogues, count):
            parts = _image_parts(chat["messages"])
            for part, record in zip(parts, records, strict=True):
                part[IMAGE_INDEX] = len(images)
                images.append(record)
            chats.append({"id": f"{chat['id']}-{language}", "messages": chat["messages"]})
    key = ["world", seed, split, num_dialogues, lang]
    if request_kinds is not None:
        key.append(list(request_kinds))
    if opening_season != "other":  # the default keeps the key (and cache) it always had
        key.append(opening_season)
    # when_first and asked_first change words only: the same pictures, key and image cache
    return ChatData(chats, images, _hash(json.dumps(key).encode()))


def _mixed_share(n: int, language: str) -> int:
    zh = n // 4
    return zh if language == "zh" else n - zh


def jsonl_chats(path: str | Path) -> ChatData:
    """Chats from a JSONL file; pictures by path, relative to the file's folder."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no chat file {path} (expected 'world' or a .jsonl file)")
    chats, images, stats, origins = [], [], [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            messages = row["messages"]
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise ValueError(f"{path}:{number}: not a chat ({error!r})") from None
        for part in _image_parts(messages):
            source = next((part.get(k) for k in ("path", "image", "url") if part.get(k)), None)
            if not isinstance(source, str):
                raise ValueError(f"{path}:{number}: an image part without a path: {part}")
            file = Path(source) if Path(source).is_absolute() else path.parent / source
            if not file.is_file():
                raise FileNotFoundError(f"{path}:{number}: no picture {file}")
            part[IMAGE_INDEX] = len(images)
            images.append(file)
            origins.append(f"{path}:{number}")
            info = file.stat()
            stats.append([str(file.resolve()), info.st_size, info.st_mtime_ns])
        chats.append({"id": str(row.get("id", f"{path.stem}-{number}")), "messages": messages})
    if not chats:
        raise ValueError(f"{path} holds no chats")
    digest = hashlib.sha256(path.read_bytes())
    digest.update(json.dumps(stats).encode())
    return ChatData(chats, images, digest.hexdigest(), origins)


def _image_parts(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        part
        for message in messages
        if not isinstance(message["content"], str)
        for part in message["content"]
        if part.get("type") == "image"
    ]


# --- the image cache -----------------------------------------------------------------------


@dataclass
class ImageTensors:
    """Every picture of a ChatData, encoded; row k is picture `image_index` k."""

    features: torch.Tensor  # (M, N, E) float32: what the projector reads
    ids: torch.Tensor  # (M, N) long: svq codebook ids
    vq_ids: torch.Tensor | None  # (M, h*w) long: spatial VQ ids; None without a spatial VQ
    reused: bool  # read from the cache (False: encoded now)


def tokenizer_fingerprint(svq: StyledVAEVQ, spatial: SpatialVQ | None) -> str:
    """A hash of everything that turns pixels into cached tensors."""
    digest = hashlib.sha256()
    parts: list[tuple[str, torch.nn.Module | None]] = [
        ("svq", svq),
        ("codebook", svq.codebook),
        ("spatial", spatial),
    ]
    for name, module in parts:
        digest.update(name.encode())
        if module is None:
            continue
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "to_dict"):
            digest.update(json.dumps(config.to_dict(), sort_keys=True, default=str).encode())
        for key, tensor in sorted(module.state_dict().items()):
            if name == "svq" and key.startswith("codebook."):
                continue  # hashed on its own
            digest.update(key.encode())
            digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def cache_path(cache_dir: str | Path, data: ChatData) -> Path:
    return Path(cache_dir) / f"images-{data.fingerprint[:20]}.safetensors"


@torch.no_grad()
def encode_images(
    data: ChatData,
    svq: StyledVAEVQ,
    spatial: SpatialVQ | None,
    cache_dir: str | Path | None,
    batch_size: int = 64,
    progress: bool = False,
) -> ImageTensors:
    """Every picture of `data` through the tokenizers, from the cache when it was made by the
    same tokenizers (else encoded and the cache rewritten, atomically). cache_dir None: no
    cache."""
    tokenizers = tokenizer_fingerprint(svq, spatial)
    path = cache_path(cache_dir, data) if cache_dir is not None else None
    if path is not None and path.is_file():
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            if meta.get("tokenizers") == tokenizers and meta.get("data") == data.fingerprint:
                vq = f.get_tensor("vq_ids") if "vq_ids" in f.keys() else None  # noqa: SIM118
                return ImageTensors(f.get_tensor("features"), f.get_tensor("ids"), vq, True)
        logger.info("image cache %s was made by other tokenizers: encoding again", path)
    device = next(svq.parameters()).device
    features, ids, vq_ids = [], [], []
    starts = range(0, len(data.images), batch_size)
    for start in progress_bar(starts, desc="encoding pictures", disable=not progress):
        sources = data.images[start : start + batch_size]
        origins = data.origins[start : start + batch_size] or [""] * len(sources)
        pixels = _pixels(sources, svq.config.image_size, origins).to(device)
        f = svq.encode(pixels).float()  # (b, N, E)
        features.append(f.cpu())
        ids.append(svq.codebook.quantize(f).cpu())
        if spatial is not None:
            size = spatial.config.image_size
            same = size == svq.config.image_size
            spatial_pixels = pixels if same else _pixels(sources, size, origins)
            vq_ids.append(spatial.encode(spatial_pixels.to(device)).cpu())
    out = ImageTensors(
        torch.cat(features),
        torch.cat(ids).long(),
        torch.cat(vq_ids).long() if vq_ids else None,
        False,
    )
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {"features": out.features.contiguous(), "ids": out.ids.contiguous()}
        if out.vq_ids is not None:
            tensors["vq_ids"] = out.vq_ids.contiguous()
        tmp = path.with_name(f".{path.name}.tmp")
        meta = {"tokenizers": tokenizers, "data": data.fingerprint, "count": str(len(out.ids))}
        save_file(tensors, str(tmp), metadata=meta)
        os.replace(tmp, path)
    return out


def _pixels(
    sources: Sequence[WorldRecord | Path], size: int, origins: Sequence[str]
) -> torch.Tensor:
    """(b, 3, size, size) in [-1, 1]: records rendered, files loaded and centre-cropped. An
    unreadable file is an error naming it and its origin (the JSONL file and line)."""
    if all(isinstance(s, WorldRecord) for s in sources):
        return render_tensor(list(sources), size)
    preprocess = Preprocess(size)
    pictures = []
    for source, origin in zip(sources, origins, strict=True):
        if isinstance(source, WorldRecord):
            pictures.append(render_tensor([source], size)[0])
            continue
        try:
            pictures.append(preprocess(load_image_file(source, size)))
        except UnreadableImageError as error:
            raise UnreadableImageError(f"{origin}: {error}" if origin else str(error)) from None
    return torch.stack(pictures)


# --- the dataset ---------------------------------------------------------------------------


class SFTDataset(Dataset):
    """Encoded conversations of a ChatData with its ImageTensors. All chats are encoded once
    at construction; chats longer than `max_length` tokens are left out (counted in
    `num_too_long`), since cutting one would cut through an image span or a reply.

    image_tokenizer: "svq" (assistant pictures as 36 codebook ids, spatial ids as VQ-head
    targets) or "spatial" (the baseline: assistant pictures written as their h*w spatial ids).
    """

    def __init__(
        self,
        data: ChatData,
        images: ImageTensors,
        tokenizer: PreTrainedTokenizerBase,
        vocab: ImageVocabulary,
        max_length: int = 2048,
        image_tokenizer: str = "svq",
    ):
        if image_tokenizer == "spatial" and images.vq_ids is None:
            raise ValueError("image_tokenizer 'spatial' needs spatial VQ ids (a spatial VQ)")
        self.ids = []
        self.items: list[EncodedConversation] = []
        self.num_too_long = 0
        for chat in data.chats:
            messages = resolve_messages(chat["messages"], images, image_tokenizer)
            item = encode_conversation(messages, tokenizer, vocab)
            if item.input_ids.shape[0] > max_length:
                self.num_too_long += 1
                continue
            self.items.append(item)
            self.ids.append(chat["id"])
        if not self.items:
            raise ValueError(f"no chat fits in max_length {max_length} tokens")

    def __len__(self) -> int:
        return len(self.items)

    @property
    def lengths(self) -> list[int]:
        """Each chat's length in tokens (for batches of similar length)."""
        return [item.input_ids.shape[0] for item in self.items]

    def __getitem__(self, index: int) -> EncodedConversation:
        return self.items[index]


def resolve_messages(
    messages: Sequence[dict[str, Any]], images: ImageTensors, image_tokenizer: str = "svq"
) -> list[dict[str, Any]]:
    """`resolve_images` from the cache: each image part's IMAGE_INDEX picks its row."""
    table = {"ids": images.ids, "features": images.features, "spatial_ids": images.vq_ids}

    def fetch(part: dict[str, Any], what: str) -> torch.Tensor | None:
        rows = table[what]
        return None if rows is None else rows[part[IMAGE_INDEX]]

    return resolve_images(messages, fetch, image_tokenizer, vq_targets=True)


def _hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
