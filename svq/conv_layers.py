"""Conv blocks for CPU-scale tokenizers: the encoder's downsampling stem and the conv decoder's
FiLM residual block.

Shapes use B = batch, C = channels, H x W = the map, S = the width of a block's conditions.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ResBlock


class ConvStem(nn.Module):
    """Conv 3x3 to channels[0] at full resolution, then for each next width a stride-2 4x4 conv
    (halving the side) followed by `blocks` residual blocks (GroupNorm, SiLU, conv 3x3, twice).

    (B, in_channels, H, W) -> (B, channels[-1], H / f, W / f), f = 2**(len(channels) - 1).
    """

    def __init__(self, in_channels: int, channels: list[int], blocks: int):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, channels[0], 3, padding=1)
        self.stages = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(c_in, c_out, 4, stride=2, padding=1),
                *(ResBlock(c_out, conv1_bias=False) for _ in range(blocks)),
            )
            for c_in, c_out in itertools.pairwise(channels)
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(images)
        for stage in self.stages:
            x = stage(F.silu(x))
        return F.silu(x)


class FiLM(nn.Module):
    """GroupNorm without affine, then a per-channel scale and shift from the conditions:
    (1 + a) * GN(x) + b with (a, b) = Linear(cond), zero-initialised, so it starts as plain GN
    and the conditions' effect grows from zero with a fixed sign convention."""

    def __init__(self, channels: int, cond_dim: int):
        super().__init__()
        self.norm = nn.GroupNorm(8, channels, affine=False)
        self.modulation = nn.Linear(cond_dim, 2 * channels)
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W), cond: (B, S) -> (B, C, H, W)."""
        a, b = self.modulation(cond)[:, :, None, None].chunk(2, dim=1)  # (B, C, 1, 1) each
        return (1 + a) * self.norm(x) + b


class FiLMResBlock(nn.Module):
    """x + conv(SiLU(FiLM(conv(SiLU(FiLM(x, c))), c))): both norms modulated by the same
    conditions c, the block's own group of tokens. (B, C, H, W), (B, S) -> (B, C, H, W)."""

    def __init__(self, channels: int, cond_dim: int):
        super().__init__()
        self.film1 = FiLM(channels, cond_dim)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.film2 = FiLM(channels, cond_dim)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.film1(x, cond)))
        return x + self.conv2(F.silu(self.film2(h, cond)))


class Upsample(nn.Module):
    """Nearest 2x upsample, then conv 3x3 to the next width. (B, C, H, W) -> (B, C', 2H, 2W)."""

    def __init__(self, channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))
