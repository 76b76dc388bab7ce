"""The ids-to-grid model: a picture's 36 codebook ids -> the spatial VQ's grid of ids, all grid
cells in parallel (the "second head" of the image language).

A small bidirectional transformer over [36 code embeddings (+ a learned position each); h*w
grid cells], TiTok-style: each grid cell enters as a mask token (or, during confidence
decoding, the code already chosen for it) plus a 2-D position (row + column embeddings), and
its output gives logits over the spatial codebook. It reads only the ids, so it trains offline
on rendered pictures (picture -> 36 ids -> grid ids), with no LLM, on as many pictures as
wanted. `generate` decodes in one pass (steps 1) or MaskGIT-style: a few passes, each keeping
the most confident cells of a cosine schedule.

    model = IdsToGrid(IdsToGridConfig(num_codes=256, grid_size=(8, 8), codebook_size=256))
    grid = model.generate(ids)  # ids (B, 36) -> grid ids (B, 64); SpatialVQ.decode(grid)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config_base import ConfigBase
from .hub import HubMixin
from .layers import bidirectional_encoder


@dataclass
class IdsToGridConfig(ConfigBase):
    """Sizes of the ids-to-grid model. `num_codes` / `per_position` come from the tokenizer's
    codebook, `grid_size` / `codebook_size` from the spatial VQ."""

    model_type: str = "svq_ids_to_grid"  # written to config.json so a foreign config fails
    num_positions: int = 36  # the tokenizer's ids per picture
    num_codes: int = 256  # codes per position (per_position) or in the shared codebook
    per_position: bool = True  # each position has its own codes (its own embedding rows)
    grid_size: tuple[int, int] = (8, 8)  # (h, w) of the spatial VQ grid
    codebook_size: int = 256  # spatial VQ codes (the classes of each grid cell)
    width: int = 128
    depth: int = 3
    heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.1

    def __post_init__(self) -> None:
        self.require(self.model_type == "svq_ids_to_grid", f"model_type is {self.model_type!r}")
        self.require_positive_ints(
            "num_positions", "num_codes", "codebook_size", "width", "depth", "heads"
        )
        self.require_grid_transformer()

    @property
    def num_cells(self) -> int:
        return self.grid_size[0] * self.grid_size[1]

    @property
    def mask_id(self) -> int:
        """The grid input that means "not chosen yet" (one past the spatial codes)."""
        return self.codebook_size


class IdsToGrid(nn.Module, HubMixin, library_name="svq", tags=["svq", "ids-to-grid"]):
    """ids (B, 36) [+ grid (B, h*w) with mask_id where unknown] -> logits (B, h*w, K_spatial)."""

    config_class = IdsToGridConfig

    def __init__(self, config: IdsToGridConfig):
        super().__init__()
        self.config = config
        c = config
        rows = c.num_positions * c.num_codes if c.per_position else c.num_codes
        self.code_embed = nn.Embedding(rows, c.width)
        self.code_pos = nn.Parameter(torch.randn(c.num_positions, c.width) * 0.02)
        self.cell_embed = nn.Embedding(c.codebook_size + 1, c.width)  # + the mask token
        self.row_pos = nn.Parameter(torch.randn(c.grid_size[0], 1, c.width) * 0.02)
        self.col_pos = nn.Parameter(torch.randn(1, c.grid_size[1], c.width) * 0.02)
        self.blocks = bidirectional_encoder(c.width, c.heads, c.depth, c.mlp_ratio, c.dropout)
        self.norm = nn.LayerNorm(c.width)
        self.out = nn.Linear(c.width, c.codebook_size)

    def _check(self, ids: torch.Tensor, grid: torch.Tensor | None) -> None:
        c = self.config
        if ids.ndim != 2 or ids.shape[1] != c.num_positions:
            raise ValueError(f"expected ids (B, {c.num_positions}), got {tuple(ids.shape)}")
        if ids.dtype not in (torch.int32, torch.int64) or ids.min() < 0 or ids.max() >= c.num_codes:
            raise ValueError(f"ids must be integers in [0, {c.num_codes})")
        if grid is not None and (
            grid.shape != (ids.shape[0], c.num_cells) or grid.min() < 0 or grid.max() > c.mask_id
        ):
            raise ValueError(
                f"expected grid ({ids.shape[0]}, {c.num_cells}) in [0, {c.mask_id}] "
                f"({c.mask_id} = not chosen), got {tuple(grid.shape)}"
            )

    def forward(self, ids: torch.Tensor, grid: torch.Tensor | None = None) -> torch.Tensor:
        """ids (B, 36) long; grid (B, h*w) long, mask_id where not chosen (None: all masked)
        -> logits (B, h*w, codebook_size)."""
        c = self.config
        self._check(ids, grid)
        ids = ids.long().to(self.code_pos.device)
        if c.per_position:  # position p's code k is row p * K + k
            ids = ids + torch.arange(c.num_positions, device=ids.device) * c.num_codes
        codes = self.code_embed(ids) + self.code_pos  # (B, 36, W)
        if grid is None:
            grid = torch.full((ids.shape[0], c.num_cells), c.mask_id, device=ids.device)
        cells = self.cell_embed(grid.long().to(ids.device))  # (B, h*w, W)
        cells = cells + (self.row_pos + self.col_pos).flatten(0, 1)
        x = self.blocks(torch.cat([codes, cells], dim=1))  # (B, 36 + h*w, W)
        return self.out(self.norm(x[:, c.num_positions :]))  # (B, h*w, K)

    def loss(
        self, ids: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0,
        masked: bool = True,
    ) -> torch.Tensor:  # fmt: skip
        """Cross-entropy against the grid ids `targets` (B, h*w). masked: MaskGIT training,
        each picture shows a random share of its cells (the rest masked, share 1 - cos(pi/2 r)
        for r ~ U(0, 1)) and the loss is on the masked cells; off: every cell masked (the
        one-pass model)."""
        c = self.config
        if masked:
            b, n = targets.shape
            ratio = torch.cos(math.pi / 2 * torch.rand(b, 1, device=targets.device))  # masked
            hide = torch.rand(b, n, device=targets.device) < ratio
            hide[torch.arange(b), torch.randint(n, (b,), device=targets.device)] = True
            grid = torch.where(hide, torch.full_like(targets, c.mask_id), targets)
            logits = self.forward(ids, grid)[hide]  # (M, K)
            return F.cross_entropy(logits.float(), targets[hide], label_smoothing=label_smoothing)
        logits = self.forward(ids).flatten(0, 1)
        return F.cross_entropy(logits.float(), targets.flatten(), label_smoothing=label_smoothing)

    @torch.no_grad()
    def generate(
        self, ids: torch.Tensor, steps: int = 1, temperature: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:  # fmt: skip
        """ids (B, 36) -> grid ids (B, h*w). steps 1: every cell in one pass; more: MaskGIT
        confidence decoding (after pass s, the most confident cells are kept so that a share
        cos(pi/2 * s / steps) stays masked). temperature 0: the most likely code; > 0: sampled
        from the softened distribution (confidence = the chosen code's probability)."""
        c = self.config
        if steps < 1 or temperature < 0:
            raise ValueError(f"need steps >= 1 and temperature >= 0, got {steps}, {temperature}")
        b, n = ids.shape[0], c.num_cells
        grid = torch.full((b, n), c.mask_id, device=self.code_pos.device)
        for step in range(1, steps + 1):
            logits = self.forward(ids, grid).float()  # (B, n, K)
            if temperature > 0:
                probs = torch.softmax(logits / temperature, -1)
                choice = torch.multinomial(probs.flatten(0, 1), 1, generator=generator).view(b, n)
            else:
                probs, choice = torch.softmax(logits, -1), logits.argmax(-1)
            confidence = probs.gather(-1, choice.unsqueeze(-1)).squeeze(-1)  # (B, n)
            unknown = grid == c.mask_id
            still_masked = math.floor(n * math.cos(math.pi / 2 * step / steps))
            confidence = confidence.masked_fill(~unknown, math.inf)  # chosen cells stay
            keep = torch.zeros_like(unknown)
            order = confidence.argsort(-1, descending=True)
            keep.scatter_(1, order[:, : n - still_masked], True)
            grid = torch.where(keep & unknown, choice, grid)
        return grid
