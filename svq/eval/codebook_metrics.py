"""How a tokenizer uses its codebook: code usage, perplexity and dead codes (overall and per
token position), the relative quantisation error, and re-encode stability.

Re-encode stability is the rate at which `tokenize(detokenize(ids)) == ids`: whether the image
language reads back what it wrote. An LLM writes ids, the decoder paints them, and the picture
is tokenized again when it returns to the context; an unstable code drifts each round.

    report = codebook_report(model, images)   # model: StyledVAEVQ with an attached codebook
    print(report.table())

High usage says nothing when most tokens are dead: read it beside the probes and the swap test
(svq/eval/probes.py). Pooled usage over a shared codebook says little about what the ids carry
(each position may use a handful of the K codes); `UsageReport.bits_carried` sums log2 of the
per-position perplexities instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch

from svq.codebook import CodebookStats, codebook_stats


class Tokenizer(Protocol):
    """What the stability check needs (`svq.StyledVAEVQ` with a codebook is one)."""

    def tokenize(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, N) long."""
        ...

    def detokenize(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, N) long -> (B, 3, H, W)."""
        ...


@dataclass
class UsageReport:
    """Code usage of a set of id sequences."""

    overall: CodebookStats  # every code of the codebook; fields ()
    per_position: CodebookStats  # the codes each token position uses; fields (N,)
    shared_codes: int  # codes used at two positions or more (0 for per-position codebooks)
    num_codes: int  # K: codes per codebook
    per_position_codebook: bool  # ids index one codebook per position, not one shared

    @property
    def bits_carried(self) -> float:
        """Bits per picture the ids actually carry: the sum over positions of log2 of each
        position's perplexity (at most log2 of the number of pictures counted, per position)."""
        return float(torch.log2(self.per_position.perplexity.double()).sum())

    @property
    def nominal_bits(self) -> float:
        """N log2 K: what the ids could carry if every position used every code evenly."""
        return float(len(self.per_position.perplexity) * math.log2(self.num_codes))


def code_usage(
    ids: torch.Tensor, num_codes: int, per_position_codebook: bool = False
) -> UsageReport:
    """ids: (n, N) long in [0, K) -> usage overall and per position.

    Shared codebook: `overall` counts the K codes over every position. Per-position codebooks:
    `overall` counts all N * K (position, code) pairs, since id k means a different vector at
    each position.
    """
    if ids.ndim != 2 or ids.is_floating_point():
        raise ValueError(f"expected integer ids (n, N), got {tuple(ids.shape)} {ids.dtype}")
    if ids.numel() == 0:
        raise ValueError("no ids to count")
    if int(ids.min()) < 0 or int(ids.max()) >= num_codes:
        raise ValueError(
            f"ids must be in [0, {num_codes}), got [{int(ids.min())}, {int(ids.max())}]"
        )
    n_pos = ids.shape[1]
    offsets = torch.arange(n_pos, device=ids.device) * num_codes  # (N,)
    counts = torch.bincount((ids + offsets).flatten(), minlength=n_pos * num_codes)
    counts = counts.view(n_pos, num_codes)  # (N, K): uses of code k at position p
    overall = counts.flatten() if per_position_codebook else counts.sum(0)
    shared = 0 if per_position_codebook else int(((counts > 0).sum(0) >= 2).sum())
    return UsageReport(
        overall=codebook_stats(overall),
        per_position=codebook_stats(counts),
        shared_codes=shared,
        num_codes=num_codes,
        per_position_codebook=per_position_codebook,
    )


@dataclass
class StabilityReport:
    """How often tokenize(detokenize(ids)) gives back ids."""

    per_position: torch.Tensor  # (N,) fraction of ids at position p read back unchanged
    tokens: float  # over every token
    sequences: float  # fraction of id sequences read back entirely (all N ids)


@torch.no_grad()
def reencode_stability(
    model: Tokenizer, ids: torch.Tensor, batch_size: int = 64, clamp: bool = True
) -> StabilityReport:
    """ids: (n, N) long, e.g. `model.tokenize(images)` of held-out pictures or ids an LLM wrote.

    Each batch is detokenized, clamped to [-1, 1] (as a saved picture would be; `clamp=False`
    keeps the decoder's raw output) and tokenized again.
    """
    if ids.ndim != 2 or ids.is_floating_point():
        raise ValueError(f"expected integer ids (n, N), got {tuple(ids.shape)} {ids.dtype}")
    same = []
    for chunk in ids.split(batch_size):
        images = model.detokenize(chunk)
        again = model.tokenize(images.clamp(-1, 1) if clamp else images)
        same.append((again == chunk).cpu())
    equal = torch.cat(same)  # (n, N) bool
    return StabilityReport(
        per_position=equal.float().mean(0),
        tokens=equal.float().mean().item(),
        sequences=equal.all(1).float().mean().item(),
    )


def quantization_error(features: torch.Tensor, quantized: torch.Tensor) -> float:
    """features, quantized: (n, N, E) -> |f - q|^2 / |f - mean f|^2 summed over everything:
    the fraction of the features' variance the codes lose (0: exact, 1: as bad as the mean)."""
    if features.shape != quantized.shape:
        raise ValueError(f"shapes differ: {tuple(features.shape)} vs {tuple(quantized.shape)}")
    features, quantized = features.double(), quantized.double()
    spread = (features - features.mean(0)).square().sum().clamp_min(1e-30)
    return ((features - quantized).square().sum() / spread).item()


@dataclass
class CodebookReport:
    """Everything `codebook_report` measures on one set of pictures."""

    usage: UsageReport
    stability: StabilityReport
    quantization_error: float  # see `quantization_error`

    def table(self) -> str:
        """Markdown: one row per position, then the totals."""
        u, s = self.usage, self.stability
        rows = [
            "| position | codes used | dead | perplexity | stable |",
            "|---|---|---|---|---|",
        ]
        pp = u.per_position
        for p in range(len(s.per_position)):
            rows.append(
                f"| {p} | {int(pp.used[p])} | {int(pp.dead[p])} | {float(pp.perplexity[p]):.1f} "
                f"| {100 * float(s.per_position[p]):.1f}% |"
            )
        o = u.overall
        rows.append(
            f"| all | {int(o.used)} of {int(o.used + o.dead)} ({100 * float(o.usage):.1f}%) | "
            f"{int(o.dead)} | {float(o.perplexity):.1f} | {100 * s.tokens:.1f}% tokens, "
            f"{100 * s.sequences:.1f}% sequences |"
        )
        extra = f"relative quantisation error {self.quantization_error:.4f}"
        if not u.per_position_codebook:
            extra += f"; {u.shared_codes} codes used at two positions or more"
        return "\n".join([*rows, "", extra])


@torch.no_grad()
def codebook_report(
    model: torch.nn.Module, images: torch.Tensor, batch_size: int = 64
) -> CodebookReport:
    """images: (n, 3, S, S) in [-1, 1] through a tokenizer with an attached codebook
    (`model.encode`, `model.codebook`, `model.tokenize`, `model.detokenize`)."""
    codebook = getattr(model, "codebook", None)
    if codebook is None:
        raise RuntimeError("codebook_report needs a model with an attached codebook (stage 2)")
    device = next(model.parameters()).device
    features = torch.cat([model.encode(chunk.to(device)) for chunk in images.split(batch_size)])
    # features: (n, N, E)
    ids = codebook.quantize(features)  # (n, N)
    return CodebookReport(
        usage=code_usage(ids, codebook.num_codes, codebook.config.per_position),
        stability=reencode_stability(model, ids, batch_size),
        quantization_error=quantization_error(features, codebook.lookup(ids)),
    )
