"""Decoder target "spatial_vq": config validation, the code head's shapes and grid order, the
attached spatial tokenizer, save / load, and the path end to end (svq/train/vq.py, then stage 1
with --spatial_vq_path, then decoding to pixels)."""

import json
from pathlib import Path

import pytest
import torch
from conftest import reset_accelerate

from svq import StyledVAEVQ, SVQConfig
from svq.configs import CONFIGS
from svq.decoder import CodeHead
from svq.spatial_vq import SpatialVQ, SpatialVQConfig
from svq.train import common, stage1, vq

ROOT = Path(__file__).resolve().parent.parent
SPATIAL = {"target": "spatial_vq", "spatial_grid_size": 8, "spatial_codebook_size": 64}


def spatial_tiny(image_size: int = 32) -> SpatialVQ:
    torch.manual_seed(0)  # 32px through 2 downsamplings: an 8x8 grid, 64 codes
    return SpatialVQ(SpatialVQConfig.from_preset("tiny", image_size=image_size)).eval()


def svq_tiny(**overrides) -> StyledVAEVQ:
    torch.manual_seed(0)  # 32px, patch 8: a 4x4 decoder grid, each position 2x2 spatial cells
    return StyledVAEVQ(SVQConfig.from_preset("tiny", **{**SPATIAL, **overrides})).eval()


def images(batch: int = 2) -> torch.Tensor:
    return torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"target": "code"}, "target 'code' is not one of"),
        ({"spatial_grid_size": 8}, "are for target 'spatial_vq'"),
        ({"target": "spatial_vq", "spatial_codebook_size": 64}, "needs spatial_grid_size"),
        ({**SPATIAL, "spatial_codebook_size": 0}, "needs spatial_codebook_size"),
        ({**SPATIAL, "spatial_grid_size": 6}, "not a multiple of the decoder's grid 4"),
    ],
)
def test_config_validation(overrides, match):
    with pytest.raises(ValueError, match=match):
        SVQConfig.from_preset("tiny", **overrides)


def test_pixel_target_is_unchanged():
    config = SVQConfig.from_preset("tiny")
    assert config.target == "pixels" and config.spatial_grid_size is None
    model = StyledVAEVQ(config).eval()
    keys = model.state_dict().keys()
    assert any(k.startswith("decoder.pixel_head.") for k in keys)
    assert not any("code_head" in k for k in keys)
    out = model(images())
    assert out.recon.shape == (2, 3, 32, 32) and out.logits is None
    with pytest.raises(ValueError, match="decode_logits needs target 'spatial_vq'"):
        model.decode_logits(out.features)
    with pytest.raises(ValueError, match="no spatial VQ to attach"):
        model.attach_spatial_vq(spatial_tiny())


def test_code_head_shapes_and_one_pass_logits():
    model = svq_tiny()
    assert not any(k.startswith("decoder.pixel_head.") for k in model.state_dict())
    out = model(images())
    assert out.recon is None and out.logits.shape == (2, 64, 64)  # (B, 8*8, K)
    with torch.no_grad():
        assert torch.allclose(model.decode_logits(out.features), out.logits, atol=1e-5)
    with pytest.raises(RuntimeError, match="attach_spatial_vq"):
        model.decode(out.features)  # no spatial tokenizer to paint the grid


def test_code_head_orders_cells_row_major_over_the_spatial_grid():
    head = CodeHead(SVQConfig.from_preset("tiny", **SPATIAL))
    torch.nn.init.zeros_(head.to_logits.bias)
    x = torch.zeros(1, 16, 32)  # (B, 4*4 positions, D): LN(0) = 0 everywhere ...
    x[0, 1 * 4 + 2] = torch.randn(32)  # ... but at decoder position (row 1, column 2)
    hot = head(x).abs().sum(-1).view(8, 8) > 0  # (8, 8) spatial cells with nonzero logits
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[2:4, 4:6] = True  # the 2x2 cells that position covers
    assert torch.equal(hot, expected)


def test_attach_decode_and_save_load(tmp_path):
    model, spatial = svq_tiny(), spatial_tiny()
    with pytest.raises(ValueError, match="does not match"):
        model.attach_spatial_vq(spatial_tiny(image_size=16))  # 4x4 grid, 16px
    assert model.attach_spatial_vq(spatial) is model and model.spatial_vq is spatial
    x = images()
    with torch.no_grad():
        features = model.encode(x)
        pixels = model.decode(features)
        expected = spatial.decode(model.decode_logits(features).argmax(-1))
    assert pixels.shape == (2, 3, 32, 32) and torch.equal(pixels, expected)
    assert not any(k.startswith("_spatial_vq") for k in model.state_dict())  # not owned
    assert len(list(model.parameters())) == len(list(svq_tiny().parameters()))
    model.save_pretrained(tmp_path / "m")
    loaded = StyledVAEVQ.from_pretrained(tmp_path / "m").eval()
    assert loaded.config.target == "spatial_vq" and loaded.spatial_vq is None
    with torch.no_grad():
        assert torch.equal(loaded.decode_logits(features), model.decode_logits(features))
        assert torch.equal(loaded.attach_spatial_vq(spatial).decode(features), pixels)


def test_end_to_end_spatial_vq_then_stage1_then_pixels(tmp_path):
    # 1. a tiny spatial VQ at 32px (8x8 grid, 64 codes), 2 steps of svq/train/vq.py
    vq.main(common.parse_options(vq.VQOptions, [
        str(CONFIGS / "vq_tiny.yaml"), "--output_dir", str(tmp_path / "vq"),
        "--model_overrides", '{"image_size": 32}', "--validation_data", "none",
    ]))  # fmt: skip
    reset_accelerate()
    # 2. stage 1 of the tiny svq predicting its grid: the target comes from the path
    tiny = str(CONFIGS / "stage1_tiny.yaml")
    out = tmp_path / "s1"
    flags = [
        tiny,
        "--output_dir",
        str(out),
        "--spatial_vq_path",
        str(tmp_path / "vq" / "model"),
        "--token_eval_images",
        "2",
        "--num_val_images",
        "4",
        "--prefix_ks",
        "0",
        "36",
    ]
    summary = stage1.main(common.parse_options(stage1.Stage1Options, flags))
    assert summary["steps"] == 2
    train = summary["train"]
    assert train["train/loss"] == train["train/ce"] > 0 and "train/mse" not in train
    record = json.loads((out / "validation.jsonl").read_text().splitlines()[-1])
    assert 0 <= record["code_accuracy"] <= 1 and 0 < record["psnr"] < 100
    assert 0 < record["spatial_vq_psnr"] < 100  # the ceiling: the spatial VQ's own recon
    # 3. the release predicts logits; with its spatial tokenizer attached it paints pixels
    model = StyledVAEVQ.from_pretrained(out / "model").eval()
    assert model.config.spatial_grid_size == 8 and model.config.spatial_codebook_size == 64
    model.attach_spatial_vq(SpatialVQ.from_pretrained(tmp_path / "vq" / "model").eval())
    with torch.no_grad():
        assert model.decode(model.encode(images(3))).shape == (3, 3, 32, 32)
    # a spatial_vq target without the tokenizer to train against is an error
    reset_accelerate()
    bad = common.parse_options(stage1.Stage1Options, [tiny, "--output_dir", str(tmp_path / "b"),
                               "--model_overrides", json.dumps(SPATIAL)])  # fmt: skip
    with pytest.raises(ValueError, match="needs --spatial_vq_path"):
        stage1.main(bad)
