"""A from-scratch Qwen2-architecture LLM for tests and the CPU demo: a sentencepiece tokenizer
trained on the chat world's text, wrapped as a fast tokenizer with a Qwen-style chat template,
and a small `Qwen2ForCausalLM` whose embedding matrix, like Qwen2.5's, has spare rows past the
tokenizer.

The wrap (docs/design.md §10): transformers 5.x `LlamaTokenizer(vocab_file=...)` silently ignores
the file, so the sentencepiece model is rebuilt as a `tokenizers` Unigram (transformers'
`SpmConverter.build_tokenizer_from_spm_proto`) inside `PreTrainedTokenizerFast`. The model is
trained with identity normalisation and no dummy prefix, so the fast tokenizer gives the same
ids as sentencepiece itself; byte fallback covers any text.
"""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import sentencepiece as spm
import torch
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM
from transformers.convert_slow_tokenizer import SpmConverter, import_protobuf

from svq.data import caption, make_dialogue, sample_identity, sample_record

IM_START, IM_END, ENDOFTEXT, UNK = "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<unk>"

# Qwen2.5-Instruct's template without the tool-calling branches.
QWEN_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if loop.first and message['role'] != 'system' %}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# Model shapes as data. "test": unit tests (~0.1M parameters); "demo": the CPU demo ("demo8":
# the same, 8 layers deep; "demo-untied": the same, its output layer apart from the input
# embeddings, which Qwen2.5-0.5B ties); "qwen2-0.5b": Qwen2.5-0.5B's shape (random weights,
# for the GPU benchmark).
DEMO: dict[str, Any] = {
    "hidden_size": 256,
    "intermediate_size": 768,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 4096,
}
PRESETS: dict[str, dict[str, Any]] = {
    "test": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 2048,
    },
    "demo": DEMO,
    "demo8": {**DEMO, "num_hidden_layers": 8},
    "demo-untied": {**DEMO, "tie_word_embeddings": False},
    "qwen2-0.5b": {
        "hidden_size": 896,
        "intermediate_size": 4864,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        "max_position_embeddings": 32768,
        "rope_theta": 1000000.0,
        "rms_norm_eps": 1e-6,
        "vocab_size": 151936,
    },
}


def chat_world_corpus(num_dialogues: int = 400, seed: int = 0) -> list[str]:
    """Text of the chat world: dialogues rendered with the chat template (roles, markers and
    newlines included) and captions, in English and Chinese."""
    rng = random.Random(seed)
    lines = []
    for i in range(num_dialogues):
        lang = "zh" if i % 4 == 3 else "en"
        dialogue = make_dialogue(rng, sample_identity(rng), sample_identity(rng), lang=lang)
        for message in dialogue.messages:
            text = "".join(p["text"] for p in message["content"] if p["type"] == "text")
            lines.append(f"{message['role']}\n{text}\n")
        lines.append(caption(sample_record(rng), lang))
    return lines


def train_tokenizer(
    corpus: list[str], vocab_size: int = 1024, chat_template: str = QWEN_CHAT_TEMPLATE
) -> PreTrainedTokenizerFast:
    """A sentencepiece Unigram model trained on `corpus`, as a fast tokenizer with the Qwen
    special tokens (`<|im_end|>` ends a turn and is the eos; `<|endoftext|>` pads)."""
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus),
        model_writer=model,
        vocab_size=vocab_size,
        hard_vocab_limit=False,  # a small corpus may support fewer pieces: take what it has
        model_type="unigram",
        normalization_rule_name="identity",
        add_dummy_prefix=False,
        remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True,
        split_by_whitespace=True,
        byte_fallback=True,
        character_coverage=1.0,
        unk_id=0,
        bos_id=-1,
        eos_id=-1,
        pad_id=-1,
        num_threads=1,
        minloglevel=2,
    )
    return wrap_sentencepiece(model.getvalue(), chat_template)


def wrap_sentencepiece(
    model_proto: bytes, chat_template: str = QWEN_CHAT_TEMPLATE
) -> PreTrainedTokenizerFast:
    """A serialized sentencepiece Unigram model -> `PreTrainedTokenizerFast` (same ids)."""
    proto = import_protobuf().ModelProto()
    proto.ParseFromString(model_proto)
    if proto.trainer_spec.model_type != 1:  # 1 = UNIGRAM in sentencepiece_model.proto
        raise ValueError("wrap_sentencepiece: only Unigram sentencepiece models are supported")
    vocab = [(piece.piece, piece.score) for piece in proto.pieces]
    backend = SpmConverter.build_tokenizer_from_spm_proto(proto, vocab)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token=UNK,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        additional_special_tokens=[IM_START],
    )
    tokenizer.chat_template = chat_template
    return tokenizer


def tiny_config(
    tokenizer: PreTrainedTokenizerFast, preset: str = "test", **overrides: Any
) -> Qwen2Config:
    """A Qwen2 config for `tokenizer`. The embedding matrix gets spare rows (the tokenizer's
    size rounded up to a multiple of 64, plus 64), as Qwen2.5's has."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    fields = {
        "vocab_size": (len(tokenizer) // 64 + 2) * 64,
        "tie_word_embeddings": True,
        "bos_token_id": None,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        **PRESETS[preset],
        **overrides,
    }
    if fields["vocab_size"] < len(tokenizer):
        raise ValueError(f"vocab_size {fields['vocab_size']} < tokenizer size {len(tokenizer)}")
    return Qwen2Config(**fields)


def tiny_llm(
    tokenizer: PreTrainedTokenizerFast, preset: str = "test", seed: int = 0, **overrides: Any
) -> Qwen2ForCausalLM:
    """A randomly initialised `Qwen2ForCausalLM` for `tokenizer` (generation stops at
    `<|im_end|>`, pads with `<|endoftext|>`)."""
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the global RNG
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(tiny_config(tokenizer, preset, **overrides))
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval()


def save_tiny_llm(
    directory: str | Path, preset: str = "test", seed: int = 0, num_dialogues: int = 400
) -> Path:
    """Train the tokenizer, build the model and save both to `directory`, a local model folder
    like any other: `SVQChat.build(directory, ...)` loads it. Read the tokenizer back with
    `llm.load_tokenizer`: `AutoTokenizer` maps a qwen2 folder to Qwen2Tokenizer, which rebuilds
    a byte-level pipeline over this sentencepiece vocabulary."""
    tokenizer = train_tokenizer(chat_world_corpus(num_dialogues, seed))
    model = tiny_llm(tokenizer, preset, seed)
    directory = Path(directory)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
