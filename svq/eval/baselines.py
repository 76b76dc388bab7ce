"""Trivial references for reconstruction: what a tokenizer must beat to carry anything.

    table = trivial_baselines(images, fit_images, floats=36 * E, bits=36 * log2(K))
    python -m svq.eval.baselines --size 64 --floats 2304 --bits 360 --out benchmarks/results/x.json

- mean picture: the per-pixel mean of the fitting pictures, the same for every picture.
- thumbnails 4x4 / 8x8 / 16x16: area (box) downsampling, then bilinear upsampling
  (`F.interpolate(mode="bilinear", align_corners=False)`, no antialias). The resampling
  matters: other choices move these figures by a dB or more.
- pixel PCA with `floats` components (the same number of floats as the tokenizer's
  continuous features, 36 x E) fitted on `fit_images` training pictures, and PCA with as many
  components as the ids' bits pay for at 8 bits each (`bits` // 8, coefficients uniformly
  quantised to 256 levels over their fitted range).

Every figure is the mean PSNR over `images` (dB, svq.eval.metrics.psnr) with its standard error.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from svq.provenance import provenance

from .metrics import psnr
from .reconstruction import world_images

THUMBNAILS = (4, 8, 16)
BITS_PER_COEFFICIENT = 8


@dataclass
class Baseline:
    name: str
    psnr: float  # dB, mean over the pictures
    psnr_se: float  # its standard error
    floats: int | None = None  # numbers kept per picture
    bits: int | None = None  # bits kept per picture, where that is fixed


def _score(name: str, recon: torch.Tensor, images: torch.Tensor, **sizes: int) -> Baseline:
    p = psnr(recon.clamp(-1, 1), images)
    se = p.std().item() / len(p) ** 0.5 if len(p) > 1 else 0.0
    return Baseline(name, p.mean().item(), se, **sizes)


def thumbnail(images: torch.Tensor, side: int) -> torch.Tensor:
    """(B, 3, S, S) -> (B, 3, S, S): box-downsampled to side x side, bilinear back up."""
    small = F.interpolate(images, size=(side, side), mode="area")
    return F.interpolate(small, size=images.shape[-2:], mode="bilinear", align_corners=False)


def principal_axes(centred: torch.Tensor, rtol: float = 1e-6) -> torch.Tensor:
    """(N, D) centred data -> (R, D) orthonormal rows, by decreasing variance: the right
    singular vectors of an economy SVD, from the eigenvectors of the smaller of the Gram
    (N x N) and covariance (D x D) matrices (faster than the SVD at the report's shapes, a few
    thousand pictures of thousands of pixels). Directions of no variance (singular value <=
    rtol x the largest: the centring's, and any past the rank) are left out, so R <= min(N, D)."""
    gram = centred.shape[0] <= centred.shape[1]
    values, vectors = torch.linalg.eigh(centred @ centred.T if gram else centred.T @ centred)
    values, vectors = values.flip(0), vectors.flip(1)  # eigh gives them ascending
    keep = values > values[0].clamp_min(0) * rtol**2  # the squared singular values
    if gram:  # the right singular vectors from the left ones: v = x^T u / s
        return (vectors[:, keep].T @ centred) / values[keep].sqrt()[:, None]
    return vectors[:, keep].T


class PixelPCA:
    """PCA of flattened pictures: fit on (N, 3, S, S), then keep the first k components."""

    def __init__(self, fit_images: torch.Tensor):
        x = fit_images.flatten(1).double()  # (N, D)
        self.mean = x.mean(0)
        self.components = principal_axes(x - self.mean)  # (R, D), R <= min(N, D)
        self.shape = fit_images.shape[1:]
        self.fit_coefficients = (x - self.mean) @ self.components.T  # (N, R)

    def reconstruct(self, images: torch.Tensor, k: int, levels: int | None = None) -> torch.Tensor:
        """Project onto the first k components (coefficients uniformly quantised to `levels`
        over the fitted range when given) and back: (B, 3, S, S) -> same."""
        if not 0 < k <= len(self.components):
            raise ValueError(
                f"k must be in 1..{len(self.components)} (the fitted pictures' directions), got {k}"
            )
        basis = self.components[:k]  # (k, D)
        coefficients = (images.flatten(1).double() - self.mean) @ basis.T  # (B, k)
        if levels is not None:
            low = self.fit_coefficients[:, :k].min(0).values
            high = self.fit_coefficients[:, :k].max(0).values
            step = (high - low) / (levels - 1)
            coefficients = low + ((coefficients - low) / step).round().clamp(0, levels - 1) * step
        recon = coefficients @ basis + self.mean
        return recon.view(len(images), *self.shape).float()


@torch.no_grad()
def trivial_baselines(
    images: torch.Tensor, fit_images: torch.Tensor, floats: int, bits: int | None = None
) -> list[Baseline]:
    """Mean picture, thumbnails, PCA at `floats` components and at `bits` // 8 (see the module
    docstring); images, fit_images: (B, 3, S, S) in [-1, 1]."""
    mean = fit_images.mean(0, keepdim=True).expand_as(images)
    rows = [_score("mean picture", mean, images, floats=0)]
    for side in THUMBNAILS:
        rows.append(
            _score(f"thumbnail {side}x{side}", thumbnail(images, side), images, floats=3 * side**2)
        )
    pca = PixelPCA(fit_images)
    most = len(pca.components)
    k = min(floats, most)
    rows.append(_score(f"PCA, {k} components (= 36 x E floats)", pca.reconstruct(images, k),
                       images, floats=k))  # fmt: skip
    if bits is not None:
        k = max(1, min(bits // BITS_PER_COEFFICIENT, most))
        levels = 2**BITS_PER_COEFFICIENT
        rows.append(_score(f"PCA, {k} components x 8 bits (= the ids' bits)",
                           pca.reconstruct(images, k, levels), images, floats=k,
                           bits=k * BITS_PER_COEFFICIENT))  # fmt: skip
    return rows


def world_baselines(
    size: int, floats: int, bits: int | None, num_images: int = 128, fit_images: int = 3000,
    seed: int = 0, split: str = "validation",
) -> dict:  # fmt: skip
    """`trivial_baselines` on the chat world: held-out pictures 0..num_images-1 of `split`,
    fitted on train-split pictures 0..fit_images-1."""
    images, _ = world_images(num_images, size, split, seed)
    fit, _ = world_images(fit_images, size, "train", seed)
    rows = trivial_baselines(images, fit, floats, bits)
    return {
        "image_size": size,
        "n_images": num_images,
        "fit_images": fit_images,
        "resampling": "thumbnails: area down, bilinear up (align_corners=False)",
        "rows": [asdict(r) for r in rows],
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m svq.eval.baselines",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--floats", type=int, default=36 * 64, help="PCA components (36 x E)")
    parser.add_argument("--bits", type=int, default=None, help="bits of the ids (36 log2 K)")
    parser.add_argument("--num_images", type=int, default=128)
    parser.add_argument("--fit_images", type=int, default=3000)
    parser.add_argument("--out", type=Path, default=None, help="write the table as JSON here")
    args = parser.parse_args(argv)
    result = world_baselines(args.size, args.floats, args.bits, args.num_images, args.fit_images)
    print(f"| baseline ({args.size} px, {args.num_images} pictures) | PSNR (dB) | floats |")
    print("|---|---|---|")
    for row in result["rows"]:
        print(f"| {row['name']} | {row['psnr']:.2f} ± {row['psnr_se']:.2f} | {row['floats']} |")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({**provenance(), **result}, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
