"""StyledVAEVQ: image <-> 36 ordered attribute tokens (continuous features or codebook ids)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import EntryNotFoundError
from torch import nn

from svq.codebook import Codebook, CodebookConfig

from .config import SVQConfig
from .decoder import SVQConvDecoder, SVQDecoder
from .encoder import SVQConvEncoder, SVQEncoder
from .hub import HubMixin
from .images import check_images, check_pixel_range

if TYPE_CHECKING:
    from .spatial_vq import SpatialVQ

CODEBOOK_NAME = "codebook.safetensors"  # beside model.safetensors in a release folder


@dataclass
class SVQOutput:
    """What `StyledVAEVQ.forward` returns."""

    recon: torch.Tensor | None  # (B, C, H, W) reconstruction, unbounded; None with target
    # "spatial_vq" (see logits)
    features: torch.Tensor  # (B, N, E) encoder output (noise included in training)
    keep: torch.Tensor | None = None  # (B,) leading tokens kept by token dropout, if applied
    logits: torch.Tensor | None = None  # (B, S*S, K) spatial VQ logits (target "spatial_vq")


class StyledVAEVQ(
    nn.Module,
    HubMixin,
    library_name="svq",
    tags=["image-tokenizer", "svq"],
):
    """The Styled VAE-VQ tokenizer.

    `encode` images to (B, N, E) continuous features, `decode` them back; `tokenize` /
    `detokenize` go through an attached codebook (see `svq.codebook`). `forward` is the stage-1
    training pass with the head's noise and optional token dropout.
    """

    # 2-D parameters that are lookup tables, not maps: trainers give them no weight decay
    NO_DECAY = (
        "encoder.cls_token",
        "encoder.pos_embed",
        "encoder.queries",
        "encoder.head.atoms",
        "decoder.pos_embed",
        "decoder.const",  # the conv decoder's learned 4x4 input
        "drop_token",
    )

    config_class = SVQConfig
    # target "spatial_vq": the tokenizer that paints the predicted grid; see attach_spatial_vq.
    _spatial_vq: SpatialVQ | None = None

    def __init__(self, config: SVQConfig):
        super().__init__()
        self.config = config
        self.encoder = SVQConvEncoder(config) if config.encoder == "conv" else SVQEncoder(config)
        self.decoder = SVQConvDecoder(config) if config.decoder == "conv" else SVQDecoder(config)
        # With token dropout, dropped tokens are replaced by one learned vector; the prefix
        # curve (eval) uses the same vector to decode any prefix.
        self.drop_token = (
            nn.Parameter(torch.zeros(config.token_dim)) if config.token_dropout != "none" else None
        )
        # Set by the vocabulary stage (`attach_codebook`). A submodule, so it follows .to() and
        # devices, but not part of the weights: it has its own file, codebook.safetensors.
        self.codebook: Codebook | None = None
        self.register_state_dict_post_hook(_drop_codebook_keys)
        self.register_load_state_dict_pre_hook(_keep_codebook)

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
        """features: (B, N, E) -> images (B, C, H, W), unbounded (clamp when saving).

        With target "spatial_vq" the decoder predicts the spatial VQ grid and the attached
        spatial tokenizer (`attach_spatial_vq`) paints its most likely codes."""
        self._check_features(features)
        if self.config.target == "pixels":
            return self.decoder(features)
        spatial = self.spatial_vq
        if spatial is None:
            raise RuntimeError(
                "this model's decoder predicts spatial VQ codes (target 'spatial_vq'): attach "
                "the spatial tokenizer it was trained against with "
                "model.attach_spatial_vq(SpatialVQ.from_pretrained(...)) to decode to pixels, "
                "or use decode_logits"
            )
        logits = self.decoder(features)  # (B, S*S, K)
        return spatial.decode_logits(logits.to(next(spatial.parameters()).device))

    def decode_logits(self, features: torch.Tensor) -> torch.Tensor:
        """features: (B, N, E) -> spatial VQ logits (B, S*S, K), S = spatial_grid_size,
        K = spatial_codebook_size, row-major over the grid (target "spatial_vq" only)."""
        if self.config.target != "spatial_vq":
            raise ValueError(
                f"decode_logits needs target 'spatial_vq'; this model's target is "
                f"{self.config.target!r} (use decode)"
            )
        self._check_features(features)
        return self.decoder(features)

    @property
    def spatial_vq(self) -> SpatialVQ | None:
        """The attached spatial tokenizer (target "spatial_vq"), or None."""
        return self._spatial_vq

    def attach_spatial_vq(self, spatial: SpatialVQ | None) -> StyledVAEVQ:
        """Attach the spatial tokenizer whose grid this model's decoder predicts (None
        detaches). Returns the model.

        It is referenced, not owned: not a submodule, so it is neither saved with this model
        nor trained by its optimiser nor moved by `.to()`; it decodes on its own device. Its
        grid, codebook and image size must match this model's config."""
        cfg = self.config
        if spatial is not None:
            if cfg.target != "spatial_vq":
                raise ValueError(f"this model's target is {cfg.target!r}: no spatial VQ to attach")
            want = ((cfg.spatial_grid_size,) * 2, cfg.spatial_codebook_size, cfg.image_size)
            got = (tuple(spatial.grid_size), spatial.codebook_size, spatial.config.image_size)
            if got != want:
                raise ValueError(
                    f"spatial VQ (grid, codebook size, image size) {got} does not match this "
                    f"model's {want}"
                )
        object.__setattr__(self, "_spatial_vq", spatial)  # bypass submodule registration
        return self

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
        """images: (B, C, H, W) in [-1, 1] -> SVQOutput(recon (B, C, H, W), features (B, N, E));
        with target "spatial_vq", logits (B, S*S, K) instead of recon (one pass, no painting:
        training takes cross-entropy against `spatial.encode(images)`)."""
        features = self.encode(images)
        keep = None
        decoder_input = features
        if self.training and self.drop_token is not None and self.config.token_dropout_prob > 0:
            keep = self.sample_keep(features.shape[0], features.device)
            decoder_input = self.drop_tail(features, keep)
        out = self.decoder(decoder_input)
        if self.config.target == "pixels":
            return SVQOutput(recon=out, features=features, keep=keep)
        return SVQOutput(recon=None, features=features, keep=keep, logits=out)

    def tokenize(self, images: torch.Tensor) -> torch.Tensor:
        """images: (B, C, H, W) in [-1, 1] -> ids (B, N) long, through the attached codebook.

        Pixels must be scaled to [-1, 1] (`svq.data.Preprocess` does it; from uint8:
        `x / 127.5 - 1`). Values beyond +-1.5 raise ValueError: such a batch is not a picture
        in this scale (0..255 pixels, say), and would be tokenized into a wrong one. A
        decoder's slight overshoot past +-1 is accepted."""
        codebook = self._require_codebook("tokenize")
        check_pixel_range(images)
        return codebook.quantize(self.encode(images))

    def detokenize(self, ids: torch.Tensor) -> torch.Tensor:
        """ids: (B, N) long -> images (B, C, H, W), through the attached codebook."""
        codebook = self._require_codebook("detokenize")
        n = self.config.num_tokens
        if ids.ndim != 2 or ids.shape[1] != n:
            raise ValueError(f"expected ids of shape (B, {n}), got {tuple(ids.shape)}")
        return self.decode(codebook.lookup(ids))

    def attach_codebook(
        self, codebook: Codebook | None, source: str = "the codebook"
    ) -> StyledVAEVQ:
        """Attach a fitted codebook (None detaches) after checking that it fits the tokens: width
        E = config.token_dim, and N = config.num_tokens positions if per position. It moves to
        the model's device. `source` names it in the error (e.g. its file). Returns the model."""
        if codebook is not None:
            problem = codebook_mismatch(codebook.config, self.config)
            if problem is not None:
                raise ValueError(f"{source} does not fit this tokenizer: {problem}")
            codebook = codebook.to(next(self.parameters()).device)
        self.codebook = codebook
        return self

    # --- files: the codebook beside the weights
    def _save_pretrained(self, save_directory: Path) -> None:
        super()._save_pretrained(save_directory)  # config.json + model.safetensors
        path = Path(save_directory) / CODEBOOK_NAME
        if self.codebook is not None:
            self.codebook.save(path)
        elif path.exists():  # left by an earlier save: it would be attached to these weights
            path.unlink()

    @classmethod
    def _from_pretrained(cls, *, model_id: str, **kwargs: Any) -> StyledVAEVQ:
        model = super()._from_pretrained(model_id=model_id, **kwargs)
        if os.path.isdir(model_id):
            path = os.path.join(model_id, CODEBOOK_NAME)
            path = path if os.path.isfile(path) else None
        else:
            try:
                path = hf_hub_download(
                    repo_id=model_id,
                    filename=CODEBOOK_NAME,
                    revision=kwargs.get("revision"),
                    cache_dir=kwargs.get("cache_dir"),
                    token=kwargs.get("token"),
                    local_files_only=kwargs.get("local_files_only", False),
                )
            except EntryNotFoundError:  # a tokenizer released before stage 2
                path = None
        if path is not None:
            model.attach_codebook(Codebook.load(path), source=path)
        return model

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        require_codebook: bool = False,
        spatial_vq: str | Path | None = None,
    ) -> StyledVAEVQ:
        """The one way the project loads a saved tokenizer: `from_pretrained` (its codebook
        attached when the folder has one), frozen, in eval mode.

        require_codebook: a stage-1 folder without `codebook.safetensors` is a ValueError.
        spatial_vq: a SpatialVQ folder, needed by (and attached to) a model whose decoder
            predicts a spatial VQ grid (config.target "spatial_vq")."""
        model = cls.from_pretrained(str(path)).requires_grad_(False).eval()
        if require_codebook and model.codebook is None:
            raise ValueError(
                f"{path} has no codebook ({CODEBOOK_NAME}): it is a stage-1 model; fit the "
                "vocabulary with `svq train stage2` and use its OUTPUT_DIR/model"
            )
        if model.config.target == "spatial_vq":
            if spatial_vq is None or not (Path(spatial_vq) / "config.json").is_file():
                raise FileNotFoundError(
                    f"{path} decodes through a spatial VQ (target 'spatial_vq'): its SpatialVQ "
                    f"folder is needed, and {spatial_vq} is not one"
                )
            from .spatial_vq import SpatialVQ

            spatial = SpatialVQ.from_pretrained(str(spatial_vq)).requires_grad_(False).eval()
            model.attach_spatial_vq(spatial)
        return model

    def _require_codebook(self, verb: str) -> nn.Module:
        if self.codebook is None:
            raise RuntimeError(
                f"StyledVAEVQ.{verb} needs a codebook, and none is attached: fit one with "
                "svq/train/stage2.py (stage 2) or use encode/decode for continuous features"
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


def codebook_mismatch(book: CodebookConfig, config: SVQConfig) -> str | None:
    """Why a codebook cannot quantise this tokenizer's features, or None if it can."""
    if book.dim != config.token_dim:
        return f"its codes are {book.dim}-dim, the tokens {config.token_dim}-dim (token_dim)"
    if book.per_position and book.num_tokens != config.num_tokens:
        return (
            f"it has one codebook for each of {book.num_tokens} positions, the tokenizer "
            f"{config.num_tokens} tokens (num_tokens)"
        )
    return None


def _drop_codebook_keys(module: nn.Module, state: dict, prefix: str, metadata: Any) -> None:
    """state_dict hook: the codebook is saved on its own (codebook.safetensors)."""
    for key in [k for k in state if k.startswith(f"{prefix}codebook.")]:
        del state[key]


def _keep_codebook(module: nn.Module, state: dict, prefix: str, *args: Any) -> None:
    """load_state_dict pre-hook: loading weights leaves the attached codebook (or its absence)
    as it is. Codebook entries of `state` are dropped, and the attached codebook's own buffers
    stand in for them, so that strict loading finds nothing missing or unexpected."""
    for key in [k for k in state if k.startswith(f"{prefix}codebook.")]:
        del state[key]
    if module.codebook is not None:
        for name, buffer in module.codebook.named_buffers():
            state[f"{prefix}codebook.{name}"] = buffer
