"""Reading an LLM and its tokenizer from a folder (or a hub id), strictly and faithfully.

A name is a hub id only when it is `owner/name` and no such local path exists
(`svq.hub.is_hub_id`); a local path that does not exist is an error, never a hub request.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from svq.hub import hub_failure, is_hub_id


def check_source(name_or_path: str | Path) -> str:
    """`name_or_path` as a string, after checking that a local path exists."""
    name = str(name_or_path)
    if not is_hub_id(name) and not os.path.isdir(os.path.expanduser(name)):
        if os.path.exists(os.path.expanduser(name)):
            raise NotADirectoryError(f"{name} is a file; expected an LLM folder")
        raise FileNotFoundError(f"LLM folder {name} does not exist")
    return os.path.expanduser(name)


def load_llm(name_or_path: str | Path, dtype: torch.dtype | None = None) -> PreTrainedModel:
    """`AutoModelForCausalLM.from_pretrained` (a local folder or a hub id), but weights that do
    not match the config are an error naming them (transformers only logs a warning)."""
    name = check_source(name_or_path)
    try:
        llm, info = AutoModelForCausalLM.from_pretrained(
            name, dtype=dtype, output_loading_info=True
        )
    except OSError as error:  # transformers' form of every hub failure
        if is_hub_id(name):
            raise hub_failure(name, error) from None
        raise
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
    name = check_source(path)
    if (Path(name) / "tokenizer.json").is_file():
        return PreTrainedTokenizerFast.from_pretrained(name)
    try:
        return AutoTokenizer.from_pretrained(name)
    except OSError as error:
        if is_hub_id(name):
            raise hub_failure(name, error) from None
        raise
