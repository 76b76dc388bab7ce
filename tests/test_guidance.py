"""Classifier-free guidance of the pictures (svq.llm.guidance) and its unconditional branch,
bare pictures (svq.llm.bare_pictures): the processor by hand, generate with it, the bare chats
and the SFT options that train and save them."""

from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml
from test_llm_sft import options, parts, run  # noqa: F401  (parts: the module's fixture)
from test_llm_tiny import build_chat, conversation

from svq.llm import IGNORE_INDEX, SVQChat, SVQChatConfig, collate
from svq.llm import sft_data as sd
from svq.llm.bare_pictures import BarePictureDataset, assistant_pictures, encode_bare_picture
from svq.llm.guidance import ImageGuidance
from svq.llm.logits import ImageSpanLogitsProcessor
from svq.train import llm_sft


@pytest.fixture(scope="module")
def chat():
    return build_chat()


def test_a_bare_picture_is_its_span_alone(chat):
    """<boi> + the N code tokens + <eoi>, no chat markup; the codes and <eoi> labelled; the
    picture written (its code ids and places) with its VQ-head targets."""
    ids = torch.arange(36) % chat.vocab.num_codes
    item = encode_bare_picture(ids, chat.vocab, torch.arange(16))
    assert item.input_ids.tolist() == chat.vocab.span(ids)
    assert item.labels[0] == IGNORE_INDEX and torch.equal(item.labels[1:], item.input_ids[1:])
    assert torch.equal(item.input_ids[item.code_positions[0]], chat.vocab.codes_to_tokens(ids))
    assert torch.equal(item.code_ids[0], ids) and item.vq_targets.tolist() == [list(range(16))]
    assert item.image_features is None and item.image_positions.shape == (0, 36)
    batch = collate([item, chat.encode(conversation(3))], chat.tokenizer.pad_token_id)
    with torch.no_grad():
        assert torch.isfinite(chat(batch).loss)  # trains beside a chat in one batch


def test_guidance_by_hand(chat):
    """Rows writing a code: uncond + s * (cond - uncond) in log-probabilities, uncond the LLM
    on <boi> and the span's codes so far, nothing before; other rows (text, <eoi> next) untouched;
    masked tokens stay masked; scale 1 changes nothing."""
    vocab = chat.vocab
    text = chat.tokenizer("Here I am.")["input_ids"]
    codes = vocab.codes_to_tokens(torch.tensor([3, 1, 4] + [0] * 33)).tolist()
    rows = [
        [*text, vocab.boi_id, *codes[:3]],  # three codes written
        text[:2] + text + [vocab.boi_id],  # none written
        text + text[:3] + text[:1],  # outside a span
        [vocab.boi_id, *codes],  # 36 written: <eoi> next
    ]
    width = max(len(r) for r in rows)
    input_ids = torch.tensor([[0] * (width - len(r)) + r for r in rows])  # left-padded
    size = chat.llm.get_output_embeddings().weight.shape[0]  # the logits' width
    g = torch.Generator().manual_seed(0)
    scores = ImageSpanLogitsProcessor(vocab)(input_ids, torch.randn(4, size, generator=g))
    guided = ImageGuidance(chat.llm, vocab, 3.0)(input_ids, scores.clone())
    with torch.no_grad():
        for row, written in ((0, codes[:3]), (1, [])):
            bare = torch.tensor([[vocab.boi_id, *written]])
            uncond = chat.llm(input_ids=bare).logits[0, -1].float().log_softmax(-1)
            cond = scores[row].log_softmax(-1)
            expected = uncond + 3.0 * (cond - uncond)
            finite = torch.isfinite(scores[row])
            assert torch.equal(torch.isfinite(guided[row]), finite)
            torch.testing.assert_close(guided[row][finite], expected[finite])
    assert torch.equal(guided[2:], scores[2:])
    assert torch.equal(ImageGuidance(chat.llm, vocab, 1.0)(input_ids, scores), scores)
    with pytest.raises(ValueError, match="> 0"):
        ImageGuidance(chat.llm, vocab, 0.0)


def test_generate_with_guidance(chat):
    """Guided pictures are well formed (N valid codes); scale 1 is plain decoding; None takes
    the config's scale; the config refuses a scale <= 0."""
    prompts = [conversation(1)[:2], conversation(2, user_image=False)[:2]]

    def pictures(**kw):
        bias = {(chat.vocab.boi_id,): 100.0}  # the reply opens with a picture
        replies = chat.generate(
            prompts, max_new_tokens=40, image_decoder="svq", sequence_bias=bias, **kw
        )
        return [[p["ids"].tolist() for p in r["content"] if p["type"] == "image"] for r in replies]

    plain = pictures()
    assert pictures(image_guidance=1.0) == plain
    guided = pictures(image_guidance=4.0)
    assert all(len(row) == 1 and len(row[0]) == 36 for row in guided)
    assert all(0 <= c < chat.vocab.num_codes for row in guided for ids in row for c in ids)
    chat.config.image_guidance = 4.0
    try:
        assert pictures() == guided
    finally:
        chat.config.image_guidance = 1.0
    assert guided != plain  # the random tiny LLM's bare branch differs from its chats
    with pytest.raises(ValueError, match="image_guidance"):
        SVQChatConfig(vocabulary=chat.vocab.to_dict(), image_guidance=0.0)


@pytest.mark.parametrize("image_tokenizer", ["svq", "spatial"])
def test_bare_picture_dataset_one_item_per_assistant_picture(parts, image_tokenizer):  # noqa: F811
    data = sd.world_chats(0, "train", 4, "en")
    rows = assistant_pictures(data)
    drawn = [
        p[sd.IMAGE_INDEX] for c in data.chats for m in c["messages"]
        if m["role"] == "assistant" and not isinstance(m["content"], str)
        for p in m["content"] if p["type"] == "image"
    ]  # fmt: skip
    assert rows == drawn and len(rows) > 4
    flags = ["--image_tokenizer", image_tokenizer]
    chat = llm_sft.build_model(options(Path("unused"), parts, *flags))
    images = sd.encode_images(data, chat.svq, chat.spatial, None)
    dataset = BarePictureDataset(data, images, chat.vocab, image_tokenizer)
    assert len(dataset) == len(rows)
    for item, row in zip(dataset, rows, strict=True):
        written = images.ids[row] if image_tokenizer == "svq" else images.vq_ids[row]
        assert item.input_ids.tolist() == chat.vocab.span(written)
    with pytest.raises(ValueError, match="no assistant picture"):
        assistant_pictures(
            replace(data, chats=[{"id": "x", "messages": data.chats[0]["messages"][:2]}])
        )


def test_sft_trains_bare_pictures_and_saves_the_guidance(tmp_path, parts):  # noqa: F811
    with pytest.raises(ValueError, match="describe_bare_pictures adds to the per-step batch"):
        options(tmp_path / "bad", parts, "--describe_bare_pictures", "true")
    with pytest.raises(ValueError, match="no captions, drawn turns or bare pictures"):
        options(tmp_path / "bad", parts, "--describe_per_step", "2", "--describe_captions", "false")
    with pytest.raises(ValueError, match="set describe_bare_pictures"):
        options(tmp_path / "bad", parts, "--image_guidance", "2")
    with pytest.raises(ValueError, match="image_guidance must be > 0"):
        options(tmp_path / "bad", parts, "--image_guidance", "0")
    run(tmp_path / "run", parts, "--describe_per_step", "2", "--describe_captions", "false",
        "--describe_bare_pictures", "true", "--image_guidance", "2", "--max_steps", "1",
        "--num_val_dialogues", "1")  # fmt: skip
    resolved = yaml.safe_load((tmp_path / "run" / "options.yaml").read_text())
    assert resolved["describe_bare_pictures"] is True and resolved["describe_captions"] is False
    summary = yaml.safe_load((tmp_path / "run" / "summary.json").read_text())
    assert summary["validation"]["pictures_drawn"] is not None
    assert SVQChat.from_pretrained(tmp_path / "run" / "model").config.image_guidance == 2.0
