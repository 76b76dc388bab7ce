"""Soft targets for the codes an LLM writes: a code's label spread over its codebook neighbours.

A k-means code is one of K near-equivalent points of a region of feature space; the one-hot
cross-entropy teaches each code's row from its own occurrences only (a few per code in a short
SFT). With `code_target_temperature` T > 0 the target of code k is instead

    q(j | k) = softmax_j(-|c_j - c_k|^2 / (T * d)),   j over the codes of k's codebook,

d the codebook's median squared distance from a code to its nearest other code: at T = 1 a
code at that distance gets e^-1 of the code's own weight. The loss at a code target is
-sum_j q(j | k) log p(j), p over the whole vocabulary (or over the position's codes with the
constrained loss, `span_cross_entropy`'s sets). T -> 0 is the one-hot cross-entropy.
"""

from __future__ import annotations

import torch

from .vocabulary import ImageVocabulary


def neighbour_targets(codes: torch.Tensor, temperature: float) -> torch.Tensor:
    """codes: (K, E) shared or (N, K, E) per-position codebooks -> (B, K, K) fp32 soft targets,
    B = 1 or N: row k of block b is q(. | k) over block b's codes (each row sums to 1)."""
    if temperature <= 0:
        raise ValueError(f"code_target_temperature must be > 0 for soft targets, got {temperature}")
    codes = codes.float()
    if codes.ndim == 2:
        codes = codes.unsqueeze(0)
    if codes.ndim != 3 or codes.shape[1] < 2:
        raise ValueError(f"codes must be (K, E) or (N, K, E) with K >= 2, got {tuple(codes.shape)}")
    squared = torch.cdist(codes, codes).square()  # (B, K, K)
    eye = torch.eye(codes.shape[1], dtype=torch.bool, device=codes.device)
    nearest = squared.masked_fill(eye, float("inf")).amin(-1)  # (B, K)
    scale = nearest.median(-1).values.clamp_min(1e-12)  # (B,) d per codebook
    return (-squared / (temperature * scale[:, None, None])).softmax(-1)


def soft_code_cross_entropy(
    logits: torch.Tensor,
    targets: torch.Tensor,
    vocab: ImageVocabulary,
    table: torch.Tensor,
    constrained: bool = False,
) -> torch.Tensor:
    """logits: (M, V) at code targets (M,) -> (M,) fp32 -sum_j q(j | target) log p(j), with q
    from `table` (`neighbour_targets`: (N, K, K) per position, (1, K, K) shared); p over the
    whole vocabulary, or with `constrained` over the target's codebook only."""
    if not bool(vocab.is_code(targets).all()):
        raise ValueError("soft_code_cross_entropy: every target must be a code token")
    k = vocab.num_codes
    local = targets - vocab.code_offset
    block = local // k if vocab.per_position else torch.zeros_like(local)
    columns = vocab.codebook_tokens(targets)  # (M, K)
    if constrained:
        log_p = logits.gather(1, columns).float().log_softmax(-1)  # (M, K)
    else:
        log_p = logits.float().log_softmax(-1).gather(1, columns)
    q = table.to(logits.device)[block, local % k]  # (M, K)
    return -(q * log_p).sum(-1)
