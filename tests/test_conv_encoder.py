"""The conv encoder (`encoder` "conv"), the LayerNorm head (`head` "ln"), the head's noise gain
and stage 1's noise schedule: shapes, save -> reload, validation, what the noise does, and a
2-step stage-1 run of `conv32`."""

import pytest
import torch
from test_conv_options import assert_round_trip, build, images
from test_stage1 import options, run

from svq import StyledVAEVQ, SVQConfig
from svq.train import stage1

CONV_ENCODER = {"encoder": "conv", "stem_channels": [16, 32, 64, 64], "stem_blocks": 0}


@pytest.mark.parametrize(
    ("size", "overrides"),
    [
        (32, {}),
        (32, {"stem_blocks": 1, "decoder": "v1"}),
        (32, {"stem_channels": [16, 32], "head": "v2"}),  # a 16x16 map, flattened
        (64, {"stem_channels": [16, 32, 32, 64, 64]}),
    ],
    ids=["v2-decoder", "blocks+v1", "16x16-map+v2-head", "64px"],
)
def test_shapes(size, overrides):
    model = build(image_size=size, **{**CONV_ENCODER, "head": "ln", **overrides})
    x = images(3, size)
    out = model(x)
    assert out.features.shape == (3, 36, 16) and out.recon.shape == (3, 3, size, size)
    assert model.decode(model.encode(x)).shape == (3, 3, size, size)
    assert not hasattr(model.encoder, "blocks")  # no transformer is built


def test_preset_parameters_and_round_trip(tmp_path):
    model = build("conv32").eval()
    assert (model.config.encoder, model.config.head, model.config.decoder) == ("conv", "ln", "conv")
    assert sum(p.numel() for p in model.parameters()) == 2_689_859
    assert_round_trip(model, tmp_path / "m", images())


def test_ln_head_normalises_every_token():
    head = build("conv32").eval().encoder.head
    with torch.no_grad():
        features = head(3 * torch.randn(4, 36, 16) + 1)  # any scale and offset
    assert features.mean(-1).abs().max() < 1e-5
    torch.testing.assert_close(features.var(-1, unbiased=False), torch.ones(4, 36), atol=1e-3,
                               rtol=0)  # fmt: skip


def test_rms_head_gives_each_picture_unit_energy_and_keeps_token_scales():
    head = build("conv32", head="rms").eval().encoder.head
    x = 3 * torch.randn(4, 36, 16) + 1
    x[:, :6] *= 10  # some tokens louder than others
    with torch.no_grad():
        features = head(x)
    torch.testing.assert_close(features.pow(2).mean((1, 2)), torch.ones(4), atol=1e-4, rtol=0)
    # one scale per picture: token means and relative energies are what the input had
    torch.testing.assert_close(features / features[:, :1, :1], x / x[:, :1, :1])
    assert features[:, :6].pow(2).mean() > 50 * features[:, 6:].pow(2).mean()


def test_additive_noise_follows_the_gain():
    model = build("conv32", noise_scale=0.5).train()
    head, x = model.encoder.head, images(8)
    with torch.no_grad():
        clean = model.eval().encode(x)
        model.train()
        head.noise_gain = 0.0
        assert torch.equal(model(x).features, clean)
        head.noise_gain = 0.5
        spread = (model(x).features - clean).std().item()
    assert spread == pytest.approx(0.25, rel=0.05)  # additive: c * gain, whatever the features


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"encoder": "mlp"}, "encoder 'mlp' is not one of"),
        ({"encoder": "conv"}, "stem_channels must be a non-empty list"),
        ({**CONV_ENCODER, "encoder_stem": "conv"}, "encoder_stem must be 'none'"),
        ({**CONV_ENCODER, "stem_channels": [8] * 7}, "does not divide image_size 32"),
        ({"head": "bn"}, "head 'bn' is not one of"),
    ],
)
def test_config_validation(overrides, message):
    with pytest.raises(ValueError, match=message):
        SVQConfig.from_preset("tiny", **overrides)


def test_noise_schedule(tmp_path):
    o = options(tmp_path, "--noise_start_ratio", "0.2", "--noise_ramp_ratio", "0.4")
    gains = [stage1.noise_gain(step, 10, o) for step in range(1, 11)]
    assert gains == pytest.approx([0, 0, 0.25, 0.5, 0.75, 1, 1, 1, 1, 1])
    assert stage1.noise_gain(1, 10, options(tmp_path)) == 1.0  # the default: noise throughout
    step = options(tmp_path, "--noise_start_ratio", "0.5")
    assert [stage1.noise_gain(s, 4, step) for s in (2, 3)] == [0.0, 1.0]
    with pytest.raises(ValueError, match="noise_start_ratio and noise_ramp_ratio"):
        options(tmp_path, "--noise_ramp_ratio", "1.5")


def test_stage1_two_steps_with_conv32_and_the_noise_ramp(tmp_path):
    out = tmp_path / "run"
    overrides = '{"noise_scale": 0.3}'
    summary = run(out, "--model_preset", "conv32", "--model_overrides", overrides,
                  "--noise_start_ratio", "0.5")  # fmt: skip
    assert summary["steps"] == 2 and summary["train"]["train/noise_gain"] == 1.0
    model = StyledVAEVQ.from_pretrained(out / "model")
    assert (model.config.encoder, model.config.noise_scale) == ("conv", 0.3)
    assert model.encode(torch.zeros(1, 3, 32, 32)).shape == (1, 36, 16)


def test_conv64_preset_shapes_and_round_trip(tmp_path):
    model = build("conv64").eval()
    assert [len(level) for level in model.decoder.levels] == [2, 2, 2, 2, 1]  # 4x4 .. 64x64
    assert sum(p.numel() for p in model.parameters()) == 4_783_907
    x = images(2, 64)
    with torch.no_grad():
        out = model(x)
    assert out.features.shape == (2, 36, 32) and out.recon.shape == (2, 3, 64, 64)
    assert_round_trip(model, tmp_path / "m", x)


def test_ordered_presets_add_only_the_ordering_levers():
    for size in (32, 64):
        plain, ordered = (
            SVQConfig.from_preset(f"conv{size}"),
            SVQConfig.from_preset(f"conv{size}-ordered"),
        )
        changed = {k for k, v in ordered.to_dict().items() if plain.to_dict().get(k) != v}
        assert changed == {"noise_scale", "token_dropout", "token_dropout_prob", "conv_reads"}
    model = build("conv64-ordered")
    assert sum(p.numel() for p in model.parameters()) == 7_733_059


def test_map_presets_add_the_input_map_and_narrower_tokens(tmp_path):
    """conv32-map / conv64-map are the -ordered presets with the token-made 4x4 input and
    8-dim tokens, and nothing else; conv32-map builds, decodes its own shapes
    and survives save -> reload."""
    for size in (32, 64):
        ordered = SVQConfig.from_preset(f"conv{size}-ordered")
        mapped = SVQConfig.from_preset(f"conv{size}-map")
        changed = {k for k, v in mapped.to_dict().items() if ordered.to_dict().get(k) != v}
        assert changed == {"conv_input", "token_dim"}
        assert (mapped.conv_input, mapped.token_dim) == ("all", 8)
    model = build("conv32-map").eval()
    x = images(2, 32)
    with torch.no_grad():
        out = model(x)
    assert out.features.shape == (2, 36, 8) and out.recon.shape == (2, 3, 32, 32)
    assert model.decoder.to_input.in_features == 36 * 8
    assert_round_trip(model, tmp_path / "m", x)
