"""Stage 1's auxiliary semantic loss: the picture's attribute record, read from its tokens.

Reconstruction alone lets a small tokenizer spend its bottleneck on what dominates the pixel
error (the scene's colours) and blur what is small but matters (the character's hair, skin,
glasses). This loss asks a *linear* read-out of the first `tokens` features to name every
attribute of the picture, so those tokens must carry each attribute, linearly, and early; the
decoder then has it to paint. It needs labelled pictures (the chat world's records); real
image folders would use captions instead. Training only: the read-out is not released.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class AttributeReadout(nn.Module):
    """Linear heads from the first `tokens` features, one per attribute.

    features (B, N, E) -> logits: one (B, C_a) tensor per attribute a, C_a = classes[a].
    """

    def __init__(self, tokens: int, token_dim: int, classes: Sequence[int]):
        super().__init__()
        if tokens < 1 or not classes or min(classes) < 2:
            raise ValueError(f"need tokens >= 1 and >= 2 classes per attribute, got {tokens}, "
                             f"{list(classes)}")  # fmt: skip
        self.tokens = tokens
        self.heads = nn.ModuleList(nn.Linear(tokens * token_dim, c) for c in classes)

    def forward(self, features: torch.Tensor) -> list[torch.Tensor]:
        flat = features[:, : self.tokens].flatten(1).float()  # (B, tokens * E)
        return [head(flat) for head in self.heads]


def attribute_loss(logits: Sequence[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """Mean over attributes of the cross-entropy. logits: AttributeReadout's output; labels:
    (B, A) long, SCHEMA[name].index(value) in schema order."""
    if labels.ndim != 2 or labels.shape[1] != len(logits):
        raise ValueError(f"labels {tuple(labels.shape)} do not match the read-out's "
                         f"{len(logits)} attributes")  # fmt: skip
    return sum(F.cross_entropy(lg, labels[:, a]) for a, lg in enumerate(logits)) / len(logits)
