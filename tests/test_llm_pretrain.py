"""svq.llm.pretrain_data and the pre-training phase of svq.train.llm_sft: text dialogues keep the
talk and leave the pictures out, caption turns carry their picture's ids after its caption,
every token is a label, and a run with `pretrain_steps` trains, records it and resumes without
pre-training again."""

from pathlib import Path

import torch
from test_llm_sft import options, parts, run  # noqa: F401  (parts: the module's fixture)

from svq.data import caption
from svq.llm import IGNORE_INDEX
from svq.llm import sft_data as sd
from svq.llm.pretrain_data import PretrainDataset, text_chats
from svq.train import common, llm_sft


def test_text_chats_keep_the_talk_and_leave_the_pictures_out():
    chats = text_chats(0, 8, "mixed")
    data = sd.world_chats(0, "train", 8, "mixed")
    assert len(chats) == 8 and any("你" in m["content"] for c in chats for m in c)
    for text, chat in zip(chats, data.chats, strict=True):
        assert [m["role"] for m in text] == [m["role"] for m in chat["messages"]]
        for plain, message in zip(text, chat["messages"], strict=True):
            assert isinstance(plain["content"], str)
            for part in message["content"]:
                if part["type"] == "text":
                    assert part["text"] in plain["content"]


def test_caption_turns_and_every_token_a_label(parts):  # noqa: F811
    chat = llm_sft.build_model(options(Path("unused"), parts))
    data = sd.world_chats(0, "train", 3, "en")
    images = sd.encode_images(data, chat.svq, chat.spatial, None)
    text = text_chats(0, 2, "en")
    dataset = PretrainDataset(
        text, data, images, chat.tokenizer, chat.vocab, langs=("en", "zh"), num_captions=4
    )
    assert (dataset.num_text, dataset.num_captions, len(dataset)) == (2, 4, 6)
    tok = chat.tokenizer
    for item in dataset.items:
        assert bool((item.labels == item.input_ids).all())  # every token is a label
        assert not bool((item.labels == IGNORE_INDEX).any())
    for item in dataset.items[:2]:  # text: no picture
        assert item.code_ids.shape[0] == 0 and item.image_features is None
    for n, item in enumerate(dataset.items[2:]):  # picture n after its caption, en then zh
        assert torch.equal(item.code_ids[0], images.ids[n])
        assert torch.equal(item.vq_targets[0], images.vq_ids[n])
        words = caption(data.images[n], ("en", "zh")[n % 2])
        first_code = int(item.code_positions[0, 0])
        assert words[:20] in tok.decode(item.input_ids[:first_code])


def test_a_run_with_pretraining_records_it_and_resume_skips_it(tmp_path, parts):  # noqa: F811
    flags = ("--pretrain_steps", "3", "--pretrain_dialogues", "6", "--pretrain_batch_size", "2",
             "--num_val_dialogues", "0")  # fmt: skip
    summary = run(tmp_path / "run", parts, *flags)
    assert summary["pretrain_steps"] == 3 and summary["pretrain_lm_loss"] > 0
    assert summary["pretrain_examples"]["text"] == 6
    assert summary["pretrain_examples"]["captions"] > 0  # the SFT's pictures, captioned
    plain = run(tmp_path / "plain", parts, "--num_val_dialogues", "0")
    assert "pretrain_steps" not in plain and plain["lm_loss"] != summary["lm_loss"]
    # resuming a finished run's last checkpoint does not pre-train again
    again = run(tmp_path / "run", parts, *flags, "--resume", "--max_steps", "3")
    assert again["steps"] == 3 and "pretrain_steps" not in again
    assert [s for s, _ in common.checkpoints(tmp_path / "run")] == [2, 3]


def test_the_serial_baseline_captions_its_pictures_with_spatial_ids(parts):  # noqa: F811
    o = options(Path("unused"), parts, "--image_tokenizer", "spatial")
    chat = llm_sft.build_model(o)
    data = sd.world_chats(0, "train", 2, "en")
    images = sd.encode_images(data, chat.svq, chat.spatial, None)
    dataset = PretrainDataset(
        [], data, images, chat.tokenizer, chat.vocab, num_captions=2, image_tokenizer="spatial"
    )
    for n, item in enumerate(dataset.items):
        assert torch.equal(item.code_ids[0], images.vq_ids[n]) and item.vq_targets is None
