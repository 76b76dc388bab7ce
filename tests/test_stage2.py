"""svq/train/stage2.py and the codebook in the tokenizer's release folder: save -> load with and
without a codebook, a mismatched codebook, runs with and without the fine-tune and their
artefacts, reused features, exact resume of the fine-tune, and two CPU processes (torchrun)."""

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import killed_after_checkpoint, reset_accelerate
from PIL import Image
from safetensors.torch import load_file

from svq import StyledVAEVQ, SVQConfig
from svq.codebook import Codebook
from svq.configs import CONFIGS
from svq.train import common, stage2

ROOT = Path(__file__).resolve().parent.parent
TINY = str(CONFIGS / "stage2_tiny.yaml")


@pytest.fixture(scope="module")
def stage1_model(tmp_path_factory) -> Path:
    """A tiny tokenizer's release folder, as stage 1 writes it (untrained weights)."""
    folder = tmp_path_factory.mktemp("stage1") / "model"
    torch.manual_seed(0)
    StyledVAEVQ(SVQConfig.from_preset("tiny")).save_pretrained(folder)
    return folder


def options(out: Path, model: Path, *flags: str) -> stage2.Stage2Options:
    argv = [TINY, "--output_dir", str(out), "--model_path", str(model), *flags]
    return common.parse_options(stage2.Stage2Options, argv)


def run(out: Path, model: Path, *flags: str) -> dict:
    reset_accelerate()
    return stage2.main(options(out, model, *flags))


def images(n: int = 3) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.rand(n, 3, 32, 32) * 2 - 1


# --- the codebook in the release folder ----------------------------------------------------


def test_codebook_is_saved_and_loaded_beside_the_weights(tmp_path):
    torch.manual_seed(0)
    model = StyledVAEVQ(SVQConfig.from_preset("tiny")).eval()
    x = images()
    with torch.no_grad():
        model.attach_codebook(Codebook.fit(model.encode(x), 8, iters=3))
        ids = model.tokenize(x)
        pictures = model.detokenize(ids)
    assert not [k for k in model.state_dict() if "codebook" in k]  # not part of the weights
    model.save_pretrained(tmp_path / "with")
    assert (tmp_path / "with" / "codebook.safetensors").is_file()
    assert not [k for k in load_file(tmp_path / "with" / "model.safetensors") if "codebook" in k]
    loaded = StyledVAEVQ.from_pretrained(tmp_path / "with").eval()  # strict loading
    with torch.no_grad():
        assert torch.equal(loaded.tokenize(x), ids)
        assert torch.allclose(loaded.detokenize(ids), pictures, atol=1e-6)
    assert torch.equal(loaded.codebook.codes, model.codebook.codes)
    loaded.load_state_dict(model.state_dict(), strict=True)  # the codebook stays attached
    assert loaded.codebook is not None

    # Without a codebook (a stage-1 release, or svq/llm/chat.py's way of saving): loads, none.
    model.codebook = None
    model.save_pretrained(tmp_path / "with")  # over the old folder: its codebook goes
    assert not (tmp_path / "with" / "codebook.safetensors").exists()
    bare = StyledVAEVQ.from_pretrained(tmp_path / "with")
    assert bare.codebook is None
    with pytest.raises(RuntimeError, match="needs a codebook"):
        bare.tokenize(x)


def test_a_codebook_that_does_not_fit_is_a_clear_error(tmp_path):
    model = StyledVAEVQ(SVQConfig.from_preset("tiny"))  # 36 tokens of 16
    model.save_pretrained(tmp_path)
    wrong = tmp_path / "codebook.safetensors"
    Codebook.from_codes(torch.randn(8, 12)).save(wrong)
    with pytest.raises(ValueError, match=r"codebook.safetensors does not fit.*12-dim.*16-dim"):
        StyledVAEVQ.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"each of 4 positions.*36 tokens"):
        model.attach_codebook(Codebook.from_codes(torch.randn(4, 8, 16)))
    per_position = Codebook.from_codes(torch.randn(36, 8, 16))
    assert model.attach_codebook(per_position).codebook is per_position
    assert model.tokenize(images()).shape == (3, 36)


# --- options -------------------------------------------------------------------------------


def test_options_yaml_then_flags(tmp_path):
    o = options(tmp_path, tmp_path, "--max_steps", "3", "--distance", "cosine")
    assert o.num_codes == 32 and o.num_feature_images == 16  # from the file
    assert o.finetune_steps == 3 and o.distance == "cosine"  # --max_steps is finetune_steps
    with pytest.raises(ValueError, match="distance"):
        options(tmp_path, tmp_path, "--distance", "dot")
    with pytest.raises(ValueError, match="kmeans_init"):
        options(tmp_path, tmp_path, "--kmeans_init", "best")


def test_a_missing_stage1_model_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"model_path .*nowhere.*stage-1 tokenizer"):
        run(tmp_path / "run", tmp_path / "nowhere")


# --- runs ----------------------------------------------------------------------------------


def test_codebook_only_run_writes_a_release_that_tokenizes(tmp_path, stage1_model):
    out = tmp_path / "run"
    summary = run(out, stage1_model)
    assert json.loads((out / "summary.json").read_text()) == summary
    model = StyledVAEVQ.from_pretrained(out / "model").eval()
    assert model.codebook is not None and model.codebook.num_codes == 32
    x = images()
    with torch.no_grad():
        ids = model.tokenize(x)
        assert ids.shape == (3, 36) and ids.min() >= 0 and ids.max() < 32
        assert model.detokenize(ids).shape == (3, 3, 32, 32)
    # Weights are stage 1's, untouched.
    a, b = (
        load_file(stage1_model / "model.safetensors"),
        load_file(out / "model" / "model.safetensors"),
    )
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert summary["num_codes"] == 32 and summary["finetune"] is None and summary["after"] is None
    assert summary["features"] == {"path": str(out / "features" / "features.npy"), "reused": False,
                                   "images": 16, "vectors": 16 * 36}  # fmt: skip
    features = np.load(out / "features" / "features.npy", mmap_mode="r")
    assert features.shape == (16, 36, 16) and features.dtype == np.float32
    book = summary["codebook"]
    assert book["used"] + book["dead"] == 32 and 0 < book["usage"] <= 1 and book["perplexity"] > 1
    before = summary["before"]
    for name in ("continuous_psnr", "quantized_psnr"):
        assert 0 < before[name] < 100
    for name in ("continuous_ssim", "quantized_ssim"):
        assert -1 < before[name] < 1
    assert before["psnr_gap"] == pytest.approx(before["continuous_psnr"] - before["quantized_psnr"])
    assert 0 < before["used"] <= 32 and 0 <= before["reencode_stable"] <= 1
    assert {"features_s", "codebook_s", "eval_s", "total_s"} <= summary["timings"].keys()
    assert (out / "grid.png").is_file() and (out / "options.yaml").is_file()
    assert not (out / "checkpoints").exists()

    # The same weights and pictures: features are read back, not encoded again (nor copied).
    again = run(tmp_path / "again", stage1_model, "--features_dir", str(out / "features"))
    assert again["features"]["reused"] and not (tmp_path / "again" / "features").exists()
    assert not again["codebook"]["reused"]  # its own output folder: fitted again, the same
    assert torch.equal(
        Codebook.load(out / "codebook.safetensors").codes,
        Codebook.load(tmp_path / "again" / "codebook.safetensors").codes,
    )
    # Other pictures: encoded again.
    more = run(out, stage1_model, "--num_feature_images", "20")
    assert not more["features"]["reused"] and more["features"]["images"] == 20
    assert np.load(out / "features" / "features.npy", mmap_mode="r").shape[0] == 20


def test_features_from_an_image_folder_and_tar_shards(tmp_path, stage1_model):
    folder = tmp_path / "pictures"
    folder.mkdir()
    for i in range(10):
        Image.new("RGB", (40, 40), (20 * i, 50, 100)).save(folder / f"{i:02d}.png")
    shard = tmp_path / "shard-000.tar"
    with tarfile.open(shard, "w") as tar:
        for path in sorted(folder.iterdir()):
            tar.add(path, arcname=path.name)
    flags = ("--validation_data", str(folder), "--num_codes", "8")
    summary = run(tmp_path / "folder", stage1_model, "--train_data", str(folder), *flags)
    assert summary["features"]["images"] == 10  # all there are (16 asked)
    summary = run(tmp_path / "tar", stage1_model, "--train_data", str(shard),
                  "--num_feature_images", "6", *flags)  # fmt: skip
    assert summary["features"]["images"] == 6
    with pytest.raises(ValueError, match="found 10 pictures, needs 16"):
        run(tmp_path / "short", stage1_model, "--train_data", str(shard), *flags)


FINETUNE = ("--finetune_steps", "4", "--save_steps", "2", "--gradient_accumulation_steps", "2")


def test_finetune_resumes_exactly(tmp_path, stage1_model, monkeypatch):
    straight = run(tmp_path / "straight", stage1_model, *FINETUNE)
    assert straight["finetune"]["steps"] == 4 and straight["finetune"]["images_seen"] == 4 * 8
    assert straight["after"] is not None and straight["before"] is not None
    s1 = load_file(stage1_model / "model.safetensors")
    s2 = load_file(tmp_path / "straight" / "model" / "model.safetensors")
    assert all(torch.equal(s1[k], s2[k]) for k in s1 if k.startswith("encoder."))  # frozen
    assert not all(torch.equal(s1[k], s2[k]) for k in s1 if k.startswith("decoder."))
    assert [s for s, _ in common.checkpoints(tmp_path / "straight")] == [2, 4]

    with killed_after_checkpoint(monkeypatch, 2):
        run(tmp_path / "resumed", stage1_model, *FINETUNE)
    with pytest.raises(FileExistsError, match="resume"):
        run(tmp_path / "resumed", stage1_model, *FINETUNE)  # would silently start over
    resumed = run(tmp_path / "resumed", stage1_model, *FINETUNE, "--resume")
    assert resumed["codebook"]["reused"] and resumed["features"]["reused"]
    assert resumed["finetune"]["steps"] == 4
    assert resumed["before"] == straight["before"]  # always the stage-1 weights
    a = load_file(tmp_path / "straight" / "model" / "model.safetensors")
    b = load_file(tmp_path / "resumed" / "model" / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:  # bit for bit: weights, data position, schedule
        assert torch.equal(a[name], b[name]), name
    assert resumed["after"] == straight["after"]


def test_finetune_of_the_encoder_goes_straight_through_the_codes(tmp_path, stage1_model):
    out = tmp_path / "run"
    # Two steps: the first is the warm-up's, at learning rate 0.
    flags = ("--finetune_steps", "2", "--finetune_encoder", "true", "--validation_data", "none",
             "--per_position", "true", "--num_codes", "4")  # fmt: skip
    summary = run(out, stage1_model, *flags)
    assert summary["before"] is None and summary["finetune"]["encoder_trained"]
    s1 = load_file(stage1_model / "model.safetensors")
    s2 = load_file(out / "model" / "model.safetensors")
    changed = [k for k in s1 if not torch.equal(s1[k], s2[k])]
    assert any(k.startswith("encoder.") for k in changed)
    assert any(k.startswith("decoder.") for k in changed)
    model = StyledVAEVQ.from_pretrained(out / "model")
    assert model.codebook.config.per_position and model.codebook.codes.shape == (36, 4, 16)
    # The codebook was frozen: the release holds the one k-means fitted.
    fitted = Codebook.load(out / "codebook.safetensors")
    assert torch.equal(model.codebook.codes, fitted.codes)


def test_finetune_decodes_a_share_of_the_batch_from_continuous_features(tmp_path, stage1_model):
    model = StyledVAEVQ.from_pretrained(stage1_model).eval()
    x = images(4)
    features = model.encode(x)
    model.attach_codebook(Codebook.fit(features.reshape(-1, 16), 3, seed=0))
    codes = model.codebook(features).quantized
    with torch.no_grad():
        off, commitment = stage2.QuantizedAutoencoder(model, False)(x)  # codes only, as before
        half, _ = stage2.QuantizedAutoencoder(model, False, continuous_share=0.5)(x)
        torch.testing.assert_close(commitment, (features - codes).pow(2).mean())
        assert torch.equal(off, model.decode(codes))
        assert torch.equal(half, model.decode(torch.cat([features[:2], codes[2:]])))
        assert not torch.allclose(half[:2], off[:2])
    with pytest.raises(ValueError, match="finetune_continuous_share must be in"):
        options(tmp_path, stage1_model, "--finetune_continuous_share", "1")
    summary = run(tmp_path / "run", stage1_model, "--finetune_steps", "1",
                  "--finetune_continuous_share", "0.5", "--validation_data", "none",
                  "--num_codes", "4")  # fmt: skip
    assert summary["finetune"]["continuous_share"] == 0.5


def test_commitment_pulls_the_encoder_toward_its_codes(tmp_path, stage1_model):
    model = StyledVAEVQ.from_pretrained(stage1_model).eval()
    x = images(4)
    model.attach_codebook(Codebook.fit(model.encode(x).reshape(-1, 16), 3, seed=0))
    model.requires_grad_(False)
    model.encoder.requires_grad_(True)
    net = stage2.QuantizedAutoencoder(model, True)
    _, commitment = net(x)
    commitment.backward()  # the codes are constants: the gradient reaches the encoder
    grads = [p.grad for p in model.encoder.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    torch.optim.SGD(model.encoder.parameters(), lr=1e-2).step()
    with torch.no_grad():
        assert net(x)[1] < commitment  # one step down its gradient: the features nearer
    with pytest.raises(ValueError, match="needs --finetune_encoder true"):
        options(tmp_path, stage1_model, "--commitment_weight", "0.25")
    with pytest.raises(ValueError, match="commitment_weight must be >= 0"):
        options(tmp_path, stage1_model, "--commitment_weight", "-1")
    flags = ("--finetune_steps", "2", "--finetune_encoder", "true", "--validation_data", "none",
             "--num_codes", "4", "--learning_rate", "0.05", "--warmup_steps", "0")  # fmt: skip
    plain = run(tmp_path / "plain", stage1_model, *flags)
    pulled = run(tmp_path / "pulled", stage1_model, *flags, "--commitment_weight", "10")
    assert pulled["finetune"]["commitment_weight"] == 10
    logged = pulled["finetune"]["train"]
    assert "finetune/commitment" not in plain["finetune"]["train"]
    assert logged["finetune/commitment"] > 0  # the loss: MSE (the config's only pixel term)
    expected = logged["finetune/mse"] + 10 * logged["finetune/commitment"]
    assert logged["finetune/loss"] == pytest.approx(expected, rel=1e-5)


def test_two_cpu_processes_with_torchrun(tmp_path, stage1_model):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    torchrun = Path(sys.executable).parent / "torchrun"
    command = [
        str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "svq.train.stage2",
        TINY, "--output_dir", str(out), "--model_path", str(stage1_model),
        "--finetune_steps", "2", "--validation_data", "none",
    ]  # fmt: skip
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["finetune"]["images_seen"] == 2 * 8
    # Each process encoded its half into the one file: the same features one process writes.
    features = np.load(out / "features" / "features.npy")
    model = StyledVAEVQ.from_pretrained(stage1_model).eval()
    pictures = torch.stack([stage2.feature_images(options(out, stage1_model), 32)[i]
                            for i in range(16)])  # fmt: skip
    with torch.no_grad():
        assert np.allclose(features, model.encode(pictures).numpy(), atol=1e-5)
    # Distributed k-means: the codebook one process fits on both halves together.
    book = Codebook.load(out / "codebook.safetensors")
    alone = Codebook.fit(features, 32, iters=10, tol=1e-4, seed=0)
    assert torch.allclose(book.codes, alone.codes, atol=1e-5)
    assert StyledVAEVQ.from_pretrained(out / "model").codebook.num_codes == 32
