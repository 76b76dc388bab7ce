"""svq/train/vq.py: options, a 2-step run and its artefacts, code usage and reseeding, exact resume
(with the PatchGAN term on), the adversarial terms, the non-finite stop."""

import json
from pathlib import Path

import pytest
import torch
import yaml
from conftest import killed_after_checkpoint, reset_accelerate
from safetensors.torch import load_file

from svq.configs import CONFIGS
from svq.discriminator import PatchDiscriminator, hinge_d_loss, hinge_g_loss
from svq.spatial_vq import SpatialVQ
from svq.train import common, vq

ROOT = Path(__file__).resolve().parent.parent
TINY = str(CONFIGS / "vq_tiny.yaml")


def options(out: Path, *flags: str) -> vq.VQOptions:
    return common.parse_options(vq.VQOptions, [TINY, "--output_dir", str(out), *flags])


def run(out: Path, *flags: str) -> dict:
    reset_accelerate()
    return vq.main(options(out, *flags))


def test_options_yaml_then_flags_and_validation(tmp_path):
    o = options(tmp_path, "--learning_rate", "0.5", "--model_overrides", '{"codebook_size": 32}')
    assert o.model_preset == "tiny" and o.max_steps == 2 and o.lpips_weight == 0.0
    assert o.learning_rate == 0.5 and o.model_overrides == {"codebook_size": 32}
    assert o.gan_weight == 0.0  # the adversarial term is off by default
    assert options(tmp_path, "--resume").resume_from_checkpoint == "latest"
    for flags, match in [
        (("--max_steps", "0"), "max_steps"),
        (("--gan_weight", "-1"), "weights"),
        (("--mse_weight", "0"), "nothing to reconstruct"),
        (("--reseed_steps", "-1"), "reseed_steps"),
        (("--bf16", "true", "--fp16", "true"), "bf16"),
    ]:
        with pytest.raises(ValueError, match=match):
            options(tmp_path, *flags)
    for name in ("vq_tiny", "vq_world64", "vq_base"):  # every shipped config parses
        path = CONFIGS / f"{name}.yaml"
        assert common.parse_options(vq.VQOptions, [str(path), "--output_dir", "x"]).max_steps > 0


def test_two_steps_write_a_loadable_model_summary_and_records(tmp_path):
    out = tmp_path / "run"
    summary = run(out)
    assert summary["steps"] == 2 and summary["images_seen"] == 8
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(summary))
    model = SpatialVQ.from_pretrained(out / "model").eval()
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    ids = model.encode(x)
    assert ids.shape == (2, 16) and model.decode(ids).shape == (2, 3, 16, 16)
    resolved = yaml.safe_load((out / "options.yaml").read_text())
    assert resolved["model_config"]["codebook_size"] == 64
    assert resolved["resolved"]["global_batch"] == 4
    assert [s for s, _ in common.checkpoints(out)] == [1, 2]
    record = json.loads((out / "validation.jsonl").read_text().splitlines()[-1])
    assert record["step"] == 2 and 0 < record["psnr"] < 100 and -1 < record["ssim"] < 1
    # codes used over 8 held-out pictures x 16 positions, and their perplexity
    assert 1 < record["codes_used"] <= 64
    assert record["code_usage"] == pytest.approx(record["codes_used"] / 64)
    assert 1 <= record["perplexity"] <= record["codes_used"] + 1e-6
    assert (out / "val" / "step-00000002.png").is_file()
    assert {"train/mse", "train/vq", "train/loss", "train/codes_used"} <= set(summary["train"])
    train = summary["train"]
    assert train["train/loss"] == pytest.approx(train["train/mse"] + train["train/vq"], rel=1e-5)


def test_dead_codes_are_reseeded_and_used(tmp_path):
    # tiny: a code unused for 2 forwards is dead; reseeded every step from the batch's latents
    summary = run(tmp_path / "run", "--max_steps", "6", "--save_steps", "100")
    assert summary["codes_reseeded"] > 0
    model = SpatialVQ.from_pretrained(tmp_path / "run" / "model")
    assert int(model.quantizer.unused_steps.max()) <= 6
    assert summary["validation"]["codes_used"] >= 16  # of 64, over 128 held-out positions


TRAIN_FLAGS = (
    "--max_steps", "4", "--save_steps", "2", "--validation_data", "none",
    "--gradient_accumulation_steps", "2", "--gan_weight", "0.1", "--gan_start_step", "1",
)  # fmt: skip


def test_resume_equals_an_uninterrupted_run(tmp_path, monkeypatch):
    run(tmp_path / "straight", *TRAIN_FLAGS)
    with killed_after_checkpoint(monkeypatch, 2):
        run(tmp_path / "resumed", *TRAIN_FLAGS)
    with pytest.raises(FileExistsError, match="resume"):
        run(tmp_path / "resumed", *TRAIN_FLAGS)
    summary = run(tmp_path / "resumed", *TRAIN_FLAGS, "--resume")
    assert summary["steps"] == 4 and summary["images_seen"] == 4 * 8
    a = load_file(tmp_path / "straight" / "model" / "model.safetensors")
    b = load_file(tmp_path / "resumed" / "model" / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:  # bit for bit: weights, codebook, usage counters (reseeds), data position
        assert torch.equal(a[name], b[name]), name
    # the discriminator is in the checkpoints (second model), not in the release
    assert not any(k.startswith("net.") for k in a)
    disc_a = load_file(common.step_folder(tmp_path / "straight", 4) / "model_1.safetensors")
    disc_b = load_file(common.step_folder(tmp_path / "resumed", 4) / "model_1.safetensors")
    assert all(torch.equal(disc_a[k], disc_b[k]) for k in disc_a)


def test_adversarial_terms(tmp_path):
    summary = run(tmp_path / "run", "--gan_weight", "0.5", "--validation_data", "none")
    t = summary["train"]
    assert {"train/gan_g", "train/gan_d"} <= set(t) and t["train/gan_d"] >= 0
    expected = t["train/mse"] + t["train/vq"] + 0.5 * t["train/gan_g"]
    assert t["train/loss"] == pytest.approx(expected, rel=1e-5)
    late = run(tmp_path / "late", "--gan_weight", "0.5", "--gan_start_step", "2",
               "--validation_data", "none")  # fmt: skip
    assert "train/gan_g" not in late["train"]  # step 2 is not after gan_start_step 2


def test_patch_discriminator_and_hinge_losses():
    torch.manual_seed(0)
    disc = PatchDiscriminator(3, 8, layers=3)
    assert disc(torch.zeros(2, 3, 64, 64)).shape == (2, 1, 6, 6)  # 64 -> 32 -> 16 -> 8 -> 7 -> 6
    assert PatchDiscriminator(3, 8, layers=2)(torch.zeros(1, 3, 16, 16)).shape == (1, 1, 2, 2)
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])
    assert hinge_d_loss(real, fake) == pytest.approx(0.5 * (0.25 + 0.5))
    assert hinge_g_loss(fake) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="layers"):
        PatchDiscriminator(3, 8, layers=0)


def test_a_nan_loss_stops_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    real, calls = vq.reconstruction_loss, []

    def nan_at_second_step(recon, images, o, lpips):
        calls.append(1)
        terms = real(recon, images, o, lpips)
        if len(calls) == 2:
            terms["loss"] = terms["loss"] * float("nan")
        return terms

    monkeypatch.setattr(vq, "reconstruction_loss", nan_at_second_step)
    with pytest.raises(common.NonFiniteLossError, match=r"loss is nan .*at step 2"):
        run(tmp_path / "run", "--max_steps", "3", "--validation_data", "none")
    assert [s for s, _ in common.checkpoints(tmp_path / "run")] == [1]
    assert not (tmp_path / "run" / "model").exists()
