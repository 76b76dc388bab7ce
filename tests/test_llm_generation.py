"""Constrained decoding of image spans (ImageSpanLogitsProcessor with model.generate) and the
VQ head."""

import pytest
import torch
from test_llm_tiny import build_chat

from svq.llm import (
    ImageSpanLogitsProcessor,
    ImageSpanSampler,
    ImageVocabulary,
    PinnedCodes,
    VQHead,
    VQHeadConfig,
    pins_from,
    span_state,
)

N = 36


def _vocab(per_position=False, num_codes=4) -> ImageVocabulary:
    return ImageVocabulary(
        boi_id=10, eoi_id=11, image_id=12, code_offset=20, num_codes=num_codes,
        per_position=per_position,
    )  # fmt: skip


def _allowed(vocab, sequences, size=200):
    ids = torch.tensor(sequences)
    scores = ImageSpanLogitsProcessor(vocab)(ids, torch.zeros(len(sequences), size))
    return [set(torch.isfinite(row).nonzero().squeeze(1).tolist()) for row in scores]


def test_processor_states_shared_codebook():
    vocab = _vocab()
    codes = set(vocab.code_token_range)
    text = set(range(200)) - codes - {11, 12}  # outside: no codes, no <eoi>, no <image>
    placeholder = [10, *[12] * N, 11]
    rows = [
        [1, 2, 3],  # plain text
        [1, 10],  # just opened
        [1, 10, *[20] * 35],  # one code to go
        [1, 10, *[21] * 36],  # all written: only <eoi>
        [1, 10, *[22] * 36, 11],  # closed again
        [*placeholder, 5],  # a user picture in the prompt is a closed span
    ]
    width = max(map(len, rows))
    rows = [[0] * (width - len(r)) + r for r in rows]  # left padding, as in batched prompts
    allowed = _allowed(vocab, rows)
    assert allowed == [text, codes, codes, {11}, text, text]
    inside, written = span_state(torch.tensor(rows), vocab)
    assert inside.tolist() == [False, True, True, True, False, False]
    assert written.tolist() == [0, 0, 35, 36, 0, 0]


def test_processor_per_position_allows_only_that_positions_block():
    vocab = _vocab(per_position=True, num_codes=3)
    for k in (0, 1, 17, 35):
        written = [vocab.code_offset + p * 3 for p in range(k)]
        (allowed,) = _allowed(vocab, [[5, 10, *written]], size=vocab.code_offset + 3 * N + 5)
        assert allowed == set(vocab.position_range(k))
    (allowed,) = _allowed(vocab, [[10, *[vocab.code_offset + p * 3 for p in range(N)]]])
    assert allowed == {11}


def _prompt(tok, text: str) -> list[int]:
    messages = [{"role": "user", "content": text}]
    rendered = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tok.encode(rendered, add_special_tokens=False)


def _check_spans(row, vocab, prompt_len):
    """Every <boi> in the generated part is followed by N valid codes and <eoi> (or the end);
    no code token, <eoi> or <image> outside. Returns the number of complete spans."""
    spans, i = 0, prompt_len
    while i < len(row):
        token = row[i]
        assert token != vocab.image_id
        assert not vocab.is_code(torch.tensor(token)) and token != vocab.eoi_id, (i, row)
        if token == vocab.boi_id:
            body = row[i + 1 : i + 1 + N]
            if len(body) == N:
                for p, t in enumerate(body):
                    assert t in vocab.position_range(p)
                assert i + 1 + N == len(row) or row[i + 1 + N] == vocab.eoi_id
                spans += i + 1 + N < len(row)
            else:  # cut off by max_new_tokens: still only codes so far
                assert all(t in vocab.position_range(p) for p, t in enumerate(body))
            i += N + 2
            continue
        i += 1
    return spans


@pytest.mark.parametrize("per_position", [False, True])
def test_sampled_spans_always_have_exactly_36_codes(per_position):
    chat = build_chat(num_codes=8, per_position=per_position, spatial=False)
    vocab, tok, llm = chat.vocab, chat.tokenizer, chat.llm
    ids = [_prompt(tok, p) for p in ["I went to Huangshan in autumn.", "Show me skiing!", "hi"]]
    width = max(map(len, ids))
    input_ids = torch.tensor([[tok.pad_token_id] * (width - len(e)) + e for e in ids])
    mask = (input_ids != tok.pad_token_id).long()
    spans = 0
    for seed in range(10):
        torch.manual_seed(seed)
        out = llm.generate(
            input_ids=input_ids,
            attention_mask=mask,
            logits_processor=[ImageSpanLogitsProcessor(vocab)],
            sequence_bias={(vocab.boi_id,): 6.0},  # make the untrained model open images
            do_sample=True,
            temperature=1.5,
            top_k=0,
            max_new_tokens=90,
            min_new_tokens=90,
        )
        spans += sum(_check_spans(row, vocab, width) for row in out.tolist())
    assert spans >= 20  # the check above ran on many real spans


@pytest.mark.parametrize("use_cache", [True, False])
def test_greedy_after_boi_writes_one_image(use_cache):
    chat = build_chat(num_codes=8, per_position=True, spatial=False)
    vocab, tok = chat.vocab, chat.tokenizer
    prompt = [*_prompt(tok, "A photo please"), vocab.boi_id]  # asks for an image
    out = chat.llm.generate(
        input_ids=torch.tensor([prompt]),
        logits_processor=[ImageSpanLogitsProcessor(vocab)],
        do_sample=False,
        max_new_tokens=N + 1,
        use_cache=use_cache,
    )
    new = out[0, len(prompt) :]
    assert new[-1] == vocab.eoi_id
    codes = vocab.tokens_to_codes(new[:N])  # raises unless position p's block everywhere
    assert codes.shape == (N,)


def _head(**overrides) -> VQHead:
    torch.manual_seed(0)
    config = {"llm_hidden": 24, "grid_size": (3, 4), "codebook_size": 10, "width": 16,
              "depth": 2, "heads": 2, **overrides}  # fmt: skip
    return VQHead(VQHeadConfig(**config)).eval()


def test_vq_head_predicts_every_grid_position_bidirectionally():
    head = _head()
    hidden = torch.randn(2, N, 24)
    logits = head(hidden)
    assert logits.shape == (2, 12, 10)
    assert head.predict(hidden).shape == (2, 12)
    changed = hidden.clone()
    changed[:, -1] += 1.0  # only the last image token
    delta = (head(changed) - logits).abs().amax(-1)  # (2, 12)
    assert bool((delta > 0).all())  # every grid position sees it: no causal mask
    targets = torch.randint(0, 10, (2, 12))
    ignored = targets.clone()
    ignored[1] = -100
    torch.testing.assert_close(head.loss(hidden, ignored), head.loss(hidden[:1], targets[:1]))
    with pytest.raises(ValueError, match="expected hidden states"):
        head(torch.randn(2, 35, 24))


def test_vq_head_save_load_and_config_checks(tmp_path):
    head = _head()
    head.save_pretrained(tmp_path / "head")
    loaded = VQHead.from_pretrained(str(tmp_path / "head")).eval()
    assert loaded.config == head.config
    hidden = torch.randn(1, N, 24)
    torch.testing.assert_close(loaded(hidden), head(hidden), rtol=0, atol=0)
    with pytest.raises(ValueError, match="divisible"):
        VQHeadConfig(width=30, heads=4)
    with pytest.raises(ValueError, match="grid_size"):
        VQHeadConfig(grid_size=(0, 4))
    with pytest.raises(ValueError, match="unknown fields"):
        VQHeadConfig.from_dict({"depth": 1, "blocks": 2})


def test_span_sampler_keeps_text_greedy_and_cuts_the_pictures_distribution():
    vocab = _vocab(per_position=False, num_codes=4)
    scores = torch.tensor([[0.0] * 20 + [4.0, 3.0, 2.0, 1.0] + [0.0] * 6]).repeat(3, 1)
    scores[0, 5] = 9.0  # the best text token
    rows = [[1, 2, 3], [1, 10, 20], [10, *[20] * N]]  # text, in a span, all 36 written
    rows = torch.tensor([[0] * (N + 1 - len(r)) + r for r in rows])  # left padding
    sampler = ImageSpanSampler(vocab, temperature=2.0, top_k=3)
    out = sampler(rows, scores)
    assert torch.isfinite(out[0]).nonzero().squeeze(1).tolist() == [5]  # greedy text
    assert torch.isfinite(out[2]).sum() == 1  # after the 36th code: the best token only
    kept = torch.isfinite(out[1]).nonzero().squeeze(1).tolist()
    assert kept == [20, 21, 22] and torch.allclose(out[1, 20:23], torch.tensor([2.0, 1.5, 1.0]))
    nucleus = ImageSpanSampler(vocab, top_p=0.6)(rows[1:2], scores[1:2])
    probs = scores[1].softmax(-1)
    assert probs[20] < 0.6 < probs[20] + probs[21]  # the two best reach 0.6
    assert torch.isfinite(nucleus[0]).nonzero().squeeze(1).tolist() == [20, 21]
    for bad in ({"temperature": 0.0}, {"top_k": 0}, {"top_p": 1.5}):
        with pytest.raises(ValueError):
            ImageSpanSampler(vocab, **bad)


def test_generate_samples_pictures_and_keeps_the_greedy_text():
    chat = build_chat(num_codes=8, per_position=True, spatial=False)
    conversation = [{"role": "user", "content": "Show me a photo of you skiing."}]
    bias = {(chat.vocab.boi_id,): 8.0}  # make the untrained model open a picture
    kwargs = {"max_new_tokens": 60, "sequence_bias": bias}
    greedy = chat.generate([conversation], image_decoder="svq", **kwargs)[0]
    pictures = set()
    for seed in range(4):
        torch.manual_seed(seed)
        reply = chat.generate([conversation], image_decoder="svq", image_temperature=1.5, **kwargs)
        reply = reply[0]
        texts = [p["text"] for p in reply["content"] if p["type"] == "text"]
        first = next(i for i, p in enumerate(reply["content"]) if p["type"] == "image")
        assert texts[:first] == [p["text"] for p in greedy["content"][:first]]
        pictures.add(tuple(reply["content"][first]["ids"].tolist()))
    assert len(pictures) > 1  # sampled: the pictures differ between seeds
    with pytest.raises(ValueError, match="pictures only"):
        chat.generate([conversation], image_temperature=1.0, do_sample=True)


@pytest.mark.parametrize("per_position", [False, True])
def test_pinned_codes_force_only_the_pinned_positions(per_position):
    vocab = _vocab(per_position=per_position, num_codes=4)
    pins = pins_from(torch.arange(N) % 4, range(6, 12))  # positions 6-11 pinned
    assert pins[:6].eq(-1).all() and pins[12:].eq(-1).all() and pins[6:12].tolist() == [
        2, 3, 0, 1, 2, 3
    ]  # fmt: skip
    written = [vocab.code_offset] * 6  # six codes written: position 6 is next
    rows = torch.tensor([[1, 10, *written], [1, 2, *[3] * 6], [0, 1, 10, *written[:5]]])
    size = vocab.code_offset + vocab.num_code_tokens + 5
    scores = torch.randn(3, size)
    out = PinnedCodes(vocab, pins.repeat(3, 1))(rows, scores)
    block = 6 * 4 if per_position else 0
    token = vocab.code_offset + block + 2
    assert torch.isfinite(out[0]).nonzero().squeeze(1).tolist() == [token]
    assert out[0, token] == scores[0, token]
    assert torch.equal(out[1], scores[1])  # text: untouched
    assert torch.equal(out[2], scores[2])  # position 5 is next: free
    for bad in (torch.zeros(2, N - 1), torch.full((1, N), 4), torch.full((1, N), -2)):
        with pytest.raises(ValueError):
            PinnedCodes(vocab, bad)
    with pytest.raises(ValueError, match="outside"):
        pins_from(torch.zeros(N), [N])


def test_generate_keeps_the_pinned_positions_and_writes_the_rest():
    chat = build_chat(num_codes=8, per_position=True, spatial=False)
    conversation = [{"role": "user", "content": "Show me a photo of you skiing."}]
    kwargs = {"max_new_tokens": 60, "sequence_bias": {(chat.vocab.boi_id,): 8.0}}
    free = chat.generate([conversation], image_decoder="svq", **kwargs)[0]
    ids = next(p["ids"] for p in free["content"] if p["type"] == "image")
    reference = (ids + 3) % 8  # another picture's codes everywhere
    pins = pins_from(reference, range(6, 12))
    replies = chat.generate(
        [conversation, conversation], image_decoder="svq", pinned_ids=[pins, None], **kwargs
    )
    pinned = next(p["ids"] for p in replies[0]["content"] if p["type"] == "image")
    assert torch.equal(pinned[6:12], reference[6:12])
    assert torch.equal(pinned[:6], ids[:6])  # written before the pins: as without them
    unpinned = next(p["ids"] for p in replies[1]["content"] if p["type"] == "image")
    assert torch.equal(unpinned, ids)  # the row without pins is untouched
    with pytest.raises(ValueError, match="entries"):
        chat.generate([conversation], pinned_ids=[pins, pins])
