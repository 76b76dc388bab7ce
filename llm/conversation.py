"""Conversations with pictures <-> token ids, for training and for generation.

Messages are in the transformers chat format; an image is a content part
`{"type": "image", ...}` carrying, once resolved (`SVQChat.prepare` does it from PIL images or
paths), one of:
- "features": (N, E) continuous svq features. The picture is *understood*: it becomes
  `<boi>` + N x `<image>` + `<eoi>`, and the projector's embeddings replace the `<image>` rows.
  Used for images in user (and system) turns.
- "ids": (N,) codebook ids. The picture is *written*: `<boi>` + N code tokens + `<eoi>`. Always
  so in assistant turns (the LLM's own pictures stay in context as tokens); optional
  "vq_ids" (h*w,) are the spatial VQ ids that the VQ head learns to predict from them.

The text that goes through the tokenizer's chat template is plain strings (text parts and image
spans joined), so any template works, also those that only take string contents (Qwen2.5).
Labels cover the assistant turns only: each one's characters are found by rendering the
conversation up to it, and tokens map to characters through the fast tokenizer's offsets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from .vocabulary import BOI, EOI, IMAGE, ImageVocabulary

IGNORE_INDEX = -100


@dataclass
class EncodedConversation:
    """One conversation as token ids; images in order of appearance."""

    input_ids: torch.Tensor  # (T,) long
    labels: torch.Tensor  # (T,) long: the token itself in assistant turns, else -100
    image_positions: torch.Tensor  # (M, N) long: the <image> tokens of each understood image
    image_features: torch.Tensor | None  # (M, N, E) their features; None when M == 0
    code_positions: torch.Tensor  # (G, N) long: the code tokens of each written image
    code_ids: torch.Tensor  # (G, N) long: their codebook ids
    vq_targets: torch.Tensor | None  # (G, h*w) spatial ids, -100 rows where not given; or None


@dataclass
class ConversationBatch:
    """Padded conversations; images of all rows concatenated in row order."""

    input_ids: torch.Tensor  # (B, T) long
    attention_mask: torch.Tensor  # (B, T) long
    labels: torch.Tensor  # (B, T) long
    image_features: torch.Tensor | None  # (M, N, E)
    code_rows: torch.Tensor  # (G,) long: the row of each written image
    code_positions: torch.Tensor  # (G, N) long: positions in that row
    code_ids: torch.Tensor  # (G, N) long
    vq_targets: torch.Tensor | None  # (G, h*w) long, -100 rows where not given

    def to(self, device: torch.device | str) -> ConversationBatch:
        moved = {
            f.name: (v.to(device) if isinstance(v := getattr(self, f.name), torch.Tensor) else v)
            for f in fields(self)
        }
        return ConversationBatch(**moved)


def template_messages(
    messages: Sequence[dict[str, Any]], vocab: ImageVocabulary
) -> list[dict[str, str]]:
    """Messages with string contents: text parts joined with their image spans."""
    out = []
    for message in messages:
        content = message["content"]
        if isinstance(content, str):
            out.append({"role": message["role"], "content": content})
            continue
        text = []
        for part in content:
            if part["type"] == "text":
                text.append(part["text"])
            elif part["type"] == "image":
                text.append(_image_text(part, message["role"], vocab))
            else:
                raise ValueError(f"unsupported content part type {part['type']!r}")
        out.append({"role": message["role"], "content": "".join(text)})
    return out


def _image_text(part: dict[str, Any], role: str, vocab: ImageVocabulary) -> str:
    if role != "assistant" and part.get("features") is not None:
        # one <image> per feature vector: usually N, but the serial baseline writes pictures
        # with h*w tokens and still understands them through the svq's N features
        return BOI + IMAGE * len(part["features"]) + EOI
    if part.get("ids") is not None:
        return vocab.span_text(torch.as_tensor(part["ids"]))
    need = "ids" if role == "assistant" else "features or ids"
    raise ValueError(
        f"an image in a {role} turn has no {need}: resolve pictures first (SVQChat.prepare)"
    )


def encode_conversation(
    messages: Sequence[dict[str, Any]],
    tokenizer: PreTrainedTokenizerBase,
    vocab: ImageVocabulary,
    add_generation_prompt: bool = False,
) -> EncodedConversation:
    """Token ids, assistant-only labels and image positions/targets of one conversation."""
    plain = template_messages(messages, vocab)

    def render(upto: int, prompt: bool) -> str:
        return tokenizer.apply_chat_template(
            plain[:upto], tokenize=False, add_generation_prompt=prompt
        )

    text = render(len(plain), add_generation_prompt)
    spans = []  # character spans of the assistant turns
    for i, message in enumerate(plain):
        if message["role"] != "assistant":
            continue
        start, end = render(i, True), render(i + 1, False)
        if not (end.startswith(start) and text.startswith(end)):
            raise ValueError(
                "the chat template does not render conversations as prefixes of each other; "
                "cannot find the assistant turns to label"
            )
        spans.append((len(start), len(end)))
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    input_ids = torch.tensor(encoding["input_ids"], dtype=torch.long)
    starts = torch.tensor([s for s, _ in encoding["offset_mapping"]], dtype=torch.long)
    trained = torch.zeros_like(input_ids, dtype=torch.bool)
    for a, b in spans:
        trained |= (starts >= a) & (starts < b)
    labels = torch.where(trained, input_ids, IGNORE_INDEX)
    return _with_images(messages, input_ids, labels, vocab)


def _with_images(
    messages: Sequence[dict[str, Any]],
    input_ids: torch.Tensor,
    labels: torch.Tensor,
    vocab: ImageVocabulary,
) -> EncodedConversation:
    """Find every image span in `input_ids` and pair it with its part, in order."""
    parts = [
        (m["role"], p)
        for m in messages
        if not isinstance(m["content"], str)
        for p in m["content"]
        if p["type"] == "image"
    ]
    n = vocab.num_positions
    starts = (input_ids == vocab.boi_id).nonzero().squeeze(1).tolist()
    if len(starts) != len(parts):
        raise ValueError(f"{len(parts)} image parts but {len(starts)} <boi> tokens in the text")
    understood, features, written, ids, targets = [], [], [], [], []
    for start, (role, part) in zip(starts, parts, strict=True):
        understanding = start + 1 < len(input_ids) and int(input_ids[start + 1]) == vocab.image_id
        if understanding:
            positions = torch.arange(start + 1, start + 1 + len(part["features"]))
            understood.append(positions)
            features.append(torch.as_tensor(part["features"]).float())
        else:
            positions = torch.arange(start + 1, start + 1 + n)
            tokens = input_ids[positions]
            written.append(positions)
            ids.append(vocab.tokens_to_codes(tokens))
            given = part.get("vq_ids") if role == "assistant" else None
            targets.append(None if given is None else torch.as_tensor(given).long())
    width = next((t.shape[0] for t in targets if t is not None), None)
    vq_targets = None
    if width is not None:
        vq_targets = torch.stack(
            [t if t is not None else torch.full((width,), IGNORE_INDEX) for t in targets]
        )
    empty = torch.zeros(0, n, dtype=torch.long)
    return EncodedConversation(
        input_ids=input_ids,
        labels=labels,
        image_positions=torch.stack(understood) if understood else empty.clone(),
        image_features=torch.stack(features) if features else None,
        code_positions=torch.stack(written) if written else empty,
        code_ids=torch.stack(ids) if ids else empty.clone(),
        vq_targets=vq_targets,
    )


def collate(
    items: Sequence[EncodedConversation], pad_token_id: int, padding_side: str = "right"
) -> ConversationBatch:
    """Pad a list of conversations into one batch ("left" for generation, "right" to train)."""
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    if not items:
        raise ValueError("collate: no conversations")
    length = max(item.input_ids.shape[0] for item in items)
    b = len(items)
    input_ids = torch.full((b, length), pad_token_id, dtype=torch.long)
    labels = torch.full((b, length), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros(b, length, dtype=torch.long)
    rows, positions = [], []
    for row, item in enumerate(items):
        t = item.input_ids.shape[0]
        shift = length - t if padding_side == "left" else 0
        input_ids[row, shift : shift + t] = item.input_ids
        labels[row, shift : shift + t] = item.labels
        attention_mask[row, shift : shift + t] = 1
        rows.append(torch.full((item.code_positions.shape[0],), row, dtype=torch.long))
        positions.append(item.code_positions + shift)
    features = [item.image_features for item in items if item.image_features is not None]
    return ConversationBatch(
        input_ids=input_ids,
        attention_mask=attention_mask,
        labels=labels,
        image_features=torch.cat(features) if features else None,
        code_rows=torch.cat(rows),
        code_positions=torch.cat(positions),
        code_ids=torch.cat([item.code_ids for item in items]),
        vq_targets=_stack_targets(items),
    )


def _stack_targets(items: Sequence[EncodedConversation]) -> torch.Tensor | None:
    given = [item.vq_targets for item in items if item.vq_targets is not None]
    if not given:
        return None
    width = given[0].shape[1]
    return torch.cat(
        [
            item.vq_targets
            if item.vq_targets is not None
            else torch.full((item.code_positions.shape[0], width), IGNORE_INDEX)
            for item in items
        ]
    )


@dataclass
class ReplyPart:
    """A piece of a generated reply: text tokens, or one complete image span."""

    kind: str  # "text" or "image"
    tokens: list[int]  # text tokens, or the image's N code tokens
    start: int  # index of the first token (image: its first code token) in the reply


def split_reply(tokens: Sequence[int], vocab: ImageVocabulary) -> list[ReplyPart]:
    """Cut generated tokens into text and image parts. An image part is `<boi>`, N code
    tokens, `<eoi>`; an unfinished span (generation stopped inside it) is dropped."""
    n, parts, text, i = vocab.num_positions, [], [], 0
    tokens = list(tokens)
    while i < len(tokens):
        if tokens[i] != vocab.boi_id:
            text.append(i)
            i += 1
            continue
        codes = tokens[i + 1 : i + 1 + n]
        closed = i + 1 + n < len(tokens) and tokens[i + 1 + n] == vocab.eoi_id
        if text:
            parts.append(ReplyPart("text", [tokens[j] for j in text], text[0]))
            text = []
        if len(codes) == n and closed and bool(vocab.is_code(torch.tensor(codes)).all()):
            parts.append(ReplyPart("image", codes, i + 1))
            i += n + 2
        else:
            break  # unfinished span: nothing after it is reliable
    if text:
        parts.append(ReplyPart("text", [tokens[j] for j in text], text[0]))
    return parts
