"""Reconstruction metrics on [-1, 1] images: PSNR and SSIM, one value per image.

Both clamp the reconstruction to [-1, 1] first (what a saved picture shows) and measure on
[0, 1] pixels with data range 1, the usual convention: SSIM's constants C1 = (0.01 L)^2 and
C2 = (0.03 L)^2 are not shift-invariant, so SSIM on [-1, 1] values would differ.

SSIM is the standard definition (Wang et al. 2004, their ssim_index.m): an 11x11 Gaussian
window with sigma 1.5, K1 = 0.01, K2 = 0.03, local statistics at the "valid" window positions
only, the map averaged over space and then over channels. It is written here rather than taken
from torchmetrics (which does install without torchvision): torchmetrics 1.9 reflect-pads the
images and averages the map over the padded border too, which is not the standard number
(0.55 vs 0.63 on a 24px test picture). tests/test_eval_metrics.py checks this one against a
reference formula.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SSIM_WINDOW, SSIM_SIGMA, SSIM_K1, SSIM_K2 = 11, 1.5, 0.01, 0.03


def _to_unit(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] (unbounded allowed) -> [0, 1] fp32."""
    return (images.detach().float().clamp(-1, 1) + 1) / 2


def _check(recon: torch.Tensor, target: torch.Tensor) -> None:
    if recon.shape != target.shape or recon.ndim != 4:
        raise ValueError(
            f"expected recon and target of one shape (B, C, H, W), got {tuple(recon.shape)} "
            f"and {tuple(target.shape)}"
        )


def psnr(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """recon, target: (B, C, H, W) in [-1, 1] -> PSNR in dB, (B,) fp32.

    Per image: 10 log10(1 / MSE) on [0, 1] pixels; a perfect reconstruction is capped at
    100 dB instead of infinity (so means stay finite)."""
    _check(recon, target)
    mse = (_to_unit(recon) - _to_unit(target)).square().mean(dim=(1, 2, 3))
    return (10 * torch.log10(1.0 / mse.clamp_min(1e-10))).clamp_max(100.0)


def ssim(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """recon, target: (B, C, H, W) in [-1, 1], H, W >= 11 -> SSIM, (B,) fp32 in [-1, 1]."""
    _check(recon, target)
    if min(recon.shape[-2:]) < 11:
        raise ValueError(f"SSIM needs H, W >= 11 (the window), got {tuple(recon.shape[-2:])}")
    x, y = _to_unit(recon).double(), _to_unit(target).double()  # fp64: var = E[x^2] - E[x]^2
    c = x.shape[1]
    r = torch.arange(SSIM_WINDOW, dtype=x.dtype, device=x.device) - SSIM_WINDOW // 2
    g = torch.exp(-(r**2) / (2 * SSIM_SIGMA**2))
    g = g / g.sum()
    # The 2-D Gaussian window is the outer product g g^T, so a column pass then a row pass give
    # the same local means with 22 instead of 121 multiplies per pixel; the five statistics go
    # through one grouped convolution. (B, 5C, H, W) -> (B, 5C, H - 10, W - 10), valid only.
    stats = torch.cat([x, y, x * x, y * y, x * y], dim=1)
    groups = stats.shape[1]
    column = g.view(1, 1, -1, 1).expand(groups, 1, SSIM_WINDOW, 1)
    row = g.view(1, 1, 1, -1).expand(groups, 1, 1, SSIM_WINDOW)
    local = F.conv2d(F.conv2d(stats, column, groups=groups), row, groups=groups)
    mu_x, mu_y, e_xx, e_yy, e_xy = local.split(c, dim=1)
    var_x = e_xx - mu_x**2
    var_y = e_yy - mu_y**2
    cov = e_xy - mu_x * mu_y
    c1, c2 = SSIM_K1**2, SSIM_K2**2  # data range 1
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
        (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    )
    return ssim_map.mean(dim=(2, 3)).mean(dim=1).float()
