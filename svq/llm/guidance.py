"""Classifier-free guidance for the pictures an LLM writes (as LlamaGen and Janus sample).

Inside an image span, each code's log-probabilities are pushed away from what the LLM would
write with no request at all:

    log p_guided = log p_uncond + s * (log p_cond - log p_uncond)

p_cond: the conversation's own next-token distribution (after the span processor's masks);
p_uncond: the LLM's on the bare picture so far, `bare_prefix` (the chat template around an
assistant turn that holds nothing but a picture: no system prompt of the persona, no request)
followed by `<boi>` and the codes this span has written. s = 1 is plain decoding; s > 1 leans
on what the request changes. The LLM learns the unconditional branch from bare pictures in
training (`svq.llm.bare_pictures`: the SFT's `describe_bare_pictures`); an LLM that never saw
one has no such branch to lean from. Text outside the spans is left alone.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import LogitsProcessor, PreTrainedTokenizerBase

from .bare_pictures import bare_picture_chat
from .conversation import encode_conversation
from .logits import span_state
from .vocabulary import ImageVocabulary


def bare_prefix(tokenizer: PreTrainedTokenizerBase, vocab: ImageVocabulary) -> list[int]:
    """The token ids of a bare picture's chat up to and including its `<boi>`: exactly what
    the LLM reads before the codes of a bare picture's training chat (`bare_pictures`)."""
    ids = torch.zeros(vocab.num_positions, dtype=torch.long)
    tokens = encode_conversation(bare_picture_chat(ids), tokenizer, vocab).input_ids.tolist()
    return tokens[: tokens.index(vocab.boi_id) + 1]


class ImageGuidance(LogitsProcessor):
    """Classifier-free guidance of scale `scale` inside image spans (see the module). Run it
    after `ImageSpanLogitsProcessor` (and `PinnedCodes`), before any sampler.

    llm: the causal LM that writes (called on token ids, no cache: the bare branch is at most
    N + len(prefix) tokens); prefix: `bare_prefix(...)`.
    """

    def __init__(self, llm: nn.Module, vocab: ImageVocabulary, prefix: list[int], scale: float):
        if scale <= 0:
            raise ValueError(f"image_guidance must be > 0 (1: none), got {scale}")
        if not prefix or prefix[-1] != vocab.boi_id:
            raise ValueError("the bare prefix must end in <boi>")
        self.llm, self.vocab, self.prefix, self.scale = llm, vocab, list(prefix), scale

    @torch.no_grad()
    def unconditional(self, input_ids: torch.Tensor, rows: torch.Tensor, written: torch.Tensor):
        """Next-token log-probabilities (R, V) of the bare branch for `rows` (R,) of the batch,
        each after its span's `written` (R,) codes."""
        lengths = len(self.prefix) + written  # (R,) tokens of each bare sequence
        width = int(lengths.max())
        tokens = input_ids.new_zeros(len(rows), width)
        mask = torch.zeros_like(tokens)
        prefix = torch.tensor(self.prefix, device=input_ids.device)
        for i, (row, n) in enumerate(zip(rows.tolist(), written.tolist(), strict=True)):
            codes = input_ids[row, input_ids.shape[1] - n :] if n else input_ids.new_zeros(0)
            tokens[i, : len(prefix) + n] = torch.cat([prefix, codes])
            mask[i, : len(prefix) + n] = 1
        logits = self.llm(input_ids=tokens, attention_mask=mask).logits  # right-padded
        last = logits[torch.arange(len(rows), device=logits.device), lengths - 1]  # (R, V)
        return last.float().log_softmax(-1)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        """input_ids: (B, T) the sequences so far; scores: (B, V) next-token logits."""
        if self.scale == 1.0:
            return scores
        inside, written = span_state(input_ids.to(scores.device), self.vocab)
        coding = inside & (written < self.vocab.num_positions)  # a code comes next
        if not bool(coding.any()):
            return scores
        rows = coding.nonzero().squeeze(1)
        cond = scores[rows].float().log_softmax(-1)  # -inf where the masks forbid
        uncond = self.unconditional(input_ids.to(scores.device), rows, written[rows])
        guided = uncond + self.scale * (cond - uncond)  # -inf stays -inf (scale > 0)
        out = scores.clone()
        out[rows] = guided.to(scores.dtype)
        return out
