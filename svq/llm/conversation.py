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

Message text cannot forge tokens: a control string typed in a message (`<boi>`, `<svq_3>`,
the template's `<|im_start|>`, any added token of the tokenizer) is tokenized as the plain
text it is. Only the image spans built here and the chat template's own markup become those
tokens. (Each such string is swapped for a private-use marker while the template renders, and
the stretch of text around it is tokenized with `split_special_tokens=True`.) Text without
control strings tokenizes exactly as a plain rendering of the template would.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from .vocabulary import BOI, EOI, IMAGE, ImageVocabulary

IGNORE_INDEX = -100
IMAGE_TOKENIZERS = ("svq", "spatial")  # an assistant picture is written as svq ids or h*w ids
# A control string of message text stands in the rendered template as MARK_OPEN k MARK_CLOSE
# (k: its index): private-use characters, which no template or tokenizer treats specially.
MARK_OPEN, MARK_CLOSE = "\ue000", "\ue001"
_MARK = re.compile(f"{MARK_OPEN}(\\d+){MARK_CLOSE}")


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
    messages: Sequence[dict[str, Any]],
    vocab: ImageVocabulary,
    protect: Callable[[str], str] = str,
) -> list[dict[str, str]]:
    """Messages with string contents: text parts joined with their image spans. `protect`
    is applied to the messages' own text (not to the image spans)."""
    out = []
    for message in messages:
        content = message["content"]
        if isinstance(content, str):
            out.append({"role": message["role"], "content": protect(content)})
            continue
        text = []
        for part in content:
            if part["type"] == "text":
                text.append(protect(part["text"]))
            elif part["type"] == "image":
                text.append(_image_text(part, message["role"], vocab))
            else:
                raise ValueError(f"unsupported content part type {part['type']!r}")
        out.append({"role": message["role"], "content": "".join(text)})
    return out


def resolve_images(
    messages: Sequence[dict[str, Any]],
    fetch: Callable[[dict[str, Any], str], torch.Tensor | None],
    image_tokenizer: str = "svq",
    vq_targets: bool = False,
) -> list[dict[str, Any]]:
    """The one rule for pictures in a chat, used by live chat and by the SFT cache alike: a new
    message list whose image parts carry what `encode_conversation` reads.

    Assistant pictures are written: "ids" = fetch(part, "ids") (the svq codebook ids, (N,)), or
    with `image_tokenizer` "spatial" fetch(part, "spatial_ids") (the spatial VQ's, (h*w,)); with
    `vq_targets` (svq only) also "vq_ids" = fetch(part, "spatial_ids"), the VQ head's targets
    (None without a spatial VQ). Pictures in every other turn are understood: "features" =
    fetch(part, "features"), (N, E). What a part already carries is kept (an understood part
    may also come as "ids")."""
    if image_tokenizer not in IMAGE_TOKENIZERS:
        raise ValueError(f"image_tokenizer must be one of {IMAGE_TOKENIZERS}: {image_tokenizer!r}")
    written = "spatial_ids" if image_tokenizer == "spatial" else "ids"
    resolved = []
    for message in messages:
        content = message["content"]
        if isinstance(content, str):
            resolved.append(dict(message))
            continue
        parts = []
        for part in content:
            if part.get("type") == "image":
                part = dict(part)
                if message["role"] == "assistant":
                    if part.get("ids") is None:
                        part["ids"] = fetch(part, written)
                    if vq_targets and written == "ids" and part.get("vq_ids") is None:
                        part["vq_ids"] = fetch(part, "spatial_ids")
                elif part.get("features") is None and part.get("ids") is None:
                    part["features"] = fetch(part, "features")
            parts.append(part)
        resolved.append({**message, "content": parts})
    return resolved


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
    controls = ControlStrings(tokenizer)
    plain = template_messages(messages, vocab, controls.mark)

    def render(upto: int, prompt: bool) -> str:
        marked = tokenizer.apply_chat_template(
            plain[:upto], tokenize=False, add_generation_prompt=prompt
        )
        return controls.unmark(marked)[0]

    marked = tokenizer.apply_chat_template(
        plain, tokenize=False, add_generation_prompt=add_generation_prompt
    )
    text, typed = controls.unmark(marked)
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
    ids, starts = controls.tokenize(text, typed)
    input_ids = torch.tensor(ids, dtype=torch.long)
    starts = torch.tensor(starts, dtype=torch.long)
    trained = torch.zeros_like(input_ids, dtype=torch.bool)
    for a, b in spans:
        trained |= (starts >= a) & (starts < b)
    labels = torch.where(trained, input_ids, IGNORE_INDEX)
    return _with_images(messages, input_ids, labels, vocab)


# tokenizer -> (its length, added token ids, first characters of the added tokens)
_ADDED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _added_tokens(tokenizer: PreTrainedTokenizerBase) -> tuple[frozenset[int], frozenset[str]]:
    """The ids of the tokenizer's added tokens (image tokens, template markup, ...) and their
    first characters; cached while the tokenizer keeps its length."""
    size = len(tokenizer)
    cached = _ADDED.get(tokenizer)
    if cached is None or cached[0] != size:
        decoder = tokenizer.added_tokens_decoder
        first = frozenset(token.content[:1] for token in decoder.values()) | {MARK_OPEN}
        cached = (size, frozenset(decoder), first)
        _ADDED[tokenizer] = cached
    return cached[1], cached[2]


class ControlStrings:
    """Keeps control strings typed in message text from becoming tokens (one conversation).

    `mark` swaps each control string of a message's text for a marker before the template
    renders; `unmark` puts the strings back and says where they are; `tokenize` tokenizes the
    rendered text, splitting only the stretches that hold such strings."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase):
        self.tokenizer = tokenizer
        self.added, self.first_chars = _added_tokens(tokenizer)
        self.strings: list[str] = []  # the control strings, by marker index

    def mark(self, text: str) -> str:
        """Message text with its control strings (and any MARK_OPEN) replaced by markers."""
        if self.first_chars.isdisjoint(text):  # the common case: nothing to look for
            return text
        found = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        cuts = [
            (a, b)
            for token, (a, b) in zip(found["input_ids"], found["offset_mapping"], strict=True)
            if token in self.added and b > a
        ]
        cuts += [(m.start(), m.end()) for m in re.finditer(MARK_OPEN, text)]
        out, at = [], 0
        for a, b in sorted(cuts):
            out.append(text[at:a] + f"{MARK_OPEN}{len(self.strings)}{MARK_CLOSE}")
            self.strings.append(text[a:b])
            at = b
        return "".join(out) + text[at:]

    def unmark(self, rendered: str) -> tuple[str, list[tuple[int, int]]]:
        """The rendered text with the control strings back, and their character spans."""
        out, spans, at, length = [], [], 0, 0
        for match in _MARK.finditer(rendered):
            out.append(rendered[at : match.start()])
            length += match.start() - at
            string = self.strings[int(match.group(1))]
            out.append(string)
            spans.append((length, length + len(string)))
            length += len(string)
            at = match.end()
        out.append(rendered[at:])
        return "".join(out), spans

    def tokenize(self, text: str, typed: list[tuple[int, int]]) -> tuple[list[int], list[int]]:
        """Token ids of `text` and the character where each starts. An added token that lies
        in a `typed` span was typed, not meant: the stretch between the trusted added tokens
        around it is tokenized again with special tokens split."""
        encoding = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = encoding["input_ids"], encoding["offset_mapping"]
        if not typed:
            return ids, [a for a, _ in offsets]

        def typed_at(a: int) -> bool:
            return any(x <= a < y for x, y in typed)

        out_ids, out_starts, run = [], [], []  # run: token indices since the last trusted
        for i, token in enumerate([*ids, None]):  # None: flushes the last run
            trusted = token is None or (token in self.added and not typed_at(offsets[i][0]))
            if not trusted:
                run.append(i)
                continue
            if run:
                begin = offsets[run[0] - 1][1] if run[0] > 0 else 0
                end = offsets[i][0] if token is not None else len(text)
                forged = any(ids[j] in self.added for j in run)
                if forged:
                    plain_ids, plain_starts = self.plain(text, begin, end)
                    out_ids += plain_ids
                    out_starts += plain_starts
                else:
                    out_ids += [ids[j] for j in run]
                    out_starts += [offsets[j][0] for j in run]
                run = []
            if token is not None:
                out_ids.append(token)
                out_starts.append(offsets[i][0])
        return out_ids, out_starts

    def plain(self, text: str, begin: int, end: int) -> tuple[list[int], list[int]]:
        """Tokens of text[begin:end] as plain text, with their starts: special tokens split. A
        piece that is still an added token (a sentencepiece model may hold `<unk>` among its
        own pieces) is tokenized again as its first character and the rest."""
        piece = self.tokenizer(
            text[begin:end], add_special_tokens=False, return_offsets_mapping=True,
            split_special_tokens=True,
        )  # fmt: skip
        ids, starts = [], []
        for token, (a, b) in zip(piece["input_ids"], piece["offset_mapping"], strict=True):
            if token in self.added and b - a > 1:
                for x, y in ((begin + a, begin + a + 1), (begin + a + 1, begin + b)):
                    more_ids, more_starts = self.plain(text, x, y)
                    ids += more_ids
                    starts += more_starts
            else:
                ids.append(token)
                starts.append(begin + a)
        return ids, starts


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
