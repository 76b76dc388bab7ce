"""Chat SFT (issue 8): teach an LLM to draw the pictures a chat asks for, keep its own look
across them and answer about the user's pictures (docs/design.md §1, §7).

    python -m svq.train.llm_sft svq/configs/llm_sft_tiny.yaml --output_dir runs/sft \
        --svq_path RUN/stage2/model --spatial_vq_path RUN/vq/model --judge_path runs/judge
    torchrun --standalone --nproc_per_node 2 -m svq.train.llm_sft CONFIG.yaml ...  # 2 processes

Model: `llm: tiny` builds a from-scratch Qwen2 (`svq.llm.tiny`: a sentencepiece tokenizer trained on
the chat world's text, preset `tiny_preset`) and trains every weight (`mode: full`); a local
path or hub id loads that LLM (`mode: lora`: LoRA adapters, the image tokens' rows, the
projector and the VQ head train). The svq tokenizer and the spatial VQ stay frozen.

Data (`svq.llm.sft_data`): the chat world's train dialogues ("world") or a JSONL file of chats;
every picture is encoded once into a cache (OUTPUT_DIR/image_cache unless `cache_dir`).
Assistant pictures are targets (36 ids: LM labels; spatial ids: VQ-head labels), user pictures
are understood (features through the projector); labels on assistant turns only.
`describe_photos` > 0 mixes in that many one-turn chats about the chats' own pictures ("what is
in this photo?" -> its caption; `svq.llm.describe_data`): every attribute a label, not one.
`describe_per_step` > 0 adds them instead: each step also trains on a second batch of that many
(its LM loss weighted by `describe_loss_weight`, logged as `describe_loss`), the dialogues'
exposure per step unchanged; `describe_questions` makes a share of them the world's photo
questions, and `describe_drawn_turns` adds the chats' picture-drawing turns, cut out with the
persona and the request (`svq.llm.drawn_turns`), to what that batch draws from.
`group_by_length` batches chats of similar length (`svq.train.length_grouping`): the same chats
with less padding, a shorter step.

Loss (the chat model's `forward`, weighted by its config from these options) = lm_loss_weight * LM
cross-entropy (text and image tokens; image-span tokens weigh image_token_loss_weight against
text's 1; with `constrained_lm_loss` each over the tokens generation allows there) +
vq_loss_weight * VQ-head cross-entropy over the spatial grid; both are logged. The conventions
of stage 1 (`svq/train/common.py`): accelerate, gradient accumulation, atomic resumable
checkpoints, progress, TensorBoard, a non-finite loss stops the run. Every `eval_steps` and at
the end: `svq.eval.chat_eval.evaluate_chat` on held-out dialogues (validation and held-out
identities).

Writes OUTPUT_DIR/model (SVQChat.save_pretrained), OUTPUT_DIR/summary.json (what `main`
returns), OUTPUT_DIR/chat_eval.json (+ images/) from the final evaluation, options.yaml,
validation.jsonl, checkpoints/, logs/.

`pretrain_steps` > 0: first that many steps of language pre-training (`svq.llm.pretrain_data`: the
world's dialogues as text and captions followed by their pictures' ids, every token a label;
its own warm-up and schedule, the same optimiser), then the SFT steps. Not checkpointed: a run
stopped during it starts it again; a resumed SFT run does not repeat it (its summary then has
no pre-training record). Measured against more SFT steps in docs/RESULTS_sft.md.

`image_tokenizer: spatial` trains the baseline of issue 9: the same LLM writing each picture as
the spatial VQ's h*w ids in sequence (no VQ head; the spatial decoder paints them).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
from accelerate import DistributedDataParallelKwargs
from accelerate.utils import set_seed
from torch.utils.data import ConcatDataset, DataLoader
from transformers import get_scheduler

from svq import StyledVAEVQ
from svq.data.dialogues import OPENING_SEASONS
from svq.eval.chat_eval import evaluate_chat
from svq.eval.judge import load_judge
from svq.llm import LoraOptions, SVQChat, collate
from svq.llm.bare_pictures import BarePictureDataset
from svq.llm.describe_data import described_photos, with_described_photos
from svq.llm.drawn_turns import drawn_turns
from svq.llm.pretrain_data import PretrainDataset, text_chats
from svq.llm.sft_data import SFTDataset, encode_images, load_chats
from svq.llm.tiny import chat_world_corpus, tiny_llm, train_tokenizer
from svq.spatial_vq import SpatialVQ
from svq.train import common
from svq.train.length_grouping import SimilarLengthSampler
from svq.train.loop import Stage, log_validation, train_loop
from svq.train.options import (
    EvalOptions,
    LoggingOptions,
    OptimizerOptions,
    RunOptions,
    StepOptions,
)

logger = logging.getLogger("llm_sft")


@dataclass
class SFTOptions(EvalOptions, LoggingOptions, OptimizerOptions, StepOptions, RunOptions):
    """Every option of a chat SFT run: the shared groups (svq/train/options.py) and these. A
    YAML file gives them first; `--flag value` overrides."""

    # --- model
    svq_path: str = ""  # StyledVAEVQ release folder with its codebook.safetensors
    spatial_vq_path: str | None = None  # SpatialVQ folder: the VQ head's target and decoder
    judge_path: str | None = None  # AttributeJudge folder: judged validation scores
    llm: str = "tiny"  # "tiny" (from scratch, svq.llm.tiny) or a local path / hub id
    tiny_preset: str = "test"  # svq.llm.tiny preset for llm: tiny ("test", "demo", "demo8")
    tiny_corpus_dialogues: int = 400  # chat-world dialogues the tiny tokenizer is trained on
    mode: str = "full"  # "full" (every LLM weight) or "lora"
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    init: str = "projection"  # new token rows: "projection" of the codebook, or "mean"
    projector: dict | str | None = None  # ProjectorConfig fields (JSON on the command line)
    vq_head: dict | str | None = None  # VQHeadConfig fields (width, depth, heads, ...)
    image_tokenizer: str = "svq"  # "svq" (36 tokens + VQ head) or "spatial" (baseline: h*w ids)
    # how the saved chat paints the ids it writes, its evaluation included: "vq_head" (the VQ
    # head's spatial grid; the default with a spatial VQ) or "svq" (the tokenizer's own decoder)
    image_decoder: str | None = None
    gradient_checkpointing: bool = False
    # --- language pre-training (before SFT; svq.llm.pretrain_data): every token a label
    pretrain_steps: int = 0  # 0: none
    pretrain_dialogues: int = 20000  # world train dialogues as text (pictures left out)
    pretrain_captions: int = -1  # SFT pictures as caption turns (caption + ids); -1: all
    pretrain_lang: str = "mixed"  # "en", "zh" or "mixed": the text's and captions' languages
    pretrain_batch_size: int = 16
    # --- data
    train_data: str = "world"  # "world" (the chat world's train split) or a chats .jsonl
    world_seed: int = 0
    num_train_dialogues: int = 2000  # world only
    lang: str = "en"  # world only: "en", "zh" or "mixed"
    # world only: the kinds the user's requests draw from, repeated to weigh them (default each
    # once: activity, place_season, place_time); the held-out chats keep the default
    request_kinds: list[str] | None = None
    # world only: the opening's seasons, "other" (the motivating chat), "same" or "unnamed"
    # (svq.data.dialogues.OPENING_SEASONS); the held-out chats keep "other"
    opening_season: str = "other"
    # world only: requests answered with the season and time of day before the activity
    # ("Yes! Here I am on a summer day, swimming on a beach."), and so the described photos'
    # captions; the held-out chats keep the activity first
    when_first: bool = False
    # world only: requests answered with what they asked first (the activity for an activity
    # request, the season and time of day for the others), whatever when_first says; the
    # described photos' captions keep when_first; the held-out chats keep the activity first
    asked_first: bool = False
    # one-turn chats "what is in this photo?" -> its caption, from the chats' own pictures,
    # mixed into the training chats (svq.llm.describe_data); -1: one per picture
    describe_photos: int = 0
    # the same chats added, not mixed: a second batch of this many each step, its LM loss
    # weighted by describe_loss_weight (logged as describe_loss); 0: none
    describe_per_step: int = 0
    describe_loss_weight: float = 1.0
    # the share of those chats that ask one of the world's photo questions (in the dialogues'
    # form, answered with the truth) instead of the caption; 0: captions only
    describe_questions: float = 0.0
    # the per-step batch also draws from every turn of the training chats in which the
    # assistant draws a picture, cut out with the system prompt and the user's message before
    # it (svq.llm.drawn_turns): the request's words copied into the reply without the talk
    describe_drawn_turns: bool = False
    # the per-step batch also draws from bare pictures (each assistant picture alone, `<boi>`
    # codes `<eoi>` with no chat around it; svq.llm.bare_pictures): image_guidance's
    # unconditional branch
    describe_bare_pictures: bool = False
    describe_captions: bool = True  # False: the per-step batch holds no captions
    # classifier-free guidance scale of the saved chat's pictures, its validation included
    # (svq.llm.guidance; needs describe_bare_pictures); 1: none
    image_guidance: float = 1.0
    cache_dir: str | None = None  # image cache; default OUTPUT_DIR/image_cache
    max_length: int = 1024  # longer chats are left out (counted in the log)
    dataloader_num_workers: int = 0
    # batches of chats of similar length (svq.train.length_grouping): less padding, so a
    # faster step; the batches' order stays random
    group_by_length: bool = False
    # --- validation
    num_val_dialogues: int = 16  # held-out chats (validation and held-out identities, in turn)
    val_seed: int = 0  # the world they come from
    eval_max_new_tokens: int = 0  # 0: room for two pictures and text
    eval_batch_size: int = 8
    eval_steps: int = 0  # also at the end; 0: only at the end
    # --- loss and optimisation
    lm_loss_weight: float = 1.0
    vq_loss_weight: float = 1.0
    # image-span tokens against text tokens inside the LM loss (a weighted mean; 1: plain)
    image_token_loss_weight: float = 1.0
    # each token's cross-entropy over the tokens generation allows there: a code against its
    # position's codes, text against text (the image rows never pushed down by text labels)
    constrained_lm_loss: bool = False
    # the codes after each picture's first image_prefix_tokens weigh image_suffix_loss_weight
    # times the image weight: the loss leans on the ids that say the scene (1: off)
    image_prefix_tokens: int = 6
    image_suffix_loss_weight: float = 1.0
    # > 0: each code's label spread over its codebook neighbours at this temperature (1: a
    # code at the median nearest-code distance weighs e^-1 of its own; svq.llm.soft_targets)
    code_target_temperature: float = 0.0
    per_device_train_batch_size: int = 8
    learning_rate: float = 1e-3

    def __post_init__(self) -> None:
        for name in ("projector", "vq_head"):
            setattr(self, name, common.json_option(name, getattr(self, name)) or None)
        for name in ("spatial_vq_path", "judge_path", "cache_dir"):
            setattr(self, name, common.none_if_empty(getattr(self, name)))
        if not self.svq_path:
            raise ValueError("svq_path is required: a StyledVAEVQ folder with its codebook")
        if self.mode not in ("full", "lora"):
            raise ValueError(f"mode must be 'full' or 'lora', got {self.mode!r}")
        if self.image_tokenizer not in ("svq", "spatial"):
            raise ValueError(f"image_tokenizer must be 'svq' or 'spatial': {self.image_tokenizer}")
        if self.image_decoder not in (None, "vq_head", "svq"):
            raise ValueError(
                f"image_decoder must be 'vq_head' or 'svq', got {self.image_decoder!r}"
            )
        if self.image_decoder is not None and self.image_tokenizer == "spatial":
            raise ValueError("image_decoder is the svq route's: the spatial baseline paints its "
                             "own grid")  # fmt: skip
        if self.image_tokenizer == "spatial" and self.spatial_vq_path is None:
            raise ValueError("image_tokenizer 'spatial' needs spatial_vq_path")
        common.check_training_options(self)
        weights = (self.lm_loss_weight, self.vq_loss_weight, self.image_token_loss_weight,
                   self.image_suffix_loss_weight)  # fmt: skip
        if min(weights) < 0 or self.image_prefix_tokens < 0:
            raise ValueError("loss weights and image_prefix_tokens must be >= 0")
        if self.code_target_temperature < 0:
            raise ValueError(
                f"code_target_temperature must be >= 0, got {self.code_target_temperature}"
            )
        if self.code_target_temperature > 0 and self.image_tokenizer == "spatial":
            raise ValueError("code_target_temperature is the svq route's (its codebook's codes)")
        if self.pretrain_steps < 0 or self.pretrain_batch_size < 1:
            raise ValueError("pretrain_steps must be >= 0 and pretrain_batch_size >= 1")
        if self.pretrain_lang not in ("en", "zh", "mixed"):
            raise ValueError(f"pretrain_lang must be 'en', 'zh' or 'mixed': {self.pretrain_lang}")
        if self.opening_season not in OPENING_SEASONS:
            raise ValueError(f"opening_season must be one of {OPENING_SEASONS}, got "
                             f"{self.opening_season!r}")  # fmt: skip
        if self.describe_photos < -1:
            raise ValueError(f"describe_photos must be >= -1, got {self.describe_photos}")
        if not 0 <= self.describe_questions <= 1:
            raise ValueError(f"describe_questions must be in [0, 1], got {self.describe_questions}")
        for name in ("describe_drawn_turns", "describe_bare_pictures"):
            if getattr(self, name) and not self.describe_per_step:
                raise ValueError(f"{name} adds to the per-step batch: set describe_per_step")
        sources = (self.describe_captions, self.describe_drawn_turns, self.describe_bare_pictures)
        if self.describe_per_step and not any(sources):
            raise ValueError("describe_per_step with no captions, drawn turns or bare pictures")
        if self.image_guidance <= 0:
            raise ValueError(f"image_guidance must be > 0 (1: none), got {self.image_guidance}")
        if self.image_guidance != 1 and not self.describe_bare_pictures:
            raise ValueError("image_guidance leans away from bare pictures the LLM has not "
                             "learned: set describe_bare_pictures")  # fmt: skip
        if self.describe_per_step < 0 or self.describe_loss_weight < 0:
            raise ValueError("describe_per_step and describe_loss_weight must be >= 0, got "
                             f"{self.describe_per_step}, {self.describe_loss_weight}")  # fmt: skip
        if self.num_val_dialogues < 0:
            raise ValueError(f"num_val_dialogues must be >= 0, got {self.num_val_dialogues}")


# --- model ---------------------------------------------------------------------------------


def build_model(o: SFTOptions) -> SVQChat:
    """The SVQChat to train: the LLM extended with the image language, new parts attached."""
    svq = StyledVAEVQ.load(o.svq_path, require_codebook=True)
    spatial = None
    if o.spatial_vq_path is not None:
        spatial = SpatialVQ.from_pretrained(o.spatial_vq_path).requires_grad_(False).eval()
    lora = None
    if o.mode == "lora":
        lora = LoraOptions(r=o.lora_r, alpha=o.lora_alpha, dropout=o.lora_dropout)
    kwargs = {"init": o.init, "lora": lora, "projector": o.projector, "seed": o.seed}
    if o.image_tokenizer == "spatial":
        kwargs["image_tokenizer"] = "spatial"
    else:
        kwargs["vq_head"], kwargs["image_decoder"] = o.vq_head, o.image_decoder
    if o.llm == "tiny":
        tokenizer = train_tokenizer(chat_world_corpus(o.tiny_corpus_dialogues, o.seed))
        llm = tiny_llm(tokenizer, o.tiny_preset, o.seed)
        chat = SVQChat.build(llm, svq, spatial, tokenizer=tokenizer, **kwargs)
    else:
        chat = SVQChat.build(o.llm, svq, spatial, **kwargs)
    chat.config.lm_loss_weight, chat.config.vq_loss_weight = o.lm_loss_weight, o.vq_loss_weight
    chat.config.image_token_loss_weight = o.image_token_loss_weight
    chat.config.constrained_lm_loss = o.constrained_lm_loss
    chat.config.image_prefix_tokens = o.image_prefix_tokens
    chat.config.image_suffix_loss_weight = o.image_suffix_loss_weight
    chat.config.code_target_temperature = o.code_target_temperature
    chat.config.image_guidance = o.image_guidance
    if o.gradient_checkpointing:
        chat.llm.gradient_checkpointing_enable()
    return chat


def sft_loss(chat_output) -> dict[str, torch.Tensor]:
    """The model's loss (weighted by its config, which `build_model` set from the options) and
    its terms for the logs (vq 0 when the batch has no spatial targets)."""
    lm = chat_output.lm_loss.float()
    vq = chat_output.vq_loss.float() if chat_output.vq_loss is not None else lm.new_zeros(())
    return {"loss": chat_output.loss.float(), "lm_loss": lm, "vq_loss": vq}


def shuffled_loader(
    dataset, batch_size: int, pad: int, seed: int, o: SFTOptions, by_length: bool = False
) -> DataLoader:
    """Shuffled, full batches of encoded conversations, padded on the right with `pad`;
    `by_length`: each batch of chats of similar length (`SimilarLengthSampler`)."""
    sampler = None
    if by_length:
        sampler = SimilarLengthSampler(dataset.lengths, batch_size, seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        drop_last=True,
        collate_fn=partial(collate, pad_token_id=pad),
        num_workers=o.dataloader_num_workers,
        generator=torch.Generator().manual_seed(seed),
    )


# --- language pre-training ----------------------------------------------------------------


def pretrain(model, optimizer, accelerator, o: SFTOptions, data, images) -> dict:
    """`o.pretrain_steps` steps of language pre-training (`svq.llm.pretrain_data`) with its own
    warmup and schedule, the same optimiser; returns its seconds, last loss and example counts.
    Not checkpointed: a run stopped during it starts it again."""
    started = time.perf_counter()
    raw = accelerator.unwrap_model(model)
    langs = ("en", "zh") if o.pretrain_lang == "mixed" else (o.pretrain_lang,)
    text = text_chats(o.world_seed, o.pretrain_dialogues, o.pretrain_lang)
    dataset = PretrainDataset(
        text, data if o.pretrain_captions else None, images, raw.tokenizer, raw.vocab, langs,
        o.max_length, o.pretrain_captions, o.image_tokenizer,
    )  # fmt: skip
    # not sharded by accelerate (its checkpoints would then expect this loader on resume):
    # each process draws its own order
    seed = o.seed + 1 + accelerator.process_index
    loader = shuffled_loader(dataset, o.pretrain_batch_size, raw.pad_token_id, seed, o)
    # its own schedule, not registered for checkpoints (the SFT's scheduler is the one they carry)
    warmup = common.warmup_steps(o.pretrain_steps, o.warmup_steps, o.warmup_ratio)
    scheduler = get_scheduler(o.lr_scheduler_type, optimizer, warmup, o.pretrain_steps)
    state = {"step": 0, "dialogues_seen": 0, "train_seconds": 0.0}
    result = train_loop(
        accelerator, o,
        Stage(loss=lambda batch, step: sft_loss(model(batch.to(accelerator.device),
                                                      full_logits=False)),
              prefix="pretrain", seen="dialogues_seen", speed="dialogues_per_s",
              postfix=lambda logs, p, speed: {"lm": f"{logs[f'{p}/lm_loss']:.3f}"},
              checkpoints=False),
        model=model, optimizer=optimizer, scheduler=scheduler,
        batches=common.endless_batches(loader), state=state, max_steps=o.pretrain_steps,
        global_batch=o.pretrain_batch_size * o.gradient_accumulation_steps
        * accelerator.num_processes,
    )  # fmt: skip
    optimizer.zero_grad(set_to_none=True)
    for group in optimizer.param_groups:  # the SFT schedule starts from the base rate
        group["lr"] = group.get("initial_lr", group["lr"])
    record = {
        "pretrain_steps": o.pretrain_steps,
        "pretrain_seconds": round(time.perf_counter() - started, 1),
        "pretrain_lm_loss": result.logs.get("pretrain/lm_loss"),
        "pretrain_examples": {"text": dataset.num_text, "captions": dataset.num_captions,
                              "too_long": dataset.num_too_long},
    }  # fmt: skip
    logger.info("pre-training: %s", json.dumps(record))
    return record


# --- validation ----------------------------------------------------------------------------


def validate(chat: SVQChat, judge, o: SFTOptions, out_dir: Path, step: int) -> dict:
    """evaluate_chat on the held-out dialogues; the record: step and the three scores."""
    with torch.random.fork_rng(devices=[]):  # no effect on the training's random stream
        report = evaluate_chat(
            chat, judge, num_dialogues=o.num_val_dialogues, seed=o.val_seed, out_dir=out_dir,
            lang="zh" if o.lang == "zh" else "en", max_new_tokens=o.eval_max_new_tokens or None,
            batch_size=o.eval_batch_size,
        )  # fmt: skip
    return {"step": step, **scores(report)}


def scores(report: dict) -> dict:
    """The headline numbers of a chat_eval report (judged ones None when the judge is absent or
    failed its gate; identity control-corrected, see svq/eval/chat_scores.py)."""
    following, identity = report["generation_following"], report["identity_consistency"]
    replies = report["replies"]
    picture_vs_text = replies["picture_vs_text"]
    return {
        "generation_following": following["mean"] if following else None,
        "pictures_drawn": report["pictures_drawn"]["value"],
        "identity_within_dialogue": identity["within_dialogue"]["value"] if identity else None,
        "identity_vs_persona": identity["vs_persona"]["value"] if identity else None,
        "understanding_accuracy": report["understanding"]["accuracy"],
        "understanding_blind_majority": report["understanding"]["blind_majority"],
        "image_token_validity": report["image_token_validity"],
        "replies_well_formed": replies["well_formed"]["value"],
        "replies_on_form": replies["on_form"]["value"],
        "text_following": replies["text_following"]["mean"],
        "picture_vs_text": picture_vs_text["value"] if picture_vs_text else None,
        "judge": report["judge"]["status"],
    }


# --- the run -------------------------------------------------------------------------------


def main(o: SFTOptions) -> dict:
    """Train; returns (and writes to summary.json) wall time, steps, losses, validation."""
    started = time.perf_counter()
    accelerator = common.make_accelerator(
        o,
        # a batch without user pictures leaves the projector unused (or the VQ head, without
        # assistant pictures): DDP must not wait for their gradients
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    logging.basicConfig(level=logging.INFO if accelerator.is_main_process else logging.WARNING)
    out = Path(o.output_dir)
    resume = common.resolve_resume(out, o.resume_from_checkpoint, o.overwrite_output_dir)
    set_seed(o.seed)  # the same new weights on every process
    chat = build_model(o).to(accelerator.device)
    judge = load_judge(o.judge_path, accelerator.device) if o.judge_path else None

    # --- data: pictures encoded once (by the main process; the others read its cache)
    data = load_chats(
        o.train_data, seed=o.world_seed, split="train", num_dialogues=o.num_train_dialogues,
        lang=o.lang, request_kinds=o.request_kinds, opening_season=o.opening_season,
        when_first=o.when_first, asked_first=o.asked_first,
    )  # fmt: skip
    data = with_described_photos(data, o.describe_photos, o.lang, o.seed, o.when_first,
                                 o.describe_questions)  # fmt: skip
    cache_dir = Path(o.cache_dir) if o.cache_dir else out / "image_cache"
    with accelerator.main_process_first():
        images = encode_images(
            data, chat.svq, chat.spatial, cache_dir, progress=accelerator.is_main_process
        )
    dataset = SFTDataset(data, images, chat.tokenizer, chat.vocab, o.max_length, o.image_tokenizer)
    loader = shuffled_loader(dataset, o.per_device_train_batch_size, chat.pad_token_id, o.seed, o,
                             o.group_by_length)  # fmt: skip
    described = None  # the second batch of each step: one-turn chats about the chats' pictures
    if o.describe_per_step:
        pool = []  # chats over the training chats' image table
        if o.describe_captions:
            pool += described_photos(data, -1, o.lang, o.seed, o.when_first,
                                     o.describe_questions).chats  # fmt: skip
        if o.describe_drawn_turns:
            pool += drawn_turns(data).chats
        sets = []
        if pool:
            sets.append(SFTDataset(replace(data, chats=pool), images, chat.tokenizer,
                                   chat.vocab, o.max_length, o.image_tokenizer))  # fmt: skip
        if o.describe_bare_pictures:
            sets.append(BarePictureDataset(data, images, chat.vocab, o.image_tokenizer))
        extra = sets[0] if len(sets) == 1 else ConcatDataset(sets)
        described = shuffled_loader(extra, o.describe_per_step, chat.pad_token_id, o.seed, o)

    # --- optimiser and schedule
    trainable = [n for n, p in chat.named_parameters() if p.requires_grad]
    optimizer = common.adamw(chat, o)
    accum, world = o.gradient_accumulation_steps, accelerator.num_processes
    global_batch = o.per_device_train_batch_size * accum * world
    model, optimizer, loader = accelerator.prepare(chat, optimizer, loader)
    if described is not None:
        described = accelerator.prepare(described)
    pretrained = {}
    if o.pretrain_steps and resume is None:  # a resumed run's weights are past pre-training
        pretrained = pretrain(model, optimizer, accelerator, o, data, images)
    max_steps = common.run_length(o, loader)
    scheduler, warmup = common.make_scheduler(accelerator, o, optimizer, max_steps)
    raw = accelerator.unwrap_model(model)

    fresh = {"step": 0, "dialogues_seen": 0, "train_seconds": 0.0}
    state = common.start_state(accelerator, resume, o.seed, fresh)
    resolved = common.record_options(
        accelerator, o, "llm_sft", resume,
        max_steps=max_steps, warmup_steps=warmup, global_batch=global_batch,
        train_dialogues=len(dataset), too_long=dataset.num_too_long, pictures=len(images.ids),
        cache_reused=images.reused, trainable_tensors=len(trainable),
        trainable_parameters=sum(p.numel() for p in raw.parameters() if p.requires_grad),
    )  # fmt: skip
    logger.info("%s", json.dumps(resolved["resolved"]))

    # --- loop
    def loss(batch: Any, step: int) -> dict[str, torch.Tensor]:
        dialogues, captions = batch if described is not None else (batch, None)
        device = accelerator.device
        with accelerator.autocast():  # one call (one forward for DDP) with the captions
            out = model(dialogues.to(device), full_logits=False,
                        extra=captions.to(device) if captions is not None else None)  # fmt: skip
        terms = sft_loss(out)
        if out.extra_lm_loss is not None:
            told = out.extra_lm_loss.float()
            terms["loss"] = terms["loss"] + o.describe_loss_weight * told
            terms["describe_loss"] = told
        return terms

    def validate_at(step: int, final: bool) -> dict[str, Any] | None:
        periodic = o.eval_steps and step % o.eval_steps == 0 and not final  # final: below
        if not (accelerator.is_main_process and o.num_val_dialogues and periodic):
            return None
        record = validate(raw, judge, o, out / "val" / f"step-{step:08d}", step)
        model.train()
        return record

    def lm_and_vq(logs: dict[str, float], prefix: str, speed: str) -> dict[str, str]:
        return {"lm": f"{logs[f'{prefix}/lm_loss']:.3f}", "vq": f"{logs[f'{prefix}/vq_loss']:.3f}"}

    batches: Iterator[Any] = common.endless_batches(loader, state["step"] * accum)
    if described is not None:  # pairs (dialogues, captions), both resumed at the same step
        batches = zip(
            batches, common.endless_batches(described, state["step"] * accum), strict=True
        )
    result = train_loop(
        accelerator, o,
        Stage(loss=loss, validate=validate_at, seen="dialogues_seen", speed="dialogues_per_s",
              postfix=lm_and_vq),
        model=model, optimizer=optimizer, scheduler=scheduler,
        batches=batches, state=state, max_steps=max_steps, global_batch=global_batch,
    )  # fmt: skip
    logs, last_record = result.logs, result.record

    # --- save, then the final evaluation (OUTPUT_DIR/chat_eval.json and images/)
    summary = {}
    if accelerator.is_main_process:
        common.save_release(raw, out)
        if o.num_val_dialogues:
            last_record = validate(raw, judge, o, out, state["step"])
            log_validation(accelerator, last_record, out, state["step"])
        summary = {
            "steps": state["step"],
            "dialogues_seen": state["dialogues_seen"],
            "train_seconds": round(state["train_seconds"], 1),
            "wall_seconds": round(time.perf_counter() - started, 1),
            "lm_loss": logs.get("train/lm_loss"),
            "vq_loss": logs.get("train/vq_loss") if raw.vq_head is not None else None,
            "describe_loss": logs.get("train/describe_loss"),
            "validation": last_record,
            **pretrained,
            "image_tokenizer": o.image_tokenizer,
            "model": str(out / "model"),
        }
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return summary


if __name__ == "__main__":
    common.run_script(main, SFTOptions, logger)
