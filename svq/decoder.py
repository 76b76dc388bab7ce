"""The decoder: N tokens (B, N, E) -> image, StyleGAN2-w+-like (k tokens injected per block).

The transformer trunk's P position outputs end in a pixel head (target "pixels") or in a code
head (target "spatial_vq"): logits over a spatial VQ tokenizer's codebook at every position of
its grid, in one pass. `SVQConvDecoder` (decoder "conv") is the conv synthesis variant."""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint

from .config import SVQConfig
from .conv_layers import FiLMResBlock, Upsample
from .layers import Block, CondBlockV1, CondBlockV2, ConvRefiner


class PixelHead(nn.Module):
    """LN on the P position outputs, Linear(D -> C*p*p), unpatchify, conv refiner.
    Output is unbounded: clamp only when converting to uint8.

    With `skip`, the refiner adds to the unpatchified image instead of replacing it: the
    refiner's GroupNorms normalise each picture's statistics away, so without the skip its
    overall colour and brightness must be rebuilt from padding effects (the reference has no
    skip)."""

    def __init__(self, config: SVQConfig):
        super().__init__()
        self.patch = config.patch_size
        self.grid = config.grid_size
        self.skip = config.pixel_skip
        self.norm = nn.LayerNorm(config.decoder_width)
        self.to_pixels = nn.Linear(config.decoder_width, config.in_channels * config.patch_size**2)
        self.refiner = ConvRefiner(
            config.in_channels, config.refiner_channels, config.refiner_kernel
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, P, D) -> images (B, C, H, W)."""
        patches = self.to_pixels(self.norm(x))  # (B, P, C*p*p)
        image = rearrange(
            patches, "b (h w) (c p q) -> b c (h p) (w q)", h=self.grid, p=self.patch, q=self.patch
        )
        refined = self.refiner(image)
        return image + refined if self.skip else refined


class CodeHead(nn.Module):
    """LN on the P = g*g position outputs, Linear(D -> s*s*K): each position predicts the s x s
    cells of the spatial VQ grid (side S = s*g) it covers, as logits over K codes."""

    def __init__(self, config: SVQConfig):
        super().__init__()
        self.grid = config.grid_size
        self.sub = config.spatial_grid_size // config.grid_size  # s
        self.norm = nn.LayerNorm(config.decoder_width)
        self.to_logits = nn.Linear(config.decoder_width, self.sub**2 * config.spatial_codebook_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, P, D) -> logits (B, S*S, K), row-major over the spatial grid (as its ids)."""
        logits = self.to_logits(self.norm(x))  # (B, g*g, s*s*K)
        return rearrange(
            logits, "b (h w) (p q k) -> b (h p w q) k", h=self.grid, p=self.sub, q=self.sub
        )


class SVQDecoder(nn.Module):
    """Bridge Linear(E -> D), conditioned blocks (v1 slots or v2 prepended conditions), plain
    blocks, then on the P position tokens the pixel head (target "pixels") or the code head
    (target "spatial_vq")."""

    def __init__(self, config: SVQConfig):
        super().__init__()
        d, k = config.decoder_width, config.conds_per_block
        self.variant = config.decoder
        self.k = k
        self.num_patches = config.num_patches
        self.gradient_checkpointing = config.gradient_checkpointing
        self.bridge = nn.Linear(config.token_dim, d)
        # v1 keeps N placeholder slots in front of the positions; v2 starts from positions only.
        slots = config.num_tokens if self.variant == "v1" else 0
        self.pos_embed = nn.Parameter(d**-0.5 * torch.randn(slots + config.num_patches, d))
        self.norm_pos = nn.LayerNorm(d)
        cond_block = CondBlockV1 if self.variant == "v1" else CondBlockV2
        self.cond_blocks = nn.ModuleList(
            cond_block(
                d,
                config.decoder_heads,
                config.decoder_mlp_ratio,
                k,
                zero=config.adaln == "zero",
                cond_proj=config.cond_proj,
            )
            for _ in range(config.decoder_cond_layers)
        )
        self.blocks = nn.ModuleList(
            Block(d, config.decoder_heads, config.decoder_mlp_ratio)
            for _ in range(config.decoder_plain_layers)
        )
        self.target = config.target
        if self.target == "pixels":
            self.pixel_head = PixelHead(config)
        else:
            self.code_head = CodeHead(config)

    def _run(self, block: nn.Module, *args) -> torch.Tensor:
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(block, *args, use_reentrant=False)
        return block(*args)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """features: (B, N, E) -> images (B, C, H, W) (target "pixels") or spatial VQ logits
        (B, S*S, K) (target "spatial_vq")."""
        conds = self.bridge(features)  # (B, N, D)
        x = self.norm_pos(self.pos_embed).expand(conds.shape[0], -1, -1)  # (B, [N +] P, D)
        for index, block in enumerate(self.cond_blocks):
            pair = conds[:, index * self.k : (index + 1) * self.k]  # (B, k, D)
            if self.variant == "v1":
                x = self._run(block, x, pair, index)
            else:
                x = self._run(block, x, pair)  # sequence grows by k
        for block in self.blocks:
            x = self._run(block, x)
        positions = x[:, -self.num_patches :]  # (B, P, D)
        if self.target == "pixels":
            return self.pixel_head(positions)
        return self.code_head(positions)


class SVQConvDecoder(nn.Module):
    """Decoder "conv": StyleGAN-like synthesis, coarse to fine, the tokens in order (w+ style).

    A learned 4x4 constant; at each resolution 4x4, 8x8, ... image_size, its share of the
    `decoder_cond_layers` FiLM residual blocks (config.decoder_level_blocks), then nearest
    upsample + conv to the next width; SiLU and a conv 3x3 to pixels. Conditioned block l
    (counted coarse to fine) reads tokens l*k .. l*k+k-1 (k = conds_per_block), flattened to
    one vector: the first tokens shape the coarsest maps. With `conv_reads` "prefix" it reads
    tokens 0 .. l*k+k-1 instead (the later ones zeroed in an N*E-wide vector), so the first
    tokens reach every resolution. With `conv_input` "first" / "all" the constant gets a map
    made from the first group's / every token (a zero-initialised Linear to C0 x 4 x 4): the
    per-channel FiLM cannot say *where*, this can; `conv_input_levels` > 1 adds such a map at
    the next resolutions too (8x8, 16x16, ...), after their upsample. With `conv_skip` every
    coarser resolution also paints (a 1x1 conv to pixels, upsampled and summed: StyleGAN2's
    skip generator), so the coarse blocks get a direct gradient. Output is unbounded, like the
    transformer decoder's.
    """

    def __init__(self, config: SVQConfig):
        super().__init__()
        channels, k = config.decoder_channels, config.conds_per_block
        self.k = k
        self.gradient_checkpointing = config.gradient_checkpointing
        self.prefix = config.conv_reads == "prefix"
        cond_dim = (config.num_tokens if self.prefix else k) * config.token_dim
        self.const = nn.Parameter(0.1 * torch.randn(channels[0], 4, 4))
        self.input_tokens = {"const": 0, "first": k, "all": config.num_tokens}[config.conv_input]
        self.to_input = None  # the 4x4 map: a zero-initialised Linear to C0 x 4 x 4
        self.finer_inputs = None  # conv_input_levels > 1: the same at 8x8, 16x16, ...
        if self.input_tokens:
            reads = self.input_tokens * config.token_dim
            self.to_input = zero_linear(reads, channels[0] * 16)
            self.finer_inputs = nn.ModuleList(
                zero_linear(reads, channels[level] * 16 * 4**level)
                for level in range(1, config.conv_input_levels)
            )
        self.levels = nn.ModuleList(
            nn.ModuleList(FiLMResBlock(c, cond_dim) for _ in range(blocks))
            for c, blocks in zip(channels, config.decoder_level_blocks, strict=True)
        )
        self.ups = nn.ModuleList(Upsample(c, c_next) for c, c_next in itertools.pairwise(channels))
        self.to_pixels = nn.Conv2d(channels[-1], config.in_channels, 3, padding=1)
        self.skips = None  # (the finest resolution paints through to_pixels)
        if config.conv_skip:
            self.skips = nn.ModuleList(nn.Conv2d(c, config.in_channels, 1) for c in channels[:-1])

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """features: (B, N, E) -> images (B, C, H, W)."""
        if self.prefix:  # (B, L, N*E): group l is every token up to its own, zeros after
            n = features.shape[1]
            seen = torch.arange(n, device=features.device) < self.k * torch.arange(
                1, n // self.k + 1, device=features.device
            ).unsqueeze(1)  # (L, N)
            groups = (seen.unsqueeze(-1) * features.unsqueeze(1)).flatten(2)
        else:
            groups = rearrange(features, "b (l k) e -> b l (k e)", k=self.k)  # (B, L, k*E)
        x = self.const.expand(features.shape[0], -1, -1, -1)  # (B, C0, 4, 4)
        read = None  # (B, n*E): what the token-made maps read
        if self.to_input is not None:
            read = features[:, : self.input_tokens].flatten(1)
        index, painted = 0, None
        for level, blocks in enumerate(self.levels):
            if level > 0:
                if self.skips is not None:  # this level's picture joins the coarser ones'
                    paint = self.skips[level - 1](F.silu(x))
                    painted = paint if painted is None else paint + upsample2(painted)
                x = self.ups[level - 1](x)  # (B, C_level, 2H, 2W)
            if self.to_input is not None and level < 1 + len(self.finer_inputs):
                to_map = self.finer_inputs[level - 1] if level else self.to_input
                x = x + to_map(read).view_as(x)  # (B, C_level, S, S)
            for block in blocks:
                cond = groups[:, index]  # (B, k*E)
                if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                    x = checkpoint(block, x, cond, use_reentrant=False)
                else:
                    x = block(x, cond)
                index += 1
        out = self.to_pixels(F.silu(x))
        return out if painted is None else out + upsample2(painted)


def zero_linear(in_features: int, out_features: int) -> nn.Linear:
    """A Linear whose weight and bias start at zero (its branch starts silent)."""
    linear = nn.Linear(in_features, out_features)
    nn.init.zeros_(linear.weight)
    nn.init.zeros_(linear.bias)
    return linear


def upsample2(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, 2H, 2W), bilinear."""
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
