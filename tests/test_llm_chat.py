"""SVQChat: conversations to tokens, understanding (projected features at the <image> tokens),
batches mixing conversations with and without pictures, chat replies with pictures by both
routes, and the VQ head reading the written codes' hidden states."""

import numpy as np
import pytest
import torch
from PIL import Image
from test_llm_tiny import build_chat, conversation, svq_model, tokenizer

from svq.data import Preprocess, render, world_record
from svq.images import to_uint8
from svq.llm import (
    IGNORE_INDEX,
    SVQChat,
    SVQChatConfig,
    collate,
    encode_conversation,
    inject_image_embeds,
    split_reply,
)
from svq.llm.logits import ImageSpanLogitsProcessor, span_cross_entropy
from svq.llm.tiny import tiny_llm

N = 36


@pytest.fixture(scope="module")
def chat():
    return build_chat()


def test_encoding_labels_assistant_turns_and_finds_images(chat):
    messages = conversation(0)
    enc = encode_conversation(messages, chat.tokenizer, chat.vocab)
    labelled = enc.input_ids[enc.labels != IGNORE_INDEX]
    reply = chat.vocab.span_text(messages[2]["content"][1]["ids"])
    expected = "Yes! Here I am skiing." + reply + "<|im_end|>\n"
    assert chat.tokenizer.decode(labelled) == expected
    assert torch.equal(enc.labels[enc.labels != IGNORE_INDEX], labelled)
    assert bool((enc.input_ids[enc.image_positions] == chat.vocab.image_id).all())
    assert enc.image_positions.shape == (1, N)
    torch.testing.assert_close(enc.image_features[0], messages[1]["content"][1]["features"])
    assert torch.equal(enc.code_ids[0], messages[2]["content"][1]["ids"])
    assert torch.equal(chat.vocab.tokens_to_codes(enc.input_ids[enc.code_positions]), enc.code_ids)
    assert torch.equal(enc.vq_targets[0], messages[2]["content"][1]["vq_ids"])
    unresolved = [{"role": "user", "content": [{"type": "image", "image": "x.png"}]}]
    with pytest.raises(ValueError, match="resolve pictures first"):
        encode_conversation(unresolved, chat.tokenizer, chat.vocab)


def test_understanding_embeddings_land_at_the_image_positions(chat):
    two = conversation(3)
    two[1]["content"].append({"type": "image", "features": torch.randn(N, 16)})
    items = [chat.encode(conversation(1, user_image=False)), chat.encode(two)]
    batch = collate(items, chat.tokenizer.pad_token_id)
    assert batch.image_features.shape == (2, N, 16)
    with torch.no_grad():
        embeds = chat.embed(batch)
        tokens = chat.llm.get_input_embeddings()(batch.input_ids)
        projected = chat.projector(batch.image_features)  # (2, N, D)
    at_image = batch.input_ids == chat.vocab.image_id
    assert int(at_image.sum()) == 2 * N and not bool(at_image[0].any())
    torch.testing.assert_close(embeds[at_image], projected.reshape(-1, projected.shape[-1]))
    assert torch.equal(embeds[~at_image], tokens[~at_image])
    with pytest.raises(ValueError, match="72 <image> tokens but 1 images"):
        inject_image_embeds(tokens, batch.input_ids, projected[:1], chat.vocab.image_id)


def test_batch_mixing_conversations_with_and_without_pictures(chat):
    plain = conversation(4, user_image=False, assistant_image=False)
    mixed = [conversation(5), plain, conversation(6, user_image=False)]
    items = [chat.encode(m) for m in mixed]
    batch = collate(items, chat.tokenizer.pad_token_id)
    assert batch.code_rows.tolist() == [0, 2]
    assert batch.vq_targets.shape == (2, 16)
    with torch.no_grad():
        out = chat(batch)
        for row, item in enumerate(items):  # each row as if it were alone
            alone = chat(collate([item], chat.tokenizer.pad_token_id))
            t = item.input_ids.shape[0]
            torch.testing.assert_close(out.logits[row, :t], alone.logits[0], rtol=1e-4, atol=1e-4)
    assert torch.isfinite(out.loss) and out.vq_loss is not None and out.vq_loss > 0
    torch.testing.assert_close(out.loss, out.lm_loss + out.vq_loss)
    weights = chat.config.lm_loss_weight, chat.config.vq_loss_weight
    chat.config.lm_loss_weight, chat.config.vq_loss_weight = 0.25, 2.0  # the config weighs
    try:
        with torch.no_grad():
            weighed = chat(batch)
    finally:
        chat.config.lm_loss_weight, chat.config.vq_loss_weight = weights
    torch.testing.assert_close(weighed.loss, 0.25 * out.lm_loss + 2.0 * out.vq_loss)
    # generation, batched with left padding, answers each conversation as alone
    prompts = [m[:2] for m in mixed]
    together = chat.generate(prompts, max_new_tokens=40, image_decoder="svq")
    for prompt, reply in zip(prompts, together, strict=True):
        alone = chat.chat(prompt, max_new_tokens=40, image_decoder="svq")
        assert _summary(reply) == _summary(alone)


def _summary(reply):
    return [p["text"] if p["type"] == "text" else p["ids"].tolist() for p in reply["content"]]


def _picture(index: int, size: int = 48) -> Image.Image:
    return render(world_record(0, "train", index), size)


def test_chat_replies_with_pictures_by_both_routes(chat, tmp_path):
    path = tmp_path / "me.png"
    _picture(1).save(path)
    messages = [
        {"role": "user", "content": [
            {"type": "text", "text": "Look at my photo!"},
            {"type": "image", "image": _picture(0)},
            {"type": "image", "path": str(path)},
            {"type": "text", "text": "Where was I?"},
        ]},
    ]  # fmt: skip
    bias = {"sequence_bias": {(chat.vocab.boi_id,): 9.0}}
    torch.manual_seed(0)
    via_head = chat.chat(messages, max_new_tokens=60, do_sample=True, **bias)
    torch.manual_seed(0)
    via_svq = chat.chat(messages, max_new_tokens=60, do_sample=True, image_decoder="svq", **bias)
    assert _summary(via_head) == _summary(via_svq)  # same tokens, two ways to paint them
    images = [p for p in via_head["content"] if p["type"] == "image"]
    assert images and via_head["role"] == "assistant"
    for part in images:
        assert isinstance(part["image"], Image.Image) and part["image"].size == (16, 16)
    for part in (p for p in via_svq["content"] if p["type"] == "image"):
        assert part["image"].size == (32, 32)
        expected = to_uint8(chat.svq.detokenize(part["ids"].unsqueeze(0)))[0]
        assert np.array_equal(np.asarray(part["image"]), expected)
    # the reply goes back into the conversation: its picture stays in context as tokens
    follow_up = [*messages, via_head, {"role": "user", "content": "Nice!"}]
    enc = chat.encode(follow_up, add_generation_prompt=True)
    assert torch.equal(enc.code_ids[0], images[0]["ids"])
    assert enc.image_features.shape == (2, N, 16)


def test_vq_head_reads_the_hidden_states_of_the_written_codes(chat):
    """Generation-time hidden states (KV cache) = teacher-forced ones at the code tokens."""
    messages = conversation(7)[:2]
    torch.manual_seed(0)
    reply = chat.chat(messages, max_new_tokens=N + 2, sequence_bias={(chat.vocab.boi_id,): 100.0})
    assert [p["type"] for p in reply["content"]] == ["image"]
    enc = chat.encode([*messages, reply])
    batch = collate([enc], chat.tokenizer.pad_token_id)
    with torch.no_grad():
        hidden = chat.llm(inputs_embeds=chat.embed(batch), output_hidden_states=True).hidden_states[
            -1
        ]
        pixels = chat.decode_images(enc.code_ids, hidden[0, enc.code_positions], "vq_head")
    assert np.array_equal(np.asarray(reply["content"][0]["image"]), to_uint8(pixels)[0])


def test_prepare_resolves_pictures_with_the_svq_tokenizer(chat, tmp_path):
    path = tmp_path / "mine.png"
    _picture(2).save(path)
    messages = [
        {"role": "user", "content": [{"type": "image", "image": _picture(3)}]},
        {"role": "assistant", "content": [{"type": "image", "url": str(path)}]},
    ]
    user, assistant = (m["content"][0] for m in chat.prepare(messages, vq_targets=True))
    pixels = Preprocess(32)(_picture(3)).unsqueeze(0)
    with torch.no_grad():
        torch.testing.assert_close(user["features"], chat.svq.encode(pixels)[0])
    mine = Preprocess(32)(Image.open(path).convert("RGB")).unsqueeze(0)
    assert torch.equal(assistant["ids"], chat.svq.tokenize(mine)[0])
    assert assistant["vq_ids"].shape == (16,)
    assert "features" not in messages[0]["content"][0]  # the input is left alone
    with pytest.raises(ValueError, match="without a picture"):
        chat.prepare([{"role": "user", "content": [{"type": "image"}]}])


def test_split_reply_drops_an_unfinished_span(chat):
    v = chat.vocab
    codes = v.codes_to_tokens(torch.arange(N) % 32).tolist()
    parts = split_reply([5, 6, v.boi_id, *codes, v.eoi_id, 7, v.boi_id, *codes[:10]], v)
    assert [(p.kind, p.start) for p in parts] == [("text", 0), ("image", 3), ("text", 40)]
    assert parts[1].tokens == codes and parts[2].tokens == [7]


def test_bad_setups_fail_loudly(tmp_path):
    tok = tokenizer()
    tok.chat_template = None
    with pytest.raises(ValueError, match="chat template"):
        SVQChat.build(tiny_llm(tok), svq_model(), tokenizer=tok)
    bare = svq_model()
    bare.codebook = None
    with pytest.raises(ValueError, match="no codebook"):
        SVQChat.build(tiny_llm(tokenizer()), bare, tokenizer=tokenizer())
    with pytest.raises(FileNotFoundError, match="not a saved SVQChat"):
        SVQChat.from_pretrained(tmp_path)
    vocab = build_chat(spatial=False).vocab.to_dict()
    with pytest.raises(ValueError, match="mode"):
        SVQChatConfig(vocabulary=vocab, mode="half")
    with pytest.raises(ValueError, match="needs a VQ head"):
        chat = build_chat(spatial=False)
        SVQChat(chat.llm, chat.tokenizer, SVQChatConfig(vocabulary=vocab), chat.svq, chat.projector)


def test_labelled_positions_only_gives_the_same_loss_and_gradients(chat):
    """forward(full_logits=False) runs the output layer at the labelled positions only: the
    same losses and the same gradients as the full pass, and no logits."""
    items = [chat.encode(m) for m in (conversation(5), conversation(6, user_image=False))]
    batch = collate(items, chat.tokenizer.pad_token_id)

    def run(full: bool):
        chat.zero_grad(set_to_none=True)
        out = chat(batch, full_logits=full)
        out.loss.backward()
        grads = {n: p.grad.clone() for n, p in chat.named_parameters() if p.grad is not None}
        return out, grads

    full, full_grads = run(True)
    part, part_grads = run(False)
    assert part.logits is None and full.logits is not None
    torch.testing.assert_close(part.lm_loss, full.lm_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(part.vq_loss, full.vq_loss)
    assert part_grads.keys() == full_grads.keys() and len(part_grads) > 0
    for name, grad in full_grads.items():
        torch.testing.assert_close(part_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def plain_loss_per_token(chat):
    """Two chats (one with a user photo) as a batch, the model's plain output on it, and each
    next-token cross-entropy (B, T-1) by hand from its full logits (0 where unlabelled)."""
    items = [chat.encode(m) for m in (conversation(5), conversation(6, user_image=False))]
    batch = collate(items, chat.tokenizer.pad_token_id)
    with torch.no_grad():
        plain = chat(batch)
        ce = torch.nn.functional.cross_entropy(
            plain.logits[:, :-1].float().transpose(1, 2), batch.labels[:, 1:],
            reduction="none", ignore_index=IGNORE_INDEX,
        )  # fmt: skip
    return batch, plain, ce


def test_image_token_loss_weight_weighs_the_span_tokens_in_both_passes(chat):
    """image_token_loss_weight w: the LM loss is sum(w_i * ce_i) / sum(w_i) with image-span
    tokens (<boi>, codes, <eoi>) at w and text at 1, by hand from the full logits; both passes
    agree; w = 1 is the plain mean; w = 0 leaves the text tokens alone."""
    batch, plain, ce = plain_loss_per_token(chat)
    vocab = chat.vocab
    targets = batch.labels[:, 1:]
    labelled = targets != IGNORE_INDEX
    span = vocab.is_code(targets) | (targets == vocab.boi_id) | (targets == vocab.eoi_id)
    assert (span & labelled).any() and (~span & labelled).any()  # both kinds are labelled
    with torch.no_grad():
        try:
            for w in (0.0, 0.25, 3.0):
                chat.config.image_token_loss_weight = w
                weights = torch.where(span, w, 1.0)[labelled]
                expected = (weights * ce[labelled]).sum() / weights.sum()
                for full in (True, False):
                    got = chat(batch, full_logits=full).lm_loss
                    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
                assert not torch.isclose(expected, plain.lm_loss)
            text_only = ce[labelled & ~span].mean()
            chat.config.image_token_loss_weight = 0.0
            torch.testing.assert_close(chat(batch, full_logits=False).lm_loss, text_only)
        finally:
            chat.config.image_token_loss_weight = 1.0
    torch.testing.assert_close(plain.lm_loss, ce[labelled].mean(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="image_token_loss_weight"):
        SVQChatConfig(vocabulary=vocab.to_dict(), image_token_loss_weight=-1.0)


def test_image_suffix_loss_weight_weighs_the_codes_after_the_prefix(chat):
    """image_suffix_loss_weight s: the codes at span places >= image_prefix_tokens weigh s
    times the image weight, by hand from the full logits with the places counted from each
    <boi>; both passes agree."""
    batch, plain, ce = plain_loss_per_token(chat)
    vocab = chat.vocab
    places = torch.full_like(batch.input_ids, -1)
    for row, tokens in enumerate(batch.input_ids.tolist()):
        place = None
        for t, token in enumerate(tokens):
            place = 0 if token == vocab.boi_id else place
            if vocab.is_code(torch.tensor(token)):
                places[row, t], place = place, place + 1
    assert torch.equal(vocab.code_positions(batch.input_ids), places)
    assert places.max() == vocab.num_positions - 1 and (places == 0).sum() >= 2
    targets = batch.labels[:, 1:]
    labelled = targets != IGNORE_INDEX
    span = vocab.is_code(targets) | (targets == vocab.boi_id) | (targets == vocab.eoi_id)
    with torch.no_grad():
        try:
            chat.config.image_prefix_tokens = 2
            for w, s in ((1.0, 0.25), (0.5, 0.0)):
                chat.config.image_token_loss_weight, chat.config.image_suffix_loss_weight = w, s
                weights = torch.where(span, w, 1.0)
                weights = torch.where(places[:, 1:] >= 2, weights * s, weights)[labelled]
                expected = (weights * ce[labelled]).sum() / weights.sum()
                for full in (True, False):
                    got = chat(batch, full_logits=full).lm_loss
                    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
                assert not torch.isclose(expected, plain.lm_loss)
        finally:
            chat.config.image_prefix_tokens = 6
            chat.config.image_token_loss_weight = chat.config.image_suffix_loss_weight = 1.0
    with pytest.raises(ValueError, match="image_suffix_loss_weight"):
        SVQChatConfig(vocabulary=vocab.to_dict(), image_suffix_loss_weight=-1.0)


def test_constrained_lm_loss_is_the_loss_over_what_generation_allows(chat):
    """constrained_lm_loss: each labelled token's cross-entropy over the tokens the span
    processor allows after its context (a code against its position's block, <eoi> alone,
    text against text), by hand from the full logits masked by ImageSpanLogitsProcessor
    itself; both passes agree; it is below the plain loss; image_token_loss_weight still
    weighs it; an <image> label is refused."""
    items = [chat.encode(m) for m in (conversation(5), conversation(6, user_image=False))]
    batch = collate(items, chat.tokenizer.pad_token_id)
    vocab = chat.vocab
    targets = batch.labels[:, 1:]
    labelled = targets != IGNORE_INDEX
    assert vocab.is_code(targets[labelled]).any() and (~vocab.is_code(targets[labelled])).any()
    processor = ImageSpanLogitsProcessor(vocab)
    with torch.no_grad():
        plain = chat(batch)
        logits = plain.logits[:, :-1].float()
        rows, cols = labelled.nonzero(as_tuple=True)
        masked = torch.stack([  # the processor reads the sequence up to and with token t
            processor(batch.input_ids[b, : t + 1].unsqueeze(0), logits[b, t].unsqueeze(0))[0]
            for b, t in zip(rows.tolist(), cols.tolist(), strict=True)
        ])  # fmt: skip
        ce = torch.nn.functional.cross_entropy(masked, targets[labelled], reduction="none")
        assert torch.isfinite(ce).all()  # every label is allowed where it stands
        eoi = targets[labelled] == vocab.eoi_id
        assert eoi.any() and bool((ce[eoi] == 0).all())
        torch.testing.assert_close(span_cross_entropy(logits[labelled], targets[labelled], vocab),
                                   ce, rtol=1e-5, atol=1e-5)  # fmt: skip
        try:
            chat.config.constrained_lm_loss = True
            for full in (True, False):
                got = chat(batch, full_logits=full).lm_loss
                torch.testing.assert_close(got, ce.mean(), rtol=1e-5, atol=1e-6)
            assert ce.mean() < plain.lm_loss
            chat.config.image_token_loss_weight = 0.0
            span = vocab.is_code(targets) | (targets == vocab.boi_id) | (targets == vocab.eoi_id)
            text_only = ce[~span[labelled]].mean()
            torch.testing.assert_close(chat(batch, full_logits=False).lm_loss, text_only)
        finally:
            chat.config.constrained_lm_loss = False
            chat.config.image_token_loss_weight = 1.0
    with pytest.raises(ValueError, match="<image>"):
        span_cross_entropy(logits[0, :2], torch.tensor([vocab.image_id, 5]), vocab)
