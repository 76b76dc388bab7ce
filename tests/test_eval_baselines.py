import pytest
import torch

from svq.eval.baselines import PixelPCA, principal_axes


@pytest.mark.parametrize("n, d", [(40, 60), (60, 40)])  # the Gram and the covariance route
def test_principal_axes_span_what_an_svd_finds(n, d):
    torch.manual_seed(0)
    x = torch.randn(n, 8, dtype=torch.float64) @ torch.randn(8, d, dtype=torch.float64)
    x = x + 0.01 * torch.randn(n, d, dtype=torch.float64)  # 8 strong directions, then noise
    centred = x - x.mean(0)
    axes = principal_axes(centred)
    vh = torch.linalg.svd(centred, full_matrices=False).Vh
    assert axes.shape == (min(n, d) - (n <= d), d)  # the centring removes one direction
    assert torch.allclose(axes @ axes.T, torch.eye(len(axes), dtype=torch.float64), atol=1e-8)
    for k in (1, 8, 20):  # the same k-dimensional projection (the axes' signs may differ)
        ours, svd = axes[:k].T @ axes[:k], vh[:k].T @ vh[:k]
        assert torch.allclose(ours, svd, atol=1e-6), k
    variance = (centred @ axes.T).pow(2).sum(0)
    assert torch.all(variance[:-1] >= variance[1:] - 1e-9)  # by decreasing variance


def test_pixel_pca_reconstructs_fitted_pictures_exactly_with_every_axis_and_refuses_too_many():
    torch.manual_seed(0)
    pictures = torch.rand(6, 3, 4, 4) * 2 - 1  # 6 pictures: 5 directions after centring
    pca = PixelPCA(pictures)
    assert len(pca.components) == 5
    assert torch.allclose(pca.reconstruct(pictures, 5), pictures, atol=1e-5)
    assert (pca.reconstruct(pictures, 1) - pictures).abs().max() > 0.1  # one axis is not enough
    with pytest.raises(ValueError, match=r"k must be in 1..5"):
        pca.reconstruct(pictures, 6)
