"""Understanding: an MLP maps the tokenizer's continuous features (B, 36, E) to LLM input
embeddings, which replace the `<image>` placeholders of the prompt (LLaVA-1.5's projector).

`reads` "token" (LLaVA's) maps each token on its own; "all" first mixes the tokens (a Linear
from all N x E features to N x J), so every embedding is made from every token: for narrow
tokens, whose attributes no single token states linearly (the decoder reads them together),
the per-token MLP then meets features that can."""

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
    reads: str = "token"  # token: embedding i from token i's features; all: mixed tokens'
    num_tokens: int = 36  # N, the tokens of a picture (what reads "all" mixes)
    mix_dim: int | None = None  # reads "all": J, the width of each mixed token; None means E

    def __post_init__(self) -> None:
        need = self.require
        need(self.model_type == "svq_projector", f"model_type is {self.model_type!r}")
        need(self.reads in PROJECTOR_READS, f"reads {self.reads!r} not in {PROJECTOR_READS}")
        for name in ("in_dim", "out_dim", "depth", "num_tokens"):
            need(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("hidden_dim", "mix_dim"):
            value = getattr(self, name)
            need(value is None or value >= 1, f"{name} must be >= 1 or None, got {value}")


class ImageProjector(nn.Module, HubMixin, library_name="svq", tags=["svq", "projector"]):
    """features (..., N, E) -> LLM input embeddings (..., N, D).

    reads "token": the MLP maps each token's E features to its embedding (any leading shape,
    (..., E) -> (..., D)). reads "all": `mix`, a Linear from the flattened N x E features to
    N x J, then the same per-token MLP from J."""

    config_class = ProjectorConfig

    def __init__(self, config: ProjectorConfig):
        super().__init__()
        self.config = config
        self.mix = None
        first = config.in_dim
        if config.reads == "all":
            first = config.mix_dim or config.in_dim
            self.mix = nn.Linear(config.num_tokens * config.in_dim, config.num_tokens * first)
        hidden = config.hidden_dim or config.out_dim
        widths = [first] + [hidden] * (config.depth - 1) + [config.out_dim]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(itertools.pairwise(widths)):
            if i > 0:
                layers.append(nn.GELU())
            layers.append(nn.Linear(a, b))
        self.mlp = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """features: (..., N, E) -> (..., N, D) (reads "token": any (..., E))."""
        n, e = self.config.num_tokens, self.config.in_dim
        if features.shape[-1] != e or (self.mix is not None and features.shape[-2:] != (n, e)):
            expected = f"(..., {n}, {e})" if self.mix is not None else f"(..., {e})"
            raise ValueError(f"expected features {expected}, got {tuple(features.shape)}")
        weight = self.mlp[0].weight
        x = features.to(device=weight.device, dtype=weight.dtype)
        if self.mix is not None:  # (..., N * E) -> (..., N, J)
            x = self.mix(x.flatten(-2)).unflatten(-1, (n, -1))
        return self.mlp(x)


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
