"""Codebook metrics: usage, perplexity, dead codes per position, re-encode stability."""

import pytest
import torch

from svq import StyledVAEVQ, SVQConfig
from svq.codebook import Codebook
from svq.eval.codebook_metrics import (
    code_usage,
    codebook_report,
    quantization_error,
    reencode_stability,
)


def planted_ids() -> torch.Tensor:
    """(96, 3) ids of an 8-code book: position 0 always code 5, position 1 cycles through all
    8 codes, position 2 alternates codes 0 and 1."""
    n = torch.arange(96)
    return torch.stack([torch.full_like(n, 5), n % 8, n % 2], dim=1)


def test_usage_per_position_and_overall():
    report = code_usage(planted_ids(), num_codes=8)
    pp = report.per_position
    assert pp.used.tolist() == [1, 8, 2] and pp.dead.tolist() == [7, 0, 6]
    torch.testing.assert_close(pp.perplexity, torch.tensor([1.0, 8.0, 2.0], dtype=torch.float64))
    assert int(report.overall.used) == 8 and int(report.overall.dead) == 0
    # Codes 0 and 1 (positions 1, 2) and 5 (positions 0, 1) appear at two positions or more.
    assert report.shared_codes == 3
    # Perplexity of the pooled frequencies: code 5 is 1/3 + 1/24 of all uses, 0 and 1 are
    # 1/24 + 1/6 each, the rest 1/24 each.
    p = torch.tensor([5 / 24, 5 / 24, 1 / 24, 1 / 24, 1 / 24, 9 / 24, 1 / 24, 1 / 24])
    expected = torch.exp(-(p * p.log()).sum()).double()
    torch.testing.assert_close(report.overall.perplexity, expected)


def test_usage_with_one_codebook_per_position():
    report = code_usage(planted_ids(), num_codes=8, per_position_codebook=True)
    assert int(report.overall.used) == 1 + 8 + 2 and int(report.overall.dead) == 24 - 11
    assert report.shared_codes == 0


def test_usage_rejects_bad_ids():
    with pytest.raises(ValueError, match=r"in \[0, 8\)"):
        code_usage(planted_ids() + 3, num_codes=8)
    with pytest.raises(ValueError, match="integer ids"):
        code_usage(planted_ids().float(), num_codes=8)


class PixelTokenizer:
    """ids (B, N) -> images (B, 3, 1, N) with pixel = id / 4; tokenize reads them back by
    rounding, except position 2 where odd ids come back as id - 1 (an unstable position)."""

    def detokenize(self, ids: torch.Tensor) -> torch.Tensor:
        return (ids.float() / 4).view(len(ids), 1, 1, -1).expand(-1, 3, 1, -1)

    def tokenize(self, images: torch.Tensor) -> torch.Tensor:
        ids = (images[:, 0, 0] * 4).round().long()  # (B, N)
        ids[:, 2] -= ids[:, 2] % 2
        return ids


def test_reencode_stability_finds_the_unstable_position():
    ids = planted_ids() % 4  # all pixels within [-1, 1]
    report = reencode_stability(PixelTokenizer(), ids, batch_size=10)
    torch.testing.assert_close(report.per_position, torch.tensor([1.0, 1.0, 0.5]))
    assert report.tokens == pytest.approx(2.5 / 3)
    assert report.sequences == 0.5
    # Ids 5..7 paint pixels above 1: clamped, as a saved picture would be, they read back as 4.
    clamped = reencode_stability(PixelTokenizer(), planted_ids())
    assert clamped.per_position[0] == 0.0  # id 5 everywhere
    assert clamped.per_position[1] == pytest.approx(5 / 8)
    raw = reencode_stability(PixelTokenizer(), planted_ids(), clamp=False)
    assert raw.per_position[0] == 1.0 and raw.per_position[1] == 1.0


def test_quantization_error_is_a_fraction_of_the_variance():
    x = torch.randn(50, 4, 3)
    assert quantization_error(x, x) == 0.0
    assert quantization_error(x, x.mean(0).expand_as(x)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="shapes differ"):
        quantization_error(x, x[:, :2])


def test_report_on_a_tiny_tokenizer_with_its_own_features_as_codes():
    torch.manual_seed(0)
    model = StyledVAEVQ(SVQConfig.from_preset("tiny")).eval()
    images = torch.rand(3, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        features = model.encode(images)  # (3, 36, 16)
    # Every feature vector is a code: quantisation is exact and each code is used once.
    model.codebook = Codebook.from_codes(features.reshape(-1, 16).clone())
    report = codebook_report(model, images, batch_size=2)
    assert report.quantization_error == pytest.approx(0.0, abs=1e-10)
    assert int(report.usage.overall.used) == 3 * 36 and int(report.usage.overall.dead) == 0
    assert report.usage.per_position.used.tolist() == [3] * 36
    assert report.stability.per_position.shape == (36,)
    assert 0.0 <= report.stability.tokens <= 1.0
    assert len(report.table().splitlines()) == 2 + 36 + 1 + 2
    model.codebook = None
    with pytest.raises(RuntimeError, match="attached codebook"):
        codebook_report(model, images)
