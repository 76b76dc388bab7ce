"""Reading an LLM and its tokenizer from a folder (or a hub id), strictly and faithfully."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)


def load_llm(name_or_path: str | Path, dtype: torch.dtype | None = None) -> PreTrainedModel:
    """`AutoModelForCausalLM.from_pretrained` (a local folder or a hub id), but weights that do
    not match the config are an error naming them (transformers only logs a warning)."""
    llm, info = AutoModelForCausalLM.from_pretrained(
        str(name_or_path), dtype=dtype, output_loading_info=True
    )
    problems = {k: v for k, v in info.items() if v}
    if problems:
        raise ValueError(f"LLM weights of {name_or_path} do not match its config: {problems}")
    return llm.eval()


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """`AutoTokenizer.from_pretrained`, except that a folder with a tokenizer.json is read
    exactly as saved.

    transformers 5.x maps some model types (qwen2 among them) to their own tokenizer class
    whatever tokenizer_config.json says, and that class rebuilds the normaliser and
    pre-tokenizer (byte-level BPE): a sentencepiece tokenizer saved beside a Qwen2 model
    comes back silently garbled. `PreTrainedTokenizerFast` reads tokenizer.json as it is.
    """
    if (Path(path) / "tokenizer.json").is_file():
        return PreTrainedTokenizerFast.from_pretrained(str(path))
    return AutoTokenizer.from_pretrained(str(path))
