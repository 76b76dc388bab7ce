"""Bare pictures: every picture the assistant draws in the training chats, alone, as the raw
sequence `<boi>` + its N codes + `<eoi>`, with no chat markup, persona, request or words: what
the LLM would draw unasked.

    dataset = BarePictureDataset(data, images, vocab)  # one item per assistant picture

Trained beside the chats (`describe_per_step` with `describe_bare_pictures`), they give the LLM
the unconditional branch that classifier-free guidance leans away from (`svq.llm.guidance`),
as LlamaGen and Janus drop the condition of a share of their pictures. A sequence that opens
with `<boi>` occurs nowhere in a chat: the null condition is no kind of reply.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from .conversation import IGNORE_INDEX, EncodedConversation
from .sft_data import IMAGE_INDEX, ChatData, ImageTensors
from .vocabulary import ImageVocabulary


def encode_bare_picture(
    ids: torch.Tensor, vocab: ImageVocabulary, vq_ids: torch.Tensor | None = None
) -> EncodedConversation:
    """ids: (N,) codebook ids -> `<boi>` + N code tokens + `<eoi>`, the codes and `<eoi>`
    labelled; vq_ids: the picture's (h*w,) spatial ids, the VQ head's targets, if any."""
    ids = torch.as_tensor(ids).long()
    tokens = torch.tensor(vocab.span(ids))
    labels = tokens.clone()
    labels[0] = IGNORE_INDEX  # nothing comes before the <boi> to predict it
    n = vocab.num_positions
    return EncodedConversation(
        input_ids=tokens,
        labels=labels,
        image_positions=torch.zeros(0, n, dtype=torch.long),
        image_features=None,
        code_positions=torch.arange(1, n + 1).unsqueeze(0),
        code_ids=ids.unsqueeze(0),
        vq_targets=None if vq_ids is None else torch.as_tensor(vq_ids).long().unsqueeze(0),
    )


def assistant_pictures(data: ChatData) -> list[int]:
    """The image-table rows of every picture of every assistant message, in chat order."""
    rows = []
    for chat in data.chats:
        for message in chat["messages"]:
            content = message["content"]
            if message["role"] == "assistant" and not isinstance(content, str):
                rows += [p[IMAGE_INDEX] for p in content if p["type"] == "image"]
    if not rows:
        raise ValueError("bare pictures: the chats have no assistant picture")
    return rows


class BarePictureDataset(Dataset):
    """One `encode_bare_picture` item per assistant picture of `data` (its ids, or with
    image_tokenizer "spatial" its spatial ids: the baseline's pictures)."""

    def __init__(
        self,
        data: ChatData,
        images: ImageTensors,
        vocab: ImageVocabulary,
        image_tokenizer: str = "svq",
    ):
        spatial = image_tokenizer == "spatial"
        if spatial and images.vq_ids is None:
            raise ValueError("image_tokenizer 'spatial' needs spatial VQ ids (a spatial VQ)")
        self.items = []
        for row in assistant_pictures(data):
            if spatial:
                self.items.append(encode_bare_picture(images.vq_ids[row], vocab))
            else:
                vq = None if images.vq_ids is None else images.vq_ids[row]
                self.items.append(encode_bare_picture(images.ids[row], vocab, vq))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> EncodedConversation:
        return self.items[index]
