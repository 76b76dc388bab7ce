"""Give an LLM the image vocabulary: add the tokens, resize the embeddings without touching the
existing rows, and initialise the new rows.

Embedding matrices can already be larger than the tokenizer (Qwen2.5-0.5B: 151,936 rows for
151,665 tokens): the new tokens then land in the spare rows first and the matrix only grows by
what does not fit; it never shrinks. Tied input/output embeddings stay one tensor (transformers
re-ties them after resizing; the rows are written once, through the input matrix).

Initialisation of the new rows (per matrix: the input embeddings, and the output embeddings
when they are not tied), from the statistics of the original rows only (spare rows are noise):
- "mean": every new row is the mean of the original rows.
- "projection": the codebook vectors, centred and mapped to the LLM width by a projection (a
  fixed random orthogonal map by default, which keeps their geometry; or any callable, e.g. a
  trained `ImageProjector`), scaled to the original rows' mean distance from their mean, plus
  that mean. `<boi>`, `<eoi>`, `<image>` get the mean.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .vocabulary import ImageVocabulary

INITS = ("projection", "mean")


def extend_llm(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    codes: torch.Tensor,
    num_positions: int = 36,
    init: str = "projection",
    projection: Callable[[torch.Tensor], torch.Tensor] | None = None,
    seed: int = 0,
    pad_to_multiple_of: int | None = None,
) -> ImageVocabulary:
    """Add the image tokens to `tokenizer`, resize `model`'s embeddings and initialise the new
    rows (both in place). Returns the vocabulary mapping.

    codes: (K, E) shared or (N, K, E) per-position codebook vectors (`Codebook.codes`).
    """
    if init not in INITS:  # checked before the tokenizer or the model change
        raise ValueError(f"init {init!r} is not one of {INITS}")
    if codes.ndim not in (2, 3):
        raise ValueError(f"codes must be (K, E) or (N, K, E), got {tuple(codes.shape)}")
    per_position = codes.ndim == 3
    if per_position and codes.shape[0] != num_positions:
        raise ValueError(f"codes are for {codes.shape[0]} positions, not {num_positions}")
    vocab = ImageVocabulary.add_to_tokenizer(
        tokenizer, codes.shape[-2], num_positions, per_position
    )
    resize_embeddings(model, len(tokenizer), pad_to_multiple_of)
    init_new_rows(model, vocab, codes.reshape(-1, codes.shape[-1]), init, projection, seed)
    return vocab


def resize_embeddings(
    model: PreTrainedModel, num_tokens: int, pad_to_multiple_of: int | None = None
) -> int:
    """Grow the embedding matrices to hold `num_tokens` ids; never shrink. Returns the rows."""
    rows = model.get_input_embeddings().weight.shape[0]
    if num_tokens <= rows:
        return rows
    # mean_resizing=False: the rows we use are written by init_new_rows; padding rows past the
    # tokenizer stay at the model's own random init, like the spare rows of released models.
    model.resize_token_embeddings(
        num_tokens, pad_to_multiple_of=pad_to_multiple_of, mean_resizing=False
    )
    return model.get_input_embeddings().weight.shape[0]


def embedding_matrices(model: nn.Module) -> list[torch.Tensor]:
    """The input embedding weight, and the output one when it is a different tensor."""
    weights = [model.get_input_embeddings().weight]
    output = model.get_output_embeddings()
    if output is not None and output.weight.data_ptr() != weights[0].data_ptr():
        weights.append(output.weight)
    return weights


def embeddings_tied(model: nn.Module) -> bool:
    """Whether the input and output embeddings are one tensor."""
    return len(embedding_matrices(model)) == 1 and model.get_output_embeddings() is not None


@torch.no_grad()
def init_new_rows(
    model: nn.Module,
    vocab: ImageVocabulary,
    codes: torch.Tensor,
    init: str = "projection",
    projection: Callable[[torch.Tensor], torch.Tensor] | None = None,
    seed: int = 0,
) -> None:
    """Write the rows of `vocab.new_token_ids` in every embedding matrix of `model`.

    codes: (num_code_tokens, E) codebook vectors in code-token order (only for "projection").
    The original rows are those below the first new id.
    """
    if init not in INITS:
        raise ValueError(f"init {init!r} is not one of {INITS}")
    if init == "projection" and codes.shape[0] != vocab.num_code_tokens:
        raise ValueError(f"{vocab.num_code_tokens} code tokens but {codes.shape[0]} code vectors")
    new_ids = torch.tensor(vocab.new_token_ids)
    num_original = int(new_ids.min())
    for weight in embedding_matrices(model):
        if weight.shape[0] <= int(new_ids.max()):
            raise ValueError(f"embedding matrix has {weight.shape[0]} rows; resize it first")
        original = weight[:num_original].float()
        mean = original.mean(0)  # (D,)
        rows = mean.expand(len(new_ids), -1).clone()  # (3 + C, D)
        if init == "projection":
            vectors = _project(codes.float().to(weight.device), weight.shape[1], projection, seed)
            vectors = vectors - vectors.mean(0)
            spread = (original - mean).pow(2).sum(1).mean().sqrt()  # rms distance from the mean
            scale = spread / vectors.pow(2).sum(1).mean().sqrt().clamp_min(1e-12)
            rows[3:] = mean + vectors * scale
        weight[new_ids.to(weight.device)] = rows.to(weight.dtype)


def _project(
    codes: torch.Tensor, width: int, projection: Callable | None, seed: int
) -> torch.Tensor:
    """(C, E) -> (C, D): `projection(codes)`, or a seeded random orthogonal map."""
    if projection is not None:
        out = projection(codes)
        if out.shape != (codes.shape[0], width):
            raise ValueError(f"projection gave {tuple(out.shape)}, need {(codes.shape[0], width)}")
        return out.float()
    generator = torch.Generator().manual_seed(seed)
    matrix = nn.init.orthogonal_(torch.empty(codes.shape[1], width), generator=generator)
    return codes @ matrix.to(codes.device)
