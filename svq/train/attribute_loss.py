"""Stage 1's auxiliary semantic loss: the picture's attribute record, read from its tokens.

Reconstruction alone lets a small tokenizer spend its bottleneck on what dominates the pixel
error (the scene's colours) and blur what is small but matters (the character's hair, skin,
glasses). This loss asks a *linear* read-out of the first `tokens` features to name every
attribute of the picture, so those tokens must carry each attribute, linearly, and early; the
decoder then has it to paint. It needs labelled pictures (the chat world's records); real
image folders would use captions instead. Training only: the read-out is not released.

`attribute_spans` can give the identity attributes (hair, skin, shirt, hat, glasses) tokens of
their own after the scene's, so the person is asked of a group the scene is not asked of.
`swap_identity` builds pictures' tokens with another picture's person group, whose decodes,
encoded again, must read as the donor's person in the recipient's scene (stage 1's
`attribute_swap_images`, meant to keep the other tokens from carrying the person; measured at
32 px it costs 2 dB and moves no more of the person into the group: off).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from svq.data.schema import IDENTITY_ATTRIBUTES, SCHEMA


def attribute_spans(tokens: int, identity_tokens: int = 0) -> list[tuple[int, int]]:
    """Each attribute's token range [start, end), in SCHEMA order: the first `tokens` for
    every attribute, or with `identity_tokens` > 0 the identity attributes' own next ones,
    [tokens, tokens + identity_tokens), and the scene attributes the first `tokens`."""
    if tokens < 1 or identity_tokens < 0:
        raise ValueError(f"need tokens >= 1 and identity_tokens >= 0, got {tokens}, "
                         f"{identity_tokens}")  # fmt: skip
    own = (tokens, tokens + identity_tokens)
    return [own if identity_tokens and a in IDENTITY_ATTRIBUTES else (0, tokens) for a in SCHEMA]


class AttributeReadout(nn.Module):
    """Linear heads from the first `tokens` features (or per attribute from `spans`, its token
    range [start, end)), one per attribute.

    features (B, N, E) -> logits: one (B, C_a) tensor per attribute a, C_a = classes[a].
    """

    def __init__(
        self,
        tokens: int,
        token_dim: int,
        classes: Sequence[int],
        spans: Sequence[tuple[int, int]] | None = None,
    ):
        super().__init__()
        if tokens < 1 or not classes or min(classes) < 2:
            raise ValueError(f"need tokens >= 1 and >= 2 classes per attribute, got {tokens}, "
                             f"{list(classes)}")  # fmt: skip
        spans = [(0, tokens)] * len(classes) if spans is None else [tuple(s) for s in spans]
        if len(spans) != len(classes) or any(not 0 <= a < b for a, b in spans):
            raise ValueError(f"need one token range [start, end) per attribute, got {spans}")
        self.tokens = max(end for _, end in spans)  # the features it needs
        self.spans = spans
        self.heads = nn.ModuleList(nn.Linear((b - a) * token_dim, c)
                                   for (a, b), c in zip(spans, classes, strict=True))  # fmt: skip

    def forward(self, features: torch.Tensor) -> list[torch.Tensor]:
        if features.shape[1] < self.tokens:
            raise ValueError(f"the read-out needs {self.tokens} tokens, got "
                             f"{tuple(features.shape)}")  # fmt: skip
        flats = {
            span: features[:, span[0] : span[1]].flatten(1).float() for span in set(self.spans)
        }
        return [head(flats[span]) for head, span in zip(self.heads, self.spans, strict=True)]


def attribute_loss(logits: Sequence[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """Mean over attributes of the cross-entropy. logits: AttributeReadout's output; labels:
    (B, A) long, SCHEMA[name].index(value) in schema order."""
    if labels.ndim != 2 or labels.shape[1] != len(logits):
        raise ValueError(f"labels {tuple(labels.shape)} do not match the read-out's "
                         f"{len(logits)} attributes")  # fmt: skip
    return sum(F.cross_entropy(lg, labels[:, a]) for a, lg in enumerate(logits)) / len(logits)


def swap_identity(
    features: torch.Tensor, labels: torch.Tensor, span: tuple[int, int], count: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Composites of the first `count` pictures with the person tokens `span` [start, end) of the
    picture before each (cyclically): features (B, N, E), labels (B, A) in SCHEMA order ->
    (count, N, E) features, (count, A) labels: the identity attributes the donor's, the rest
    the recipient's."""
    b = features.shape[0]
    if b < 2 or not 1 <= count <= b:
        raise ValueError(f"need a batch of >= 2 and 1 <= count <= {b}, got {b}, {count}")
    start, end = span
    donor = features.roll(1, 0)[:count]
    mixed = torch.cat([features[:count, :start], donor[:, start:end], features[:count, end:]], 1)
    person = torch.tensor([a in IDENTITY_ATTRIBUTES for a in SCHEMA], device=labels.device)
    mixed_labels = torch.where(person, labels.roll(1, 0)[:count], labels[:count])
    return mixed, mixed_labels
