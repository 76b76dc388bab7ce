"""LPIPS-VGG16 without torchvision: layout, metric properties, gradients, loading, errors.

Real VGG16 weights are not available offline, so the trunk is random; files in the real
formats (torchvision's checkpoint keys, lpips' vgg.pth keys) are made here with random values.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

import svq.lpips as lpips_mod
from svq.lpips import LPIPS, SCALE, SHIFT, TAP_CHANNELS, VGG16_URL

# torchvision vgg16().features: conv layers sit at these indices.
CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)


@pytest.fixture(scope="module")
def model() -> LPIPS:
    torch.manual_seed(0)
    return LPIPS()


@pytest.fixture(scope="module")
def images() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(2, 3, 32, 32, generator=g) * 2 - 1, torch.rand(
        2, 3, 32, 32, generator=g
    ) * 2 - 1


def torchvision_checkpoint(model: LPIPS) -> dict[str, torch.Tensor]:
    """A state dict shaped like torchvision's vgg16-397923af.pth (classifier included)."""
    state = {f"features.{k}": torch.randn_like(v) for k, v in model.features.state_dict().items()}
    state["classifier.0.weight"] = torch.randn(8, 4)  # the real one is (4096, 25088); ignored
    return state


def lpips_linear_file() -> dict[str, torch.Tensor]:
    """A state dict shaped like the lpips package's weights/v0.1/vgg.pth."""
    return {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate(TAP_CHANNELS)}


def test_state_dict_names_are_torchvision_and_lpips(model):
    state = model.state_dict()
    expected = {f"features.{i}.{p}" for i in CONV_INDICES for p in ("weight", "bias")}
    expected |= {f"lin{i}.model.1.weight" for i in range(5)}
    assert set(state) == expected
    assert state["features.0.weight"].shape == (64, 3, 3, 3)
    assert state["features.28.weight"].shape == (512, 512, 3, 3)
    assert state["lin2.model.1.weight"].shape == (1, 256, 1, 1)
    assert sum(v.numel() for k, v in state.items() if k.startswith("features")) == 14_714_688
    assert torch.allclose(model.shift.flatten(), torch.tensor(SHIFT))
    assert torch.allclose(model.scale.flatten(), torch.tensor(SCALE))


def test_taps_shapes_and_unit_norm(model, images):
    taps = model.taps(images[0])
    assert [tuple(t.shape) for t in taps] == [
        (2, 64, 32, 32),
        (2, 128, 16, 16),
        (2, 256, 8, 8),
        (2, 512, 4, 4),
        (2, 512, 2, 2),
    ]
    norms = taps[0].pow(2).sum(1).sqrt()
    assert torch.allclose(norms[norms > 0], torch.ones(()), atol=1e-5)


def test_distance_properties(model, images):
    x, y = images
    with torch.no_grad():
        d_xy, d_yx, d_xx = model(x, y), model(y, x), model(x, x)
    assert d_xy.shape == (2,) and d_xy.dtype == torch.float32
    assert torch.equal(d_xx, torch.zeros(2))
    assert (d_xy > 0).all()
    assert torch.allclose(d_xy, d_yx, rtol=1e-5)
    # Matches the lpips formula written out: sum_l mean_hw sum_c w_c (n(a) - n(b))^2.
    manual = sum(
        (getattr(model, f"lin{i}").model[1].weight.view(1, -1, 1, 1) * (a - b) ** 2)
        .sum(1)
        .mean((1, 2))
        for i, (a, b) in enumerate(zip(model.taps(x), model.taps(y), strict=True))
    )
    assert torch.allclose(d_xy, manual, rtol=1e-5)


def test_gradients_reach_input_only(model, images):
    x = images[0].clone().requires_grad_(True)
    target = images[1].clone().requires_grad_(True)
    model(x, target).mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0 and torch.isfinite(x.grad).all()
    assert target.grad is None  # target features are computed under no_grad
    assert all(not p.requires_grad and p.grad is None for p in model.parameters())


def test_bf16_autocast_stays_finite(model, images):
    x, y = images
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        d_xy, d_xx = model(x, y), model(x, x)
    assert d_xy.dtype == torch.float32 and torch.isfinite(d_xy).all() and (d_xy > 0).all()
    assert torch.equal(d_xx, torch.zeros(2))


def test_bad_shapes_raise(model, images):
    x, y = images
    with pytest.raises(ValueError, match="one shape"):
        model(x, y[:, :, :16])
    with pytest.raises(ValueError, match=">= 16"):
        model(x[:, :, :8, :8], y[:, :, :8, :8])


def test_real_format_files_load_by_name(model, tmp_path, monkeypatch):
    trunk, linear = torchvision_checkpoint(model), lpips_linear_file()
    torch.save(trunk, tmp_path / "vgg16-397923af.pth")
    torch.save(linear, tmp_path / "vgg.pth")
    loaded = LPIPS.from_pretrained(tmp_path / "vgg16-397923af.pth", tmp_path / "vgg.pth")
    assert torch.equal(loaded.features[28].bias, trunk["features.28.bias"])
    assert torch.equal(loaded.lin3.model[1].weight, linear["lin3.model.1.weight"])
    assert all(not p.requires_grad for p in loaded.parameters())

    # Defaults: a safetensors trunk (bare `features` keys) and vgg.pth in $SVQ_LPIPS_DIR.
    folder = tmp_path / "lpips_dir"
    folder.mkdir()
    bare = {k.removeprefix("features."): v for k, v in trunk.items() if k.startswith("features")}
    save_file(bare, folder / "vgg16.safetensors")
    torch.save(linear, folder / "vgg.pth")
    monkeypatch.setenv("SVQ_LPIPS_DIR", str(folder))
    found = LPIPS.from_pretrained()
    assert torch.equal(found.features[0].weight, trunk["features.0.weight"])
    assert torch.equal(found.lin0.model[1].weight, linear["lin0.model.1.weight"])

    # The torch hub cache, where torchvision itself would have put the checkpoint.
    monkeypatch.setenv("SVQ_LPIPS_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    (tmp_path / "torch" / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(trunk, tmp_path / "torch" / "hub" / "checkpoints" / "vgg16-397923af.pth")
    assert torch.equal(
        LPIPS.from_pretrained(linear_path=folder / "vgg.pth").features[2].weight,
        trunk["features.2.weight"],
    )


def test_wrong_files_are_rejected(model):
    fresh = LPIPS()
    trunk = torchvision_checkpoint(model)
    del trunk["features.5.weight"]
    with pytest.raises(ValueError, match=r"missing from the file \(1\): 5.weight"):
        fresh.load_trunk(trunk)
    linear = lpips_linear_file()
    linear["lin1.model.1.weight"][0, 3] = -0.5
    with pytest.raises(ValueError, match=r"must be >= 0.*lin1"):
        fresh.load_linear(linear)
    linear = lpips_linear_file()
    linear["lin4.model.1.weight"] = torch.rand(1, 256, 1, 1)
    with pytest.raises(ValueError, match="shape mismatch"):
        fresh.load_linear(linear)


def test_missing_weights_say_how_to_get_them(model, tmp_path, monkeypatch):
    monkeypatch.setenv("SVQ_LPIPS_DIR", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(FileNotFoundError) as info:
        LPIPS.from_pretrained()
    message = str(info.value)
    assert VGG16_URL in message and "vgg16-397923af.pth" in message
    assert "LPIPS loss weight to 0" in message

    with pytest.raises(FileNotFoundError, match="does not exist"):
        LPIPS.from_pretrained(trunk_path=tmp_path / "nope.pth")

    # Trunk present, lpips package absent: the error names the pip command.
    save_file(
        {k: v.contiguous() for k, v in model.features.state_dict().items()},
        tmp_path / "vgg16.safetensors",
    )
    monkeypatch.setattr(lpips_mod.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps lpips"):
        LPIPS.from_pretrained()
