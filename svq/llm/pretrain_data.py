"""Language pre-training data for a from-scratch chat LLM: the chat world's text, and its
captions followed by the pictures they describe, every token a label.

    from svq.llm.pretrain_data import PretrainDataset, text_chats
    text = text_chats(seed=0, num_dialogues=20000, lang="mixed")  # dialogues, pictures left out
    data = PretrainDataset(text, captioned, images, tokenizer, vocab, langs=("en", "zh"))

Two kinds of example, both through the chat template (`encode_conversation`) so the LLM sees
the same markup as in SFT:
- a dialogue of the world with its pictures left out: the talk (both roles) as text;
- a caption turn: one assistant message "A person with short red hair, ..., skiing on a beach
  on a winter day." followed by that picture's 36 ids (and its spatial ids, the VQ head's
  targets). It teaches which ids the words of a look and a scene call for, with many more
  pictures per token than whole dialogues (each picture ~70 tokens, against ~120 inside a
  dialogue with its system prompt and talk).

Unlike SFT (labels on assistant turns only), every token is a label: the text is the language.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import Dataset
from transformers import PreTrainedTokenizerBase

from svq.data import WorldRecord, caption

from .conversation import IGNORE_INDEX, EncodedConversation, encode_conversation
from .sft_data import ChatData, ImageTensors, world_chats
from .vocabulary import ImageVocabulary


def text_chats(seed: int, num_dialogues: int, lang: str = "mixed") -> list[list[dict]]:
    """The first `num_dialogues` train dialogues of the world of `seed`, pictures left out:
    each a list of messages with string contents."""
    data = world_chats(seed, "train", num_dialogues, lang)
    out = []
    for chat in data.chats:
        messages, sep = [], "" if chat["id"].endswith("-zh") else " "
        for message in chat["messages"]:
            content = message["content"]
            if not isinstance(content, str):
                content = sep.join(p["text"] for p in content if p.get("type") == "text")
            messages.append({"role": message["role"], "content": content})
        out.append(messages)
    return out


def caption_message(
    record: WorldRecord, ids: torch.Tensor, vq_ids: torch.Tensor | None, lang: str
) -> list[dict[str, Any]]:
    """One assistant turn (after an empty user turn: templates render no conversation that
    opens with the assistant): the picture's caption in `lang`, then the picture as ids."""
    picture = {"type": "image", "ids": ids, "vq_ids": vq_ids}
    content = [{"type": "text", "text": caption(record, lang) + " "}, picture]
    return [{"role": "user", "content": ""}, {"role": "assistant", "content": content}]


def every_token(item: EncodedConversation, pad_token_id: int | None = None) -> EncodedConversation:
    """The example with every token a label (the chat template's markup too)."""
    labels = item.input_ids.clone()
    if pad_token_id is not None:
        labels[item.input_ids == pad_token_id] = IGNORE_INDEX
    item.labels = labels
    return item


class PretrainDataset(Dataset):
    """Text dialogues and caption turns, encoded once; examples longer than `max_length`
    tokens are left out (counted in `num_too_long`).

    captioned: a ChatData of world pictures and their `images` (the SFT cache: the same
    pictures the SFT draws, so no picture is encoded twice); every picture of it that is a
    world record becomes one caption turn, its language taken in turn from `langs`, its
    picture written as the SFT writes it (`image_tokenizer`: "svq" ids, or the spatial VQ's).
    """

    def __init__(
        self,
        text: Sequence[list[dict]],
        captioned: ChatData | None,
        images: ImageTensors | None,
        tokenizer: PreTrainedTokenizerBase,
        vocab: ImageVocabulary,
        langs: Sequence[str] = ("en",),
        max_length: int = 1024,
        num_captions: int = -1,
        image_tokenizer: str = "svq",
    ):
        examples = [encode_conversation(m, tokenizer, vocab) for m in text]
        self.num_text = len(examples)
        if captioned is not None and images is not None:
            records = [(k, r) for k, r in enumerate(captioned.images) if isinstance(r, WorldRecord)]
            if num_captions >= 0:
                records = records[:num_captions]
            for n, (k, record) in enumerate(records):
                vq = images.vq_ids[k] if images.vq_ids is not None else None
                ids = vq if image_tokenizer == "spatial" else images.ids[k]
                vq = None if image_tokenizer == "spatial" else vq
                message = caption_message(record, ids, vq, langs[n % len(langs)])
                examples.append(encode_conversation(message, tokenizer, vocab))
        self.num_captions = len(examples) - self.num_text
        pad = tokenizer.pad_token_id
        kept = [e for e in examples if e.input_ids.shape[0] <= max_length]
        self.num_too_long = len(examples) - len(kept)
        if not kept:
            raise ValueError(f"no pre-training example fits in max_length {max_length} tokens")
        self.items = [every_token(e, pad) for e in kept]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> EncodedConversation:
        return self.items[index]
