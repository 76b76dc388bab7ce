"""The conv encoder stem and the conv decoder: shapes over the combinations, save -> reload,
the options off == the model before they existed, validation, gradients, the w+ token order,
and a 2-step stage-1 run of `tiny-conv`."""

import hashlib

import pytest
import torch
from test_stage1 import run

from svq import StyledVAEVQ, SVQConfig

STEM = {"encoder_stem": "conv", "stem_channels": [16, 32, 64, 64]}
CONV_DECODER = {
    "decoder": "conv",
    "decoder_channels": [32, 32, 16, 16],
    "decoder_cond_layers": 12,
    "conds_per_block": 3,
}


def build(preset: str = "tiny", **overrides) -> StyledVAEVQ:
    torch.manual_seed(0)
    return StyledVAEVQ(SVQConfig.from_preset(preset, **overrides))


def images(batch: int = 2, size: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def randomise_films(model: StyledVAEVQ) -> None:
    """The FiLM layers start at zero (the decoder then ignores its tokens): give them weights."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".modulation." in name:
                param.normal_(0, 0.1)


@pytest.mark.parametrize(
    "overrides",
    [STEM, CONV_DECODER, {**STEM, **CONV_DECODER}, {**STEM, "decoder": "v1"}],
    ids=["stem", "conv-decoder", "both", "stem+v1"],
)
def test_shapes_of_every_combination(overrides):
    model = build(**overrides)
    x = images(3)
    out = model(x)
    assert out.recon.shape == (3, 3, 32, 32) and out.features.shape == (3, 36, 16)
    assert model.encode(x).shape == (3, 36, 16)
    assert model.decode(out.features).shape == (3, 3, 32, 32)


def test_preset_and_64px_shapes():
    model = build("tiny-conv").eval()
    assert model(images()).recon.shape == (2, 3, 32, 32)
    assert sum(p.numel() for p in model.parameters()) == 1_282_131
    wide = build(image_size=64, **STEM, **{**CONV_DECODER, "decoder_channels": [32] * 5})
    assert wide.config.grid_size == 8 and wide.encoder.patch_embed.kernel_size == (1, 1)
    assert wide(images(1, 64)).recon.shape == (1, 3, 64, 64)
    assert [len(level) for level in wide.decoder.levels] == [3, 3, 2, 2, 2]  # 4x4 .. 64x64


def assert_round_trip(model: StyledVAEVQ, folder, x: torch.Tensor) -> None:
    """Saved and loaded back (FiLMs randomised first, so they matter): same config, same
    reconstruction of x."""
    randomise_films(model)
    model.save_pretrained(folder)
    loaded = StyledVAEVQ.from_pretrained(folder).eval()
    assert loaded.config == model.config
    with torch.no_grad():
        assert torch.equal(model(x).recon, loaded(x).recon)


def test_save_load_identical_output(tmp_path):
    model = build("tiny-conv", stem_channels=(16, 32, 64, 64)).eval()
    assert model.config.stem_channels == [16, 32, 64, 64]  # a tuple is kept as config.json keeps it
    assert_round_trip(model, tmp_path / "m", images())


# Measured on the commit before these options existed (c15d17e): `tiny` and `small` built after
# torch.manual_seed(0), their state-dict names, parameter count and output on images(2, size).
BEFORE = {
    "tiny": (510, "86a087478de69674", 666131, 71.20742887211964, 3047.513434269),
    "small": (550, "502420a26e8fa1a3", 12547555, -2491.1991760756355, 13261.686836694833),
}


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_options_off_is_the_model_before_them(preset):
    config = SVQConfig.from_preset(preset)
    assert (config.encoder_stem, config.stem_channels, config.decoder_channels) == (
        "none",
        None,
        None,
    )
    # A config.json written before the fields existed loads as the same config.
    old = {k: v for k, v in config.to_dict().items() if k not in ("encoder_stem", "stem_channels",
           "stem_blocks", "decoder_channels")}  # fmt: skip
    assert SVQConfig.from_dict(old) == config
    model = build(preset).eval()
    n_keys, digest, n_params, total, absolute = BEFORE[preset]
    keys = list(model.state_dict())
    assert len(keys) == n_keys
    assert hashlib.sha256(" ".join(keys).encode()).hexdigest()[:16] == digest
    assert sum(p.numel() for p in model.parameters()) == n_params
    with torch.no_grad():
        recon = model(images(2, config.image_size)).recon.double()
    assert recon.sum().item() == pytest.approx(total, rel=1e-4)
    assert recon.abs().sum().item() == pytest.approx(absolute, rel=1e-5)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"encoder_stem": "deep"}, "encoder_stem 'deep'"),
        ({"encoder_stem": "conv"}, "stem_channels must be a non-empty list"),
        ({**STEM, "stem_channels": [12, 24]}, r"multiples of 8.*\[12, 24\]"),
        ({**STEM, "stem_channels": [8] * 5}, "does not divide patch_size 8"),
        ({**STEM, "stem_blocks": -1}, "stem_blocks must be an int >= 0"),
        ({"stem_channels": [16, 32]}, r"stem_channels \[16, 32\] is set, but its option is off"),
        ({**CONV_DECODER, "decoder_channels": [32, 16]}, "give 2 resolutions, 4x4 to 8px"),
        ({**CONV_DECODER, "decoder_channels": []}, "decoder_channels must be a non-empty list"),
        (
            {**CONV_DECODER, "decoder_cond_layers": 3, "conds_per_block": 12},
            "decoder_cond_layers 3 is fewer than the 4 resolutions",
        ),
        ({"decoder_channels": [32] * 4}, "decoder_channels .* is set, but its option is off"),
    ],
)
def test_config_validation(overrides, message):
    with pytest.raises(ValueError, match=message):
        SVQConfig.from_preset("tiny", **overrides)


def test_conv_decoder_paints_pixels_only():
    with pytest.raises(ValueError, match="decoder 'conv' paints pixels"):
        SVQConfig.from_preset(
            "tiny-conv", target="spatial_vq", spatial_grid_size=8, spatial_codebook_size=16
        )


def test_gradients_reach_every_parameter():
    model = build("tiny-conv").train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x = images(4)
    for _ in range(2):  # at step 0 the zero FiLMs stop the gradient before the encoder
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x).recon, x).backward()
        assert all(p.grad is not None for p in model.parameters())
        optimizer.step()
    dead = [n for n, p in model.named_parameters() if not p.grad.abs().sum() > 0]
    # In every preset the last encoder block's shared MLP acts on CLS and patches only, whose
    # outputs the head never reads; every other parameter must learn.
    last = f"encoder.blocks.{len(model.encoder.blocks) - 1}.mlp."
    assert dead == [n for n, _ in model.named_parameters() if n.startswith(last)]


def test_gradient_checkpointing_gives_the_same_gradients():
    def grads(checkpointing: bool) -> dict[str, torch.Tensor]:
        model = build("tiny-conv", gradient_checkpointing=checkpointing).train()
        randomise_films(model)
        model(images()).recon.square().mean().backward()
        return {n: p.grad for n, p in model.named_parameters()}

    plain, checkpointed = grads(False), grads(True)
    assert plain.keys() == checkpointed.keys()
    for name in plain:
        torch.testing.assert_close(plain[name], checkpointed[name], msg=name)


def test_block_l_reads_its_own_tokens_coarse_to_fine():
    """With 3 blocks of 3 tokens per resolution, the 16x16 map (levels 0-2) depends on tokens
    0-26 only, and every token reaches the image."""
    model = build("tiny-conv").eval()
    randomise_films(model)
    seen = []
    model.decoder.ups[2].register_forward_hook(lambda m, inputs, out: seen.append(inputs[0]))
    features = torch.randn(1, 36, 16, requires_grad=True)
    changed = features.detach().clone()
    changed[:, 27:] += 1.0
    with torch.no_grad():
        a, b = model.decode(features.detach()), model.decode(changed)
    assert torch.equal(seen[0], seen[1]) and not torch.equal(a, b)
    model.decode(features).square().sum().backward()
    assert torch.all(features.grad.abs().sum(-1) > 0)


def test_stage1_two_steps_with_tiny_conv(tmp_path):
    out = tmp_path / "run"
    summary = run(out, "--model_preset", "tiny-conv")
    assert summary["steps"] == 2
    model = StyledVAEVQ.from_pretrained(out / "model")
    assert (model.config.encoder_stem, model.config.decoder) == ("conv", "conv")
    assert model.encode(torch.zeros(1, 3, 32, 32)).shape == (1, 36, 16)


def test_prefix_reads_let_the_first_tokens_reach_the_finest_blocks():
    """conv_reads "prefix": the last block (32x32) reads token 0; block l still never reads a
    token after its own group; "own" (the default) is the model above, unchanged."""
    assert SVQConfig.from_preset("tiny-conv").conv_reads == "own"
    model = build("tiny-conv", conv_reads="prefix").eval()
    randomise_films(model)
    last = model.decoder.levels[-1][-1]
    seen = []
    last.register_forward_hook(lambda m, inputs, out: seen.append(inputs[1]))
    features = torch.randn(2, 36, 16)
    with torch.no_grad():
        model.decode(features)
        first = features.clone()
        first[:, 0] += 1.0
        model.decode(first)
    assert not torch.equal(seen[0], seen[1])  # token 0 reaches the finest block
    assert seen[0].shape == (2, 36 * 16)
    hooks, inputs = [], []
    for level in model.decoder.levels:
        for block in level:
            hooks.append(block.register_forward_hook(lambda m, i, o: inputs.append(i[1])))
    with torch.no_grad():
        model.decode(features)
    for index, cond in enumerate(inputs):  # block l reads tokens 0 .. 3l + 2, zeros after
        tokens = cond.view(2, 36, 16)
        assert torch.equal(tokens[:, : 3 * index + 3], features[:, : 3 * index + 3])
        assert not tokens[:, 3 * index + 3 :].any()
    with pytest.raises(ValueError, match="conv_reads 'prefix' is for decoder 'conv'"):
        SVQConfig.from_preset("tiny", conv_reads="prefix")
    with pytest.raises(ValueError, match="conv_reads 'all' not in"):
        SVQConfig.from_preset("tiny-conv", conv_reads="all")


@pytest.mark.parametrize("conv_input", ["first", "all"])
def test_conv_input_makes_the_start_map_from_the_tokens(tmp_path, conv_input):
    """conv_input "first" / "all": the 4x4 start map is the constant plus a zero-initialised
    Linear of the first group's / every token. At init the model decodes exactly as "const"
    (the default, whose parameters are unchanged); trained weights make the map depend on
    exactly the tokens it reads; save -> reload keeps it."""
    const = build("tiny-conv").eval()
    assert const.config.conv_input == "const" and const.decoder.to_input is None
    randomise_films(const)
    model = build("tiny-conv", conv_input=conv_input).eval()
    missing = model.load_state_dict(const.state_dict(), strict=False).missing_keys
    assert missing == ["decoder.to_input.weight", "decoder.to_input.bias"]
    features = torch.randn(2, 36, 16)
    with torch.no_grad():
        assert torch.equal(model.decode(features), const.decode(features))
        model.decoder.to_input.weight.normal_(0, 0.1)
        reads = 3 if conv_input == "first" else 36  # tiny-conv: 3 tokens per block
        assert model.decoder.to_input.in_features == reads * 16
        maps = []
        model.decoder.levels[0][0].register_forward_hook(lambda m, i, o: maps.append(i[0]))
        model.decode(features)
        changed = features.clone()
        changed[:, reads - 1] += 1.0  # the last token it reads moves the map
        model.decode(changed)
        assert not torch.equal(maps[0], maps[1])
        if conv_input == "first":
            later = features.clone()
            later[:, reads:] += 1.0  # tokens after the first group do not reach the map
            model.decode(later)
            assert torch.equal(maps[0], maps[2])
        model.save_pretrained(tmp_path)
        again = StyledVAEVQ.from_pretrained(tmp_path).eval()
        assert again.config.conv_input == conv_input
        assert torch.equal(again.decode(features), model.decode(features))
    with pytest.raises(ValueError, match="conv_input 'first' is for decoder 'conv'"):
        SVQConfig.from_preset("tiny", conv_input="first")
    with pytest.raises(ValueError, match="conv_input 'grid' not in"):
        SVQConfig.from_preset("tiny-conv", conv_input="grid")


def test_conv_input_levels_add_token_made_maps_at_finer_resolutions(tmp_path):
    """conv_input_levels L: resolutions 8x8 .. (L-1 of them) get a zero-initialised Linear map
    of the same tokens after their upsample. At init the model decodes exactly as with the start
    map alone (whose parameter names are unchanged); trained weights move exactly the level they
    belong to; save -> reload keeps them."""
    single = build("tiny-conv", conv_input="all").eval()
    assert len(single.decoder.finer_inputs) == 0
    single.decoder.to_input.weight.data.normal_(0, 0.1)
    randomise_films(single)
    model = build("tiny-conv", conv_input="all", conv_input_levels=3).eval()
    missing = model.load_state_dict(single.state_dict(), strict=False).missing_keys
    assert missing == [f"decoder.finer_inputs.{i}.{p}" for i in (0, 1) for p in ("weight", "bias")]
    widths = [linear.out_features for linear in model.decoder.finer_inputs]
    assert widths == [64 * 8 * 8, 32 * 16 * 16]  # tiny-conv: widths 64-64-32-16
    features = torch.randn(2, 36, 16)
    with torch.no_grad():
        assert torch.equal(model.decode(features), single.decode(features))
        inputs = {level: [] for level in (1, 2, 3)}
        for level, store in inputs.items():
            model.decoder.levels[level][0].register_forward_hook(
                lambda m, i, o, store=store: store.append(i[0])
            )
        model.decoder.finer_inputs[1].weight.normal_(0, 0.1)  # the 16x16 map only
        model.decode(features)
        assert torch.equal(inputs[1][0], single_level_input(single, features, 1))
        assert not torch.equal(inputs[2][0], single_level_input(single, features, 2))
        model.save_pretrained(tmp_path)
        again = StyledVAEVQ.from_pretrained(tmp_path).eval()
        assert again.config.conv_input_levels == 3
        assert torch.equal(again.decode(features), model.decode(features))
    with pytest.raises(ValueError, match="conv_input_levels 2 needs conv_input"):
        SVQConfig.from_preset("tiny-conv", conv_input_levels=2)
    with pytest.raises(ValueError, match="conv_input_levels 5 exceeds the decoder's 4"):
        SVQConfig.from_preset("tiny-conv", conv_input="all", conv_input_levels=5)


def single_level_input(model: StyledVAEVQ, features: torch.Tensor, level: int) -> torch.Tensor:
    """What the first FiLM block of `level` receives in `model` (a forward hook's record)."""
    seen = []
    handle = model.decoder.levels[level][0].register_forward_hook(lambda m, i, o: seen.append(i[0]))
    model.decode(features)
    handle.remove()
    return seen[0]


def test_conv_skip_paints_at_every_resolution(tmp_path):
    """conv_skip: the output is the finest level's pixels plus the upsampled sum of a 1x1
    conv's pixels at every coarser level; off (the default) the model is unchanged."""
    plain = build("tiny-conv").eval()
    assert not plain.config.conv_skip and plain.decoder.skips is None
    model = build("tiny-conv", conv_skip=True).eval()
    randomise_films(model)
    assert len(model.decoder.skips) == len(model.config.decoder_channels) - 1
    features = torch.randn(2, 36, 16)
    with torch.no_grad():
        out = model.decode(features)
        for skip in model.decoder.skips:
            skip.weight.zero_()
            skip.bias.zero_()
        without = model.decode(features)
        model.decoder.skips[0].bias.fill_(0.5)  # the 4x4 level's paint reaches every pixel
        assert torch.allclose(model.decode(features) - without, torch.full_like(without, 0.5))
        assert not torch.equal(out, without)
        model.save_pretrained(tmp_path)
        again = StyledVAEVQ.from_pretrained(tmp_path).eval()
        assert again.config.conv_skip
        assert torch.equal(again.decode(features), model.decode(features))
    with pytest.raises(ValueError, match="conv_skip is for decoder 'conv'"):
        SVQConfig.from_preset("tiny", conv_skip=True)
