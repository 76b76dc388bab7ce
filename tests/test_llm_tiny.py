"""The from-scratch tiny LLM and its sentencepiece tokenizer; also the shared builders of the
other test_llm_* modules (cached per process: the tokenizer is trained once)."""

import copy
import functools
import io

import pytest
import sentencepiece as spm
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from svq import StyledVAEVQ, SVQConfig
from svq.codebook import Codebook
from svq.llm import SVQChat, load_llm, load_tokenizer
from svq.llm.tiny import (
    QWEN_CHAT_TEMPLATE,
    chat_world_corpus,
    save_tiny_llm,
    tiny_config,
    tiny_llm,
    train_tokenizer,
    wrap_sentencepiece,
)
from svq.spatial_vq import SpatialVQ, SpatialVQConfig

SMALL_HEAD = {"width": 32, "depth": 1, "heads": 2}


# --- shared builders (other modules import these)
@functools.cache
def _corpus() -> tuple[str, ...]:
    return tuple(chat_world_corpus(num_dialogues=200))


@functools.cache
def _tokenizer():
    return train_tokenizer(list(_corpus()))


def tokenizer():
    """A fresh copy of the tiny tokenizer (building an SVQChat extends it in place)."""
    return copy.deepcopy(_tokenizer())


def svq_model(num_codes: int = 32, per_position: bool = False, seed: int = 0) -> StyledVAEVQ:
    """The tiny svq tokenizer (32 px, 36 x 16 features) with a random codebook attached."""
    torch.manual_seed(seed)
    model = StyledVAEVQ(SVQConfig.from_preset("tiny")).eval()
    shape = (36, num_codes, 16) if per_position else (num_codes, 16)
    model.codebook = Codebook.from_codes(torch.randn(shape))
    return model


def spatial_model(seed: int = 0) -> SpatialVQ:
    """The tiny spatial VQ: 16 px, a 4 x 4 grid over 64 codes."""
    torch.manual_seed(seed)
    return SpatialVQ(SpatialVQConfig.from_preset("tiny")).eval()


def build_chat(num_codes=32, per_position=False, spatial=True) -> SVQChat:
    """A full-mode SVQChat on the test-sized Qwen2, with a small VQ head if `spatial`."""
    tok = tokenizer()
    return SVQChat.build(
        tiny_llm(tok),
        svq_model(num_codes, per_position),
        spatial_model() if spatial else None,
        tokenizer=tok,
        vq_head=SMALL_HEAD if spatial else None,
    ).eval()


def conversation(seed: int = 0, user_image: bool = True, assistant_image: bool = True):
    """A chat with resolved pictures: a user photo as features, an assistant photo as ids
    (with spatial VQ targets for the tiny spatial VQ's 4 x 4 grid of 64 codes)."""
    g = torch.Generator().manual_seed(seed)
    user = [{"type": "text", "text": "I went to Huangshan in autumn."}]
    if user_image:
        user.append({"type": "image", "features": torch.randn(36, 16, generator=g)})
        user.append({"type": "text", "text": "Is there a sea of clouds?"})
    reply = [{"type": "text", "text": "Yes! Here I am skiing."}]
    if assistant_image:
        reply.append(
            {"type": "image", "ids": torch.randint(0, 32, (36,), generator=g),
             "vq_ids": torch.randint(0, 64, (16,), generator=g)}
        )  # fmt: skip
    return [
        {"role": "system", "content": "You are Lin, a traveller."},
        {"role": "user", "content": user},
        {"role": "assistant", "content": reply},
    ]


def train(chat: SVQChat, batch, steps: int = 4, lr: float = 5e-2) -> list[float]:
    """A few AdamW steps on `chat.forward(batch).loss`; returns the losses."""
    params = [p for p in chat.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    chat.train()
    losses = []
    for _ in range(steps):
        loss = chat(batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    chat.eval()
    return losses


# --- tests of svq.llm.tiny
def test_fast_tokenizer_matches_sentencepiece():
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_corpus()),
        model_writer=model,
        vocab_size=600,
        hard_vocab_limit=False,
        normalization_rule_name="identity",
        add_dummy_prefix=False,
        remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True,
        byte_fallback=True,
        character_coverage=1.0,
        unk_id=0,
        bos_id=-1,
        eos_id=-1,
        pad_id=-1,
        num_threads=1,
        minloglevel=2,
    )
    reference = spm.SentencePieceProcessor(model_proto=model.getvalue())
    fast = wrap_sentencepiece(model.getvalue())
    texts = [
        "I went to Huangshan in autumn, it was beautiful.",
        "user\nWow,  two  spaces\nand a newline",
        "我冬天去了黄山，还去滑雪了！",
        "unseen: ÆØÅ 🙂 Zürich",
    ]
    for text in texts:
        ids = fast.encode(text, add_special_tokens=False)
        assert ids == reference.encode(text)
        assert fast.decode(ids) == text  # byte fallback: nothing is lost


def test_tokenizer_specials_and_template():
    tok = tokenizer()
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    ids = tok.encode("<|im_start|>user\nhi<|im_end|>", add_special_tokens=False)
    assert ids[0] == tok.convert_tokens_to_ids("<|im_start|>")
    assert ids[-1] == tok.eos_token_id
    text = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    )
    assert tok.chat_template == QWEN_CHAT_TEMPLATE


def test_tiny_config_has_spare_rows_and_is_tied():
    tok = tokenizer()
    config = tiny_config(tok)
    assert config.vocab_size > len(tok) and config.vocab_size % 64 == 0
    model = tiny_llm(tok)
    assert model.get_input_embeddings().weight is model.get_output_embeddings().weight
    assert model.generation_config.eos_token_id == tok.eos_token_id
    with pytest.raises(ValueError, match="unknown preset"):
        tiny_config(tok, "huge")
    with pytest.raises(ValueError, match="vocab_size"):
        tiny_config(tok, vocab_size=8)


def test_demo_variants_change_only_their_one_thing():
    """demo8: the demo shape 8 layers deep; demo-untied: its output layer apart (and a chat
    built on it keeps the two apart, each with the image rows)."""
    tok = tokenizer()
    demo, deep = tiny_config(tok, "demo").to_dict(), tiny_config(tok, "demo8").to_dict()
    untied = tiny_config(tok, "demo-untied").to_dict()
    assert {k for k in demo if demo[k] != deep[k]} == {"num_hidden_layers", "layer_types"}
    assert deep["num_hidden_layers"] == 2 * demo["num_hidden_layers"]
    assert {k for k in demo if demo[k] != untied[k]} == {"tie_word_embeddings"}
    chat = SVQChat.build(tiny_llm(tok, "demo-untied"), svq_model(32, False), None, tokenizer=tok)
    inputs, outputs = chat.llm.get_input_embeddings(), chat.llm.get_output_embeddings()
    assert inputs.weight is not outputs.weight
    assert inputs.weight.shape == outputs.weight.shape
    assert inputs.weight.shape[0] > max(chat.vocab.new_token_ids)


def test_saved_tiny_llm_loads_from_its_folder_and_builds_a_chat(tmp_path):
    path = save_tiny_llm(tmp_path / "tiny", num_dialogues=60)
    original = train_tokenizer(chat_world_corpus(60))
    tok = load_tokenizer(path)
    text = "I went skiing at Changbai mountain.\n我冬天去了黄山！"
    ids = tok.encode(text, add_special_tokens=False)
    assert ids == original.encode(text, add_special_tokens=False)  # read exactly as saved
    assert tok.decode(ids) == text and tok.chat_template == QWEN_CHAT_TEMPLATE
    model = AutoModelForCausalLM.from_pretrained(str(path)).eval()
    with torch.no_grad():
        expected = model(input_ids=torch.tensor([ids])).logits
    chat = SVQChat.build(str(path), svq_model(), None).eval()  # loads both the same way
    with torch.no_grad():
        got = chat.llm(input_ids=torch.tensor([ids])).logits
    n = len(tok)  # the original vocabulary: spare rows past it now hold image tokens
    assert len(chat.tokenizer) > n
    torch.testing.assert_close(got[..., :n], expected[..., :n], rtol=0, atol=0)


def test_load_llm_names_weights_that_do_not_match(tmp_path):
    path = save_tiny_llm(tmp_path / "tiny", num_dialogues=30)
    state = load_file(path / "model.safetensors")
    del state["model.norm.weight"]
    save_file(state, path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"missing_keys.*model\.norm\.weight"):
        load_llm(path)
