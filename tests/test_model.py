import dataclasses

import pytest
import torch

from svq import StyledVAEVQ, SVQConfig
from svq.layers import ExpertMlp


def tiny(**overrides) -> StyledVAEVQ:
    torch.manual_seed(0)
    return StyledVAEVQ(SVQConfig.from_preset("tiny", **overrides))


def images(batch: int = 2, size: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize("head", ["v1", "v2", "none"])
@pytest.mark.parametrize("decoder", ["v1", "v2"])
def test_shapes_every_head_and_decoder(head, decoder):
    model = tiny(head=head, decoder=decoder)
    x = images(3)
    out = model(x)
    assert out.recon.shape == (3, 3, 32, 32)
    assert out.features.shape == (3, 36, 16)
    assert model.encode(x).shape == (3, 36, 16)
    assert model.decode(out.features).shape == (3, 3, 32, 32)
    if head == "v1":
        torch.testing.assert_close(model.encode(x).norm(dim=-1), torch.ones(3, 36))


@pytest.mark.parametrize("head", ["v1", "v2"])
def test_eval_is_deterministic(head):
    model = tiny(head=head, noise_scale=0.5).eval()
    x = images()
    with torch.no_grad():
        a, b = model(x), model(x)
    assert torch.equal(a.recon, b.recon)
    assert torch.equal(a.features, b.features)


@pytest.mark.parametrize("noise_type", ["multiplicative", "additive"])
def test_noise_only_in_training(noise_type):
    model = tiny(head="v1", noise_scale=0.1, noise_type=noise_type)
    x = images()
    model.eval()
    clean = model.encode(x)
    model.train()
    noisy_a, noisy_b = model.encode(x), model.encode(x)
    assert not torch.allclose(noisy_a, noisy_b)
    assert (noisy_a - clean).abs().max() < 1.0  # noise of scale 0.1 around the clean features
    model.eval()
    assert torch.equal(model.encode(x), clean)


def test_noise_off_when_scale_is_zero():
    model = tiny(head="v1", noise_scale=0.0).train()
    x = images()
    assert torch.equal(model.encode(x), model.encode(x))


def test_save_load_identical_output(tmp_path):
    model = tiny(decoder="v1", head="v2", causal_queries=True).eval()
    model.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "config.json").is_file()
    assert (tmp_path / "m" / "model.safetensors").is_file()
    loaded = StyledVAEVQ.from_pretrained(tmp_path / "m").eval()
    assert loaded.config == model.config
    x = images()
    with torch.no_grad():
        assert torch.equal(model(x).recon, loaded(x).recon)


def test_loading_weights_of_another_config_names_the_tensors(tmp_path):
    tiny().save_pretrained(tmp_path / "a")
    # Same config.json, weights from a wider model: the error lists the mismatched tensors.
    wide = tiny(decoder_width=64)
    wide.save_pretrained(tmp_path / "b")
    (tmp_path / "b" / "config.json").write_text((tmp_path / "a" / "config.json").read_text())
    with pytest.raises(ValueError, match=r"shape mismatch.*decoder\.bridge\.weight"):
        StyledVAEVQ.from_pretrained(tmp_path / "b")
    # A v1 decoder's weights under a v2 config: missing and unexpected tensors named.
    tiny(decoder="v1").save_pretrained(tmp_path / "c")
    (tmp_path / "c" / "config.json").write_text((tmp_path / "a" / "config.json").read_text())
    with pytest.raises(ValueError, match=r"missing from the file.*prefix_norms") as info:
        StyledVAEVQ.from_pretrained(tmp_path / "c")
    assert "slot_proj_attn" in str(info.value)


def test_loading_rejects_nonfinite_weights(tmp_path):
    model = tiny()
    with torch.no_grad():
        model.decoder.bridge.weight[0, 0] = float("nan")
    model.save_pretrained(tmp_path / "nan")
    with pytest.raises(ValueError, match=r"non-finite values.*decoder\.bridge\.weight"):
        StyledVAEVQ.from_pretrained(tmp_path / "nan")


def test_loading_errors_for_missing_or_foreign_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        StyledVAEVQ.from_pretrained(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no config\.json"):
        StyledVAEVQ.from_pretrained(tmp_path / "empty")
    tiny().save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"no model\.safetensors"):
        StyledVAEVQ.from_pretrained(tmp_path / "m")
    tiny().save_pretrained(tmp_path / "f")
    config = (tmp_path / "f" / "config.json").read_text()
    foreign = config.replace('"model_type": "svq"', '"model_type": "spatial_vq"')
    (tmp_path / "f" / "config.json").write_text(foreign)
    with pytest.raises(ValueError, match="model_type"):
        StyledVAEVQ.from_pretrained(tmp_path / "f")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"image_size": 30}, "not a multiple of patch_size"),
        ({"num_tokens": 35}, "every token must condition one block"),
        ({"head": "v3"}, "head 'v3'"),
        ({"decoder": "v0"}, "decoder 'v0'"),
        ({"encoder_heads": 3}, "not divisible by encoder_heads"),
        ({"decoder_heads": 5}, "not divisible by decoder_heads"),
        ({"noise_scale": -1.0}, "noise_scale"),
        ({"noise_type": "gamma"}, "noise_type"),
        ({"token_dim": 0}, "token_dim must be a positive int"),
        ({"token_dropout": "random"}, "token_dropout"),
        ({"token_dropout_prob": 1.5}, "token_dropout_prob"),
        ({"token_dropout_min_keep": 0}, "token_dropout_min_keep"),
        ({"adaln": "film"}, "adaln"),
        ({"atom_norm": "sparsemax"}, "atom_norm"),
        ({"refiner_kernel": 4}, "refiner_kernel must be odd"),
        ({"encoder_dense_layers": 0, "encoder_expert_layers": 0}, "at least one block"),
    ],
)
def test_config_validation(overrides, message):
    with pytest.raises(ValueError, match=message):
        SVQConfig.from_preset("tiny", **overrides)


def test_config_rejects_unknown_preset_and_fields():
    with pytest.raises(ValueError, match="unknown preset"):
        SVQConfig.from_preset("huge")
    with pytest.raises(ValueError, match="unknown fields"):
        SVQConfig.from_preset("tiny", num_tokenz=36)


def test_token_count_is_a_field_not_a_constant():
    model = tiny(num_tokens=12, decoder_cond_layers=6)
    assert model(images()).features.shape == (2, 12, 16)
    model = tiny(num_tokens=36, decoder_cond_layers=6, conds_per_block=6)
    assert model(images()).recon.shape == (2, 3, 32, 32)


def test_batched_experts_equal_a_per_expert_loop():
    torch.manual_seed(0)
    experts = ExpertMlp(5, 16, 32)
    x = torch.randn(3, 5, 16)
    loop = torch.stack(
        [
            torch.nn.functional.linear(
                torch.nn.functional.gelu(
                    torch.nn.functional.linear(
                        x[:, i], experts.fc1.weight[i].T, experts.fc1.bias[i]
                    )
                ),
                experts.fc2.weight[i].T,
                experts.fc2.bias[i],
            )
            for i in range(5)
        ],
        dim=1,
    )
    torch.testing.assert_close(experts(x), loop, rtol=1e-5, atol=1e-6)


def test_expert_block_routes_each_query_to_its_own_mlp():
    model = tiny(encoder_dense_layers=0, encoder_expert_layers=1).eval()
    x = images()
    before = model.encode(x)
    with torch.no_grad():
        # Only query 7's expert changes (a random direction: a constant shift would vanish in LN).
        model.encoder.blocks[0].experts.fc2.bias[7] += torch.randn(32)
    after = model.encode(x)
    changed = (after - before).abs().amax(dim=(0, 2)) > 1e-6
    assert changed.tolist() == [i == 7 for i in range(36)]


@pytest.mark.parametrize("causal", [True, False])
def test_causal_query_mask(causal):
    model = tiny(causal_queries=causal).eval()
    x = images()
    with torch.no_grad():
        before = model.encode(x)
        model.encoder.queries[20] += 1.0  # change query j = 20
        after = model.encode(x)
    diff = (after - before).abs().amax(dim=(0, 2))
    if causal:
        assert torch.all(diff[:20] == 0), diff[:20]  # outputs i < j untouched
        assert torch.all(diff[20:21] > 0)
    else:
        assert torch.all(diff[:20] > 0)  # bidirectional: everything moves


@pytest.mark.parametrize("decoder", ["v1", "v2"])
def test_gradient_checkpointing_gives_the_same_gradients(decoder):
    x = images()

    def grads(checkpointing: bool) -> dict[str, torch.Tensor]:
        model = tiny(decoder=decoder).train()
        if checkpointing:
            model.gradient_checkpointing_enable()
        out = model(x)
        (out.recon.square().mean() + out.features.square().mean()).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain, checkpointed = grads(False), grads(True)
    assert plain.keys() == checkpointed.keys()
    assert len(plain) == len(list(tiny(decoder=decoder).parameters()))
    for name in plain:
        torch.testing.assert_close(plain[name], checkpointed[name], msg=name)


@pytest.mark.parametrize("atom_norm", ["linear", "softmax"])
def test_v2_head_is_invariant_to_input_scale(atom_norm):
    model = tiny(head="v2", atom_norm=atom_norm, atom_temperature=0.1)
    head = model.encoder.head
    mu = torch.randn(2, 36, 16)
    torch.testing.assert_close(head.quantiser(mu), head.quantiser(7.5 * mu))
    torch.testing.assert_close(head.quantiser(mu), head.quantiser(0.01 * mu))


def test_adaln_zero_blocks_start_as_identity():
    model = tiny(adaln="zero", decoder_plain_layers=0).eval()
    a, b = torch.randn(2, 36, 16), torch.randn(2, 36, 16)
    # Every conditioned block's branch is gated by zero at init: the features cannot matter yet.
    torch.testing.assert_close(model.decode(a), model.decode(b))
    plain = tiny(adaln="plain", decoder_plain_layers=0).eval()
    assert not torch.allclose(plain.decode(a), plain.decode(b))


@pytest.mark.parametrize("skip", [True, False])
def test_pixel_skip_adds_the_refiner_to_the_unpatchified_image(skip):
    model = tiny(pixel_skip=skip).eval()
    with torch.no_grad():
        model.decoder.pixel_head.refiner.conv_out.weight.zero_()
        model.decoder.pixel_head.refiner.conv_out.bias.zero_()
        recon = model.decode(torch.randn(2, 36, 16))
    # A silenced refiner leaves the linear head's picture with the skip, nothing without it.
    assert (recon.abs().amax() > 0) == skip


def test_every_token_reaches_the_decoder():
    for decoder in ("v1", "v2"):
        model = tiny(decoder=decoder).eval()
        features = torch.randn(1, 36, 16, requires_grad=True)
        model.decode(features).square().sum().backward()
        assert torch.all(features.grad.abs().sum(-1) > 0), decoder


@pytest.mark.parametrize("mode", ["nested", "tail"])
def test_token_dropout(mode):
    model = tiny(token_dropout=mode, token_dropout_prob=1.0, token_dropout_min_keep=3)
    torch.manual_seed(0)
    keep = model.sample_keep(4000)
    assert keep.min() >= 3 and keep.max() <= 36 and keep.dtype == torch.long
    if mode == "nested":
        assert keep.float().std() > 8  # uniform over [3, 36]
    else:
        assert keep.float().mean() > 25  # mostly short tails dropped
    out = model.train()(images())
    assert out.keep is not None and out.keep.shape == (2,)
    model.eval()
    assert model(images()).keep is None  # training only


def test_drop_tail_replaces_exactly_the_tail():
    model = tiny(token_dropout="nested")
    features = torch.randn(2, 36, 16)
    out = model.drop_tail(features, torch.tensor([5, 36]))
    assert torch.equal(out[0, :5], features[0, :5])
    assert torch.equal(out[0, 5:], model.drop_token.detach().expand(31, 16))
    assert torch.equal(out[1], features[1])
    mean = features.mean(dim=(0, 1))
    assert torch.equal(model.drop_tail(features, 0, fill=mean)[0], mean.expand(36, 16))
    with pytest.raises(ValueError, match="pass `fill`"):
        tiny().drop_tail(features, 3)


def test_tokenize_needs_a_codebook():
    model = tiny()
    with pytest.raises(RuntimeError, match="needs a codebook"):
        model.tokenize(images())
    with pytest.raises(RuntimeError, match="needs a codebook"):
        model.detokenize(torch.zeros(2, 36, dtype=torch.long))


def test_bad_shapes_get_clear_errors():
    model = tiny()
    with pytest.raises(ValueError, match=r"expected images of shape \(B, 3, 32, 32\)"):
        model.encode(torch.zeros(2, 3, 64, 64))
    with pytest.raises(ValueError, match="floating-point"):
        model.encode(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"expected features of shape \(B, 36, 16\)"):
        model.decode(torch.zeros(2, 35, 16))


def test_runs_under_bf16_autocast():
    model = tiny().train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(images())
        loss = (out.recon.float() - images()).square().mean()
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_presets_build_and_base_is_the_reference():
    base = SVQConfig.from_preset("base")
    assert (base.encoder_width, base.encoder_heads, base.encoder_dense_layers) == (1024, 16, 18)
    assert (base.encoder_expert_layers, base.num_tokens, base.token_dim) == (6, 36, 128)
    assert (base.decoder_width, base.decoder_cond_layers, base.conds_per_block) == (768, 18, 2)
    assert (base.decoder_plain_layers, base.head, base.decoder) == (6, "v2", "v2")
    v1 = SVQConfig.from_preset("base-v1")
    assert (v1.head, v1.decoder) == ("v1", "v1")
    small = SVQConfig.from_preset("small")
    assert small.image_size == 64 and small.num_tokens == 36
    assert SVQConfig.from_dict(dataclasses.asdict(small)) == small


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(
    ("preset", "encoder_m", "decoder_m"),
    [("base", 2116.6, 224.2), ("base-v1", 2116.6, 245.4)],
)
def test_reference_parameter_counts_on_meta(preset, encoder_m, decoder_m):
    with torch.device("meta"):
        model = StyledVAEVQ(SVQConfig.from_preset(preset))
    encoder = count(model.encoder) / 1e6
    decoder = (count(model.decoder) - count(model.decoder.bridge)) / 1e6
    assert abs(encoder - encoder_m) / encoder_m < 0.005, encoder
    assert abs(decoder - decoder_m) / decoder_m < 0.005, decoder
    experts = sum(count(b.experts) for b in model.encoder.blocks if b.experts is not None)
    assert abs(experts / 1e6 - 1813.0) < 0.1  # the 216 per-query expert MLPs
    assert abs(count(model.decoder.bridge) / 1e6 - 0.099) < 0.001
