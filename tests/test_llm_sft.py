"""svq.train.llm_sft and svq.llm.sft_data: 2 steps of llm_sft_tiny write a loadable model and the
records, labels mask everything but assistant turns, the image cache is reused and invalidated
when a tokenizer changes, JSONL chats, resume equals an uninterrupted run, the non-finite stop,
the serial baseline, and two real CPU processes (torchrun)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import killed_after_checkpoint, reset_accelerate
from safetensors.torch import load_file

from svq import StyledVAEVQ, SVQConfig
from svq.codebook import Codebook
from svq.configs import CONFIGS
from svq.data import render, world_record
from svq.eval.judge import AttributeJudge, JudgeConfig
from svq.llm import IGNORE_INDEX, SVQChat
from svq.llm import sft_data as sd
from svq.spatial_vq import SpatialVQ, SpatialVQConfig
from svq.train import common, llm_sft

ROOT = Path(__file__).resolve().parent.parent
TINY = str(CONFIGS / "llm_sft_tiny.yaml")


def save_svq(folder: Path, seed: int = 0) -> Path:
    """The tiny svq tokenizer (32 px, 36 x 16) with a random 32-code codebook in its folder."""
    torch.manual_seed(seed)
    model = StyledVAEVQ(SVQConfig.from_preset("tiny")).eval()
    model.save_pretrained(folder)
    Codebook.from_codes(torch.randn(32, 16)).save(folder / "codebook.safetensors")
    return folder


@pytest.fixture(scope="module")
def parts(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("parts")
    torch.manual_seed(0)
    SpatialVQ(SpatialVQConfig.from_preset("tiny")).save_pretrained(root / "spatial")
    AttributeJudge(JudgeConfig.from_preset("tiny")).save_pretrained(root / "judge")
    return {"svq": save_svq(root / "svq"), "spatial": root / "spatial", "judge": root / "judge"}


def options(out: Path, parts: dict[str, Path], *flags: str) -> llm_sft.SFTOptions:
    argv = [TINY, "--output_dir", str(out), "--svq_path", str(parts["svq"]),
            "--spatial_vq_path", str(parts["spatial"]),
            "--judge_path", str(parts["judge"])]  # fmt: skip
    return common.parse_options(llm_sft.SFTOptions, [*argv, *flags])


def run(out: Path, parts: dict[str, Path], *flags: str) -> dict:
    reset_accelerate()
    return llm_sft.main(options(out, parts, *flags))


# --- data ----------------------------------------------------------------------------------


def test_world_options_reach_the_training_chats(tmp_path, parts, monkeypatch):
    """The SFT passes its world options (`when_first`, `asked_first`, `opening_season`) to the
    chats it loads."""
    seen = {}
    real = llm_sft.load_chats

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(llm_sft, "load_chats", spy)
    run(tmp_path / "run", parts, "--when_first", "true", "--opening_season", "same",
        "--asked_first", "true", "--max_steps", "1", "--num_val_dialogues", "0")  # fmt: skip
    assert seen["when_first"] is True and seen["opening_season"] == "same"
    assert seen["asked_first"] is True


def test_labels_cover_assistant_turns_only(parts):
    o = options(Path("unused"), parts)
    chat = llm_sft.build_model(o)
    data = sd.world_chats(0, "train", 6, "en")
    images = sd.encode_images(data, chat.svq, chat.spatial, None)
    dataset = sd.SFTDataset(data, images, chat.tokenizer, chat.vocab)
    tok, vocab = chat.tokenizer, chat.vocab
    assert len(dataset) == 6
    for chat_row, item in zip(data.chats, dataset.items, strict=True):
        labelled = tok.decode(item.input_ids[item.labels != IGNORE_INDEX])
        replies = [m for m in chat_row["messages"] if m["role"] == "assistant"]
        for reply in replies:  # every reply's text is labelled, nothing of the user's is
            for part in reply["content"]:
                if part["type"] == "text":
                    assert part["text"] in labelled
        for message in chat_row["messages"]:
            if message["role"] != "assistant":
                for part in message["content"]:
                    if part["type"] == "text" and len(part["text"]) > 12:
                        assert part["text"] not in labelled
        labels = item.labels[item.labels != IGNORE_INDEX]
        assert not bool((labels == vocab.image_id).any())  # understood pictures: no labels
        assert int(vocab.is_code(labels).sum()) == 36 * item.code_ids.shape[0]
        n_assistant = sum(
            p["type"] == "image" for m in replies for p in m["content"]
        )  # each assistant picture is written: 36 codes, VQ targets
        assert item.code_ids.shape == (n_assistant, 36) and item.vq_targets.shape[1] == 16
        k = [p[sd.IMAGE_INDEX] for m in replies for p in m["content"] if p["type"] == "image"]
        assert torch.equal(item.code_ids, images.ids[k])
        assert torch.equal(item.vq_targets, images.vq_ids[k])


def test_live_chat_and_the_cache_resolve_pictures_by_one_rule(parts):
    """SVQChat.prepare (pictures encoded live) and the SFT cache give each image part the same
    role-dependent contents: assistant -> ids and VQ targets, user -> features."""
    chat = llm_sft.build_model(options(Path("unused"), parts))
    data = sd.world_chats(0, "train", 4, "en")
    images = sd.encode_images(data, chat.svq, chat.spatial, None)
    size = chat.svq.config.image_size
    agree = {}
    for row in data.chats:
        live = [
            {**m, "content": [
                {"type": "image", "image": render(data.images[p[sd.IMAGE_INDEX]], size)}
                if p["type"] == "image" else p for p in m["content"]]}
            for m in row["messages"]
        ]  # fmt: skip
        cached = sd.resolve_messages(row["messages"], images)
        prepared = chat.prepare(live, vq_targets=True)
        for a, b in zip(cached, prepared, strict=True):
            for x, y in zip(a["content"], b["content"], strict=True):
                if x["type"] != "image":
                    continue
                keys = {"ids", "vq_ids"} if a["role"] == "assistant" else {"features"}
                assert {k for k in keys if x.get(k) is not None} == keys
                assert {k for k in keys if y.get(k) is not None} == keys
                for k in keys:
                    assert x[k].shape == y[k].shape and x[k].dtype == y[k].dtype, k
                    same = (
                        (x[k] - y[k]).abs().max()
                        if k == "features"
                        else (x[k] == y[k]).float().mean()
                    )
                    agree.setdefault(k, []).append(same.item())
    # the same pictures, encoded as a batch and one by one: the same features and ids; the
    # untrained spatial VQ's nearest codes may flip at a near-tie (seen: 1 cell in 16)
    assert max(agree["features"]) < 1e-4 and min(agree["ids"]) == 1.0
    assert min(agree["vq_ids"]) >= 0.9


def test_cache_is_reused_and_invalidated_when_a_tokenizer_changes(tmp_path, parts, monkeypatch):
    svq = StyledVAEVQ.load(parts["svq"], require_codebook=True)
    spatial = SpatialVQ.from_pretrained(parts["spatial"]).eval()
    data = sd.world_chats(0, "train", 3, "en")
    calls = []
    real_encode = StyledVAEVQ.encode

    def counted(self, images):
        calls.append(len(images))
        return real_encode(self, images)

    monkeypatch.setattr(StyledVAEVQ, "encode", counted)
    first = sd.encode_images(data, svq, spatial, tmp_path)
    assert not first.reused and sum(calls) == len(data.images) == first.ids.shape[0]
    again = sd.encode_images(data, svq, spatial, tmp_path)
    assert again.reused and sum(calls) == len(data.images)  # nothing encoded again
    for a, b in ((first.features, again.features), (first.ids, again.ids),
                 (first.vq_ids, again.vq_ids)):  # fmt: skip
        assert torch.equal(a, b)
    svq.codebook = Codebook.from_codes(torch.randn(32, 16))  # a new codebook: stale cache
    fresh = sd.encode_images(data, svq, spatial, tmp_path)
    assert not fresh.reused and sum(calls) == 2 * len(data.images)
    assert torch.equal(fresh.features, first.features) and not torch.equal(fresh.ids, first.ids)
    with torch.no_grad():
        spatial.quantizer.codebook.mul_(-1)  # a changed spatial VQ: stale too
    assert not sd.encode_images(data, svq, spatial, tmp_path).reused
    assert sd.encode_images(data, svq, spatial, tmp_path).reused
    other = sd.world_chats(1, "train", 3, "en")  # other data: its own cache file
    assert sd.cache_path(tmp_path, other) != sd.cache_path(tmp_path, data)
    paths = {sd.cache_path(tmp_path, sd.world_chats(0, "train", 3, "en", opening_season=o))
             for o in ("other", "same", "unnamed")}  # fmt: skip
    assert len(paths) == 3 and sd.cache_path(tmp_path, data) in paths  # "other": the default
    for words in ({"when_first": True}, {"asked_first": True}):  # other words, same pictures
        worded = sd.world_chats(0, "train", 3, "en", **words)
        assert worded.chats != data.chats and worded.images == data.images
        assert sd.cache_path(tmp_path, worded) == sd.cache_path(tmp_path, data)
    assert len(list(tmp_path.glob("images-*.safetensors"))) == 1


def test_jsonl_chats_with_pictures_by_path(tmp_path, parts):
    (tmp_path / "photos").mkdir()
    for i in range(2):
        render(world_record(0, "train", i), 40).save(tmp_path / "photos" / f"{i}.png")
    line = {"id": "mine", "messages": [
        {"role": "user", "content": [{"type": "text", "text": "Look!"},
                                     {"type": "image", "path": "photos/0.png"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Me too:"},
                                          {"type": "image", "path": "photos/1.png"}]},
    ]}  # fmt: skip
    path = tmp_path / "chats.jsonl"
    path.write_text(json.dumps(line) + "\n\n" + json.dumps({**line, "id": "two"}) + "\n")
    data = sd.load_chats(path)
    assert [c["id"] for c in data.chats] == ["mine", "two"] and len(data.images) == 4
    svq = StyledVAEVQ.load(parts["svq"], require_codebook=True)
    images = sd.encode_images(data, svq, None, tmp_path / "cache")
    assert images.vq_ids is None and images.features.shape == (4, 36, 16)
    assert torch.equal(images.features[0], images.features[2])  # same file, same features
    (tmp_path / "bad.jsonl").write_text(
        '{"messages": [{"role": "user", "content": [{"type": "image", "path": "nope.png"}]}]}\n'
    )
    with pytest.raises(FileNotFoundError, match=r"nope\.png"):
        sd.load_chats(tmp_path / "bad.jsonl")


# --- runs ----------------------------------------------------------------------------------


def test_two_steps_write_a_loadable_model_and_records(tmp_path, parts):
    out = tmp_path / "run"
    summary = run(out, parts, "--report_to", "tensorboard")
    assert summary["steps"] == 2 and summary["dialogues_seen"] == 4
    assert summary["lm_loss"] > 0 and summary["vq_loss"] > 0
    assert json.loads((out / "summary.json").read_text()) == summary
    validation = summary["validation"]
    for name in ("generation_following", "identity_vs_persona", "understanding_accuracy"):
        assert name in validation
    report = json.loads((out / "chat_eval.json").read_text())
    assert report["dialogues"] == 2 and len(report["transcripts"]) == 2
    chat = SVQChat.from_pretrained(out / "model")
    assert chat.config.image_decoder == "vq_head" and chat.vq_head is not None
    reply = chat.chat([{"role": "user", "content": "Hi"}], max_new_tokens=4)
    assert reply["role"] == "assistant"
    assert list((out / "logs").rglob("events.out.tfevents.*"))
    resolved = yaml.safe_load((out / "options.yaml").read_text())
    assert resolved["llm"] == "tiny" and resolved["resolved"]["train_dialogues"] == 8
    assert [s for s, _ in common.checkpoints(out)] == [1, 2]
    # a second run in a new folder reads the same cache; its loss weights reach the model
    run(tmp_path / "again", parts, "--cache_dir", str(out / "image_cache"), "--max_steps", "1",
        "--num_val_dialogues", "0", "--image_token_loss_weight", "0.25",
        "--image_decoder", "svq", "--code_target_temperature", "0.5")  # fmt: skip
    again = yaml.safe_load((tmp_path / "again" / "options.yaml").read_text())["resolved"]
    assert again["cache_reused"] is True
    loaded = SVQChat.from_pretrained(tmp_path / "again" / "model")
    saved = loaded.config
    assert saved.image_token_loss_weight == 0.25 and chat.config.image_token_loss_weight == 1.0
    assert saved.image_decoder == "svq" and loaded.vq_head is not None  # the head still trains
    assert saved.code_target_temperature == 0.5 and chat.config.code_target_temperature == 0
    with pytest.raises(ValueError, match="image_decoder must be"):
        options(tmp_path / "bad", parts, "--image_decoder", "spatial")
    with pytest.raises(ValueError, match="the spatial baseline paints"):
        options(tmp_path / "bad", parts, "--image_decoder", "svq", "--image_tokenizer", "spatial")
    with pytest.raises(ValueError, match="loss weights"):
        options(tmp_path / "bad", parts, "--image_token_loss_weight", "-1")
    with pytest.raises(ValueError, match="code_target_temperature must be >= 0"):
        options(tmp_path / "bad", parts, "--code_target_temperature", "-1")
    with pytest.raises(ValueError, match="code_target_temperature is the svq route's"):
        options(tmp_path / "bad", parts, "--code_target_temperature", "1",
                "--image_tokenizer", "spatial")  # fmt: skip
    with pytest.raises(ValueError, match="opening_season must be one of"):
        options(tmp_path / "bad", parts, "--opening_season", "spring")


FLAGS = ("--max_steps", "4", "--save_steps", "2", "--num_val_dialogues", "0",
         "--gradient_accumulation_steps", "2")  # fmt: skip


@pytest.mark.parametrize("grouped", ["false", "true"])
def test_resume_equals_an_uninterrupted_run(tmp_path, parts, monkeypatch, grouped):
    flags = (*FLAGS, "--group_by_length", grouped)
    run(tmp_path / "straight", parts, *flags)
    with killed_after_checkpoint(monkeypatch, 2):
        run(tmp_path / "resumed", parts, *flags)
    with pytest.raises(FileExistsError, match="resume"):
        run(tmp_path / "resumed", parts, *flags)
    summary = run(tmp_path / "resumed", parts, *flags, "--resume")
    assert summary["steps"] == 4
    a = load_file(common.step_folder(tmp_path / "straight", 4) / "model.safetensors")
    b = load_file(common.step_folder(tmp_path / "resumed", 4) / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_a_nan_loss_stops_and_keeps_the_last_checkpoint(tmp_path, parts, monkeypatch):
    real = llm_sft.sft_loss
    calls = []

    def nan_at_third(output):
        calls.append(1)
        terms = real(output)
        if len(calls) == 3:
            terms["loss"] = terms["loss"] * float("nan")
        return terms

    monkeypatch.setattr(llm_sft, "sft_loss", nan_at_third)
    out = tmp_path / "run"
    with pytest.raises(common.NonFiniteLossError, match="at step 3"):
        run(out, parts, "--max_steps", "4", "--num_val_dialogues", "0")
    assert [s for s, _ in common.checkpoints(out)] == [1, 2] and not (out / "model").exists()


def test_serial_spatial_baseline(tmp_path, parts):
    out = tmp_path / "base"
    summary = run(out, parts, "--image_tokenizer", "spatial", "--max_steps", "1",
                  "--eval_max_new_tokens", "24")  # fmt: skip
    assert summary["vq_loss"] is None
    chat = SVQChat.from_pretrained(out / "model")
    assert chat.vq_head is None and chat.vocab.num_positions == 16 and chat.vocab.num_codes == 64
    assert chat.config.image_tokenizer == "spatial" and chat.config.image_decoder == "spatial"
    reply = chat.chat(
        [{"role": "user", "content": "Show me"}], max_new_tokens=18,
        sequence_bias={(chat.vocab.boi_id,): 100.0},
    )  # fmt: skip
    picture = reply["content"][0]
    assert picture["type"] == "image" and picture["image"].size == (16, 16)
    assert picture["ids"].shape == (16,)


def test_two_cpu_processes_with_torchrun(tmp_path, parts):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    torchrun = Path(sys.executable).parent / "torchrun"
    command = [str(torchrun), "--standalone", "--nproc_per_node", "2",
               str(ROOT / "svq" / "train" / "llm_sft.py"), TINY, "--output_dir", str(out),
               "--svq_path", str(parts["svq"]), "--spatial_vq_path", str(parts["spatial"]),
               "--num_val_dialogues", "0", "--save_steps", "2",
               "--describe_per_step", "1",  # two forward passes a step under DDP
               "--group_by_length", "true"]  # grouped batches dealt to two  # fmt: skip
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stderr[-3000:]
    resolved = yaml.safe_load((out / "options.yaml").read_text())["resolved"]
    assert resolved["processes"] == 2 and resolved["global_batch"] == 4
    checkpoint = common.step_folder(out, 2)
    assert {p.name for p in checkpoint.glob("random_states_*.pkl")} == {
        "random_states_0.pkl",
        "random_states_1.pkl",
    }
    assert SVQChat.from_pretrained(out / "model").vq_head is not None


def test_lora_mode_on_a_local_llm_folder(tmp_path, parts):
    from svq.llm.tiny import save_tiny_llm

    folder = save_tiny_llm(tmp_path / "qwen-like", num_dialogues=60)
    out = tmp_path / "lora"
    summary = run(out, parts, "--llm", str(folder), "--mode", "lora", "--lora_r", "4",
                  "--max_steps", "2", "--num_val_dialogues", "1",
                  "--eval_max_new_tokens", "8")  # fmt: skip
    assert summary["steps"] == 2 and summary["lm_loss"] > 0
    assert (out / "model" / "adapter").is_dir()
    chat = SVQChat.from_pretrained(out / "model")
    assert chat.config.mode == "lora" and chat.vq_head is not None
    resolved = yaml.safe_load((out / "options.yaml").read_text())["resolved"]
    total = sum(p.numel() for p in chat.parameters())
    assert 0 < resolved["trainable_parameters"] < total  # adapter, new rows, projector, head
