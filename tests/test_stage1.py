"""svq/train/stage1.py: options, optimiser groups, 2-step run and its artefacts, exact resume,
a kill mid-save, the non-finite stop, the LPIPS path, and two real CPU processes (torchrun)."""

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch
import yaml
from accelerate import Accelerator, DataLoaderConfiguration
from conftest import killed_after_checkpoint, reset_accelerate
from PIL import Image
from safetensors.torch import load_file, save_file

from svq import StyledVAEVQ, SVQConfig
from svq.configs import CONFIGS
from svq.data import ImageDataset
from svq.lpips import LPIPS
from svq.train import common, stage1

ROOT = Path(__file__).resolve().parent.parent
TINY = str(CONFIGS / "stage1_tiny.yaml")


def options(out: Path, *flags: str) -> stage1.Stage1Options:
    return common.parse_options(stage1.Stage1Options, [TINY, "--output_dir", str(out), *flags])


def run(out: Path, *flags: str) -> dict:
    reset_accelerate()
    return stage1.main(options(out, *flags))


def params(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


# --- options and optimiser -----------------------------------------------------------------


def test_yaml_first_then_flags_override(tmp_path):
    o = options(tmp_path, "--learning_rate", "0.5", "--model_overrides", '{"noise_scale": 0.1}')
    assert o.model_preset == "tiny" and o.max_steps == 2  # from the file
    assert o.learning_rate == 0.5 and o.model_overrides == {"noise_scale": 0.1}  # flags win
    assert o.prefix_ks == [0, 18, 36] and o.validation_data == "world"
    assert options(tmp_path, "--resume").resume_from_checkpoint == "latest"
    assert options(tmp_path, "--resume_from_checkpoint", "x").resume_from_checkpoint == "x"
    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rate: 1.0e-3\nlearnig_rate: 1\n")
    with pytest.raises(ValueError, match=r"unknown options.*learnig_rate"):
        common.parse_options(stage1.Stage1Options, [str(bad), "--output_dir", "x"])
    with pytest.raises(ValueError, match="max_steps"):
        options(tmp_path, "--max_steps", "0")


def test_no_weight_decay_on_norms_biases_and_tables():
    model = StyledVAEVQ(SVQConfig.from_preset("tiny", token_dropout="nested"))
    decay, keep = common.param_groups(model, 0.1, StyledVAEVQ.NO_DECAY)
    assert decay["weight_decay"] == 0.1 and keep["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    kept = {names[id(p)] for p in keep["params"]}
    decayed = {names[id(p)] for p in decay["params"]}
    assert len(kept) + len(decayed) == len(names) and not kept & decayed
    present = set(names.values())
    assert set(StyledVAEVQ.NO_DECAY) - present == {"decoder.const"}  # the conv decoder's table
    for table in set(StyledVAEVQ.NO_DECAY) & present:
        assert table in kept
    conv = StyledVAEVQ(SVQConfig.from_preset("tiny-conv"))
    _, conv_keep = common.param_groups(conv, 0.1, StyledVAEVQ.NO_DECAY)
    assert any(p is conv.decoder.const for p in conv_keep["params"])
    assert "encoder.blocks.0.norm1.weight" in kept and "encoder.blocks.0.attn.qkv.bias" in kept
    assert "decoder.cond_blocks.0.norm1.norm.weight" in kept  # AdaLN's own LayerNorm
    assert "encoder.blocks.1.experts.fc1.bias" in kept  # 2-D, but a bias
    assert "encoder.blocks.0.attn.qkv.weight" in decayed
    assert "encoder.blocks.1.experts.fc1.weight" in decayed
    assert "encoder.patch_embed.weight" in decayed


# --- data ----------------------------------------------------------------------------------


def write_pictures(folder: Path, n: int) -> list[Path]:
    """n flat 40x40 pictures; picture i has red = 10 * i, so a batch tells which it holds."""
    folder.mkdir(parents=True)
    paths = [folder / f"{i:03d}.png" for i in range(n)]
    for i, path in enumerate(paths):
        Image.new("RGB", (40, 40), (10 * i, 50, 100)).save(path)
    return paths


def ids(batch: torch.Tensor) -> list[int]:
    return [round(float((x[0].mean() + 1) * 127.5) / 10) for x in batch]


def test_folder_and_tar_sources_and_resumed_data_position(tmp_path):
    paths = write_pictures(tmp_path / "folder", 10)
    shard = tmp_path / "shard-000.tar"
    with tarfile.open(shard, "w") as tar:
        for path in paths:
            tar.add(path, arcname=f"{path.stem}.png")
    o = options(tmp_path / "o", "--train_data", str(tmp_path / "folder"), "--random_crop", "false")
    loader, shard_it = stage1.train_loader(o, 32)
    assert shard_it and isinstance(loader.dataset, ImageDataset)
    accelerator = Accelerator(
        cpu=True, dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True)
    )
    loader = accelerator.prepare(loader)  # 10 pictures, batch 4: 2 batches per pass
    straight = [ids(b) for _, b in zip(range(7), common.endless_batches(loader), strict=False)]
    assert sorted(straight[0] + straight[1]) == sorted(set(straight[0] + straight[1]))
    assert straight[0:2] != straight[2:4]  # each pass its own order
    resumed = [ids(b) for _, b in zip(range(2), common.endless_batches(loader, 5), strict=False)]
    assert resumed == straight[5:7]  # the same batches a run that never stopped would see
    o = options(tmp_path / "o", "--train_data", str(shard))
    stream, shard_it = stage1.train_loader(o, 32)
    assert not shard_it  # a stream shards itself over ranks and workers
    batch = next(iter(stream))
    assert batch.shape == (4, 3, 32, 32)


# --- runs ----------------------------------------------------------------------------------


def test_two_steps_write_a_loadable_release_and_records(tmp_path):
    out = tmp_path / "run"
    summary = run(out, "--report_to", "tensorboard")
    assert summary["steps"] == 2 and summary["images_seen"] == 8
    model = StyledVAEVQ.from_pretrained(out / "model")
    assert model.encode(torch.zeros(1, 3, 32, 32)).shape == (1, 36, 16)
    resolved = yaml.safe_load((out / "options.yaml").read_text())
    assert resolved["model_preset"] == "tiny" and resolved["model_config"]["token_dim"] == 16
    assert resolved["resolved"]["global_batch"] == 4
    assert [s for s, _ in common.checkpoints(out)] == [1, 2]
    record = json.loads((out / "validation.jsonl").read_text().splitlines()[-1])
    assert record["step"] == 2 and 0 < record["psnr"] < 100 and -1 < record["ssim"] < 1
    assert sorted(map(int, record["prefix_psnr"])) == list(range(37))  # final: every k
    assert "6-35" in record["swap_drop_db"] and len(record["single_swap_drop_db"]) == 36
    assert (out / "val" / "step-00000002.png").is_file()
    assert list((out / "logs").rglob("events.out.tfevents.*"))  # TensorBoard through accelerate
    assert set(summary["train"]) >= {"train/loss", "train/mse", "train/lr", "train/img_per_s"}


NOISY = '{"noise_scale": 0.2, "token_dropout": "nested", "token_dropout_prob": 0.5}'
TRAIN_FLAGS = (
    "--max_steps", "4", "--save_steps", "2", "--validation_data", "none",
    "--gradient_accumulation_steps", "2", "--ema_decay", "0.9", "--model_overrides", NOISY,
)  # fmt: skip


def test_resume_equals_an_uninterrupted_run(tmp_path, monkeypatch):
    run(tmp_path / "straight", *TRAIN_FLAGS)
    with killed_after_checkpoint(monkeypatch, 2):
        run(tmp_path / "resumed", *TRAIN_FLAGS)
    with pytest.raises(FileExistsError, match="resume"):
        run(tmp_path / "resumed", *TRAIN_FLAGS)  # would silently start over
    summary = run(tmp_path / "resumed", *TRAIN_FLAGS, "--resume")
    assert summary["steps"] == 4 and summary["images_seen"] == 4 * 8
    a, b = params(tmp_path / "straight" / "model"), params(tmp_path / "resumed" / "model")
    assert a.keys() == b.keys()
    for name in a:  # bit for bit: weights (EMA), data position, noise, dropout, schedule
        assert torch.equal(a[name], b[name]), name
    raw_a = params(common.step_folder(tmp_path / "straight", 4))
    raw_b = params(common.step_folder(tmp_path / "resumed", 4))
    assert all(torch.equal(raw_a[k], raw_b[k]) for k in raw_a)


def test_a_kill_mid_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    out = tmp_path / "run"
    flags = ("--max_steps", "4", "--save_steps", "2", "--validation_data", "none")
    real = Accelerator.save_state

    def half_then_die(self, folder, *args, **kwargs):
        if "step-00000004" in str(folder):
            (Path(folder) / "model.safetensors").write_bytes(b"half a file")
            raise SystemExit("killed")
        return real(self, folder, *args, **kwargs)

    monkeypatch.setattr(Accelerator, "save_state", half_then_die)
    with pytest.raises(SystemExit):
        run(out, *flags)
    monkeypatch.setattr(Accelerator, "save_state", real)
    assert [s for s, _ in common.checkpoints(out)] == [2]  # the broken one is invisible
    summary = run(out, *flags, "--resume")
    assert summary["steps"] == 4 and [s for s, _ in common.checkpoints(out)] == [2, 4]
    assert not list((out / "checkpoints").glob(".tmp-*"))  # cleaned by the next save


def test_a_nan_loss_stops_with_the_step_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    out = tmp_path / "run"
    real = stage1.reconstruction_loss
    calls = []

    def nan_at_third_step(recon, images, o, lpips):
        calls.append(1)
        terms = real(recon, images, o, lpips)
        if len(calls) == 3:
            terms["loss"] = terms["loss"] * float("nan")
        return terms

    monkeypatch.setattr(stage1, "reconstruction_loss", nan_at_third_step)
    with pytest.raises(common.NonFiniteLossError, match=r"loss is nan .*at step 3") as error:
        run(out, "--max_steps", "5", "--validation_data", "none")
    assert "checkpoints/step-00000002" in str(error.value)
    assert [s for s, _ in common.checkpoints(out)] == [1, 2]
    assert not (out / "model").exists()


def test_lpips_weights_missing_says_how_to_get_them_or_turn_it_off(tmp_path, monkeypatch):
    monkeypatch.setenv("SVQ_LPIPS_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(FileNotFoundError, match=r"(?s)curl.*vgg16.*--lpips_weight 0"):
        run(tmp_path / "run", "--lpips_weight", "1")


def test_lpips_term_trains_when_weights_exist(tmp_path):
    # Random weights under the real files' names: torchvision's VGG16 and lpips' vgg.pth.
    trunk, linear = tmp_path / "vgg16.safetensors", tmp_path / "lin.safetensors"
    torch.manual_seed(0)
    state = LPIPS().state_dict()
    save_file({f"features.{k[len('features.'):]}": v for k, v in state.items()
               if k.startswith("features.")}, trunk)  # fmt: skip
    save_file({k: v.abs() for k, v in state.items() if k.startswith("lin")}, linear)
    summary = run(
        tmp_path / "run", "--lpips_weight", "0.5", "--lpips_trunk_path", str(trunk),
        "--lpips_linear_path", str(linear), "--max_steps", "1", "--validation_data", "none",
    )  # fmt: skip
    train = summary["train"]
    assert train["train/lpips"] > 0
    assert train["train/loss"] == pytest.approx(train["train/mse"] + 0.5 * train["train/lpips"])


def test_two_cpu_processes_with_torchrun(tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    torchrun = Path(sys.executable).parent / "torchrun"
    command = [
        str(torchrun),
        "--standalone",
        "--nproc_per_node",
        "2",
        str(ROOT / "svq" / "train" / "stage1.py"),
        TINY,
        "--output_dir",
        str(out),
        "--save_steps",
        "2",
        "--validation_data",
        "none",
    ]  # fmt: skip (validation runs on rank 0 only: tested above)
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stderr[-3000:]
    resolved = yaml.safe_load((out / "options.yaml").read_text())["resolved"]
    assert resolved["processes"] == 2 and resolved["global_batch"] == 8
    checkpoint = common.step_folder(out, 2)
    assert {p.name for p in checkpoint.glob("random_states_*.pkl")} == {
        "random_states_0.pkl",
        "random_states_1.pkl",
    }  # one RNG state per process
    state = json.loads((checkpoint / common.STATE_FILE).read_text())
    assert state["images_seen"] == 16
    assert StyledVAEVQ.from_pretrained(out / "model").config.num_tokens == 36
