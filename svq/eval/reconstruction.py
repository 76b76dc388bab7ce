"""Reconstruction quality of the tokenizers: PSNR, SSIM, LPIPS, rFID and the judge's reading.

    model = StyledVAEVQ.load("runs/demo/stage2/model")  # codebook.safetensors attached if present
    images, labels = world_images(64, model.config.image_size)
    result = evaluate_reconstruction(model, images, labels, judge=load_judge("runs/judge"),
                                     out_dir="runs/demo/report")

Everything is measured twice when the model has a codebook: "continuous" decodes the encoder's
features, "quantised" decodes their codes (`detokenize(tokenize(x))`); the gap is what the
vocabulary costs. The judge (svq/eval/judge.py) reads every attribute off the originals and off
each reconstruction: the per-attribute accuracy says which attributes survive tokenization.

Optional metrics never fail the run; each says why it was skipped and how to enable it:
- LPIPS needs the VGG16 and lpips v0.1 weights (`svq.lpips.LPIPS.from_pretrained`).
- rFID needs an Inception network: the TorchScript file `inception-2015-12-05.pt` used by
  StyleGAN2-ADA / StyleGAN3's metrics (called as `net(uint8 images, return_features=True)`,
  (B, 2048) pool features; any resolution, it resizes to 299 itself). Pass its path or put it
  in $SVQ_INCEPTION. Nothing is downloaded here. rFID on a few hundred pictures is biased
  upwards (the covariance of 2048 features is poorly estimated): compare only runs with the
  same number of pictures.

JSON has no infinity: PSNR is capped at 100 dB (`svq.eval.metrics.psnr`; a perfect reconstruction
reads 100.0), and `jsonable` turns any other non-finite number into null.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from svq import StyledVAEVQ
from svq.data import render_tensor, world_record
from svq.images import save_grid

from .metrics import psnr, ssim

INCEPTION_ENV = "SVQ_INCEPTION"
INCEPTION_FILE = "inception-2015-12-05.pt"
INCEPTION_URL = (
    "https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan3/versions/1/files/metrics/"
    + INCEPTION_FILE
)
INCEPTION_HELP = (
    f"rFID needs the Inception network {INCEPTION_FILE} (TorchScript, 92 MB, the one "
    f"StyleGAN3's metrics use; no torchvision needed): download it on a machine with network "
    f"access from {INCEPTION_URL} and pass --inception PATH (or set ${INCEPTION_ENV})"
)


# --- loading and data


def world_images(
    n: int, size: int, split: str = "validation", seed: int = 0, start: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chat-world pictures start..start+n-1 of `split`: images (n, 3, S, S) in [-1, 1] and
    labels (n, A) long in schema order."""
    records = [world_record(seed, split, start + i) for i in range(n)]
    labels = torch.tensor([r.labels() for r in records], dtype=torch.long)
    return render_tensor(records, size), labels


def jsonable(value: Any) -> Any:
    """Tensors to lists / numbers, tuples to lists, non-finite floats to None (JSON has no
    infinity), recursively; dict keys to str."""
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def skipped(reason: str) -> dict:
    """The record of a part that did not run: {"skipped": reason}."""
    return {"skipped": reason}


# --- optional metrics: LPIPS and rFID


def load_lpips(trunk: str | Path | None = None, linear: str | Path | None = None):
    """(LPIPS model, None), or (None, reason) when its weights are missing."""
    from svq.lpips import LPIPS

    try:
        return LPIPS.from_pretrained(trunk, linear), None
    except (FileNotFoundError, ValueError) as error:
        return None, f"LPIPS skipped: {error}"


def load_inception(path: str | Path | None = None):
    """(Inception TorchScript module, None), or (None, reason) when there is none. Default
    location: $SVQ_INCEPTION, then the torch hub cache's checkpoints/inception-2015-12-05.pt."""
    candidates = [Path(path)] if path else []
    if not path:
        if os.environ.get(INCEPTION_ENV):
            candidates.append(Path(os.environ[INCEPTION_ENV]))
        candidates.append(Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE)
    for candidate in candidates:
        if candidate.is_file():
            try:
                with warnings.catch_warnings():  # TorchScript is deprecated, but the file is one
                    warnings.simplefilter("ignore", DeprecationWarning)
                    return torch.jit.load(str(candidate), map_location="cpu").eval(), None
            except (RuntimeError, ValueError) as error:
                return None, f"rFID skipped: {candidate} is not a TorchScript module ({error})"
    looked = ", ".join(str(c) for c in candidates)
    return None, f"rFID skipped: no Inception network (looked in: {looked}). {INCEPTION_HELP}"


@torch.no_grad()
def inception_features(net: nn.Module, images: torch.Tensor, batch_size: int = 50) -> torch.Tensor:
    """images: (B, 3, H, W) in [-1, 1] -> (B, D) float64 features of `net`, called the StyleGAN3
    way: `net(uint8 (b, 3, H, W), return_features=True)`."""
    parts = []
    for chunk in images.split(batch_size):
        pixels = ((chunk.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        parts.append(net(pixels, return_features=True).double().flatten(1))
    return torch.cat(parts)


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """FID between two feature sets (n, D), (m, D): |mu_a - mu_b|^2 + tr(S_a + S_b -
    2 (S_a S_b)^(1/2)), the trace of the root via the eigenvalues of S_a^(1/2) S_b S_a^(1/2)
    (symmetric, so `eigh` suffices; tiny negative eigenvalues from round-off are clipped)."""
    a, b = a.double(), b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T).reshape(a.shape[1], -1), torch.cov(b.T).reshape(b.shape[1], -1)
    vals, vecs = torch.linalg.eigh(cov_a)
    root_a = vecs @ torch.diag(vals.clamp_min(0).sqrt()) @ vecs.T
    middle = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp_min(0)
    value = (mu_a - mu_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * middle.sqrt().sum()
    return max(0.0, value.item())


# --- the evaluation


def _mean_se(values: torch.Tensor) -> tuple[float, float]:
    n = values.numel()
    return values.mean().item(), (values.std().item() / n**0.5 if n > 1 else 0.0)


@torch.no_grad()
def _decode_all(fn, inputs: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat([fn(chunk) for chunk in inputs.split(batch_size)])


def quality(
    recon: torch.Tensor,
    images: torch.Tensor,
    lpips: nn.Module | None = None,
    inception: nn.Module | None = None,
    reference_features: torch.Tensor | None = None,
    batch_size: int = 32,
) -> dict:
    """Per-set scores of reconstructions (B, 3, H, W) against images: {psnr, psnr_se, ssim,
    ssim_se, lpips (or None), rfid (or None)}. `reference_features`: the originals' Inception
    features (computed here when None and `inception` is given)."""
    p, s = psnr(recon, images), ssim(recon, images)
    row = dict(zip(("psnr", "psnr_se"), _mean_se(p), strict=True))
    row.update(zip(("ssim", "ssim_se"), _mean_se(s), strict=True))
    row["lpips"] = None
    if lpips is not None:
        with torch.no_grad():
            d = torch.cat(
                [
                    lpips(r.clamp(-1, 1), x)
                    for r, x in zip(recon.split(batch_size), images.split(batch_size), strict=True)
                ]
            )
        row["lpips"] = d.mean().item()
    row["rfid"] = None
    if inception is not None:
        if reference_features is None:
            reference_features = inception_features(inception, images)
        row["rfid"] = frechet_distance(reference_features, inception_features(inception, recon))
    return row


def evaluate_reconstruction(
    model: StyledVAEVQ,
    images: torch.Tensor,
    labels: torch.Tensor | None = None,
    judge: nn.Module | None = None,
    *,
    lpips: nn.Module | str | None = "auto",
    inception: nn.Module | str | Path | None = "auto",
    out_dir: str | Path | None = None,
    grid_images: int = 8,
    batch_size: int = 32,
) -> dict:
    """Reconstruct `images` (n, 3, S, S) in [-1, 1] continuously and, with a codebook,
    through the codes; score both.

    labels: (n, A) true attributes, for the judge's accuracy; judge: an AttributeJudge.
    lpips / inception: a loaded network, "auto" (look in the default places; a path works for
    inception) or None (skip). out_dir: where reconstruction.png goes (rows: originals,
    continuous, quantised), none written when None.

    Returns a JSON-ready dict: n_images, image_size, continuous {psnr, ssim, lpips, rfid, ...},
    quantised (same, or {"skipped": why}), gap_db (continuous - quantised PSNR), judge
    ({originals, continuous, quantised: {attribute: accuracy}, mean: {...}} or skipped), notes
    (why LPIPS / rFID are absent), grid (file name) when written.
    """
    model.eval()
    notes = {}
    if isinstance(lpips, str):
        lpips, notes["lpips"] = load_lpips()
    elif lpips is None:
        notes["lpips"] = "LPIPS not requested"
    if inception is None:
        notes["rfid"] = f"rFID not requested. {INCEPTION_HELP}"
    elif not isinstance(inception, nn.Module):
        inception, notes["rfid"] = load_inception(None if inception == "auto" else inception)
    notes = {k: v for k, v in notes.items() if v}
    reference = inception_features(inception, images) if inception is not None else None

    features = _decode_all(model.encode, images, batch_size)  # (n, N, E)
    recons = {"continuous": _decode_all(model.decode, features, batch_size)}
    result: dict[str, Any] = {"n_images": len(images), "image_size": images.shape[-1]}
    codebook = getattr(model, "codebook", None)
    if codebook is not None:
        ids = codebook.quantize(features)  # (n, N)
        recons["quantised"] = _decode_all(model.detokenize, ids, batch_size)
    for name, recon in recons.items():
        result[name] = quality(recon, images, lpips, inception, reference, batch_size)
    if codebook is None:
        result["quantised"] = skipped("the model has no codebook (stage 2 not run)")
    else:
        result["gap_db"] = result["continuous"]["psnr"] - result["quantised"]["psnr"]

    if judge is None or labels is None:
        result["judge"] = skipped("no judge" if judge is None else "no labels for the pictures")
    else:
        readings = {"originals": judge.accuracy(images, labels)}
        readings.update(
            {name: judge.accuracy(r.clamp(-1, 1), labels) for name, r in recons.items()}
        )
        result["judge"] = {name: judge.named(acc) for name, acc in readings.items()}
        result["judge"]["mean"] = {name: acc.mean().item() for name, acc in readings.items()}
    result["notes"] = notes
    if out_dir is not None and grid_images > 0:
        k = min(grid_images, len(images))
        grid = save_grid(
            [images[:k], *(r[:k] for r in recons.values())], Path(out_dir) / "reconstruction.png"
        )
        result["grid"] = grid.name
        result["grid_rows"] = ["originals", *recons]
    return jsonable(result)


@torch.no_grad()
def evaluate_spatial_vq(
    model: nn.Module,
    images: torch.Tensor,
    *,
    out_dir: str | Path | None = None,
    grid_images: int = 8,
    batch_size: int = 32,
) -> dict:
    """A SpatialVQ's reconstruction of `images` (n, 3, S, S): {n_images, image_size, grid_size,
    psnr, psnr_se, ssim, ssim_se, codes_used, codebook_size, usage, perplexity}; the grid
    spatial_vq.png (originals over reconstructions) in out_dir."""
    from svq.codebook import codebook_stats

    model.eval()
    size = model.config.image_size
    if images.shape[-1] != size:
        images = torch.nn.functional.interpolate(
            images, size=(size, size), mode="bilinear", antialias=True
        )
    ids = _decode_all(model.encode, images, batch_size)  # (n, h*w)
    recon = _decode_all(model.decode, ids, batch_size)
    stats = codebook_stats(torch.bincount(ids.flatten(), minlength=model.codebook_size))
    result = {
        "n_images": len(images),
        "image_size": size,
        "grid_size": list(model.grid_size),
        **quality(recon, images, batch_size=batch_size),
        "codes_used": int(stats.used),
        "codebook_size": model.codebook_size,
        "usage": float(stats.usage),
        "perplexity": float(stats.perplexity),
    }
    del result["lpips"], result["rfid"]
    if out_dir is not None and grid_images > 0:
        k = min(grid_images, len(images))
        result["grid"] = save_grid([images[:k], recon[:k]], Path(out_dir) / "spatial_vq.png").name
    return jsonable(result)
