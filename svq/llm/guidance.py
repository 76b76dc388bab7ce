"""Classifier-free guidance for the pictures an LLM writes (as LlamaGen and Janus sample).

Inside an image span, each code's log-probabilities are pushed away from what the LLM would
write with no request at all:

    log p_guided = log p_uncond + s * (log p_cond - log p_uncond)

p_cond: the conversation's own next-token distribution (after the span processor's masks);
p_uncond: the LLM's on the bare picture so far, the raw sequence `<boi>` + the codes this span
has written, with nothing before it (no chat markup, persona or request). s = 1 is plain
decoding; s > 1 leans on what the request changes. The LLM learns that branch from bare
pictures in training (`svq.llm.bare_pictures`: the SFT's `describe_bare_pictures`); an LLM that
never saw one has no such branch to lean from. Text outside the spans is left alone.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import LogitsProcessor

from .logits import span_state
from .vocabulary import ImageVocabulary


class ImageGuidance(LogitsProcessor):
    """Classifier-free guidance of scale `scale` inside image spans (see the module). Run it
    after `ImageSpanLogitsProcessor` (and `PinnedCodes`), before any sampler.

    llm: the causal LM that writes (called on token ids, no cache: the bare branch is at most
    N tokens).
    """

    def __init__(self, llm: nn.Module, vocab: ImageVocabulary, scale: float):
        if scale <= 0:
            raise ValueError(f"image_guidance must be > 0 (1: none), got {scale}")
        self.llm, self.vocab, self.scale = llm, vocab, scale

    @torch.no_grad()
    def unconditional(
        self, input_ids: torch.Tensor, rows: torch.Tensor, written: torch.Tensor
    ) -> torch.Tensor:
        """Next-token log-probabilities (R, V) of the bare branch for `rows` (R,) of the batch,
        each after its span's `written` (R,) codes."""
        lengths = 1 + written  # (R,) tokens of each bare sequence: <boi> and the codes
        tokens = input_ids.new_zeros(len(rows), int(lengths.max()))
        mask = torch.zeros_like(tokens)
        for i, (row, n) in enumerate(zip(rows.tolist(), written.tolist(), strict=True)):
            tokens[i, : n + 1] = input_ids[row, input_ids.shape[1] - n - 1 :]  # <boi>, codes
            mask[i, : n + 1] = 1
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
