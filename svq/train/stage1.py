"""Stage 1: train the tokenizer (docs/design.md §4) — encoder, 36 continuous tokens, decoder.

    python -m svq.train.stage1 svq/configs/stage1_tiny.yaml --output_dir runs/s1 [--flag value]
    torchrun --standalone --nproc_per_node 2 -m svq.train.stage1 CONFIG.yaml ...  # 2 processes
    accelerate launch --config_file svq/configs/accelerate/ddp_8gpu.yaml -m svq.train.stage1 CONFIG

Loss = mse_weight * MSE + l1_weight * L1 + lpips_weight * LPIPS(VGG), on [-1, 1] pixels, plus
attribute_loss_weight * the auxiliary semantic loss (svq/train/attribute_loss.py, world data); with
`--spatial_vq_path` (decoder target "spatial_vq") cross-entropy of the decoder's logits against
that frozen spatial tokenizer's ids instead, validated on its decode of the most likely codes.
AdamW (no decay on norms, biases, tables), warm-up + cosine, gradient accumulation through
accelerate (loss scaled, no sync on micro-steps, scheduler per optimiser step), grad clip,
optional EMA. Every `save_steps` an atomic resumable checkpoint; every `eval_steps` a validation
pass (PSNR, SSIM, the prefix curve and token-group ablations, a picture grid). The release
folder `OUTPUT_DIR/model` is written with `save_pretrained` at the end.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import set_seed

from svq import StyledVAEVQ, SVQConfig
from svq.data.schema import IDENTITY_ATTRIBUTES, SCHEMA
from svq.eval.metrics import psnr, ssim
from svq.eval.ordering import default_fill, encode_all, token_report
from svq.images import save_grid
from svq.spatial_vq import SpatialVQ
from svq.train import common
from svq.train.attribute_loss import (
    AttributeReadout,
    attribute_loss,
    attribute_spans,
    swap_identity,
)
from svq.train.image_data import train_loader, validation_images
from svq.train.loop import Stage, train_loop
from svq.train.losses import code_loss, load_lpips, reconstruction_loss
from svq.train.options import ImageTrainingOptions

logger = logging.getLogger("stage1")


@dataclass
class Stage1Options(ImageTrainingOptions):
    """Every option of a stage-1 run: the shared groups (svq/train/options.py) and these. A YAML
    file gives them first; `--flag value` overrides it."""

    # --- model
    model_preset: str = "small"  # an SVQConfig preset: tiny, small, base, base-v1
    model_overrides: dict | str | None = None  # SVQConfig fields over the preset (JSON on CLI)
    gradient_checkpointing: bool = False
    ema_decay: float = 0.0  # > 0: keep an EMA of the weights; it is validated and released
    # --- the per-token views of validation
    token_eval_images: int = 64  # of num_val_images, used for the per-token views
    prefix_ks: list[int] = field(default_factory=lambda: [0, 6, 12, 18, 24, 30, 36])
    # --- loss beyond the pixels
    attribute_loss_weight: float = 0.0  # > 0: the auxiliary semantic loss (train_data "world"):
    # a linear read-out of the picture's attribute record from the first attribute_loss_tokens
    # features, cross-entropy averaged over the attributes, times this weight
    attribute_loss_tokens: int = 6
    attribute_identity_tokens: int = 0  # > 0: the identity attributes are read from the next
    # this many tokens instead (after the first attribute_loss_tokens, the scene's)
    attribute_swap_images: int = 0  # > 0 (with identity tokens): per step, this many pictures'
    # tokens take the person group of another picture, are decoded and encoded again, and the
    # read-out must name the donor's person and the recipient's scene (attribute_loss.swap_identity)
    spatial_vq_path: str | None = None  # a trained SpatialVQ (svq/train/vq.py's OUTPUT_DIR/model):
    # the decoder predicts its grid (target "spatial_vq", grid and codebook size taken from it)
    # with cross-entropy against its ids instead of the pixel losses
    # --- the head's training noise (model config noise_scale) over the run: none before
    # noise_start_ratio x max_steps, then a linear ramp to full over noise_ramp_ratio x max_steps
    noise_start_ratio: float = 0.0
    noise_ramp_ratio: float = 0.0

    def __post_init__(self) -> None:
        self.model_overrides = common.json_option("model_overrides", self.model_overrides) or {}
        self.validation_data = common.none_if_empty(self.validation_data)
        common.check_training_options(self)
        self.check_pixel_loss()
        if self.attribute_loss_weight < 0 or self.attribute_loss_tokens < 1:
            raise ValueError("attribute_loss_weight must be >= 0 and attribute_loss_tokens >= 1")
        if self.attribute_identity_tokens < 0:
            raise ValueError(
                f"attribute_identity_tokens must be >= 0, got {self.attribute_identity_tokens}"
            )
        if self.attribute_swap_images < 0:
            raise ValueError(
                f"attribute_swap_images must be >= 0, got {self.attribute_swap_images}"
            )
        if self.attribute_swap_images and not self.attribute_identity_tokens:
            raise ValueError("attribute_swap_images swaps the person's tokens: it needs "
                             "attribute_identity_tokens > 0")  # fmt: skip
        if self.attribute_swap_images and self.per_device_train_batch_size < max(
            2, self.attribute_swap_images
        ):
            raise ValueError(f"attribute_swap_images {self.attribute_swap_images} needs a batch of "
                             f">= 2 and >= it, got {self.per_device_train_batch_size}")  # fmt: skip
        if self.attribute_identity_tokens and not self.attribute_loss_weight:
            raise ValueError("attribute_identity_tokens needs the attribute loss "
                             "(attribute_loss_weight > 0)")  # fmt: skip
        if self.attribute_loss_weight > 0 and self.train_data != "world":
            raise ValueError(
                f"attribute_loss_weight needs labelled pictures (train_data 'world'), got "
                f"train_data {self.train_data!r}"
            )
        if not (0 <= self.noise_start_ratio <= 1 and 0 <= self.noise_ramp_ratio <= 1):
            raise ValueError("noise_start_ratio and noise_ramp_ratio must be in [0, 1]")
        if self.token_eval_images < 2 or self.num_val_images < self.token_eval_images:
            raise ValueError("need 2 <= token_eval_images <= num_val_images")


def load_spatial_vq(o: Stage1Options) -> SpatialVQ | None:
    """The frozen spatial tokenizer of target "spatial_vq", or None without spatial_vq_path."""
    if o.spatial_vq_path is None:
        return None
    spatial = SpatialVQ.from_pretrained(o.spatial_vq_path).eval().requires_grad_(False)
    return spatial


# --- validation ----------------------------------------------------------------------------


def spatial_report(model: StyledVAEVQ, features: torch.Tensor, images: torch.Tensor) -> dict:
    """Target "spatial_vq": the code accuracy of the predicted grids, and the ceiling: PSNR /
    SSIM of the spatial tokenizer's own reconstruction (its decode of its own ids)."""
    spatial = model.spatial_vq
    ids = torch.cat([spatial.encode(x) for x in images.split(64)])  # (n, S*S)
    logits = torch.cat([model.decode_logits(f) for f in features.split(64)])
    ceiling = torch.cat([spatial.decode(i) for i in ids.split(64)])
    return {
        "code_accuracy": (logits.argmax(-1) == ids).float().mean().item(),
        "spatial_vq_psnr": psnr(ceiling, images).mean().item(),
        "spatial_vq_ssim": ssim(ceiling, images).mean().item(),
    }


def noise_gain(step: int, max_steps: int, o: Stage1Options) -> float:
    """The head's noise factor at optimiser step `step` (1-based): 0 until noise_start_ratio of
    the run, then linear to 1 over noise_ramp_ratio of it (a step when that is 0)."""
    start, ramp = o.noise_start_ratio * max_steps, o.noise_ramp_ratio * max_steps
    if step <= start:
        return 0.0
    return 1.0 if ramp == 0 else min(1.0, (step - start) / ramp)


@torch.no_grad()
def validate(
    model: StyledVAEVQ, images: torch.Tensor, o: Stage1Options, step: int, final: bool
) -> dict:
    """PSNR / SSIM on the held-out images and where the information sits among the tokens
    (svq.eval.ordering.token_report: the prefix curve and swaps of token groups; at the end every
    k and single tokens too). Writes a grid: originals, reconstructions, then decodes of the
    first N/6, N/3, N/2 tokens."""
    images = images.to(next(model.parameters()).device)
    was_training = model.training
    model.eval()
    features = encode_all(model, images)
    recon = torch.cat([model.decode(f) for f in features.split(64)])
    n, few = model.config.num_tokens, o.token_eval_images
    ks = range(n + 1) if final else [k for k in o.prefix_ks if k <= n]
    record = {
        "step": step,
        "psnr": psnr(recon, images).mean().item(),
        "ssim": ssim(recon, images).mean().item(),
        **(spatial_report(model, features, images) if model.spatial_vq is not None else {}),
        **token_report(model, images[:few], ks, single=final, features=features[:few]),
    }
    fill = default_fill(model, features[:few])
    prefixes = [
        model.decode(model.drop_tail(features[:8], k, fill)) for k in (n // 6, n // 3, n // 2)
    ]
    save_grid(
        [images[:8], recon[:8], *prefixes], Path(o.output_dir) / "val" / f"step-{step:08d}.png"
    )
    model.train(was_training)
    return record


# --- the run -------------------------------------------------------------------------------


def main(o: Stage1Options) -> dict:
    """Train; returns a summary (steps, images, wall time, last validation)."""
    # --- setup
    accelerator = common.make_accelerator(o)
    logging.basicConfig(level=logging.INFO if accelerator.is_main_process else logging.WARNING)
    out = Path(o.output_dir)
    resume = common.resolve_resume(out, o.resume_from_checkpoint, o.overwrite_output_dir)
    spatial = load_spatial_vq(o)  # before seeding: its construction draws random numbers
    overrides = o.model_overrides
    if spatial is not None:  # the head's sizes come from the tokenizer it predicts
        overrides = {"target": "spatial_vq", "spatial_grid_size": spatial.grid_size[0],
                     "spatial_codebook_size": spatial.codebook_size, **overrides}  # fmt: skip
    set_seed(o.seed)  # the same initial weights on every process
    config = SVQConfig.from_preset(o.model_preset, **overrides)
    model = StyledVAEVQ(config)
    if (config.target == "spatial_vq") != (spatial is not None):
        raise ValueError(
            f"model target {config.target!r} with spatial_vq_path {o.spatial_vq_path!r}: target "
            "'spatial_vq' needs --spatial_vq_path and the path needs that target"
        )
    if spatial is not None and o.attribute_swap_images:
        raise ValueError("attribute_swap_images decodes pictures: not with target 'spatial_vq'")
    if spatial is not None:
        model.attach_spatial_vq(spatial.to(accelerator.device))  # checks the sizes
    if o.gradient_checkpointing:
        model.gradient_checkpointing_enable()

    # --- data
    loader, shard = train_loader(o, config.image_size, labels=o.attribute_loss_weight > 0)
    val_images = (
        validation_images(o, config.image_size, o.token_eval_images)
        if accelerator.is_main_process
        else None
    )
    lpips = load_lpips(o) if spatial is None else None  # target "spatial_vq": no pixel loss
    if lpips is not None:
        lpips.to(accelerator.device)
    readout = None
    if o.attribute_loss_weight > 0:
        read = o.attribute_loss_tokens + o.attribute_identity_tokens
        if read > config.num_tokens:
            raise ValueError(f"attribute_loss_tokens + attribute_identity_tokens = {read} > the "
                             f"model's {config.num_tokens} tokens")  # fmt: skip
        classes = [len(values) for values in SCHEMA.values()]
        spans = attribute_spans(o.attribute_loss_tokens, o.attribute_identity_tokens)
        person = spans[list(SCHEMA).index(IDENTITY_ATTRIBUTES[0])]  # the identity tokens' range
        readout = AttributeReadout(o.attribute_loss_tokens, config.token_dim, classes, spans)

    # --- optimiser and schedule
    optimizer = common.adamw(model, o, StyledVAEVQ.NO_DECAY)
    accum, world = o.gradient_accumulation_steps, accelerator.num_processes
    global_batch = o.per_device_train_batch_size * accum * world
    if readout is not None:  # its own group; prepared (and so checkpointed) beside the model
        optimizer.add_param_group({"params": list(readout.parameters()),
                                   "weight_decay": o.weight_decay})  # fmt: skip
        readout = accelerator.prepare(readout)
    if shard:
        model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    else:
        model, optimizer = accelerator.prepare(model, optimizer)
    max_steps = common.run_length(o, loader, sized=shard)
    scheduler, warmup = common.make_scheduler(accelerator, o, optimizer, max_steps)
    raw_model = accelerator.unwrap_model(model)
    ema = common.make_ema(raw_model, o.ema_decay)
    if ema is not None:
        accelerator.register_for_checkpointing(ema)

    fresh = {"step": 0, "images_seen": 0, "train_seconds": 0.0}
    state = common.start_state(accelerator, resume, o.seed, fresh)
    common.record_options(
        accelerator, o, "stage1", resume, config.to_dict(),
        max_steps=max_steps, warmup_steps=warmup, global_batch=global_batch,
    )  # fmt: skip
    logger.info(
        "%s: %.2fM params, %d steps x global batch %d (%d per device x %d accumulation x %d "
        "processes), warm-up %d", o.model_preset, sum(p.numel() for p in raw_model.parameters())
        / 1e6, max_steps, global_batch, o.per_device_train_batch_size, accum, world, warmup,
    )  # fmt: skip

    # --- loop
    def loss(batch: Any, step: int) -> dict[str, torch.Tensor]:
        images = (batch if readout is None else batch.image).to(accelerator.device)
        output = model(images)
        with accelerator.autocast():
            if spatial is None:
                terms = reconstruction_loss(output.recon, images, o, lpips)
            else:
                terms = code_loss(output.logits, spatial.encode(images))
        if readout is not None:
            labels = batch.labels.to(accelerator.device)
            terms["attributes"] = attribute_loss(readout(output.features), labels)
            terms["loss"] = terms["loss"] + o.attribute_loss_weight * terms["attributes"]
        if o.attribute_swap_images:
            mixed, mixed_labels = swap_identity(
                output.features, labels, person, min(o.attribute_swap_images, images.shape[0])
            )
            with accelerator.autocast():
                seen = raw_model.encode(raw_model.decoder(mixed))  # decoded, encoded again
            terms["swap"] = attribute_loss(readout(seen), mixed_labels)
            terms["loss"] = terms["loss"] + o.attribute_loss_weight * terms["swap"]
        return terms

    def set_noise(step: int) -> None:
        raw_model.encoder.head.noise_gain = noise_gain(step, max_steps, o)

    def validate_at(step: int, final: bool) -> dict[str, Any] | None:
        if val_images is None or not ((o.eval_steps and step % o.eval_steps == 0) or final):
            return None
        eval_model = ema.module if ema is not None else raw_model
        record = validate(eval_model, val_images, o, step, final)
        record.update(images_seen=state["images_seen"],
                      train_seconds=round(state["train_seconds"], 1))  # fmt: skip
        return record

    def update_ema(step: int) -> None:
        ema.update_parameters(raw_model)

    result = train_loop(
        accelerator, o,
        Stage(loss=loss, before_step=set_noise,
              after_step=update_ema if ema is not None else None,
              logs=lambda: {"noise_gain": raw_model.encoder.head.noise_gain},
              validate=validate_at),
        model=model, optimizer=optimizer, scheduler=scheduler,
        batches=common.endless_batches(loader, state["step"] * accum), state=state,
        max_steps=max_steps, global_batch=global_batch,
    )  # fmt: skip

    # --- save
    if accelerator.is_main_process:
        common.save_release(ema.module if ema is not None else raw_model, out)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    summary = {"steps": state["step"], "images_seen": state["images_seen"],
               "train_seconds": state["train_seconds"], "train": result.logs,
               "validation": result.record, "model": str(out / "model")}  # fmt: skip
    if accelerator.is_main_process:  # written last: its presence means the run finished
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    common.run_script(main, Stage1Options, logger)
