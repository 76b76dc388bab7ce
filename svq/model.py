"""StyledVAEVQ: image <-> 36 ordered attribute tokens (continuous features or codebook ids)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .config import SVQConfig
from .decoder import SVQDecoder
from .encoder import SVQEncoder
from .hub import HubMixin
from .images import check_images


@dataclass
class SVQOutput:
    """What `StyledVAEVQ.forward` returns."""

    recon: torch.Tensor  # (B, C, H, W) reconstruction, unbounded
    features: torch.Tensor  # (B, N, E) encoder output (noise included in training)
    keep: torch.Tensor | None = None  # (B,) leading tokens kept by token dropout, if applied


class StyledVAEVQ(
    nn.Module,
    HubMixin,
    library_name="svq",
    tags=["image-tokenizer", "svq"],
):
    """The Styled VAE-VQ tokenizer.

    `encode` images to (B, N, E) continuous features, `decode` them back; `tokenize` /
    `detokenize` go through an attached codebook (see `vocab`). `forward` is the stage-1
    training pass with the head's noise and optional token dropout.
    """

    config_class = SVQConfig

    def __init__(self, config: SVQConfig):
        super().__init__()
        self.config = config
        self.encoder = SVQEncoder(config)
        self.decoder = SVQDecoder(config)
        # With token dropout, dropped tokens are replaced by one learned vector; the prefix
        # curve (eval) uses the same vector to decode any prefix.
        self.drop_token = (
            nn.Parameter(torch.zeros(config.token_dim)) if config.token_dropout != "none" else None
        )
        self.codebook: nn.Module | None = None  # set by the vocabulary stage

    # --- input checks: a concise error rather than a broadcast surprise
    def _check_features(self, features: torch.Tensor) -> None:
        n, e = self.config.num_tokens, self.config.token_dim
        if features.ndim != 3 or tuple(features.shape[1:]) != (n, e):
            raise ValueError(
                f"expected features of shape (B, {n}, {e}), got {tuple(features.shape)}"
            )

    # --- public verbs
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """images: (B, C, H, W) in [-1, 1] -> features (B, N, E)."""
        check_images(images, self.config.in_channels, self.config.image_size)
        return self.encoder(images)

    def decode(self, features: torch.Tensor) -> torch.Tensor:
        """features: (B, N, E) -> images (B, C, H, W), unbounded (clamp when saving)."""
        self._check_features(features)
        return self.decoder(features)

    def drop_tail(
        self, features: torch.Tensor, keep: torch.Tensor | int, fill: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Keep the first `keep` tokens of each image and replace the rest by `fill`.

        features: (B, N, E); keep: int or (B,) long; fill: (E,) or (N, E), e.g. the dataset
        mean; by default the learned drop token (models trained with token dropout).
        """
        if fill is None:
            if self.drop_token is None:
                raise ValueError(
                    "this model was trained without token dropout: pass `fill` (e.g. the mean "
                    "feature of a dataset) to replace dropped tokens"
                )
            fill = self.drop_token
        n = features.shape[1]
        keep = torch.as_tensor(keep, device=features.device).reshape(-1, 1)  # (B or 1, 1)
        kept = torch.arange(n, device=features.device) < keep  # (B, N)
        return torch.where(kept.unsqueeze(-1), features, fill.to(features.dtype))

    def sample_keep(self, batch: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """Prefix lengths for token dropout, (B,) long in [min_keep, N].

        nested: the kept length is uniform over [min_keep, N] (every prefix trained alike).
        tail: the dropped length is geometric with mean N/4 (mostly fine detail dropped).
        A fraction `token_dropout_prob` of the images is affected; the rest keep all N.
        """
        cfg = self.config
        n, lo = cfg.num_tokens, cfg.token_dropout_min_keep
        if cfg.token_dropout == "nested":
            keep = torch.randint(lo, n + 1, (batch,), device=device)
        else:
            geometric = torch.distributions.Geometric(probs=torch.tensor(min(1.0, 4.0 / n)))
            dropped = geometric.sample((batch,)).to(device=device, dtype=torch.long) + 1
            keep = (n - dropped).clamp(lo, n)
        affected = torch.rand(batch, device=device) < cfg.token_dropout_prob
        return torch.where(affected, keep, torch.full_like(keep, n))

    def forward(self, images: torch.Tensor) -> SVQOutput:
        """images: (B, C, H, W) in [-1, 1] -> SVQOutput(recon (B, C, H, W), features (B, N, E))."""
        features = self.encode(images)
        keep = None
        decoder_input = features
        if self.training and self.drop_token is not None and self.config.token_dropout_prob > 0:
            keep = self.sample_keep(features.shape[0], features.device)
            decoder_input = self.drop_tail(features, keep)
        return SVQOutput(recon=self.decoder(decoder_input), features=features, keep=keep)

    def tokenize(self, images: torch.Tensor) -> torch.Tensor:
        """images: (B, C, H, W) in [-1, 1] -> ids (B, N) long, through the attached codebook."""
        codebook = self._require_codebook("tokenize")
        return codebook.quantize(self.encode(images))

    def detokenize(self, ids: torch.Tensor) -> torch.Tensor:
        """ids: (B, N) long -> images (B, C, H, W), through the attached codebook."""
        codebook = self._require_codebook("detokenize")
        n = self.config.num_tokens
        if ids.ndim != 2 or ids.shape[1] != n:
            raise ValueError(f"expected ids of shape (B, {n}), got {tuple(ids.shape)}")
        return self.decode(codebook.lookup(ids))

    def _require_codebook(self, verb: str) -> nn.Module:
        if self.codebook is None:
            raise RuntimeError(
                f"StyledVAEVQ.{verb} needs a codebook, and none is attached: fit one with "
                "train/stage2.py (stage 2) or use encode/decode for continuous features"
            )
        return self.codebook

    # --- memory
    def gradient_checkpointing_enable(self) -> None:
        self._set_checkpointing(True)

    def gradient_checkpointing_disable(self) -> None:
        self._set_checkpointing(False)

    def _set_checkpointing(self, on: bool) -> None:
        self.config.gradient_checkpointing = on
        self.encoder.gradient_checkpointing = on
        self.decoder.gradient_checkpointing = on
