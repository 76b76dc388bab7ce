"""LoRA with trainable image-token rows: only the new rows and the adapter train, tied
embeddings stay tied through training, saving, reloading and merging; full fine-tuning saves
and reloads too."""

import pytest
import torch
from peft import PeftModel
from test_llm_tiny import build_chat, conversation, svq_model, tokenizer, train
from transformers import Qwen2ForCausalLM

from svq.llm import LoraOptions, SVQChat, collate
from svq.llm.lora import lora_config
from svq.llm.tiny import tiny_config, tiny_llm

LORA = LoraOptions(r=4, alpha=8, dropout=0.0)
# peft 0.21 reads a property transformers 5.x deprecated; nothing for us to change
pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing`:FutureWarning")


def _batch(chat):
    items = [chat.encode(conversation(0)), chat.encode(conversation(1, user_image=False))]
    return collate(items, chat.tokenizer.pad_token_id)


def _text_logits(llm, tok, n):
    ids = torch.tensor([tok.encode("I went to Huangshan in autumn.", add_special_tokens=False)])
    with torch.no_grad():
        return llm(input_ids=ids).logits[..., :n]


def test_text_logits_unchanged_by_extension_and_lora():
    tok = tokenizer()
    n = len(tok)
    llm = tiny_llm(tok)
    before = _text_logits(llm, tok, n)
    chat = SVQChat.build(llm, svq_model(), tokenizer=tok, lora=LORA).eval()
    assert isinstance(chat.llm, PeftModel)
    torch.testing.assert_close(_text_logits(chat.llm, tok, n), before, rtol=0, atol=0)


def test_only_adapter_and_new_rows_train():
    chat = build_chat()
    config = lora_config(chat.llm, chat.vocab, LORA)
    assert config.modules_to_save is None  # no full copy of the embedding matrices
    chat.enable_lora(LORA)
    trainable = {n: p for n, p in chat.llm.named_parameters() if p.requires_grad}
    rows = [p for n, p in trainable.items() if "trainable_tokens_delta" in n]
    assert len(rows) == 1  # one set of rows: the lm_head reads the same (tied) rows
    assert rows[0].shape == (len(chat.vocab.new_token_ids), 64)
    assert all("lora_" in n or "trainable_tokens" in n for n in trainable)
    assert not any(p.requires_grad for p in chat.svq.parameters())
    chat.train()  # the frozen tokenizers stay in eval mode (no noise, no token dropout)
    assert chat.llm.training and chat.projector.training
    assert not chat.svq.training and not chat.spatial.training


def _rows(llm):
    """(input, output) embedding weights as the model uses them (peft: with the trained rows)."""
    return llm.get_input_embeddings().weight.detach(), llm.get_output_embeddings().weight.detach()


def test_lora_training_keeps_tie_trains_new_rows_and_merges():
    chat = build_chat()
    n_original = chat.vocab.boi_id
    initial, _ = _rows(chat.llm)
    initial = initial.clone()
    chat.enable_lora(LORA)
    batch = _batch(chat)
    losses = train(chat, batch, steps=5)
    assert losses[-1] < losses[0]
    inp, out = _rows(chat.llm)
    torch.testing.assert_close(inp, out, rtol=0, atol=0)  # tied while training
    new = chat.vocab.new_token_ids
    assert bool((inp[new] != initial[new]).any(1).all())  # every new row moved
    assert torch.equal(inp[:n_original], initial[:n_original])
    with torch.no_grad():
        expected = chat(batch).logits
    chat.merge_lora()
    assert not isinstance(chat.llm, PeftModel)
    merged_in = chat.llm.get_input_embeddings().weight
    assert merged_in is chat.llm.get_output_embeddings().weight  # still one tensor
    assert torch.equal(merged_in[new], inp[new])
    assert torch.equal(merged_in[:n_original], initial[:n_original])
    with torch.no_grad():
        torch.testing.assert_close(chat(batch).logits, expected, rtol=1e-5, atol=1e-5)


def test_untied_lora_trains_rows_of_both_matrices():
    tok = tokenizer()
    llm = Qwen2ForCausalLM(tiny_config(tok, tie_word_embeddings=False)).eval()
    chat = SVQChat.build(llm, svq_model(), tokenizer=tok).eval()
    n_original = chat.vocab.boi_id
    inp0, out0 = (w.clone() for w in _rows(chat.llm))
    chat.enable_lora(LORA)
    train(chat, _batch(chat), steps=3)
    inp, out = _rows(chat.llm)
    codes = list(chat.vocab.code_token_range)
    assert bool((inp[codes] != inp0[codes]).any(1).any())  # input rows of the written codes
    assert bool((out[codes] != out0[codes]).any(1).all())  # every output row (softmax)
    assert torch.equal(inp[:n_original], inp0[:n_original])
    assert torch.equal(out[:n_original], out0[:n_original])
    chat.merge_lora()
    merged_in, merged_out = _rows(chat.llm)
    assert merged_in.data_ptr() != merged_out.data_ptr()
    assert torch.equal(merged_in, inp) and torch.equal(merged_out, out)


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_save_load_gives_identical_outputs(tmp_path, mode):
    chat = build_chat()
    if mode == "lora":
        chat.enable_lora(LORA)
    batch = _batch(chat)
    train(chat, batch, steps=2)
    messages = conversation(2)[:2]
    torch.manual_seed(0)
    before = chat.chat(messages, max_new_tokens=45, sequence_bias={(chat.vocab.boi_id,): 9.0})
    with torch.no_grad():
        logits = chat(batch).logits
    chat.save_pretrained(tmp_path / "chat")
    loaded = SVQChat.from_pretrained(tmp_path / "chat")
    assert loaded.config == chat.config
    assert isinstance(loaded.llm, PeftModel) == (mode == "lora")
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch).logits, logits, rtol=0, atol=0)
    torch.manual_seed(0)
    after = loaded.chat(messages, max_new_tokens=45, sequence_bias={(loaded.vocab.boi_id,): 9.0})
    assert [p["type"] for p in after["content"]] == [p["type"] for p in before["content"]]
    assert "image" in [p["type"] for p in after["content"]]
    for a, b in zip(after["content"], before["content"], strict=True):
        if a["type"] == "image":
            assert torch.equal(a["ids"], b["ids"]) and a["image"].tobytes() == b["image"].tobytes()
        else:
            assert a == b
    if mode == "lora":  # the folder holds the un-adapted base: the adapter is not in it twice
        base = Qwen2ForCausalLM.from_pretrained(str(tmp_path / "chat" / "llm"))
        assert not any("lora" in k for k in base.state_dict())
        trainable = SVQChat.from_pretrained(tmp_path / "chat", trainable=True)
        assert any(p.requires_grad for p in trainable.llm.parameters())


def test_merged_chat_saves_and_reloads_tied(tmp_path):
    chat = build_chat()
    chat.enable_lora(LORA)
    batch = _batch(chat)
    train(chat, batch, steps=2)
    chat.merge_lora()
    chat.save_pretrained(tmp_path / "merged")
    loaded = SVQChat.from_pretrained(tmp_path / "merged")
    assert loaded.config.mode == "full"
    weight = loaded.llm.get_input_embeddings().weight
    assert weight is loaded.llm.get_output_embeddings().weight
    new = chat.vocab.new_token_ids
    assert torch.equal(weight[new], chat.llm.get_input_embeddings().weight[new])
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch).logits, chat(batch).logits, rtol=0, atol=0)
