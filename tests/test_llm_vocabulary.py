"""The image vocabulary: the code id <-> token id mapping, adding the tokens, resizing and
initialising the embedding rows."""

import pytest
import torch
from test_llm_tiny import tokenizer
from transformers import Qwen2ForCausalLM

from svq.llm import ImageVocabulary, code_token_names, extend_llm
from svq.llm.embeddings import embedding_matrices
from svq.llm.tiny import tiny_config, tiny_llm


@pytest.mark.parametrize("per_position", [False, True])
def test_mapping_round_trips(per_position):
    tok = tokenizer()
    before = len(tok)
    vocab = ImageVocabulary.add_to_tokenizer(tok, num_codes=5, per_position=per_position)
    assert len(tok) == before + 3 + (36 * 5 if per_position else 5)
    assert vocab.new_token_ids == list(range(before, len(tok)))
    ids = torch.randint(0, 5, (4, 36), generator=torch.Generator().manual_seed(0))
    tokens = vocab.codes_to_tokens(ids)
    assert bool(vocab.is_code(tokens).all())
    assert torch.equal(vocab.tokens_to_codes(tokens), ids)
    names = tok.convert_ids_to_tokens(tokens[0].tolist())
    expected = [f"<svq_{p}_{k}>" if per_position else f"<svq_{k}>" for p, k in enumerate(ids[0])]
    assert names == expected
    # the text form of a span tokenizes to exactly that span
    assert tok.encode(vocab.span_text(ids[0]), add_special_tokens=False) == vocab.span(ids[0])
    assert tok.encode(vocab.span_text(), add_special_tokens=False) == vocab.placeholder()
    if per_position:  # each position has its own block of K tokens
        assert list(vocab.position_range(2)) == [vocab.code_offset + 10 + k for k in range(5)]
        with pytest.raises(ValueError, match="another position"):
            vocab.tokens_to_codes(tokens.roll(1, dims=1))


def test_codebook_tokens_by_hand():
    """A code token -> the K token ids of its codebook: its position's block, or all."""
    per = ImageVocabulary(boi_id=0, eoi_id=1, image_id=2, code_offset=3, num_codes=4,
                          num_positions=3, per_position=True)  # fmt: skip
    assert per.codebook_tokens(torch.tensor([3, 6, 9, 14])).tolist() == [
        [3, 4, 5, 6], [3, 4, 5, 6], [7, 8, 9, 10], [11, 12, 13, 14]
    ]  # fmt: skip
    shared = ImageVocabulary(boi_id=0, eoi_id=1, image_id=2, code_offset=3, num_codes=4)
    assert shared.codebook_tokens(torch.tensor([3, 6])).tolist() == [[3, 4, 5, 6]] * 2


def test_add_is_idempotent_and_checks_layout():
    tok = tokenizer()
    first = ImageVocabulary.add_to_tokenizer(tok, 7)
    size = len(tok)
    assert ImageVocabulary.add_to_tokenizer(tok, 7) == first  # found, not added again
    assert len(tok) == size
    with pytest.raises(ValueError, match="another codebook size"):
        ImageVocabulary.add_to_tokenizer(tok, 9)
    with pytest.raises(ValueError, match="lacks the image tokens"):
        ImageVocabulary.from_tokenizer(tokenizer(), 7)
    assert ImageVocabulary.from_dict(first.to_dict()) == first


def test_bad_codes_are_rejected():
    vocab = ImageVocabulary(boi_id=10, eoi_id=11, image_id=12, code_offset=13, num_codes=4)
    with pytest.raises(ValueError, match=r"in \[0, 4\)"):
        vocab.codes_to_tokens(torch.full((36,), 4))
    with pytest.raises(ValueError, match="shape"):
        vocab.codes_to_tokens(torch.zeros(35, dtype=torch.long))
    with pytest.raises(ValueError, match="not code tokens"):
        vocab.tokens_to_codes(torch.full((36,), 11))
    with pytest.raises(ValueError, match="overlap"):
        ImageVocabulary(boi_id=13, eoi_id=11, image_id=12, code_offset=13, num_codes=4)


def _text_logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.mark.parametrize("num_codes", [16, 300])  # fits in the spare rows / needs a resize
def test_extension_keeps_text_logits_and_tie(num_codes):
    tok = tokenizer()
    model = tiny_llm(tok)
    rows = model.get_input_embeddings().weight.shape[0]
    original = len(tok)
    ids = torch.tensor([tok.encode("I went to Huangshan in autumn.", add_special_tokens=False)])
    before = _text_logits(model, ids)[..., :original]
    old_rows = model.get_input_embeddings().weight[:original].clone()
    vocab = extend_llm(model, tok, torch.randn(num_codes, 16), pad_to_multiple_of=64)
    weight = model.get_input_embeddings().weight
    assert weight.shape[0] == max(rows, -(-len(tok) // 64) * 64)  # grown only if needed
    assert weight is model.get_output_embeddings().weight
    assert model.config.vocab_size == weight.shape[0]
    assert torch.equal(weight[:original], old_rows)
    torch.testing.assert_close(_text_logits(model, ids)[..., :original], before, rtol=0, atol=0)
    assert max(vocab.new_token_ids) < weight.shape[0]


def test_mean_init_writes_the_mean_of_the_original_rows():
    tok = tokenizer()
    model = tiny_llm(tok)
    original = len(tok)
    with pytest.raises(ValueError, match="init 'zeros'"):
        extend_llm(model, tok, torch.randn(8, 16), init="zeros")
    assert len(tok) == original  # nothing was added
    mean = model.get_input_embeddings().weight[:original].mean(0)
    vocab = extend_llm(model, tok, torch.randn(8, 16), init="mean")
    new = model.get_input_embeddings().weight[vocab.new_token_ids]
    torch.testing.assert_close(new, mean.expand_as(new))


@pytest.mark.parametrize("per_position", [False, True])
def test_projection_init_keeps_codebook_geometry(per_position):
    """A random orthogonal map scaled uniformly: pairwise distances of the code rows are the
    codebook's distances times one constant, and the rows spread like the original rows."""
    tok = tokenizer()
    model = tiny_llm(tok)
    original = len(tok)
    codes = torch.randn((36, 3, 16) if per_position else (40, 16))
    vocab = extend_llm(model, tok, codes)
    weight = model.get_input_embeddings().weight.detach()
    rows = weight[list(vocab.code_token_range)]
    flat = codes.reshape(-1, 16)
    ratio = torch.pdist(rows) / torch.pdist(flat)
    torch.testing.assert_close(ratio, ratio[0].expand_as(ratio), rtol=1e-3, atol=1e-4)
    reference = weight[:original]
    spread = (reference - reference.mean(0)).norm(dim=1).pow(2).mean().sqrt()
    torch.testing.assert_close((rows - rows.mean(0)).norm(dim=1).pow(2).mean().sqrt(), spread)
    torch.testing.assert_close(rows.mean(0), reference.mean(0), rtol=1e-4, atol=1e-5)
    for special in (vocab.boi_id, vocab.eoi_id, vocab.image_id):
        torch.testing.assert_close(weight[special], reference.mean(0))
    assert code_token_names(3, 36, per_position)[0] == tok.convert_ids_to_tokens(vocab.code_offset)


def test_untied_model_gets_both_matrices_initialised():
    tok = tokenizer()
    original = len(tok)
    model = Qwen2ForCausalLM(tiny_config(tok, tie_word_embeddings=False)).eval()
    assert len(embedding_matrices(model)) == 2
    ids = torch.tensor([tok.encode("hello there", add_special_tokens=False)])
    before = _text_logits(model, ids)[..., :original]
    out_rows = model.get_output_embeddings().weight[:original].clone()
    vocab = extend_llm(model, tok, torch.randn(1000, 16))  # forces a resize of both
    out = model.get_output_embeddings().weight
    assert out.data_ptr() != model.get_input_embeddings().weight.data_ptr()
    assert torch.equal(out[:original], out_rows)
    new = out[list(vocab.code_token_range)]
    torch.testing.assert_close(new.mean(0), out_rows.mean(0), rtol=1e-4, atol=1e-5)
    assert new.std(0).mean() > 0  # spread out, not all the mean
    torch.testing.assert_close(_text_logits(model, ids)[..., :original], before, rtol=0, atol=0)
