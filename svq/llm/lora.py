"""LoRA for the image-speaking LLM, with peft, where the image tokens' rows are really trained.

The new rows go through peft's `trainable_token_indices` (a `TrainableTokensWrapper` on the
input embeddings that stores only those rows), not `modules_to_save` (a full trainable copy of
the embedding matrices: every original row would train, and a tied lm_head would get its own
copy: the two drift apart, and after `merge_and_unload` a config that still says
tie_word_embeddings=True makes reloading overwrite one with the other — the known failure of
extended-vocabulary LoRA on Qwen2.5-0.5B, transformers#45127 / peft#2777). With tied embeddings
peft puts a tied wrapper on the lm_head that reads the same rows, so input and output stay one
tensor through training, saving, reloading and `merge_and_unload` (tests/test_llm_lora.py);
with untied embeddings both matrices get their own trainable rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn
from transformers import PreTrainedModel

from svq.config_base import ConfigBase

from .embeddings import embeddings_tied
from .vocabulary import ImageVocabulary


@dataclass
class LoraOptions(ConfigBase):
    """The LoRA adapter of the LLM (what `LoraConfig` gets)."""

    r: int = 16  # rank
    alpha: int = 32  # scaling = alpha / r
    dropout: float = 0.05
    target_modules: list[str] | str = "all-linear"  # peft's spelling; lm_head is never a target
    train_new_rows: bool = True  # train the image tokens' embedding rows (trainable tokens)
    extra: dict[str, Any] = field(default_factory=dict)  # any other LoraConfig field

    def __post_init__(self) -> None:
        self.require(self.r >= 1, f"r must be >= 1, got {self.r}")
        self.require(self.alpha > 0, f"alpha must be > 0, got {self.alpha}")
        self.require(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")


def lora_config(model: PreTrainedModel, vocab: ImageVocabulary, options: LoraOptions) -> LoraConfig:
    """The peft config: LoRA on `target_modules` plus trainable rows for the new tokens."""
    indices: list[int] | dict[str, list[int]] | None = None
    tied = embeddings_tied(model)
    if options.train_new_rows:
        indices = vocab.new_token_ids
        if not tied:  # name both matrices; peft would otherwise train only the input rows
            names = {module: name for name, module in model.named_modules()}
            indices = {
                names[model.get_input_embeddings()]: indices,
                names[model.get_output_embeddings()]: indices,
            }
    return LoraConfig(
        r=options.r,
        lora_alpha=options.alpha,
        lora_dropout=options.dropout,
        target_modules=options.target_modules,
        trainable_token_indices=indices,
        task_type="CAUSAL_LM",
        **options.extra,
    )


def apply_lora(
    model: PreTrainedModel, vocab: ImageVocabulary, options: LoraOptions | None = None
) -> PeftModel:
    """Wrap `model` (in place, like peft) with LoRA and trainable image-token rows."""
    return get_peft_model(model, lora_config(model, vocab, options or LoraOptions()))


class BaseWeights:
    """The LLM's own tensors under their own names, still readable after peft wraps it.

    peft wraps modules in place but keeps the wrapped modules and their tensors (LoRA and
    trainable tokens store their changes apart), so reading each state-dict entry from the
    module that owns it gives the un-adapted weights, on whatever device the model is now;
    `save_pretrained(state_dict=...)` then writes a clean base model. peft's only other way
    to get it, `unload()`, removes the adapter.
    """

    def __init__(self, model: nn.Module):
        self._owners: dict[str, tuple[nn.Module, str]] = {}
        for name in model.state_dict():
            path, _, attribute = name.rpartition(".")
            self._owners[name] = (model.get_submodule(path), attribute)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: getattr(m, a).detach() for name, (m, a) in self._owners.items()}


def save_adapter(model: PeftModel, directory: str | Path) -> None:
    """Write the adapter: LoRA matrices and the trained rows (adapter_model.safetensors)."""
    # save_embedding_layers=False: the resized base is saved beside it; "auto" would look the
    # base up on the hub to decide whether to copy whole embedding matrices.
    model.save_pretrained(str(directory), save_embedding_layers=False)


def load_adapter(model: PreTrainedModel, directory: str | Path, trainable: bool) -> PeftModel:
    """Put a saved adapter on a (resized) base model."""
    return PeftModel.from_pretrained(model, str(directory), is_trainable=trainable)
