"""svq.eval.reconstruction on known cases: a perfect reconstruction (PSNR capped at 100 dB, SSIM 1,
LPIPS 0, rFID 0, valid JSON), FID's closed form, skipped metrics with their reasons, the
spatial VQ, and the codebook read from a model folder."""

import json
import math

import pytest
import torch
from torch import nn

from svq import StyledVAEVQ, SVQConfig
from svq.codebook import Codebook
from svq.eval.judge import AttributeJudge, JudgeConfig
from svq.eval.reconstruction import (
    evaluate_reconstruction,
    evaluate_spatial_vq,
    frechet_distance,
    jsonable,
    load_inception,
    load_lpips,
    world_images,
)
from svq.lpips import LPIPS
from svq.spatial_vq import SpatialVQ, SpatialVQConfig


class Identity(nn.Module):
    """A 'tokenizer' that reconstructs exactly: features are the pixels, (B, 3*H*W / 16, 16)."""

    codebook = None

    def __init__(self, size: int = 32):
        super().__init__()
        self.size = size

    def encode(self, images):
        return images.reshape(len(images), -1, 16)

    def decode(self, features):
        return features.reshape(len(features), 3, self.size, self.size)


class Features(nn.Module):
    """A stand-in Inception in TorchScript: uint8 images -> channel means and stds, (B, 6)."""

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        x = x.float() / 255
        return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_identical_images_give_capped_psnr_ssim_1_lpips_0_rfid_0_and_valid_json(tmp_path):
    images, labels = world_images(6, 32)
    net = torch.jit.script(Features())
    net.save(str(tmp_path / "inception.pt"))
    judge = AttributeJudge(JudgeConfig.from_preset("tiny")).eval()
    result = evaluate_reconstruction(
        Identity(),
        images,
        labels,
        judge,
        lpips=LPIPS(),  # random trunk: still a distance, 0 for identical pictures
        inception=tmp_path / "inception.pt",
        out_dir=tmp_path,
    )
    row = result["continuous"]
    assert row["psnr"] == 100.0  # svq.eval.metrics.psnr's cap: JSON has no infinity
    assert row["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert row["lpips"] == pytest.approx(0.0, abs=1e-6)
    assert row["rfid"] == pytest.approx(0.0, abs=1e-6)
    assert "skipped" in result["quantised"] and "no codebook" in result["quantised"]["skipped"]
    assert result["judge"]["originals"] == result["judge"]["continuous"]
    assert result["notes"] == {}
    json.dumps(result, allow_nan=False)
    assert (tmp_path / result["grid"]).is_file() and result["grid_rows"] == [
        "originals",
        "continuous",
    ]


def test_jsonable_turns_non_finite_numbers_into_null():
    value = {1: torch.tensor([1.0, math.inf]), "x": (math.nan, 2), "y": -math.inf}
    assert jsonable(value) == {"1": [1.0, None], "x": [None, 2], "y": None}


def test_frechet_distance_closed_form():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(500, 4, generator=g, dtype=torch.float64) @ torch.randn(
        4, 4, generator=g, dtype=torch.float64
    )
    shift = torch.tensor([1.0, -2.0, 0.5, 0.0], dtype=torch.float64)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    # b = 2a + shift: mu_b - mu_a = mu_a + shift, S_b = 4 S_a, (S_a S_b)^(1/2) = 2 S_a,
    # so FID = |mu_a + shift|^2 + tr(S_a)
    expected = (a.mean(0) + shift).square().sum() + torch.cov(a.T).trace()
    assert frechet_distance(a, 2 * a + shift) == pytest.approx(expected.item(), rel=1e-6)


def test_missing_weights_are_skipped_with_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("SVQ_LPIPS_DIR", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("SVQ_INCEPTION", raising=False)
    lpips, reason = load_lpips()
    if lpips is None:  # (a machine with the weights installed in site-packages finds them)
        assert reason.startswith("LPIPS skipped")
    net, reason = load_inception()
    assert net is None and "--inception" in reason and "inception-2015-12-05.pt" in reason
    (tmp_path / "bad.pt").write_text("not a model")
    net, reason = load_inception(tmp_path / "bad.pt")
    assert net is None and "not a TorchScript module" in reason
    images, _ = world_images(2, 32)
    result = evaluate_reconstruction(Identity(), images, lpips=None, inception="auto")
    assert result["continuous"]["lpips"] is None and result["continuous"]["rfid"] is None
    assert "--inception" in result["notes"]["rfid"]
    assert result["judge"] == {"skipped": "no judge"}


def test_quantised_reconstruction_through_a_codebook_read_from_the_model_folder(tmp_path):
    torch.manual_seed(0)
    model = StyledVAEVQ(SVQConfig.from_preset("tiny"))
    model.save_pretrained(tmp_path)
    assert StyledVAEVQ.load(tmp_path).codebook is None
    images, labels = world_images(4, 32)
    with torch.no_grad():
        features = model.eval().encode(images)
    Codebook.fit(features, num_codes=8, seed=0).save(tmp_path / "codebook.safetensors")
    loaded = StyledVAEVQ.load(tmp_path)
    assert loaded.codebook is not None and not loaded.training
    result = evaluate_reconstruction(loaded, images, labels, lpips=None, inception=None)
    gap = result["continuous"]["psnr"] - result["quantised"]["psnr"]
    assert result["gap_db"] == pytest.approx(gap)
    assert "grid" not in result  # no out_dir


def test_spatial_vq_reconstruction(tmp_path):
    torch.manual_seed(0)
    model = SpatialVQ(SpatialVQConfig.from_preset("tiny"))
    images, _ = world_images(3, 32)  # resized to the model's 16 px
    result = evaluate_spatial_vq(model, images, out_dir=tmp_path)
    assert result["image_size"] == 16 and result["grid_size"] == [4, 4]
    assert 1 <= result["codes_used"] <= 48 and 0 < result["usage"] <= 1
    assert result["perplexity"] <= result["codes_used"] + 1e-6
    assert (tmp_path / "spatial_vq.png").is_file()


def test_a_tokenizer_painting_through_a_spatial_vq_loads_with_it(tmp_path):
    spatial = {"target": "spatial_vq", "spatial_grid_size": 8, "spatial_codebook_size": 64}
    torch.manual_seed(0)
    StyledVAEVQ(SVQConfig.from_preset("tiny", **spatial)).save_pretrained(tmp_path / "svq")
    with pytest.raises(FileNotFoundError, match="spatial VQ"):
        StyledVAEVQ.load(tmp_path / "svq")
    vq = SpatialVQ(SpatialVQConfig.from_preset("tiny", image_size=32))
    vq.save_pretrained(tmp_path / "vq")
    model = StyledVAEVQ.load(tmp_path / "svq", spatial_vq=tmp_path / "vq")
    images, _ = world_images(2, 32)
    result = evaluate_reconstruction(model, images, lpips=None, inception=None)
    assert result["continuous"]["psnr"] > 0
