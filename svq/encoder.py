"""The encoder: image -> N ordered attribute tokens (B, N, E) through a small bottleneck."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint

from .config import SVQConfig
from .conv_layers import ConvStem
from .layers import Block


class FeatureHead(nn.Module):
    """Final LN'd query outputs -> Linear(W, E) -> the bottleneck.

    - `v1`: L2-normalise each token.
    - `v2`: cosine soft quantiser: sim = cos(mu, A) + 1 against learned atoms A (M, E);
      weights sim / sum(sim) (`linear`, the seed) or softmax(cos / T); out = LN(weights @ A).
      Invariant to the scale of mu.
    - `none`: the linear projection as is.
    - `ln`: LayerNorm over E without affine: each token zero-mean, unit-variance.
    - `rms`: each picture's N x E features divided by their root mean square: unit energy per
      picture (so additive noise c still sets the signal-to-noise ratio, 1 / c**2, on average),
      which the encoder may share unevenly between tokens and dimensions; 1 degree of freedom
      lost per picture, against `ln`'s 2 per token.
    Training-only noise (`noise_scale` c): multiplicative mu + c*|mu|*eps or additive mu + c*eps,
    times `noise_gain` (1; a trainer may ramp it, see svq/train/stage1.py).

    `in_dim`: the width of the rows it reads; None (the conv encoder, whose rows are already E
    wide) skips the projection.
    """

    def __init__(self, config: SVQConfig, in_dim: int | None):
        super().__init__()
        self.kind = config.head
        self.atom_norm = config.atom_norm
        self.temperature = config.atom_temperature
        self.noise_scale = config.noise_scale
        self.noise_type = config.noise_type
        self.noise_gain = 1.0  # not a weight: a training schedule's knob
        self.token_dim = config.token_dim
        self.proj = nn.Linear(in_dim, config.token_dim) if in_dim is not None else nn.Identity()
        if self.kind == "v2":
            scale = config.encoder_width**-0.5
            self.atoms = nn.Parameter(scale * torch.randn(config.atoms, config.token_dim))
            self.norm = nn.LayerNorm(config.token_dim)

    def quantiser(self, mu: torch.Tensor) -> torch.Tensor:
        """v2 soft quantiser in fp32 outside autocast. mu: (..., E) -> (..., E)."""
        with torch.autocast(mu.device.type, enabled=False):
            sim = F.normalize(mu.float(), dim=-1) @ F.normalize(self.atoms.float(), dim=-1).T
            if self.atom_norm == "linear":
                sim = sim + 1  # cosine in [-1, 1] -> non-negative weights
                weights = sim / sim.sum(-1, keepdim=True)
            else:
                weights = torch.softmax(sim / self.temperature, dim=-1)
            return self.norm(weights @ self.atoms.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, N, W) -> features (B, N, E)."""
        mu = self.proj(x)
        if self.kind == "v1":
            mu = F.normalize(mu.float(), dim=-1)
        elif self.kind == "v2":
            mu = self.quantiser(mu)
        elif self.kind == "ln":
            mu = F.layer_norm(mu, (self.token_dim,))
        elif self.kind == "rms":
            mu = mu * torch.rsqrt(mu.pow(2).mean(dim=(-2, -1), keepdim=True) + 1e-6)
        scale = self.noise_scale * self.noise_gain
        if self.training and scale > 0:
            eps = torch.randn_like(mu) * scale
            mu = mu + (eps * mu.abs() if self.noise_type == "multiplicative" else eps)
        return mu


class SVQEncoder(nn.Module):
    """Patchify conv, [CLS, patches (+ learned positions), N learned queries], pre-LN blocks
    (dense, then expert blocks where each query has its own MLP), final LN, head on the queries.

    With `encoder_stem` "conv", a downsampling conv stem runs first and the patchify conv takes
    its map to the same grid (kernel and stride patch_size / stem_factor).
    """

    def __init__(self, config: SVQConfig):
        super().__init__()
        width, n = config.encoder_width, config.num_tokens
        self.num_tokens = n
        self.gradient_checkpointing = config.gradient_checkpointing
        if config.encoder_stem == "conv":
            self.stem = ConvStem(config.in_channels, config.stem_channels, config.stem_blocks)
            embed_in = config.stem_channels[-1]
        else:
            self.stem = None
            embed_in = config.in_channels
        patch = config.patch_size // config.stem_factor
        self.patch_embed = nn.Conv2d(embed_in, width, patch, stride=patch)
        scale = width**-0.5
        self.cls_token = nn.Parameter(scale * torch.randn(width))
        self.pos_embed = nn.Parameter(scale * torch.randn(1 + config.num_patches, width))
        self.queries = nn.Parameter(scale * torch.randn(n, width))  # no positions: each is its own
        self.norm_pre = nn.LayerNorm(width)
        self.blocks = nn.ModuleList(
            [
                Block(width, config.encoder_heads, config.encoder_mlp_ratio)
                for _ in range(config.encoder_dense_layers)
            ]
            + [
                Block(width, config.encoder_heads, config.encoder_mlp_ratio, experts=n)
                for _ in range(config.encoder_expert_layers)
            ]
        )
        self.norm_post = nn.LayerNorm(width)
        self.head = FeatureHead(config, width)
        self.register_buffer(
            "attn_mask",
            query_causal_mask(1 + config.num_patches, n) if config.causal_queries else None,
            persistent=False,
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: (B, C, H, W) in [-1, 1] -> features (B, N, E)."""
        if self.stem is not None:
            images = self.stem(images)  # (B, C_stem, H / f, W / f)
        x = rearrange(self.patch_embed(images), "b w h v -> b (h v) w")  # (B, P, W)
        cls = self.cls_token.expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.pos_embed  # (B, 1 + P, W)
        x = torch.cat([x, self.queries.expand(x.shape[0], -1, -1)], dim=1)  # (B, 1 + P + N, W)
        x = self.norm_pre(x)
        for block in self.blocks:
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, self.attn_mask, use_reentrant=False)
            else:
                x = block(x, self.attn_mask)
        return self.head(self.norm_post(x[:, -self.num_tokens :]))


class SVQConvEncoder(nn.Module):
    """The conv encoder (`encoder` "conv"): the conv stem down to a small map, flattened, one
    Linear to all N x E features, then the head. Every token reads the whole map; which token
    carries what is left to the decoder, which reads them in order.

    (B, C, H, W) -> stem (B, C_s, H / f, W / f) -> (B, N, E), f = config.stem_factor.
    """

    def __init__(self, config: SVQConfig):
        super().__init__()
        self.num_tokens, self.token_dim = config.num_tokens, config.token_dim
        self.stem = ConvStem(config.in_channels, config.stem_channels, config.stem_blocks)
        side = config.image_size // config.stem_factor
        self.proj = nn.Linear(
            config.stem_channels[-1] * side * side, self.num_tokens * self.token_dim
        )
        self.head = FeatureHead(config, None)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: (B, C, H, W) in [-1, 1] -> features (B, N, E)."""
        x = self.proj(self.stem(images).flatten(1))  # (B, N * E)
        return self.head(x.view(-1, self.num_tokens, self.token_dim))


def query_causal_mask(context: int, n: int) -> torch.Tensor:
    """(context + n, context + n) bool, True = may attend. CLS and patches attend among
    themselves only; query i attends to them and to queries <= i. So query i's output never
    depends on queries j > i."""
    size = context + n
    mask = torch.zeros(size, size, dtype=torch.bool)
    mask[:, :context] = True
    mask[context:, context:] = torch.tril(torch.ones(n, n, dtype=torch.bool))
    return mask
