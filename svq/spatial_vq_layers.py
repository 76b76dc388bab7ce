"""Convolutional encoder and decoder of the spatial VQ tokenizer (VQGAN / LlamaGen VQ-16 layout).

Each resolution level has `num_res_blocks` GroupNorm + SiLU ResNet blocks; the lowest level
adds self-attention after each of its blocks, and a middle block (ResNet, attention, ResNet)
sits at the bottleneck. Shapes: B batch, C channels, H x W pixels, h x w latent grid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .layers import ResBlock

EPS = 1e-6  # the GroupNorms' (VQGAN's)


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(groups, channels, eps=EPS)


class AttnBlock(nn.Module):
    """Single-head self-attention over the h*w positions, with a residual connection."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = group_norm(channels, groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, h, w) -> (B, C, h, w)."""
        h, w = x.shape[-2:]
        qkv = rearrange(self.qkv(self.norm(x)), "b (n c) h w -> n b 1 (h w) c", n=3)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (B, 1, h*w, C)
        return x + self.proj(rearrange(out, "b 1 (h w) c -> b c h w", h=h, w=w))


class Downsample(nn.Module):
    """Stride-2 conv3x3 with the asymmetric (0, 1, 0, 1) padding of VQGAN / LlamaGen."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H/2, W/2)."""
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest-neighbour 2x, then conv3x3."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, 2H, 2W)."""
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """One resolution level: ResNet blocks (each followed by attention if `attn`), then an
    optional resampler."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        blocks: int,
        groups: int,
        dropout: float,
        attn: bool,
        resample: nn.Module | None,
    ):
        super().__init__()
        self.res = nn.ModuleList(
            ResBlock(in_ch if i == 0 else out_ch, out_ch, groups, dropout, eps=EPS)
            for i in range(blocks)
        )
        self.attn = nn.ModuleList(AttnBlock(out_ch, groups) for _ in range(blocks if attn else 0))
        self.resample = resample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.res):
            x = block(x)
            if self.attn:
                x = self.attn[i](x)
        return x if self.resample is None else self.resample(x)


class MidBlock(nn.Module):
    """ResNet, attention, ResNet at the lowest resolution."""

    def __init__(self, channels: int, groups: int, dropout: float):
        super().__init__()
        self.res1 = ResBlock(channels, channels, groups, dropout, eps=EPS)
        self.attn = AttnBlock(channels, groups)
        self.res2 = ResBlock(channels, channels, groups, dropout, eps=EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res2(self.attn(self.res1(x)))


class ConvEncoder(nn.Module):
    """images (B, in_channels, H, W) -> (B, z_channels, H / 2^(L-1), W / 2^(L-1)), L levels."""

    def __init__(
        self,
        in_channels: int,
        channels: int,
        channel_mult: tuple[int, ...],
        num_res_blocks: int,
        z_channels: int,
        groups: int,
        dropout: float = 0.0,
    ):
        super().__init__()
        widths = [channels * m for m in channel_mult]
        last = len(widths) - 1
        self.conv_in = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.levels = nn.ModuleList(
            Level(
                channels if i == 0 else widths[i - 1],
                width,
                num_res_blocks,
                groups,
                dropout,
                attn=i == last,
                resample=Downsample(width) if i < last else None,
            )
            for i, width in enumerate(widths)
        )
        self.mid = MidBlock(widths[-1], groups, dropout)
        self.norm_out = group_norm(widths[-1], groups)
        self.conv_out = nn.Conv2d(widths[-1], z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for level in self.levels:
            x = level(x)
        return self.conv_out(F.silu(self.norm_out(self.mid(x))))


class ConvDecoder(nn.Module):
    """(B, z_channels, h, w) -> images (B, out_channels, h * 2^(L-1), w * 2^(L-1)).

    Mirrors the encoder from the lowest resolution up, with one more ResNet block per level
    (as VQGAN / LlamaGen); attention at the lowest level and in the middle block.
    """

    def __init__(
        self,
        out_channels: int,
        channels: int,
        channel_mult: tuple[int, ...],
        num_res_blocks: int,
        z_channels: int,
        groups: int,
        dropout: float = 0.0,
    ):
        super().__init__()
        widths = [channels * m for m in reversed(channel_mult)]  # lowest resolution first
        last = len(widths) - 1
        self.conv_in = nn.Conv2d(z_channels, widths[0], 3, padding=1)
        self.mid = MidBlock(widths[0], groups, dropout)
        self.levels = nn.ModuleList(
            Level(
                widths[max(i - 1, 0)],
                width,
                num_res_blocks + 1,
                groups,
                dropout,
                attn=i == 0,
                resample=Upsample(width) if i < last else None,
            )
            for i, width in enumerate(widths)
        )
        self.norm_out = group_norm(widths[-1], groups)
        self.conv_out = nn.Conv2d(widths[-1], out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.mid(self.conv_in(z))
        for level in self.levels:
            x = level(x)
        return self.conv_out(F.silu(self.norm_out(x)))
