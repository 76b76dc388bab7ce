import math

import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view

from svq.eval.metrics import psnr, ssim


def reference_ssim(x: np.ndarray, y: np.ndarray) -> float:
    """SSIM as written in Wang et al. 2004 (and their ssim_index.m): images in [0, 1] (L = 1),
    an 11x11 Gaussian window with sigma 1.5 normalised to sum 1, statistics at every position
    where the window fits ('valid'), the map averaged; channels averaged. x, y: (C, H, W)."""
    r = np.arange(11) - 5
    g = np.exp(-(r**2) / (2 * 1.5**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = (0.01 * 1) ** 2, (0.03 * 1) ** 2
    values = []
    for a, b in zip(x, y, strict=True):
        pa, pb = sliding_window_view(a, (11, 11)), sliding_window_view(b, (11, 11))
        mu_a, mu_b = (pa * w).sum((-1, -2)), (pb * w).sum((-1, -2))
        var_a = (pa**2 * w).sum((-1, -2)) - mu_a**2
        var_b = (pb**2 * w).sum((-1, -2)) - mu_b**2
        cov = (pa * pb * w).sum((-1, -2)) - mu_a * mu_b
        ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
            (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
        )
        values.append(ssim_map.mean())
    return float(np.mean(values))


def pictures(batch: int = 3, size: int = 24, seed: int = 0) -> torch.Tensor:
    """Smooth structured images in [-1, 1] (random noise alone would be a weak check)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(batch, 3, size // 4, size // 4, generator=g) * 2 - 1
    return torch.nn.functional.interpolate(low, size=size, mode="bilinear", align_corners=False)


def test_ssim_matches_the_reference_formula():
    x = pictures(3, 24, seed=0)
    y = (x + 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).clamp(-1, 1)
    got = ssim(y, x)
    assert got.shape == (3,)
    to01 = lambda t: ((t.double() + 1) / 2).numpy()  # noqa: E731
    want = [reference_ssim(to01(y[i]), to01(x[i])) for i in range(3)]
    np.testing.assert_allclose(got.numpy(), want, atol=2e-4)
    assert 0.0 < float(got.min()) < 0.95  # a real distortion, not a trivial 1


def test_ssim_of_identical_images_is_one_and_distortion_lowers_it():
    x = pictures(2, 32, seed=2)
    torch.testing.assert_close(ssim(x, x), torch.ones(2), atol=1e-5, rtol=0)
    blur = torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1)
    assert (ssim(blur, x) < 0.999).all()
    assert (ssim(-x, x) < ssim(blur, x)).all()


def test_psnr_known_value_and_clamping():
    x = torch.zeros(2, 3, 16, 16)
    y = x + 0.2  # 0.1 on [0, 1] pixels: MSE 0.01 -> 20 dB
    torch.testing.assert_close(psnr(y, x), torch.full((2,), 20.0))
    # Values beyond [-1, 1] are clamped first: +3 counts as +1 (error 0.5 on [0, 1]).
    torch.testing.assert_close(psnr(x + 3.0, x), torch.full((2,), 10 * math.log10(1 / 0.25)))
    assert psnr(x, x).tolist() == [100.0, 100.0]  # capped, not infinite


def test_metrics_reject_mismatched_or_tiny_inputs():
    with pytest.raises(ValueError, match="one shape"):
        psnr(torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 8))
    with pytest.raises(ValueError, match="H, W >= 11"):
        ssim(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))
