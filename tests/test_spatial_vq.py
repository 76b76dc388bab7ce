"""SpatialVQ: shapes per preset, quantiser properties, gradients, usage and reseeding, hub round
trip, validation, and a short optimisation."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from svq.spatial_vq import PRESETS, SpatialVQ, SpatialVQConfig

# Each preset's geometry (image size, levels, grid) at a width that runs in milliseconds.
NARROW = {
    "channels": 8,
    "z_channels": 8,
    "norm_groups": 4,
    "codebook_size": 32,
    "num_res_blocks": 1,
}


def tiny(**overrides) -> SpatialVQ:
    torch.manual_seed(0)
    return SpatialVQ(SpatialVQConfig.from_preset("tiny", **overrides))


def images(batch: int = 4, size: int = 16, seed: int = 1) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize(("name", "grid"), [("tiny", 4), ("small", 8), ("base", 16)])
def test_shapes_per_preset_geometry(name, grid):
    torch.manual_seed(0)
    model = SpatialVQ(SpatialVQConfig.from_preset(name, **NARROW)).eval()
    size = PRESETS[name].get("image_size", 256)
    x = images(2 if name == "tiny" else 1, size)
    b = x.shape[0]
    assert model.grid_size == (grid, grid) and model.num_tokens == grid * grid
    assert model.codebook_size == 32
    with torch.no_grad():
        out = model(x)
        ids = model.encode(x)
        recon = model.decode(ids)
    assert ids.shape == (b, grid * grid) and ids.dtype == torch.long
    assert ids.min() >= 0 and ids.max() < 32
    assert torch.equal(ids, out.ids)
    assert recon.shape == x.shape == out.recon.shape
    e = model.config.codebook_dim
    assert out.latents.shape == (b, grid * grid, e) and out.latents.dtype == torch.float32
    for loss in (out.codebook_loss, out.commitment_loss, out.entropy_loss, out.vq_loss):
        assert loss.shape == () and torch.isfinite(loss)
    assert 1 <= out.codes_used <= 32 and 1.0 <= out.perplexity <= out.codes_used + 1e-4


def test_base_is_llamagen_vq16_sized():
    with torch.device("meta"):
        model = SpatialVQ(SpatialVQConfig.from_preset("base"))
    params = sum(p.numel() for p in model.parameters())
    assert 70_000_000 < params < 74_000_000  # LlamaGen VQ-16: 72M; this layout: 71,883,403
    assert model.grid_size == (16, 16) and model.codebook_size == 16384
    assert model.quantizer.codebook.shape == (16384, 8)
    assert model.config.channel_mult == (1, 1, 2, 2, 4)


def test_small_preset_is_the_cpu_demo_geometry():
    config = SpatialVQConfig.from_preset("small")
    assert (config.image_size, config.grid_size, config.codebook_size) == (64, (8, 8), 1024)


@pytest.mark.parametrize("l2_norm", [True, False])
def test_quantise_then_lookup_gives_the_nearest_code(l2_norm):
    model = tiny(codebook_l2_norm=l2_norm).eval()
    x = images()
    with torch.no_grad():
        out = model(x)
        codes = model.quantizer.codes()
        z = out.latents.flatten(0, 1)
        if l2_norm:
            assert torch.allclose(z.norm(dim=-1), torch.ones(()), atol=1e-5)
            assert torch.allclose(codes.norm(dim=-1), torch.ones(()), atol=1e-5)
        nearest = torch.cdist(z, codes).argmin(-1)
        assert torch.equal(out.ids.flatten(), nearest)
        assert torch.equal(model.quantizer.lookup(out.ids).flatten(0, 1), codes[nearest])
        # decode(encode(x)) is forward's reconstruction (the straight-through sum z + (q - z)
        # equals q up to rounding).
        assert torch.allclose(model.decode(model.encode(x)), out.recon, atol=1e-5)
        logits = F.one_hot(out.ids, 64).float() * 3.0
        assert torch.allclose(model.decode_logits(logits), out.recon, atol=1e-5)


def test_straight_through_gradient_reaches_the_encoder():
    model = tiny()
    x = images()
    out = model(x)
    F.mse_loss(out.recon, x).backward()
    assert model.encoder.conv_in.weight.grad.abs().sum() > 0
    assert model.quant_conv.weight.grad.abs().sum() > 0
    assert model.quantizer.codebook.grad is None  # the reconstruction does not move the codes

    model.zero_grad()
    out = model(x)
    out.codebook_loss.backward()
    grad_rows = model.quantizer.codebook.grad.abs().sum(-1) > 0
    assert torch.equal(grad_rows, torch.bincount(out.ids.flatten(), minlength=64) > 0)
    assert model.encoder.conv_in.weight.grad is None  # codebook loss: stop-gradient on z


def test_entropy_loss_option_is_active_and_differentiable():
    model = tiny(entropy_loss_weight=0.1)
    out = model(images())
    assert out.entropy_loss != 0 and torch.isfinite(out.entropy_loss)
    out.entropy_loss.backward()
    assert model.encoder.conv_in.weight.grad.abs().sum() > 0
    assert tiny()(images()).entropy_loss == 0


def test_usage_tracking_counts_training_forwards_only():
    model = tiny()
    x = images()
    out = model(x)  # training mode
    used = torch.bincount(out.ids.flatten(), minlength=64) > 0
    assert out.codes_used == used.sum() > 1
    steps = model.quantizer.unused_steps
    assert torch.equal(steps, (~used).long())
    model.eval()
    with torch.no_grad():
        model(x)
    assert torch.equal(model.quantizer.unused_steps, (~used).long())


def test_reseeding_replaces_dead_codes_from_encoder_outputs():
    model = tiny()  # dead_code_steps = 2
    x = images(8)
    assert model.reseed_dead_codes(torch.randn(3, 4)) == 0  # nothing is dead yet
    for _ in range(2):
        out = model(x)
    dead = model.dead_codes()
    assert 0 < dead.sum() < 64
    before = model.quantizer.codebook.detach().clone()
    n = model.reseed_dead_codes(out.latents, generator=torch.Generator().manual_seed(0))
    after = model.quantizer.codebook.detach()
    assert n == dead.sum()
    assert torch.equal(after[~dead], before[~dead])
    assert not torch.isclose(after[dead], before[dead]).all(-1).any()
    # Every reseeded code is one of the latents, each a different one.
    latents = out.latents.flatten(0, 1)
    match = (after[dead][:, None] - latents[None]).norm(dim=-1).min(-1)  # exact, unlike cdist
    assert (match.values < 1e-5).all() and match.indices.unique().numel() == n
    assert not model.dead_codes().any() and (model.quantizer.unused_steps[dead] == 0).all()
    # The reseeded codes are chosen again at once: each is the exact match of its latent.
    model.eval()
    with torch.no_grad():
        ids = model.encode(x)
    assert set(dead.nonzero().flatten().tolist()) <= set(ids.flatten().tolist())
    with pytest.raises(ValueError, match=r"\(\.\.\., 4\)"):
        model.reseed_dead_codes(torch.randn(5, 3))


def test_save_and_load_give_identical_outputs(tmp_path):
    model = tiny()
    x = images()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    out = model(x)
    (F.mse_loss(out.recon, x) + out.vq_loss).backward()
    opt.step()
    model.save_pretrained(tmp_path / "vq")
    config = json.loads((tmp_path / "vq" / "config.json").read_text())
    assert config["model_type"] == "spatial_vq" and config["channel_mult"] == [1, 2, 2]
    loaded = SpatialVQ.from_pretrained(tmp_path / "vq")
    assert loaded.config == model.config
    assert torch.equal(loaded.quantizer.unused_steps, model.quantizer.unused_steps)
    model.eval()
    loaded.eval()
    with torch.no_grad():
        a, b = model(x), loaded(x)
    assert torch.equal(a.ids, b.ids) and torch.equal(a.recon, b.recon)

    config["model_type"] = "svq"
    (tmp_path / "vq" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="model_type"):
        SpatialVQ.from_pretrained(tmp_path / "vq")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"model_type": "svq"}, "model_type is 'svq'"),
        ({"image_size": 18}, "image_size 18 is not a multiple"),
        ({"norm_groups": 7}, "norm_groups 7 does not divide"),
        ({"channel_mult": ()}, r"channel_mult must be positive ints, got \(\)"),
        ({"channel_mult": (1, 0)}, r"channel_mult must be positive ints, got \(1, 0\)"),
        ({"codebook_size": 0}, "codebook_size must be a positive int, got 0"),
        ({"codebook_dim": True}, "codebook_dim must be a positive int, got True"),
        ({"dead_code_steps": 0}, "dead_code_steps must be a positive int, got 0"),
        ({"commitment_beta": -1.0}, "commitment_beta must be >= 0, got -1.0"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\), got 1.0"),
        ({"entropy_temperature": 0.0}, "entropy_temperature must be > 0, got 0.0"),
        ({"codebook_entries": 3}, r"unknown fields \['codebook_entries'\]"),
    ],
)
def test_config_validation(overrides, message):
    with pytest.raises(ValueError, match=message):
        SpatialVQConfig.from_preset("tiny", **overrides)


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        SpatialVQConfig.from_preset("huge")


def test_bad_inputs_raise_clear_errors():
    model = tiny().eval()
    with pytest.raises(ValueError, match=r"\(B, 3, 16, 16\)"):
        model.encode(images(size=32))
    with pytest.raises(ValueError, match="floating-point"):
        model(torch.zeros(1, 3, 16, 16, dtype=torch.uint8))
    ids = torch.zeros(2, 16, dtype=torch.long)
    with pytest.raises(ValueError, match=r"expected ids of shape \(B, 16\)"):
        model.decode(ids[:, :15])
    with pytest.raises(ValueError, match="integer ids"):
        model.decode(ids.float())
    for bad in (-1, 64):
        wrong = ids.clone()
        wrong[1, 3] = bad
        with pytest.raises(ValueError, match=r"ids must be in \[0, 64\)"):
            model.decode(wrong)
    with pytest.raises(ValueError, match=r"logits of shape \(B, 16, 64\)"):
        model.decode_logits(torch.zeros(2, 16, 63))
    with pytest.raises(ValueError, match=r"codes of shape \(B, 16, 4\)"):
        model.decode_codes(torch.zeros(2, 16, 8))
    assert model.decode(ids.int()).shape == (2, 3, 16, 16)  # int32 ids are fine


def test_quantiser_runs_in_fp32_under_autocast():
    model = tiny()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(images())
    assert out.latents.dtype == torch.float32
    assert out.codebook_loss.dtype == out.commitment_loss.dtype == torch.float32
    assert torch.isfinite(out.recon).all()


def test_two_optimisation_steps_reduce_the_loss():
    model = tiny()
    x = images(8)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)

    def loss() -> torch.Tensor:
        out = model(x)
        return F.mse_loss(out.recon, x) + out.vq_loss

    first = loss()
    for _ in range(2):
        opt.zero_grad()
        loss().backward()
        opt.step()
    with torch.no_grad():
        last = loss()
    assert last < first.detach() * 0.95
