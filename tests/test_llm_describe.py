"""svq.llm.describe_data and the SFT's `describe_photos` / `describe_per_step`: each added chat
shows one of the chats' own pictures as features and labels its caption only; the pictures are
drawn without replacement; the image cache is shared; a run records the larger training set, or
trains on a second batch of captions each step."""

from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from test_llm_sft import options, parts, run  # noqa: F401  (parts: the module's fixture)

from svq.data import caption
from svq.data.dialogues import PHRASES, photo_answer
from svq.eval.chat_eval import score_answer
from svq.llm import IGNORE_INDEX
from svq.llm import sft_data as sd
from svq.llm.describe_data import DESCRIBE_PROMPTS, described_photos, with_described_photos
from svq.llm.drawn_turns import drawn_turns
from svq.train import llm_sft


def test_described_photos_read_a_picture_and_label_its_caption(parts):  # noqa: F811
    chat = llm_sft.build_model(options(Path("unused"), parts))
    data = sd.world_chats(0, "train", 3, "en")
    described = with_described_photos(data, 5, "en", seed=0)
    assert described.chats[:3] == data.chats and len(described.chats) == 8
    assert described.images is data.images and described.fingerprint == data.fingerprint
    images = sd.encode_images(described, chat.svq, chat.spatial, None)
    dataset = sd.SFTDataset(described, images, chat.tokenizer, chat.vocab)
    shown = []
    for row, item in zip(described.chats[3:], dataset.items[3:], strict=True):
        k = row["messages"][0]["content"][0][sd.IMAGE_INDEX]
        shown.append(k)
        assert item.code_ids.shape[0] == 0  # nothing written: the picture is read
        assert torch.equal(item.image_features[0], images.features[k])
        labelled = chat.tokenizer.decode(item.input_ids[item.labels != IGNORE_INDEX])
        assert caption(data.images[k], "en") in labelled
        assert DESCRIBE_PROMPTS["en"] not in labelled  # the question is not a label
    assert len(set(shown)) == 5  # without replacement
    assert shown != [c["messages"][0]["content"][0][sd.IMAGE_INDEX]
                     for c in with_described_photos(data, 5, "en", seed=1).chats[3:]]  # fmt: skip


def test_every_picture_and_mixed_languages_and_bad_counts():
    data = sd.world_chats(0, "train", 2, "en")
    every = with_described_photos(data, -1, "mixed", seed=0)
    added = every.chats[len(data.chats) :]
    assert len(added) == len(data.images)
    prompts = [m["messages"][0]["content"][1]["text"] for m in added]
    assert prompts.count(DESCRIBE_PROMPTS["zh"]) == len(added) // 4
    assert with_described_photos(data, 0) is data
    with pytest.raises(ValueError, match=r"describe count must be -1 or 1\.\."):
        with_described_photos(data, len(data.images) + 1)
    with pytest.raises(ValueError, match="lang must be"):
        with_described_photos(data, 1, "fr")
    files = replace(data, images=[Path("me.png")] * len(data.images))  # a chat file's pictures
    with pytest.raises(ValueError, match="need world pictures"):
        with_described_photos(files, -1)


def test_a_run_with_described_photos_trains_on_them(tmp_path, parts):  # noqa: F811
    run(tmp_path / "run", parts, "--describe_photos", "4", "--max_steps", "1",
        "--num_val_dialogues", "0")  # fmt: skip
    resolved = yaml.safe_load((tmp_path / "run" / "options.yaml").read_text())
    assert resolved["describe_photos"] == 4
    assert resolved["resolved"]["train_dialogues"] == 8 + 4  # llm_sft_tiny's 8 chats + 4
    with pytest.raises(ValueError, match="describe_photos must be >= -1"):
        options(tmp_path / "bad", parts, "--describe_photos", "-2")


def test_described_photos_added_to_each_step(tmp_path, parts):  # noqa: F811
    """`describe_per_step`: a second batch of captions each step, the dialogues unchanged: with
    its loss weighted 0 the weights are the plain run's bit for bit; weighted 1 they move."""
    data = sd.world_chats(0, "train", 2, "en")
    only = described_photos(data, -1, "en", seed=0)
    assert only.images is data.images and len(only.chats) == len(data.images)
    assert only.chats == with_described_photos(data, -1, "en", seed=0).chats[len(data.chats) :]
    with pytest.raises(ValueError, match=r"describe count must be -1 or 1\.\."):
        described_photos(data, 0)
    # with the world's when_first the captions say the scene as the answers do: season first
    first = described_photos(data, -1, "en", seed=0, when_first=True)
    for plain, told in zip(only.chats, first.chats, strict=True):
        record = data.images[plain["messages"][0]["content"][0][sd.IMAGE_INDEX]]
        said = told["messages"][1]["content"]
        assert said == caption(record, "en", when_first=True) != plain["messages"][1]["content"]

    def trained(name, *extra):
        summary = run(tmp_path / name, parts, "--max_steps", "2", "--num_val_dialogues", "0",
                      *extra)  # fmt: skip
        return summary, load_file(str(tmp_path / name / "model" / "llm" / "model.safetensors"))

    plain, plain_weights = trained("plain")
    zero, zero_weights = trained("zero", "--describe_per_step", "2", "--describe_loss_weight", "0")
    added, added_weights = trained("added", "--describe_per_step", "2")
    assert plain["describe_loss"] is None and zero["describe_loss"] > 0
    assert added["dialogues_seen"] == plain["dialogues_seen"]
    assert all(torch.equal(zero_weights[k], v) for k, v in plain_weights.items())
    assert not all(torch.equal(added_weights[k], v) for k, v in plain_weights.items())
    with pytest.raises(ValueError, match="describe_per_step and describe_loss_weight must be"):
        options(tmp_path / "bad", parts, "--describe_per_step", "-1")


def test_described_photos_may_ask_the_worlds_photo_questions(tmp_path, parts):  # noqa: F811
    """`questions`: that share of the chats asks a world photo question in the dialogues' form
    and labels its true answer; at 0 the chats are the captions as before."""
    data = sd.world_chats(0, "train", 12, "en")  # ~40 pictures
    captions = described_photos(data, -1, "en", seed=0)
    assert described_photos(data, -1, "en", seed=0, questions=0.0).chats == captions.chats
    asked = described_photos(data, -1, "en", seed=0, questions=1.0).chats
    assert sorted(c["messages"][0]["content"][1][sd.IMAGE_INDEX] for c in asked) == sorted(
        c["messages"][0]["content"][0][sd.IMAGE_INDEX] for c in captions.chats
    )  # the same pictures, each once
    topics = set()
    for chat in asked:
        share, photo, question = chat["messages"][0]["content"]
        assert share["text"] in PHRASES["en"]["share"] and photo["type"] == "image"
        topic = next(t for t, q in PHRASES["en"]["questions"].items() if q == question["text"])
        topics.add(topic)
        record = data.images[photo[sd.IMAGE_INDEX]]
        answer = chat["messages"][1]["content"]
        assert answer == photo_answer(topic, record, "en")
        if topic in ("season", "time_of_day", "place", "activity"):
            assert score_answer(topic, answer, record.attributes()) == 1.0  # the truth
    assert len(topics) >= 7  # of the world's 9: topics drawn, not one
    half = described_photos(data, -1, "en", seed=0, questions=0.5).chats
    kinds = [c["id"].split("-")[0] for c in half]
    assert 0 < kinds.count("asked") < len(half) and kinds.count("describe") > 0
    with pytest.raises(ValueError, match="questions must be a share"):
        described_photos(data, -1, questions=1.5)
    with pytest.raises(ValueError, match="describe_questions must be in"):
        options(tmp_path / "bad", parts, "--describe_questions", "-0.1")
    run(tmp_path / "run", parts, "--describe_per_step", "2", "--describe_questions", "0.5",
        "--max_steps", "1", "--num_val_dialogues", "0")  # fmt: skip
    resolved = yaml.safe_load((tmp_path / "run" / "options.yaml").read_text())
    assert resolved["describe_questions"] == 0.5


def test_drawn_turns_cut_out_every_picture_reply(tmp_path, parts):  # noqa: F811
    """Each excerpt: the chat's system prompt, the user's message, the assistant's reply with
    its picture, as in the dialogue; the image table is the chats'."""
    data = sd.world_chats(0, "train", 4, "en", opening_season="same", asked_first=True)
    turns = drawn_turns(data)
    assert turns.images is data.images and turns.fingerprint == data.fingerprint
    expected = [
        (c, i) for c in data.chats for i, m in enumerate(c["messages"])
        if m["role"] == "assistant" and not isinstance(m["content"], str)
        and any(p["type"] == "image" for p in m["content"])
    ]  # fmt: skip
    assert len(turns.chats) == len(expected) > 4
    for excerpt, (chat, i) in zip(turns.chats, expected, strict=True):
        system, user, reply = excerpt["messages"]
        assert system == chat["messages"][0] and system["role"] == "system"
        assert user == chat["messages"][i - 1] and reply == chat["messages"][i]
    chat = llm_sft.build_model(options(Path("unused"), parts))
    images = sd.encode_images(turns, chat.svq, chat.spatial, None)
    dataset = sd.SFTDataset(turns, images, chat.tokenizer, chat.vocab)
    for item, excerpt in zip(dataset.items, turns.chats, strict=True):  # its pictures written
        drawn = [p for p in excerpt["messages"][2]["content"] if p["type"] == "image"]
        assert item.code_ids.shape[0] == len(drawn) >= 1
    with pytest.raises(ValueError, match="no assistant picture"):
        drawn_turns(replace(data, chats=[{"id": "x", "messages": data.chats[0]["messages"][:2]}]))
    with pytest.raises(ValueError, match="set describe_per_step"):
        options(tmp_path / "bad", parts, "--describe_drawn_turns", "true")
    run(tmp_path / "run", parts, "--describe_per_step", "2", "--describe_drawn_turns", "true",
        "--max_steps", "1", "--num_val_dialogues", "0")  # fmt: skip
    resolved = yaml.safe_load((tmp_path / "run" / "options.yaml").read_text())
    assert resolved["describe_drawn_turns"] is True
