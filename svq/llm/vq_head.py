"""The VQ head: the LLM's last hidden states at an image's 36 code tokens -> logits over the
spatial VQ codebook at all h*w grid positions, in one parallel pass (docs/design.md §2, §7).

A small bidirectional transformer over [36 projected hidden states (+ a learned position each);
h*w learned position queries]; the queries' outputs give the logits. Its ids go to
`SpatialVQ.decode`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from svq.config_base import ConfigBase
from svq.hub import HubMixin
from svq.layers import bidirectional_encoder


@dataclass
class VQHeadConfig(ConfigBase):
    """Sizes of the VQ head. `grid_size` and `codebook_size` come from the spatial VQ."""

    model_type: str = "svq_vq_head"  # written to config.json so a foreign config fails loudly
    llm_hidden: int = 896  # width of the LLM's hidden states (Qwen2.5-0.5B: 896)
    num_inputs: int = 36  # image tokens read from the LLM
    grid_size: tuple[int, int] = (16, 16)  # (h, w) of the spatial VQ grid: h*w queries
    codebook_size: int = 16384  # classes per grid position
    width: int = 512  # transformer width
    depth: int = 4  # bidirectional transformer blocks
    heads: int = 8
    mlp_ratio: float = 4.0
    dropout: float = 0.0

    def __post_init__(self) -> None:
        self.require(self.model_type == "svq_vq_head", f"model_type is {self.model_type!r}")
        self.require_positive_ints(
            "llm_hidden", "num_inputs", "codebook_size", "width", "depth", "heads"
        )
        self.require_grid_transformer()

    @property
    def num_queries(self) -> int:
        return self.grid_size[0] * self.grid_size[1]


class VQHead(nn.Module, HubMixin, library_name="svq", tags=["svq", "vq-head"]):
    """hidden (B, 36, llm_hidden) -> logits (B, h*w, codebook_size)."""

    config_class = VQHeadConfig

    def __init__(self, config: VQHeadConfig):
        super().__init__()
        self.config = config
        c = config
        self.input_norm = nn.LayerNorm(c.llm_hidden)  # LLM states are large and uncalibrated
        self.input_proj = nn.Linear(c.llm_hidden, c.width)
        self.input_pos = nn.Parameter(torch.randn(c.num_inputs, c.width) * 0.02)
        self.queries = nn.Parameter(torch.randn(c.num_queries, c.width) * 0.02)
        self.blocks = bidirectional_encoder(c.width, c.heads, c.depth, c.mlp_ratio, c.dropout)
        self.norm = nn.LayerNorm(c.width)
        self.out = nn.Linear(c.width, c.codebook_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden: (B, 36, llm_hidden) LLM states at the code tokens -> (B, h*w, K) logits."""
        c = self.config
        if hidden.ndim != 3 or tuple(hidden.shape[1:]) != (c.num_inputs, c.llm_hidden):
            raise ValueError(
                f"expected hidden states (B, {c.num_inputs}, {c.llm_hidden}), "
                f"got {tuple(hidden.shape)}"
            )
        hidden = hidden.to(dtype=self.input_proj.weight.dtype, device=self.queries.device)
        inputs = self.input_proj(self.input_norm(hidden)) + self.input_pos  # (B, 36, W)
        queries = self.queries.expand(hidden.shape[0], -1, -1)  # (B, h*w, W)
        x = self.blocks(torch.cat([inputs, queries], dim=1))  # (B, 36 + h*w, W)
        return self.out(self.norm(x[:, c.num_inputs :]))  # (B, h*w, K)

    def predict(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden: (B, 36, llm_hidden) -> spatial VQ ids (B, h*w), the most likely code each."""
        return self.forward(hidden).argmax(-1)

    def loss(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Cross-entropy against spatial VQ ids (B, h*w); -100 entries are ignored."""
        logits = self.forward(hidden)
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100)
