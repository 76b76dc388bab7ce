"""Training: one script per stage, each `python -m svq.train.<stage> CONFIG [--flag value]`
(or `svq train <stage> ...`); CONFIG is a file or a shipped config's name (svq/configs/).

Parts:
    options         the option groups every stage composes (run, data, loss, optimiser, logs)
    common          options from YAML + flags, checkpoints and exact resume, optimiser groups,
                    schedule, the non-finite-loss stop, release folders and summaries
    loop            the one optimisation loop; a stage gives it its loss and hooks (`Stage`)
    image_data      the tokenizer stages' training loader and held-out pictures
    losses          their objectives: MSE + L1 + LPIPS, or a code head's cross-entropy
    stage1          the tokenizer: encoder, 36 continuous tokens, decoder
    attribute_loss  stage 1's auxiliary loss: the attribute record read from the first tokens
    stage2          the k-means codebook over the frozen encoder's tokens, then a decoder
                    fine-tune on quantised tokens
    vq              the spatial VQ tokenizer (the last mile)
    ids_to_grid     the ids-to-grid model, offline on rendered pictures
    llm_sft         chat SFT of the LLM (optional language pre-training first)
    judge           the attribute judge the eval suite reads

`TRAINERS` names them for `svq train` and the demo; `trainer(name)` imports one.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# name -> (module, its options dataclass, what it trains)
TRAINERS = {
    "stage1": ("svq.train.stage1", "Stage1Options", "the tokenizer: 36 continuous tokens"),
    "stage2": ("svq.train.stage2", "Stage2Options", "the k-means vocabulary (+ decoder fine-tune)"),
    "vq": ("svq.train.vq", "VQOptions", "the spatial VQ tokenizer (the last mile)"),
    "sft": ("svq.train.llm_sft", "SFTOptions", "chat SFT of the LLM"),
    "ids_to_grid": ("svq.train.ids_to_grid", "IdsToGridOptions", "36 ids -> the spatial grid"),
    "judge": ("svq.train.judge", "JudgeOptions", "the attribute judge the eval suite reads"),
}


def trainer(name: str) -> tuple[ModuleType, type]:
    """The trainer `name` of TRAINERS: (its module, with `main`; its options dataclass)."""
    module_name, options_name, _ = TRAINERS[name]
    module = importlib.import_module(module_name)
    return module, getattr(module, options_name)
