"""The image language's place in an LLM's vocabulary: `<boi>`, `<eoi>`, `<image>` and one token
per codebook entry, and the pure mapping code id <-> LLM token id.

Token names: `<svq_k>` for a shared codebook of K codes (K tokens); `<svq_p_k>` for per-position
codebooks (one block of K tokens per position p, N * K tokens: their union, since id k at
position 0 and id k at position 1 are different vectors). The code tokens are added in one call
and so take consecutive ids: code k (at position p) is token `code_offset + p * K + k`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tokenizers import AddedToken
from transformers import PreTrainedTokenizerBase

from svq.config_base import ConfigBase

BOI = "<boi>"  # begin of image: the LLM writes it, then the image's tokens
EOI = "<eoi>"  # end of image
IMAGE = "<image>"  # understanding placeholder: its input embedding is replaced by a projection
SPECIAL_TOKENS = (BOI, EOI, IMAGE)


def code_token_names(num_codes: int, num_positions: int, per_position: bool) -> list[str]:
    """The code tokens in id order: `<svq_k>` (K) or `<svq_p_k>` (N * K, position-major)."""
    if not per_position:
        return [f"<svq_{k}>" for k in range(num_codes)]
    return [f"<svq_{p}_{k}>" for p in range(num_positions) for k in range(num_codes)]


@dataclass(frozen=True)
class ImageVocabulary(ConfigBase):
    """Where the image tokens sit among an LLM's token ids. Holds ids only (no tensors): build it
    with `add_to_tokenizer` (or `from_tokenizer` for a tokenizer that already has them)."""

    boi_id: int
    eoi_id: int
    image_id: int
    code_offset: int  # token id of code 0 (of position 0)
    num_codes: int  # K: codes per codebook
    num_positions: int = 36  # N: tokens per image
    per_position: bool = False  # one block of K tokens per position

    def __post_init__(self) -> None:
        for name in ("num_codes", "num_positions"):
            value = getattr(self, name)
            self.require(value >= 1, f"{name} must be >= 1, got {value}")
        specials = {self.boi_id, self.eoi_id, self.image_id}
        self.require(
            len(specials) == 3 and not any(i in self.code_token_range for i in specials),
            f"special ids overlap: {self}",
        )

    # --- sizes
    @property
    def num_code_tokens(self) -> int:
        """K for a shared codebook, N * K for per-position codebooks."""
        return self.num_codes * (self.num_positions if self.per_position else 1)

    @property
    def code_token_range(self) -> range:
        return range(self.code_offset, self.code_offset + self.num_code_tokens)

    @property
    def new_token_ids(self) -> list[int]:
        """Every id this vocabulary added: the three specials, then the code tokens."""
        return [self.boi_id, self.eoi_id, self.image_id, *self.code_token_range]

    def position_range(self, position: int) -> range:
        """Token ids allowed at image position `position` (all code tokens when shared)."""
        if not 0 <= position < self.num_positions:
            raise ValueError(f"position must be in [0, {self.num_positions}), got {position}")
        if not self.per_position:
            return self.code_token_range
        start = self.code_offset + position * self.num_codes
        return range(start, start + self.num_codes)

    # --- the mapping
    def codes_to_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        """ids: (..., N) long code ids in [0, K) -> (..., N) LLM token ids."""
        ids = torch.as_tensor(ids)
        self._check_codes(ids)
        if not self.per_position:
            return ids.long() + self.code_offset
        positions = torch.arange(self.num_positions, device=ids.device)
        return ids.long() + self.code_offset + positions * self.num_codes

    def tokens_to_codes(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: (..., N) LLM token ids of one or more image spans -> (..., N) code ids.
        Raises ValueError for a token that is no code token, or the wrong position's token."""
        tokens = torch.as_tensor(tokens).long()
        if tokens.ndim < 1 or tokens.shape[-1] != self.num_positions:
            raise ValueError(
                f"expected tokens of shape (..., {self.num_positions}), got {tuple(tokens.shape)}"
            )
        if not bool(self.is_code(tokens).all()):
            raise ValueError("tokens_to_codes: found tokens that are not code tokens")
        local = tokens - self.code_offset
        if not self.per_position:
            return local
        positions = torch.arange(self.num_positions, device=tokens.device)
        if not bool((local // self.num_codes == positions).all()):
            raise ValueError("tokens_to_codes: a code token sits at another position than its own")
        return local - positions * self.num_codes

    def is_code(self, tokens: torch.Tensor) -> torch.Tensor:
        """Bool mask of the code tokens, same shape as `tokens`."""
        tokens = torch.as_tensor(tokens)
        return (tokens >= self.code_offset) & (tokens < self.code_offset + self.num_code_tokens)

    def codebook_tokens(self, codes: torch.Tensor) -> torch.Tensor:
        """codes: (M,) code tokens -> (M, K) the token ids of each one's codebook (its
        position's block per position; every code token when shared), in code-id order."""
        local = torch.as_tensor(codes).long() - self.code_offset
        block = local // self.num_codes if self.per_position else torch.zeros_like(local)
        start = self.code_offset + block * self.num_codes  # (M,)
        return start.unsqueeze(1) + torch.arange(self.num_codes, device=start.device)

    def code_positions(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: (B, T) -> (B, T) long: each code token's place in its image span (0 for the
        first code after `<boi>`), -1 for every other token."""
        is_code = self.is_code(tokens)
        count = is_code.long().cumsum(1)  # codes up to and including each token
        start = torch.where(tokens == self.boi_id, count, 0).cummax(1).values  # at the last <boi>
        return torch.where(is_code, count - start - 1, -1)

    def span(self, ids: torch.Tensor) -> list[int]:
        """ids: (N,) code ids -> the token ids `<boi>`, N code tokens, `<eoi>` of one image."""
        return [self.boi_id, *self.codes_to_tokens(ids).tolist(), self.eoi_id]

    def placeholder(self) -> list[int]:
        """The understanding span `<boi>`, N x `<image>`, `<eoi>`."""
        return [self.boi_id, *[self.image_id] * self.num_positions, self.eoi_id]

    def span_text(self, ids: torch.Tensor | None = None) -> str:
        """The span as text for a chat template: codes if `ids` (N,) is given, else placeholders."""
        if ids is None:
            return BOI + IMAGE * self.num_positions + EOI
        names = code_token_names(self.num_codes, self.num_positions, self.per_position)
        tokens = self.codes_to_tokens(torch.as_tensor(ids)).tolist()
        return BOI + "".join(names[t - self.code_offset] for t in tokens) + EOI

    # --- tokenizers
    @classmethod
    def add_to_tokenizer(
        cls,
        tokenizer: PreTrainedTokenizerBase,
        num_codes: int,
        num_positions: int = 36,
        per_position: bool = False,
    ) -> ImageVocabulary:
        """Add the image tokens to `tokenizer` (in place) unless it already has all of them.

        All are added in one call as special tokens (never split, not normalised, dropped by
        `decode(skip_special_tokens=True)`), so the code tokens get consecutive ids.
        """
        names = [*SPECIAL_TOKENS, *code_token_names(num_codes, num_positions, per_position)]
        have = tokenizer.get_vocab()
        present = sum(name in have for name in names)
        if present == 0:
            tokens = [AddedToken(n, special=True, normalized=False) for n in names]
            tokenizer.add_tokens(tokens, special_tokens=True)
        elif present != len(names):
            raise ValueError(
                f"the tokenizer has {present} of the {len(names)} image tokens: it was extended "
                "for another codebook size or layout"
            )
        return cls.from_tokenizer(tokenizer, num_codes, num_positions, per_position)

    @classmethod
    def from_tokenizer(
        cls,
        tokenizer: PreTrainedTokenizerBase,
        num_codes: int,
        num_positions: int = 36,
        per_position: bool = False,
    ) -> ImageVocabulary:
        """Look the image tokens up in a tokenizer that has them; checks the code ids are
        consecutive."""
        have = tokenizer.get_vocab()
        names = code_token_names(num_codes, num_positions, per_position)
        missing = [n for n in (*SPECIAL_TOKENS, names[0], names[-1]) if n not in have]
        if missing:
            raise ValueError(f"the tokenizer lacks the image tokens {missing}")
        offset = have[names[0]]
        wrong = [n for i, n in enumerate(names) if have.get(n) != offset + i]
        if wrong:
            raise ValueError(
                f"the tokenizer's code tokens are not consecutive from {offset}: "
                f"{len(wrong)} misplaced, e.g. {wrong[:3]}"
            )
        return cls(
            boi_id=have[BOI],
            eoi_id=have[EOI],
            image_id=have[IMAGE],
            code_offset=offset,
            num_codes=num_codes,
            num_positions=num_positions,
            per_position=per_position,
        )

    # --- checks
    def _check_codes(self, ids: torch.Tensor) -> None:
        if ids.is_floating_point() or ids.dtype == torch.bool:
            raise ValueError(f"expected integer code ids, got {ids.dtype}")
        if ids.ndim < 1 or ids.shape[-1] != self.num_positions:
            raise ValueError(
                f"expected code ids of shape (..., {self.num_positions}), got {tuple(ids.shape)}"
            )
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.num_codes):
            raise ValueError(
                f"code ids must be in [0, {self.num_codes}), got [{int(ids.min())}, "
                f"{int(ids.max())}]"
            )
