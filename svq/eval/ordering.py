"""How the information is spread over the N ordered tokens (docs/design.md §9, §11).

Three views, each decoding edited features of the same images and comparing the result to the
originals (PSNR, SSIM per image):

- `prefix_curve`: keep the first k of N tokens, replace the rest by a fill, k = 0..N. It should
  rise across all of k; a curve flat after k = 6 means tokens 6.. are dead.
- `group_ablation`: replace a group of tokens (default: the tails k..N-1 and blocks of 6) by
  another image's tokens ("swap") or by the fill, and report the PSNR drop against decoding all
  N tokens, mean and standard error over images. A dead group costs ~0 dB.
- `single_token_ablation`: the same for each token alone. Alone it cannot tell a dead token
  from a redundant one (information spread over several tokens), hence the group views.

The fill: the model's learned drop token when it was trained with token dropout, else the
per-position mean of the evaluated images' features (an (N, E) "dataset mean"); or pass one.
Everything runs in eval mode without gradients; the model's mode is restored afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from .metrics import psnr, ssim

Edit = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (features, fill) -> features


@contextmanager
def _evaluating(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def encode_all(model: nn.Module, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """images: (B, C, H, W) in [-1, 1] -> features (B, N, E), in eval mode, in chunks."""
    with _evaluating(model):
        return torch.cat([model.encode(chunk) for chunk in images.split(batch_size)])


def default_fill(model: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """The model's drop token (E,) if it has one, else the per-position mean (N, E)."""
    drop_token = getattr(model, "drop_token", None)
    if drop_token is not None:
        return drop_token.detach()
    return features.mean(dim=0)


def _quality(
    model: nn.Module,
    features: torch.Tensor,
    images: torch.Tensor,
    edit: Edit | None,
    fill: torch.Tensor,
    batch_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode edit(features) in chunks -> (psnr (B,), ssim (B,)) against `images`. The model
    is in eval mode already. `edit` sees the whole (B, N, E), so a swap can take another
    image's tokens."""
    edited = features if edit is None else edit(features, fill)
    scores_p, scores_s = [], []
    for f, x in zip(edited.split(batch_size), images.split(batch_size), strict=True):
        recon = model.decode(f)
        scores_p.append(psnr(recon, x))
        scores_s.append(ssim(recon, x))
    return torch.cat(scores_p), torch.cat(scores_s)


def replace_tokens(
    features: torch.Tensor, start: int, end: int, replacement: torch.Tensor
) -> torch.Tensor:
    """features (B, N, E) with tokens start..end-1 taken from `replacement`, which is
    (B, N, E), (N, E) or (E,)."""
    n = features.shape[1]
    if not 0 <= start <= end <= n:
        raise ValueError(f"token range {start}..{end - 1} is not within 0..{n - 1}")
    inside = (torch.arange(n, device=features.device) >= start) & (
        torch.arange(n, device=features.device) < end
    )  # (N,)
    replacement = replacement.to(features.dtype).expand_as(features)
    return torch.where(inside[None, :, None], replacement, features)


def swapped(features: torch.Tensor) -> torch.Tensor:
    """Each image's features replaced by those of the next image in the batch, (B, N, E)."""
    if features.shape[0] < 2:
        raise ValueError("swapping tokens between images needs at least 2 images")
    return features.roll(1, dims=0)


def _summary(values: torch.Tensor) -> tuple[float, float]:
    """(mean, standard error of the mean) of a (B,) tensor."""
    n = values.numel()
    se = values.std().item() / n**0.5 if n > 1 else 0.0
    return values.mean().item(), se


def prefix_curve(
    model: nn.Module,
    images: torch.Tensor,
    ks: Sequence[int] | None = None,
    fill: torch.Tensor | None = None,
    features: torch.Tensor | None = None,
    batch_size: int = 64,
) -> list[dict]:
    """Quality when only the first k tokens are kept and the rest are `fill`.

    images: (B, C, H, W) in [-1, 1]; ks: the prefix lengths, default 0..N; fill: (E,) or
    (N, E), default `default_fill`. Returns one row per k: {k, psnr, psnr_se, ssim}.
    """
    if features is None:
        features = encode_all(model, images, batch_size)
    n = features.shape[1]
    ks = list(range(n + 1)) if ks is None else list(ks)
    if any(not 0 <= k <= n for k in ks):
        raise ValueError(f"prefix lengths must be within 0..{n}, got {ks}")
    fill = default_fill(model, features) if fill is None else fill
    rows = []
    with _evaluating(model):
        for k in ks:
            edit = lambda f, z, k=k: replace_tokens(f, k, n, z)  # noqa: E731
            p, s = _quality(model, features, images, edit, fill, batch_size)
            mean, se = _summary(p)
            rows.append({"k": k, "psnr": mean, "psnr_se": se, "ssim": s.mean().item()})
    return rows


def default_groups(n: int, block: int = 6) -> list[tuple[int, int]]:
    """Tails k..N-1 for k = block, 2*block, ... and the blocks [0, block), [block, 2 block)..."""
    tails = [(k, n) for k in range(block, n, block)]
    blocks = [(k, min(k + block, n)) for k in range(0, n, block)]
    return tails + [g for g in blocks if g not in tails]


def group_ablation(
    model: nn.Module,
    images: torch.Tensor,
    groups: Sequence[tuple[int, int]] | None = None,
    mode: str = "swap",
    fill: torch.Tensor | None = None,
    features: torch.Tensor | None = None,
    batch_size: int = 64,
) -> list[dict]:
    """PSNR cost of replacing each group of tokens [start, end).

    mode "swap": by the next image's tokens (needs B >= 2); "fill": by `fill` (default
    `default_fill`). Returns one row per group: {start, end, psnr, drop_db, drop_se, ssim}
    where drop_db = PSNR(all tokens) - PSNR(group replaced), mean over images, and drop_se its
    standard error (the noise level to compare a drop with).
    """
    if mode not in ("swap", "fill"):
        raise ValueError(f"mode must be 'swap' or 'fill', got {mode!r}")
    if features is None:
        features = encode_all(model, images, batch_size)
    n = features.shape[1]
    groups = default_groups(n) if groups is None else list(groups)
    fill = default_fill(model, features) if fill is None else fill
    rows = []
    with _evaluating(model):
        full, _ = _quality(model, features, images, None, fill, batch_size)
        for start, end in groups:

            def edit(f, z, start=start, end=end):
                return replace_tokens(f, start, end, swapped(f) if mode == "swap" else z)

            p, s = _quality(model, features, images, edit, fill, batch_size)
            drop, se = _summary(full - p)
            rows.append(
                {
                    "start": start,
                    "end": end,
                    "psnr": p.mean().item(),
                    "drop_db": drop,
                    "drop_se": se,
                    "ssim": s.mean().item(),
                }
            )
    return rows


def single_token_ablation(
    model: nn.Module,
    images: torch.Tensor,
    mode: str = "swap",
    fill: torch.Tensor | None = None,
    features: torch.Tensor | None = None,
    batch_size: int = 64,
) -> list[dict]:
    """`group_ablation` with each token i alone as the group [i, i + 1); rows gain "token"."""
    if features is None:
        features = encode_all(model, images, batch_size)
    n = features.shape[1]
    groups = [(i, i + 1) for i in range(n)]
    rows = group_ablation(model, images, groups, mode, fill, features, batch_size)
    return [{"token": row["start"], **row} for row in rows]


def token_report(
    model: nn.Module,
    images: torch.Tensor,
    ks: Sequence[int] | None = None,
    single: bool = False,
    features: torch.Tensor | None = None,
    batch_size: int = 64,
) -> dict:
    """The per-token views in one record (JSON-ready):

    prefix_psnr {k: dB} (first k tokens kept, the rest the fill; default every k),
    swap_drop_db / swap_drop_se {"a-b": dB} (tokens a..b swapped with another image's: the
    tails k..N-1 and blocks of 6, with the standard error to compare with), and with `single`
    single_swap_drop_db [dB per token].
    """
    if features is None:
        features = encode_all(model, images, batch_size)
    prefix = prefix_curve(model, images, ks, features=features, batch_size=batch_size)
    groups = group_ablation(model, images, features=features, batch_size=batch_size)
    name = lambda g: f"{g['start']}-{g['end'] - 1}"  # noqa: E731
    report = {
        "prefix_psnr": {r["k"]: round(r["psnr"], 3) for r in prefix},
        "swap_drop_db": {name(g): round(g["drop_db"], 3) for g in groups},
        "swap_drop_se": {name(g): round(g["drop_se"], 3) for g in groups},
    }
    if single:
        rows = single_token_ablation(model, images, features=features, batch_size=batch_size)
        report["single_swap_drop_db"] = [round(r["drop_db"], 3) for r in rows]
    return report
