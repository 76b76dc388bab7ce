"""svq/train/ids_to_grid.py on tiny saved tokenizers: it trains, reports every route, releases a
model that loads, and refuses a tokenizer without a codebook."""

import json
import math

import pytest
import torch
from test_llm_sft import save_svq

from svq import StyledVAEVQ, SVQConfig
from svq.ids_to_grid import IdsToGrid
from svq.spatial_vq import SpatialVQ, SpatialVQConfig
from svq.train import common
from svq.train import ids_to_grid as script


@pytest.fixture(scope="module", params=[32, 64])
def parts(tmp_path_factory, request):
    """The tiny 32 px tokenizer with a spatial VQ of the same size, or of 64 px (the route
    decodes are then compared at 64 px); both sizes have a shipped judge."""
    root = tmp_path_factory.mktemp("i2g")
    torch.manual_seed(0)
    spatial = SpatialVQConfig.from_preset("tiny", image_size=request.param)
    SpatialVQ(spatial).save_pretrained(root / "spatial")
    return {"svq": save_svq(root / "svq"), "spatial": root / "spatial", "root": root}


def options(parts, out, *flags):
    argv = ["--svq_path", str(parts["svq"]), "--spatial_vq_path", str(parts["spatial"]),
            "--output_dir", str(out), "--num_train_images", "24", "--num_val_images", "8",
            "--max_steps", "3", "--per_device_train_batch_size", "8", "--width", "32",
            "--depth", "1", "--heads", "2", "--logging_steps", "1", "--decode_steps", "1", "2",
            *flags]  # fmt: skip
    return common.parse_options(script.IdsToGridOptions, argv)


def test_trains_reports_every_route_and_releases(parts, tmp_path):
    summary = script.main(options(parts, tmp_path / "run"))
    val = summary["validation"]
    assert set(val["grid_accuracy"]) == {"1", "2"}
    assert 0 <= val["chance_grid_accuracy"] <= 1
    routes = {"spatial VQ, its own ids (ceiling)", "tokenizer decoder, same 36 ids",
              "ids-to-grid, 1 pass(es)", "ids-to-grid, 2 pass(es)"}  # fmt: skip
    assert set(val["psnr"]) == routes
    assert all(math.isfinite(v["mean"]) for v in val["psnr"].values())
    assert val["judge"]["status"] == "passed"  # the shipped 32 px judge, through its gate
    assert set(val["judge"]["per_route"]) == routes
    assert [r["step"] for r in summary["train_log"]] == [1, 2, 3]
    model = IdsToGrid.from_pretrained(tmp_path / "run" / "model")
    spatial = SpatialVQ.from_pretrained(parts["spatial"])
    assert model.config.grid_size == tuple(spatial.grid_size)
    assert (model.config.num_codes, model.config.codebook_size) == (32, spatial.codebook_size)
    written = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert written["validation"]["grid_accuracy"] == val["grid_accuracy"]
    assert {"command", "commit", "machine", "measured_at"} <= set(written)


def test_refuses_a_tokenizer_without_codebook_and_missing_paths(parts, tmp_path):
    torch.manual_seed(0)
    StyledVAEVQ(SVQConfig.from_preset("tiny")).save_pretrained(parts["root"] / "bare")
    o = options({**parts, "svq": parts["root"] / "bare"}, tmp_path / "x")
    with pytest.raises(ValueError, match=r"bare has no codebook"):
        script.main(o)
    with pytest.raises(ValueError, match="--svq_path is required"):
        script.IdsToGridOptions(spatial_vq_path="x")


def test_no_judge_for_a_size_without_one(parts, tmp_path):
    judged = script._judged({}, 16, options(parts, tmp_path))
    assert judged["status"] == "not run" and "no shipped judge for 16 px" in judged["reason"]


def test_majority_baseline_on_a_known_grid():
    grid = torch.tensor([[0, 1], [0, 2], [3, 2], [0, 2]])  # column 0: 3 of 4; column 1: 3 of 4
    assert script._majority(grid) == 6 / 8
