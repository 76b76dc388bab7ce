"""Soft code targets (svq.llm.soft_targets): the neighbour table by hand, the loss against its
one-hot limit and a hand computation, and the chat's LM loss with code_target_temperature."""

import pytest
import torch
import torch.nn.functional as F
from test_llm_chat import plain_loss_per_token
from test_llm_tiny import build_chat

from svq.llm import IGNORE_INDEX, SVQChatConfig
from svq.llm.logits import span_cross_entropy
from svq.llm.soft_targets import neighbour_targets, soft_code_cross_entropy
from svq.llm.vocabulary import ImageVocabulary


def test_neighbour_targets_by_hand():
    """Codes 0, 1, 3 on a line: squared distances [[0,1,9],[1,0,4],[9,4,0]], nearest-code
    distances 1, 1, 4 (median 1): row k is softmax(-d_k / T); a scaled codebook (its median
    scales alike) gives the same table; per-position codebooks get a block each."""
    codes = torch.tensor([[0.0], [1.0], [3.0]])
    squared = torch.tensor([[0.0, 1, 9], [1, 0, 4], [9, 4, 0]])
    for t in (0.5, 1.0, 2.0):
        table = neighbour_targets(codes, t)
        assert table.shape == (1, 3, 3)
        torch.testing.assert_close(table[0], (-squared / t).softmax(-1))
        torch.testing.assert_close(table.sum(-1), torch.ones(1, 3))
    per_position = neighbour_targets(torch.stack([codes, 5 * codes]), 1.0)
    assert per_position.shape == (2, 3, 3)
    torch.testing.assert_close(per_position[1], per_position[0])
    with pytest.raises(ValueError, match="> 0"):
        neighbour_targets(codes, 0.0)
    with pytest.raises(ValueError, match="K >= 2"):
        neighbour_targets(codes[:1], 1.0)


@pytest.mark.parametrize("per_position", [True, False])
def test_soft_code_cross_entropy_by_hand_and_its_one_hot_limit(per_position):
    """Against -sum_j q(j | k) log p(j) by hand (p over the vocabulary, or over the target's
    codebook when constrained); at a tiny temperature the one-hot losses: F.cross_entropy and
    span_cross_entropy."""
    k, n = 4, 3
    vocab = ImageVocabulary(boi_id=0, eoi_id=1, image_id=2, code_offset=3, num_codes=k,
                            num_positions=n, per_position=per_position)  # fmt: skip
    size = vocab.code_offset + vocab.num_code_tokens + 2  # two text tokens after the codes
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(10, size, generator=g)
    codes_at = torch.tensor(list(vocab.code_token_range))
    targets = codes_at[torch.arange(10) % len(codes_at)]  # every code token, in turn
    codes = torch.randn((n, k, 2) if per_position else (k, 2), generator=g)
    table = neighbour_targets(codes, 1.0)
    for row, target in enumerate(targets.tolist()):
        local = target - vocab.code_offset
        block, code = (local // k, local % k) if per_position else (0, local)
        columns = vocab.code_offset + block * k + torch.arange(k)
        q = table[block, code]
        free = -(q * logits[row].log_softmax(-1)[columns]).sum()
        held = -(q * logits[row, columns].log_softmax(-1)).sum()
        got = soft_code_cross_entropy(logits[row : row + 1], targets[row : row + 1], vocab, table)
        torch.testing.assert_close(got[0], free)
        got = soft_code_cross_entropy(
            logits[row : row + 1], targets[row : row + 1], vocab, table, constrained=True
        )
        torch.testing.assert_close(got[0], held)
    sharp = neighbour_targets(codes, 1e-4)
    torch.testing.assert_close(
        soft_code_cross_entropy(logits, targets, vocab, sharp),
        F.cross_entropy(logits, targets, reduction="none"),
    )
    torch.testing.assert_close(
        soft_code_cross_entropy(logits, targets, vocab, sharp, constrained=True),
        span_cross_entropy(logits, targets, vocab),
    )
    with pytest.raises(ValueError, match="code token"):
        soft_code_cross_entropy(logits[:1], torch.tensor([size - 1]), vocab, table)


@pytest.mark.parametrize("per_position", [True, False])
def test_chat_lm_loss_with_soft_code_targets(per_position):
    """code_target_temperature T: the LM loss is the mean of the text tokens' cross-entropy
    and the codes' soft cross-entropy over the svq codebook's table, by hand from the full
    logits; both passes agree; the spatial route refuses it."""
    chat = build_chat(per_position=per_position)
    batch, plain, ce = plain_loss_per_token(chat)
    targets = batch.labels[:, 1:]
    labelled = targets != IGNORE_INDEX
    code = chat.vocab.is_code(targets) & labelled
    assert code.any() and (labelled & ~code).any()
    table = neighbour_targets(chat.svq.codebook.codes, 0.5)
    expected = ce.clone()
    expected[code] = soft_code_cross_entropy(
        plain.logits[:, :-1][code], targets[code], chat.vocab, table
    )
    expected = expected[labelled].mean()
    assert not torch.isclose(expected, plain.lm_loss)
    with torch.no_grad():
        chat.config.code_target_temperature = 0.5
        for full in (True, False):
            got = chat(batch, full_logits=full).lm_loss
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(chat.code_targets(), table)
        # with constrained_lm_loss: the text over the text, the codes' soft loss over their
        # codebook
        rows, labels = plain.logits[:, :-1][labelled], targets[labelled]
        is_code = chat.vocab.is_code(labels)
        held = span_cross_entropy(rows, labels, chat.vocab)
        held[is_code] = soft_code_cross_entropy(
            rows[is_code], labels[is_code], chat.vocab, table, constrained=True
        )
        chat.config.constrained_lm_loss = True
        try:
            for full in (True, False):
                got = chat(batch, full_logits=full).lm_loss
                torch.testing.assert_close(got, held.mean(), rtol=1e-5, atol=1e-6)
        finally:
            chat.config.constrained_lm_loss = False
        assert not torch.isclose(held.mean(), expected)
    with pytest.raises(ValueError, match="code_target_temperature"):
        SVQChatConfig(vocabulary=chat.vocab.to_dict(), code_target_temperature=-1.0)
    with pytest.raises(ValueError, match="code_target_temperature"):
        SVQChatConfig(vocabulary=chat.vocab.to_dict(), code_target_temperature=1.0,
                      image_tokenizer="spatial", image_decoder="spatial")  # fmt: skip
