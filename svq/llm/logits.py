"""Constrained decoding of image spans: a `transformers` LogitsProcessor for `model.generate`.

Reading each sequence so far (prompt included): after an open `<boi>` only code tokens are
allowed (per-position codebooks: only the next position's block), exactly N of them, then only
`<eoi>`; outside an image span code tokens, `<eoi>` and `<image>` are forbidden. The state is
recomputed from `input_ids` at every step (no memory between calls), so it works with the KV
cache, greedy or sampled decoding, batches, and a prompt that ends in `<boi>` (which asks for
an image). `generate` runs custom processors before its temperature / top-k / top-p warpers, so
those only ever see allowed tokens. `span_cross_entropy` is the training loss over the same
allowed sets.

`PinnedCodes` fixes chosen positions of every picture a row writes to given codes (e.g. the
person's tokens of a reference picture), the rest written freely around them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from transformers import LogitsProcessor

from .vocabulary import ImageVocabulary


def span_state(
    input_ids: torch.Tensor, vocab: ImageVocabulary
) -> tuple[torch.Tensor, torch.Tensor]:
    """input_ids: (B, T) -> (inside (B,) bool: an image span is open; written (B,) long: tokens
    after its `<boi>`, i.e. the index of the next image position)."""
    b, t = input_ids.shape
    if t == 0:
        return torch.zeros(b, dtype=torch.bool), torch.zeros(b, dtype=torch.long)
    index = torch.arange(t, device=input_ids.device)
    last_boi = torch.where(input_ids == vocab.boi_id, index, -1).amax(1)  # (B,)
    last_eoi = torch.where(input_ids == vocab.eoi_id, index, -1).amax(1)
    inside = last_boi > last_eoi
    return inside, torch.where(inside, t - 1 - last_boi, 0)


class ImageSpanLogitsProcessor(LogitsProcessor):
    """Forces well-formed image spans: `<boi>`, exactly N code tokens, `<eoi>`.

    Pass it to `model.generate(..., logits_processor=[ImageSpanLogitsProcessor(vocab)])`.
    """

    def __init__(self, vocab: ImageVocabulary):
        self.vocab = vocab
        self._masks: dict[tuple[int, torch.device], tuple[torch.Tensor, ...]] = {}

    def _token_masks(self, size: int, device: torch.device) -> tuple[torch.Tensor, ...]:
        """(outside (V,), is_code (V,), position of each code token (V,), is_eoi (V,)), cached."""
        key = (size, device)
        if key not in self._masks:
            v = self.vocab
            token = torch.arange(size, device=device)
            is_code = v.is_code(token)
            per_block = v.num_codes if v.per_position else v.num_code_tokens
            position = torch.where(is_code, (token - v.code_offset) // per_block, -1)
            is_eoi = token == v.eoi_id
            outside = ~is_code & ~is_eoi & (token != v.image_id)
            self._masks[key] = (outside, is_code, position, is_eoi)
        return self._masks[key]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        """input_ids: (B, T) the sequences so far; scores: (B, V) next-token logits."""
        outside, is_code, position, is_eoi = self._token_masks(scores.shape[-1], scores.device)
        inside, written = span_state(input_ids.to(scores.device), self.vocab)
        n = self.vocab.num_positions
        if self.vocab.per_position:
            code_ok = position.unsqueeze(0) == written.unsqueeze(1)  # (B, V) that position's block
        else:
            code_ok = is_code.unsqueeze(0)  # (1, V) every code token
        in_span = torch.where((written < n).unsqueeze(1), code_ok, is_eoi.unsqueeze(0))
        allowed = torch.where(inside.unsqueeze(1), in_span, outside.unsqueeze(0))  # (B, V)
        return scores.masked_fill(~allowed, -float("inf"))


def span_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, vocab: ImageVocabulary
) -> torch.Tensor:
    """Next-token cross-entropy over the tokens generation allows (`ImageSpanLogitsProcessor`'s
    rules), read from each target: a code against its position's codes (per-position
    codebooks; every code with a shared one), `<eoi>` alone (0), any other token against the
    tokens allowed outside a span (no code, `<eoi>` or `<image>`).

    logits: (M, V), targets: (M,) labelled tokens -> (M,) per-token losses (fp32).
    """
    if bool((targets == vocab.image_id).any()):
        raise ValueError("an <image> token is labelled: generation never writes one")
    size = logits.shape[-1]
    token = torch.arange(size, device=logits.device)
    outside = ~vocab.is_code(token) & (token != vocab.eoi_id) & (token != vocab.image_id)
    column = outside.long().cumsum(0) - 1  # token -> its column among the outside tokens
    code, eoi = vocab.is_code(targets), targets == vocab.eoi_id
    text = ~code & ~eoi
    ce = logits.new_zeros(targets.shape, dtype=torch.float32)
    if bool(text.any()):
        ce[text] = F.cross_entropy(
            logits[text][:, outside].float(), column[targets[text]], reduction="none"
        )
    if bool(code.any()):
        local = (targets[code] - vocab.code_offset) % vocab.num_codes  # its id in its codebook
        rows = logits[code].gather(1, vocab.codebook_tokens(targets[code]))  # (Mc, K)
        ce[code] = F.cross_entropy(rows.float(), local, reduction="none")
    return ce


class ImageSpanSampler(LogitsProcessor):
    """Sampled pictures, greedy text: inside an image span the logits are divided by
    `temperature` and cut to the `top_k` best and the smallest set of mass `top_p`; outside,
    only the best token stays. Run after `ImageSpanLogitsProcessor`, with `do_sample=True`
    and generate's own warpers off (`SVQChat.generate(image_temperature=...)` does both)."""

    def __init__(
        self,
        vocab: ImageVocabulary,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
    ):
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0 (greedy: no sampler), got {temperature}")
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be >= 1 or None, got {top_k}")
        if top_p is not None and not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1] or None, got {top_p}")
        self.vocab, self.temperature, self.top_k, self.top_p = vocab, temperature, top_k, top_p

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        """input_ids: (B, T) the sequences so far; scores: (B, V) next-token logits."""
        inside, written = span_state(input_ids.to(scores.device), self.vocab)
        inside = inside & (written < self.vocab.num_positions)  # the codes, not the <eoi>
        out = scores / self.temperature
        if self.top_k is not None:
            kth = out.topk(min(self.top_k, out.shape[-1]), dim=-1).values[:, -1:]
            out = out.masked_fill(out < kth, -float("inf"))
        if self.top_p is not None:
            order = out.sort(dim=-1, descending=True)
            mass = order.values.softmax(-1).cumsum(-1)
            drop = mass - order.values.softmax(-1) >= self.top_p  # mass before it already >= p
            drop = torch.zeros_like(drop).scatter(-1, order.indices, drop)  # vocabulary order
            out = out.masked_fill(drop, -float("inf"))
        best = scores.argmax(-1, keepdim=True)
        greedy = torch.full_like(scores, -float("inf")).scatter(-1, best, 0.0)
        return torch.where(inside.unsqueeze(1), out, greedy)


def pins_from(ids: torch.Tensor, positions: Sequence[int]) -> torch.Tensor:
    """ids: (N,) a picture's codebook ids -> (N,) pins: its code at `positions`, -1 (free)
    elsewhere."""
    ids = torch.as_tensor(ids).long()
    if ids.ndim != 1:
        raise ValueError(f"expected one picture's ids (N,), got shape {tuple(ids.shape)}")
    positions = list(positions)
    if any(not 0 <= p < ids.numel() for p in positions):
        raise ValueError(f"pinned positions {positions} outside [0, {ids.numel()})")
    pins = torch.full_like(ids, -1)
    pins[positions] = ids[positions]
    return pins


class PinnedCodes(LogitsProcessor):
    """Pins codes inside every image span a row writes: where `pins[b, p]` >= 0, position p of
    row b's pictures can only be that code; -1 leaves the position free. Run after
    `ImageSpanLogitsProcessor` (and before `ImageSpanSampler`); the model then writes the
    other positions conditioned on the pinned ones.

    pins: (B, N) long, a code id in [0, K) or -1, one row per sequence of the batch.
    """

    def __init__(self, vocab: ImageVocabulary, pins: torch.Tensor):
        pins = torch.as_tensor(pins).long()
        if pins.ndim != 2 or pins.shape[1] != vocab.num_positions:
            raise ValueError(
                f"pins must have shape (B, {vocab.num_positions}), got {tuple(pins.shape)}"
            )
        if bool(((pins < -1) | (pins >= vocab.num_codes)).any()):
            raise ValueError(f"pins must be code ids in [0, {vocab.num_codes}) or -1 (free)")
        self.vocab, self.pins = vocab, pins

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        """input_ids: (B, T) the sequences so far; scores: (B, V) next-token logits."""
        if input_ids.shape[0] != self.pins.shape[0]:
            raise ValueError(
                f"{self.pins.shape[0]} rows of pins for a batch of {input_ids.shape[0]}"
            )
        v, n = self.vocab, self.vocab.num_positions
        inside, written = span_state(input_ids.to(scores.device), v)
        at = written.clamp(max=n - 1)  # (B,) the position written next
        pin = self.pins.to(scores.device).gather(1, at.unsqueeze(1)).squeeze(1)  # (B,)
        active = inside & (written < n) & (pin >= 0)
        block = at * v.num_codes if v.per_position else torch.zeros_like(at)
        token = (v.code_offset + block + pin.clamp_min(0)).unsqueeze(1)  # (B, 1)
        only = torch.full_like(scores, -float("inf")).scatter(1, token, scores.gather(1, token))
        return torch.where(active.unsqueeze(1), only, scores)
