"""SpatialVQ: the position-aligned "last mile" tokenizer, image <-> (h*w) grid of code ids.

A VQGAN-style convolutional encoder/decoder (LlamaGen VQ-16 layout, see `spatial_vq_layers`)
with a vector-quantised bottleneck: the encoder output is projected to a low dimension
(`codebook_dim`, 8 in VQ-16), L2-normalised, and replaced by its nearest code (LlamaGen style:
normalised codes, cosine nearest neighbour), with a straight-through gradient, codebook and
commitment losses, an optional entropy loss, and code usage tracking with dead-code reseeding.
The LLM's VQ head predicts `num_tokens = h*w` ids over `codebook_size` classes for `decode`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .config_base import ConfigBase
from .hub import HubMixin
from .images import check_images
from .spatial_vq_layers import ConvDecoder, ConvEncoder


@dataclass
class SpatialVQConfig(ConfigBase):
    """Every number of the spatial VQ tokenizer. The defaults are LlamaGen's VQ-16 (`base`)."""

    model_type: str = "spatial_vq"  # written to config.json so a foreign config fails loudly
    image_size: int = 256  # square input side, pixels
    in_channels: int = 3
    channels: int = 128  # width of the first level
    channel_mult: tuple[int, ...] = (1, 1, 2, 2, 4)  # width multiplier per level; L levels
    num_res_blocks: int = 2  # per encoder level (the decoder has one more)
    z_channels: int = 256  # encoder output / decoder input width
    norm_groups: int = 32  # GroupNorm groups; must divide every level's width
    dropout: float = 0.0
    codebook_size: int = 16384  # K: classes the LLM's VQ head predicts
    codebook_dim: int = 8  # the low dimension codes are looked up in
    codebook_l2_norm: bool = True  # normalise latents and codes: cosine nearest neighbour
    commitment_beta: float = 0.25  # weight of ||z - sg(z_q)||^2
    entropy_loss_weight: float = 0.0  # LlamaGen's optional entropy loss (0 = off)
    entropy_temperature: float = 0.01
    dead_code_steps: int = 256  # a code unused for this many training forwards is "dead"

    def __post_init__(self) -> None:
        need = self.require
        self.channel_mult = tuple(self.channel_mult)  # config.json stores a list
        need(
            self.model_type == "spatial_vq",
            f"model_type is {self.model_type!r}, expected 'spatial_vq'",
        )
        for name in (
            "image_size", "in_channels", "channels", "num_res_blocks", "z_channels",
            "norm_groups", "codebook_size", "codebook_dim", "dead_code_steps",
        ):  # fmt: skip
            value = getattr(self, name)
            need(
                isinstance(value, int) and not isinstance(value, bool) and value > 0,
                f"{name} must be a positive int, got {value!r}",
            )
        need(
            len(self.channel_mult) > 0
            and all(isinstance(m, int) and m > 0 for m in self.channel_mult),
            f"channel_mult must be positive ints, got {self.channel_mult!r}",
        )
        need(
            self.image_size % self.downsample == 0,
            f"image_size {self.image_size} is not a multiple of the downsampling factor "
            f"{self.downsample} (2^(len(channel_mult) - 1))",
        )
        for width in sorted({self.channels * m for m in self.channel_mult}):
            need(
                width % self.norm_groups == 0,
                f"norm_groups {self.norm_groups} does not divide level width {width}",
            )
        need(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")
        need(self.commitment_beta >= 0, f"commitment_beta must be >= 0, got {self.commitment_beta}")
        need(
            self.entropy_loss_weight >= 0,
            f"entropy_loss_weight must be >= 0, got {self.entropy_loss_weight}",
        )
        need(
            self.entropy_temperature > 0,
            f"entropy_temperature must be > 0, got {self.entropy_temperature}",
        )

    # --- derived sizes (not fields: never out of sync)
    @property
    def downsample(self) -> int:
        return 2 ** (len(self.channel_mult) - 1)

    @property
    def grid_size(self) -> tuple[int, int]:
        """(h, w) of the code grid."""
        side = self.image_size // self.downsample
        return side, side

    @property
    def num_tokens(self) -> int:
        """h * w ids per image."""
        h, w = self.grid_size
        return h * w


PRESETS: dict[str, dict[str, Any]] = {
    # LlamaGen VQ-16: 256px -> 16x16 grid, codebook 16384 x 8, ~72M parameters.
    "base": {},
    # The CPU demo: 64px -> 8x8 grid, codebook 1024 x 8, 3.3M parameters. Four levels
    # (downsample 8) at a quarter of VQ-16's width with one ResNet block per level: a training
    # step of 32 images took ~3 s on the two shared cores (~10 img/s); two blocks per level
    # (as VQ-16) halved that.
    "small": {
        "image_size": 64,
        "channels": 32,
        "channel_mult": (1, 2, 2, 4),
        "num_res_blocks": 1,
        "z_channels": 64,
        "norm_groups": 16,
        "codebook_size": 1024,
    },
    # Unit tests: 16px -> 4x4 grid, 64 codes.
    "tiny": {
        "image_size": 16,
        "channels": 16,
        "channel_mult": (1, 2, 2),
        "num_res_blocks": 1,
        "z_channels": 16,
        "norm_groups": 8,
        "codebook_size": 64,
        "codebook_dim": 4,
        "dead_code_steps": 2,
    },
}
SpatialVQConfig.presets = PRESETS


@dataclass
class SpatialVQOutput:
    """What `SpatialVQ.forward` returns. Losses are scalars; the VQ part of the training loss is
    `vq_loss`, to which training adds reconstruction (and perceptual) losses."""

    recon: torch.Tensor  # (B, C, H, W) reconstruction, unbounded
    ids: torch.Tensor  # (B, h*w) long code ids, row-major over the grid
    latents: torch.Tensor  # (B, h*w, codebook_dim) fp32 encoder outputs before quantisation
    codebook_loss: torch.Tensor  # ||sg(z) - z_q||^2: moves codes towards the latents
    commitment_loss: torch.Tensor  # beta * ||z - sg(z_q)||^2: keeps latents near their codes
    entropy_loss: torch.Tensor  # weighted; 0 when entropy_loss_weight is 0
    codes_used: torch.Tensor  # () long: distinct codes in this batch
    perplexity: torch.Tensor  # () exp(entropy) of this batch's code histogram

    @property
    def vq_loss(self) -> torch.Tensor:
        return self.codebook_loss + self.commitment_loss + self.entropy_loss


def entropy_loss(logits: torch.Tensor) -> torch.Tensor:
    """LlamaGen's entropy loss: mean per-vector entropy minus entropy of the mean distribution
    (sharp assignments, spread usage). logits: (N, K) -> ()."""
    probs = logits.softmax(-1)
    sample_entropy = -(probs * logits.log_softmax(-1)).sum(-1).mean()
    mean_probs = probs.mean(0)
    return sample_entropy + (mean_probs * torch.log(mean_probs + 1e-5)).sum()


class Quantized(NamedTuple):
    """What `VectorQuantizer.forward` returns; all fp32."""

    z_q: torch.Tensor  # (N, E) codes with the straight-through gradient of z
    ids: torch.Tensor  # (N,) long
    codebook_loss: torch.Tensor  # ()
    commitment_loss: torch.Tensor  # (), beta included
    entropy_loss: torch.Tensor  # (), weight included


class VectorQuantizer(nn.Module):
    """Nearest-code lookup with a learned codebook (a parameter, unlike the k-means codebooks
    of `svq.codebook`: the codebook loss trains it) and a usage buffer saved with the model
    (`unused_steps`, updated by `SpatialVQ.forward` in training mode)."""

    def __init__(self, config: SpatialVQConfig):
        super().__init__()
        self.config = config
        k, e = config.codebook_size, config.codebook_dim
        # LlamaGen's init: small uniform values, normalised when codes are L2-normalised.
        codebook = torch.empty(k, e).uniform_(-1.0 / k, 1.0 / k)
        self.codebook = nn.Parameter(
            F.normalize(codebook, dim=-1) if config.codebook_l2_norm else codebook
        )
        # Training forwards since each code was last chosen; see SpatialVQ.reseed_dead_codes.
        self.register_buffer("unused_steps", torch.zeros(k, dtype=torch.long))

    def codes(self) -> torch.Tensor:
        """(K, E) fp32 codes as used for lookup (normalised if `codebook_l2_norm`)."""
        codes = self.codebook.float()
        return F.normalize(codes, dim=-1) if self.config.codebook_l2_norm else codes

    def prepare(self, z: torch.Tensor) -> torch.Tensor:
        """Latents as the lookup sees them: fp32, normalised if `codebook_l2_norm`."""
        z = z.float()
        return F.normalize(z, dim=-1) if self.config.codebook_l2_norm else z

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        """ids: (...) long -> codes (..., E) fp32."""
        return F.embedding(ids, self.codes())

    def forward(self, z: torch.Tensor) -> Quantized:
        """z: (N, E) latents from `prepare` -> Quantized, computed in fp32 outside autocast."""
        cfg = self.config
        with torch.autocast(device_type=z.device.type, enabled=False):
            codes = self.codes()
            # Squared distances (N, K); for unit vectors this is 2 - 2 cos.
            dist = z.pow(2).sum(1, keepdim=True) + codes.pow(2).sum(1) - 2 * z @ codes.T
            ids = dist.argmin(1)
            z_q = codes[ids]
            codebook_loss = F.mse_loss(z_q, z.detach())
            commitment_loss = cfg.commitment_beta * F.mse_loss(z, z_q.detach())
            if cfg.entropy_loss_weight > 0:
                ent = cfg.entropy_loss_weight * entropy_loss(-dist / cfg.entropy_temperature)
            else:
                ent = dist.new_zeros(())
            z_q = z + (z_q - z).detach()  # straight-through: the decoder's gradient reaches z
        return Quantized(z_q, ids, codebook_loss, commitment_loss, ent)


class SpatialVQ(
    nn.Module,
    HubMixin,
    library_name="svq",
    tags=["image-tokenizer", "vq", "spatial-vq"],
):
    """Position-aligned VQ tokenizer: `encode` images to (B, h*w) ids, `decode` them back."""

    config_class = SpatialVQConfig

    def __init__(self, config: SpatialVQConfig):
        super().__init__()
        self.config = config
        c = config
        self.encoder = ConvEncoder(
            c.in_channels, c.channels, c.channel_mult, c.num_res_blocks, c.z_channels,
            c.norm_groups, c.dropout,
        )  # fmt: skip
        self.quant_conv = nn.Conv2d(c.z_channels, c.codebook_dim, 1)
        self.quantizer = VectorQuantizer(c)
        self.post_quant_conv = nn.Conv2d(c.codebook_dim, c.z_channels, 1)
        self.decoder = ConvDecoder(
            c.in_channels, c.channels, c.channel_mult, c.num_res_blocks, c.z_channels,
            c.norm_groups, c.dropout,
        )  # fmt: skip

    # --- sizes others read (the LLM's VQ head predicts num_tokens ids over codebook_size)
    @property
    def grid_size(self) -> tuple[int, int]:
        """(h, w) of the code grid."""
        return self.config.grid_size

    @property
    def num_tokens(self) -> int:
        return self.config.num_tokens

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    # --- input checks: a concise error rather than a broadcast surprise
    def _check_ids(self, ids: torch.Tensor) -> None:
        n, k = self.num_tokens, self.codebook_size
        if ids.ndim != 2 or ids.shape[1] != n:
            raise ValueError(f"expected ids of shape (B, {n}), got {tuple(ids.shape)}")
        if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
            raise ValueError(f"expected integer ids, got {ids.dtype}")
        if ids.numel() and (ids.min() < 0 or ids.max() >= k):
            raise ValueError(
                f"ids must be in [0, {k}), got values in [{ids.min().item()}, {ids.max().item()}]"
            )

    # --- the halves
    def encode_latents(self, images: torch.Tensor) -> torch.Tensor:
        """images: (B, C, H, W) in [-1, 1] -> latents before quantisation (B, h*w, E), fp32 and
        normalised as the lookup sees them (what `reseed_dead_codes` takes)."""
        check_images(images, self.config.in_channels, self.config.image_size)
        z = self.quant_conv(self.encoder(images))  # (B, E, h, w)
        return self.quantizer.prepare(rearrange(z, "b e h w -> b (h w) e"))

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """codes: (B, h*w, E) quantised vectors -> images (B, C, H, W), unbounded."""
        h, w = self.grid_size
        if codes.ndim != 3 or tuple(codes.shape[1:]) != (h * w, self.config.codebook_dim):
            raise ValueError(
                f"expected codes of shape (B, {h * w}, {self.config.codebook_dim}), "
                f"got {tuple(codes.shape)}"
            )
        z = rearrange(codes, "b (h w) e -> b e h w", h=h, w=w)
        z = z.to(self.post_quant_conv.weight.dtype)
        return self.decoder(self.post_quant_conv(z))

    # --- public verbs
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """images: (B, C, H, W) in [-1, 1] -> ids (B, h*w) long, row-major over the grid."""
        latents = self.encode_latents(images)
        return self.quantizer(latents.flatten(0, 1)).ids.view(latents.shape[:2])

    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        """ids: (B, h*w) integer in [0, codebook_size) -> images (B, C, H, W), unbounded
        (clamp to [-1, 1] when converting to pixels)."""
        self._check_ids(ids)
        return self.decode_codes(self.quantizer.lookup(ids.long()))

    def decode_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """logits: (B, h*w, codebook_size), e.g. the LLM's VQ head -> images (B, C, H, W) of
        the most likely code at every position."""
        n, k = self.num_tokens, self.codebook_size
        if logits.ndim != 3 or tuple(logits.shape[1:]) != (n, k):
            raise ValueError(f"expected logits of shape (B, {n}, {k}), got {tuple(logits.shape)}")
        return self.decode(logits.argmax(-1))

    def forward(self, images: torch.Tensor) -> SpatialVQOutput:
        """images: (B, C, H, W) in [-1, 1] -> SpatialVQOutput (recon, ids, latents, losses,
        usage). In training mode it also updates the code usage counters."""
        latents = self.encode_latents(images)  # (B, h*w, E)
        b, n, _ = latents.shape
        q = self.quantizer(latents.flatten(0, 1))
        with torch.no_grad():
            counts = torch.bincount(q.ids, minlength=self.codebook_size)
            if self.training:
                self.quantizer.unused_steps.add_(1).masked_fill_(counts > 0, 0)
            p = counts.float() / counts.sum()
            perplexity = torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum())
        return SpatialVQOutput(
            recon=self.decode_codes(q.z_q.view(b, n, -1)),
            ids=q.ids.view(b, n),
            latents=latents,
            codebook_loss=q.codebook_loss,
            commitment_loss=q.commitment_loss,
            entropy_loss=q.entropy_loss,
            codes_used=(counts > 0).sum(),
            perplexity=perplexity,
        )

    # --- codebook maintenance
    def dead_codes(self) -> torch.Tensor:
        """(K,) bool: codes not chosen in the last `dead_code_steps` training forwards."""
        return self.quantizer.unused_steps >= self.config.dead_code_steps

    @torch.no_grad()
    def reseed_dead_codes(
        self, features: torch.Tensor, generator: torch.Generator | None = None
    ) -> int:
        """Re-initialise dead codes from recent encoder outputs; returns how many.

        Policy: a code is dead once no training forward has chosen it for `dead_code_steps`
        forwards in a row (`unused_steps`, reset on every hit). Each dead code is replaced by a
        distinct randomly drawn vector of `features` (with repeats only if there are fewer
        vectors than dead codes), so it is the nearest code of at least that latent and starts
        being used and trained again; its counter restarts at 0. Call it every few hundred
        steps with the latest `out.latents` (or several batches of them).

        features: (..., codebook_dim), e.g. `SpatialVQOutput.latents` (B, h*w, E).
        Under DDP, call it with the same gathered features and generator seed on every rank
        (or on rank 0 and broadcast the codebook) so the ranks' codebooks stay equal. Optimiser
        moments of a reseeded row are stale; with Adam they have decayed while the code got no
        gradient, so they are left alone.
        """
        e = self.config.codebook_dim
        if features.shape[-1] != e:
            raise ValueError(f"expected features (..., {e}), got {tuple(features.shape)}")
        dead = self.dead_codes().nonzero().squeeze(1)
        if dead.numel() == 0:
            return 0
        pool = self.quantizer.prepare(features.reshape(-1, e).detach())
        if pool.shape[0] == 0:
            raise ValueError("reseed_dead_codes needs at least one feature vector")
        if pool.shape[0] >= dead.numel():
            pick = torch.randperm(pool.shape[0], generator=generator)[: dead.numel()]
        else:
            pick = torch.randint(pool.shape[0], (dead.numel(),), generator=generator)
        codebook = self.quantizer.codebook
        codebook[dead] = pool[pick.to(pool.device)].to(codebook.dtype)
        self.quantizer.unused_steps[dead] = 0
        return int(dead.numel())
