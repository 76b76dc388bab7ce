"""Understanding: an MLP maps the tokenizer's continuous features (B, 36, E) to LLM input
embeddings, which replace the `<image>` placeholders of the prompt (LLaVA-1.5's projector).

`reads` "token" (LLaVA's) maps each token on its own; "all" makes every embedding from every
token's features (the first layer reads the flattened N x E features): for narrow tokens, whose
attributes no single token states linearly, the decoder reads them together and so can this."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import nn

from svq.config_base import ConfigBase
from svq.hub import HubMixin

PROJECTOR_READS = ("token", "all")


@dataclass
class ProjectorConfig(ConfigBase):
    """Widths of the understanding projector."""

    model_type: str = "svq_projector"  # written to config.json so a foreign config fails loudly
    in_dim: int = 128  # E: the svq tokenizer's feature width
    out_dim: int = 896  # the LLM's hidden size (Qwen2.5-0.5B: 896)
    hidden_dim: int | None = None  # MLP width; None means out_dim
    depth: int = 2  # Linear layers; GELU between them (LLaVA-1.5: 2)
    reads: str = "token"  # token: embedding i from token i's features; all: from all N tokens'
    num_tokens: int = 36  # N, the tokens of a picture (what reads "all" flattens)

    def __post_init__(self) -> None:
        need = self.require
        need(self.model_type == "svq_projector", f"model_type is {self.model_type!r}")
        need(self.reads in PROJECTOR_READS, f"reads {self.reads!r} not in {PROJECTOR_READS}")
        for name in ("in_dim", "out_dim", "depth", "num_tokens"):
            need(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        need(
            self.hidden_dim is None or self.hidden_dim >= 1,
            f"hidden_dim must be >= 1 or None, got {self.hidden_dim}",
        )


class ImageProjector(nn.Module, HubMixin, library_name="svq", tags=["svq", "projector"]):
    """features (..., N, E) -> LLM input embeddings (..., N, D).

    reads "token": the MLP maps each token's E features to its embedding (any leading shape,
    (..., E) -> (..., D)). reads "all": its first Linear maps the flattened N x E features to
    N x (its output width), one slice per embedding; the rest of the MLP is per token."""

    config_class = ProjectorConfig

    def __init__(self, config: ProjectorConfig):
        super().__init__()
        self.config = config
        hidden = config.hidden_dim or config.out_dim
        widths = [config.in_dim] + [hidden] * (config.depth - 1) + [config.out_dim]
        self.joint = config.reads == "all"
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(itertools.pairwise(widths)):
            if i > 0:
                layers.append(nn.GELU())
            elif self.joint:  # all N tokens in, N slices of the first layer's width out
                a, b = a * config.num_tokens, b * config.num_tokens
            layers.append(nn.Linear(a, b))
        self.mlp = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """features: (..., N, E) -> (..., N, D) (reads "token": any (..., E))."""
        n, e = self.config.num_tokens, self.config.in_dim
        if features.shape[-1] != e or (self.joint and features.shape[-2:] != (n, e)):
            expected = f"(..., {n}, {e})" if self.joint else f"(..., {e})"
            raise ValueError(f"expected features {expected}, got {tuple(features.shape)}")
        weight = self.mlp[0].weight
        x = features.to(device=weight.device, dtype=weight.dtype)
        if not self.joint:
            return self.mlp(x)
        first = self.mlp[0](x.flatten(-2))  # (..., N * width)
        return self.mlp[1:](first.unflatten(-1, (n, -1)))


def inject_image_embeds(
    inputs_embeds: torch.Tensor,
    input_ids: torch.Tensor,
    image_embeds: torch.Tensor,
    image_token_id: int,
) -> torch.Tensor:
    """Write the images' embeddings at the `<image>` positions, in reading order.

    inputs_embeds: (B, T, D); input_ids: (B, T); image_embeds: (M, N, D), the M images of the
    batch in order (conversation by conversation, then by position). Returns a new tensor.
    """
    mask = input_ids == image_token_id  # (B, T)
    slots, given = int(mask.sum()), image_embeds.shape[0] * image_embeds.shape[1]
    if slots != given:
        raise ValueError(
            f"the prompt has {slots} <image> tokens but {image_embeds.shape[0]} images x "
            f"{image_embeds.shape[1]} embeddings = {given} were given"
        )
    if image_embeds.shape[-1] != inputs_embeds.shape[-1]:
        raise ValueError(
            f"image embeddings are {image_embeds.shape[-1]} wide, the LLM {inputs_embeds.shape[-1]}"
        )
    source = image_embeds.reshape(-1, inputs_embeds.shape[-1]).to(inputs_embeds.dtype)
    # masked_scatter fills the masked slots in row-major order: the same order as the images
    return inputs_embeds.masked_scatter(mask.unsqueeze(-1), source)
