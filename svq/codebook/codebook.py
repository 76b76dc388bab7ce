"""`Codebook`: k-means centroids as a frozen buffer, with `quantize` (features -> ids) and
`lookup` (ids -> features).

Quantisation uses the distance the clustering used (`distance.NearestCode`, fp32, outside
autocast). Feed it the same tensor the codebook was fitted on (for the tokenizer: the output of
`StyledVAEVQ.encode`); the reference fitted on one tensor and quantised another.

Two layouts:
- shared (the reference): one (K, E) codebook for every token position; ids in [0, K).
- per position: an (N, K, E) codebook, one per token position; ids are a pure per-position
  index, also in [0, K): id 5 at position 0 and id 5 at position 1 are different vectors.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from .distance import NearestCode, check_distance, prepare
from .kmeans import kmeans
from .source import FeaturesLike, as_array

FORMAT = "svq.codebook"  # safetensors metadata "format": a foreign file fails loudly
VERSION = "1"


@dataclass
class CodebookConfig:
    """What a codebook is; written as safetensors metadata and fit for a model's config.json."""

    num_codes: int  # K: codes per codebook
    dim: int  # E: feature width
    distance: str = "l2"  # "l2" (squared Euclidean) or "cosine" (unit codes), as in `kmeans`
    per_position: bool = False  # one codebook per token position (N, K, E) instead of (K, E)
    num_tokens: int | None = None  # N: token positions; required when per_position

    def __post_init__(self):
        check_distance(self.distance)
        if self.num_codes < 1:
            raise ValueError(f"num_codes must be >= 1, got {self.num_codes}")
        if self.dim < 1:
            raise ValueError(f"dim must be >= 1, got {self.dim}")
        if self.per_position and (self.num_tokens is None or self.num_tokens < 1):
            raise ValueError(f"per_position needs num_tokens >= 1, got {self.num_tokens}")
        if self.num_tokens is not None and self.num_tokens < 1:
            raise ValueError(f"num_tokens must be >= 1 or None, got {self.num_tokens}")

    @property
    def codes_shape(self) -> tuple[int, ...]:
        k, e = self.num_codes, self.dim
        return (self.num_tokens, k, e) if self.per_position else (k, e)


class CodebookOutput(NamedTuple):
    """What `Codebook.forward` returns."""

    quantized: torch.Tensor  # (..., E) codes, with straight-through gradients to the features
    ids: torch.Tensor  # (...) long


@dataclass
class CodebookStats:
    """Code usage; each field is () for a shared codebook and (N,) per position."""

    used: torch.Tensor  # codes used at least once
    dead: torch.Tensor  # codes never used: K - used
    usage: torch.Tensor  # used / K
    perplexity: torch.Tensor  # exp(entropy of the code frequencies); K when all are equally used


class Codebook(nn.Module):
    """A frozen k-means codebook.

    Buffers (state-dict names are a file format): `codes` (K, E) or (N, K, E) fp32, and
    `counts` (K,) or (N, K) long, the points of the fitting data in each code.
    """

    def __init__(self, config: CodebookConfig):
        super().__init__()
        self.config = config
        shape = config.codes_shape
        self.register_buffer("codes", torch.zeros(shape))
        self.register_buffer("counts", torch.zeros(shape[:-1], dtype=torch.long))

    # --- construction
    @classmethod
    def from_codes(
        cls,
        codes: torch.Tensor,
        distance: str = "l2",
        counts: torch.Tensor | None = None,
    ) -> Codebook:
        """codes: (K, E) shared or (N, K, E) per position, e.g. `kmeans(...).centroids`."""
        if codes.ndim not in (2, 3) or not codes.is_floating_point():
            raise ValueError(
                f"codes must be (K, E) or (N, K, E) floating point, got {tuple(codes.shape)} "
                f"{codes.dtype}"
            )
        if not torch.isfinite(codes).all():
            raise ValueError("codes contain NaN or inf")
        per_position = codes.ndim == 3
        config = CodebookConfig(
            num_codes=codes.shape[-2],
            dim=codes.shape[-1],
            distance=distance,
            per_position=per_position,
            num_tokens=codes.shape[0] if per_position else None,
        )
        book = cls(config).to(codes.device)
        book.codes.copy_(prepare(codes, distance))  # unit codes for cosine
        if counts is not None:
            if counts.shape != codes.shape[:-1]:
                raise ValueError(
                    f"counts must be {tuple(codes.shape[:-1])}, got {tuple(counts.shape)}"
                )
            book.counts.copy_(counts)
        return book

    @classmethod
    def fit(
        cls,
        features: FeaturesLike,
        num_codes: int,
        distance: str = "l2",
        per_position: bool = False,
        **kmeans_options: Any,
    ) -> Codebook:
        """Fit a codebook with `kmeans`.

        features: (n, N, E) token features (or (n, E) for a shared codebook): a tensor, an
            array, or a `.npy` path (memory-mapped). Under torch.distributed each rank passes
            its own shard. Shared: all n * N vectors are clustered together; per position:
            one k-means per position over its n vectors (a file is read once per position).
        kmeans_options: passed to `kmeans` (iters, tol, init, seed, progress, ...).
        """
        array = as_array(features)  # paths are memory-mapped, not read
        if per_position:
            if array.ndim != 3:
                raise ValueError(
                    f"per-position codebooks need features (n, N, E), got {tuple(array.shape)}"
                )
            results = [
                kmeans(array[:, p], num_codes, distance=distance, **kmeans_options)
                for p in range(array.shape[1])
            ]
            codes = torch.stack([r.centroids for r in results])  # (N, K, E)
            counts = torch.stack([r.counts for r in results])  # (N, K)
            return cls.from_codes(codes, distance, counts)
        if array.ndim == 3:
            array = array.reshape(-1, array.shape[-1])  # (n * N, E): every position together
        centroids, counts = kmeans(array, num_codes, distance=distance, **kmeans_options)
        return cls.from_codes(centroids, distance, counts)

    def _apply(self, fn, recurse=True):
        # Codes stay fp32 through model.half() / .to(torch.bfloat16): quantisation must see the
        # values the clustering produced. Device moves still apply.
        codes = self.codes
        super()._apply(fn, recurse)
        if self.codes.dtype != torch.float32:
            self.codes = codes.to(self.codes.device)
        return self

    # --- the verbs
    @property
    def num_codes(self) -> int:
        return self.config.num_codes

    @torch.no_grad()
    def quantize(self, features: torch.Tensor) -> torch.Tensor:
        """features: (..., E) shared, (..., N, E) per position -> ids (...) / (..., N) long."""
        self._check_features(features)
        with torch.autocast(features.device.type, enabled=False):
            codes = self.codes.float()
            distance = self.config.distance
            if not self.config.per_position:
                flat = prepare(features.reshape(-1, features.shape[-1]), distance)  # (M, E)
                ids, _ = NearestCode(codes, distance)(flat)
                return ids.view(features.shape[:-1])
            n = self.config.num_tokens
            per_pos = features.reshape(-1, n, features.shape[-1])  # (M, N, E)
            ids = torch.empty(per_pos.shape[:2], dtype=torch.long, device=features.device)
            for p in range(n):
                ids[:, p], _ = NearestCode(codes[p], distance)(prepare(per_pos[:, p], distance))
            return ids.view(features.shape[:-1])

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        """ids: (...) shared, (..., N) per position, long in [0, K) -> codes (..., E) fp32."""
        self._check_ids(ids)
        ids = ids.long()
        if not self.config.per_position:
            return self.codes[ids]
        n, k = self.config.num_tokens, self.config.num_codes
        offsets = torch.arange(n, device=ids.device) * k  # (N,): position p's block of codes
        return self.codes.reshape(n * k, -1)[ids + offsets]

    def forward(self, features: torch.Tensor) -> CodebookOutput:
        """features: (..., E) -> CodebookOutput(quantized (..., E), ids (...)).

        Gradients pass straight through the quantiser to the features (the codes are frozen).
        """
        ids = self.quantize(features)
        codes = self.lookup(ids).to(features.dtype)
        return CodebookOutput(features + (codes - features).detach(), ids)

    def stats(self, ids: torch.Tensor | None = None) -> CodebookStats:
        """Usage of the codes by `ids`, or by the fitting data (the stored counts) if None."""
        if ids is None:
            counts = self.counts
        else:
            self._check_ids(ids)
            k = self.config.num_codes
            if self.config.per_position:
                n = self.config.num_tokens
                flat = ids.reshape(-1, n) + torch.arange(n, device=ids.device) * k
                counts = torch.bincount(flat.flatten(), minlength=n * k).view(n, k)
            else:
                counts = torch.bincount(ids.flatten(), minlength=k)
        return codebook_stats(counts)

    # --- files
    def save(self, path: str | os.PathLike) -> None:
        """Write codes and counts as safetensors, with the config in the metadata."""
        metadata = {"format": FORMAT, "version": VERSION, "config": json.dumps(asdict(self.config))}
        tensors = {"codes": self.codes.float(), "counts": self.counts}
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, path, metadata)

    @classmethod
    def load(cls, path: str | os.PathLike, device: torch.device | str = "cpu") -> Codebook:
        """Read a file written by `save`; raises ValueError when it is not a valid codebook."""
        if not os.path.isfile(path):
            raise FileNotFoundError(f"codebook file {os.fspath(path)} does not exist")
        with safe_open(os.fspath(path), framework="pt", device=str(device)) as f:
            metadata = f.metadata() or {}
            if metadata.get("format") != FORMAT:
                raise ValueError(f"{os.fspath(path)} is not an svq codebook (no '{FORMAT}' tag)")
            if metadata.get("version") != VERSION:
                raise ValueError(
                    f"{os.fspath(path)}: unknown codebook version "
                    f"{metadata.get('version')!r}, expected {VERSION}"
                )
            try:
                config = CodebookConfig(**json.loads(metadata["config"]))
            except (KeyError, TypeError, json.JSONDecodeError) as err:
                raise ValueError(f"{os.fspath(path)}: unreadable codebook config ({err})") from err
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
        book = cls(config).to(device)
        for name, buffer in (("codes", book.codes), ("counts", book.counts)):
            if name not in tensors or tensors[name].shape != buffer.shape:
                found = tuple(tensors[name].shape) if name in tensors else "missing"
                raise ValueError(
                    f"{os.fspath(path)}: {name} is {found}, config says {tuple(buffer.shape)}"
                )
            buffer.copy_(tensors[name])
        if not torch.isfinite(book.codes).all():
            raise ValueError(f"{os.fspath(path)}: codes contain NaN or inf")
        return book

    # --- input checks: a concise error rather than a silent broadcast or a wrong code
    def _check_features(self, features: torch.Tensor) -> None:
        cfg = self.config
        want = f"(..., {cfg.num_tokens}, {cfg.dim})" if cfg.per_position else f"(..., {cfg.dim})"
        bad_shape = features.ndim < (2 if cfg.per_position else 1) or features.shape[-1] != cfg.dim
        if cfg.per_position and not bad_shape:
            bad_shape = features.shape[-2] != cfg.num_tokens
        if bad_shape:
            raise ValueError(f"expected features of shape {want}, got {tuple(features.shape)}")
        if not features.is_floating_point():
            raise ValueError(f"expected floating-point features, got {features.dtype}")
        if not torch.isfinite(features).all():
            raise ValueError("features contain NaN or inf")

    def _check_ids(self, ids: torch.Tensor) -> None:
        cfg = self.config
        if ids.dtype not in (torch.long, torch.int32, torch.int16):  # uint8 would index as a mask
            raise ValueError(f"expected integer ids (int64, int32 or int16), got {ids.dtype}")
        if cfg.per_position and (ids.ndim < 1 or ids.shape[-1] != cfg.num_tokens):
            raise ValueError(
                f"expected ids of shape (..., {cfg.num_tokens}), got {tuple(ids.shape)}"
            )
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= cfg.num_codes):
            raise ValueError(
                f"ids must be in [0, {cfg.num_codes}), got values in "
                f"[{int(ids.min())}, {int(ids.max())}]"
            )


def codebook_stats(counts: torch.Tensor) -> CodebookStats:
    """counts: (K,) or (N, K) uses of each code -> CodebookStats over the last axis."""
    counts = counts.double()
    total = counts.sum(-1, keepdim=True).clamp_min(1)
    p = counts / total
    entropy = -(p * p.clamp_min(1e-300).log()).sum(-1)
    used = (counts > 0).sum(-1)
    k = counts.shape[-1]
    return CodebookStats(used=used, dead=k - used, usage=used / k, perplexity=entropy.exp())
