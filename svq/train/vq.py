"""Train the spatial VQ tokenizer (docs/design.md §6): images <-> (h*w) grid of code ids.

    python -m svq.train.vq svq/configs/vq_tiny.yaml --output_dir runs/vq [--flag value]
    torchrun --standalone --nproc_per_node 2 svq/train/vq.py CONFIG.yaml ...   # 2 CPU processes
    accelerate launch --config_file svq/configs/accelerate/ddp_8gpu.yaml svq/train/vq.py CONFIG.yaml

The conventions of stage 1 (svq/train/stage1.py, whose data and loss helpers this script imports):
options dataclass (YAML first, then flags), accelerate, atomic resumable checkpoints, a
non-finite stop, validation, `OUTPUT_DIR/model` written with `save_pretrained` at the end.

Loss = mse_weight * MSE + l1_weight * L1 + lpips_weight * LPIPS + the quantiser's loss (codebook
+ commitment + entropy, `SpatialVQOutput.vq_loss`) + gan_weight * hinge generator loss of a
PatchGAN discriminator (off by default; from `gan_start_step` on, the discriminator trains with
its own AdamW and hinge loss). Every `reseed_steps` the codes unused for `dead_code_steps`
forwards are re-seeded from the latest batch's encoder outputs. Validation: PSNR / SSIM, code
usage and perplexity over the held-out images, a picture grid.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from svq.codebook import codebook_stats
from svq.discriminator import PatchDiscriminator, hinge_d_loss, hinge_g_loss
from svq.eval.metrics import psnr, ssim
from svq.images import save_grid
from svq.spatial_vq import SpatialVQ, SpatialVQConfig
from svq.train import common
from svq.train.image_data import train_loader, validation_images
from svq.train.loop import Stage, train_loop
from svq.train.losses import load_lpips, reconstruction_loss
from svq.train.options import ImageTrainingOptions

logger = logging.getLogger("vq")


@dataclass
class VQOptions(ImageTrainingOptions):
    """Every option of a spatial VQ run: the shared groups (svq/train/options.py, as stage 1's)
    and these. A YAML file first; `--flag value` wins."""

    # --- model
    model_preset: str = "small"  # a SpatialVQConfig preset: tiny, small, base
    model_overrides: dict | str | None = None  # SpatialVQConfig fields over the preset (JSON)
    # --- adversarial loss (LPIPS as LlamaGen's)
    gan_weight: float = 0.0  # > 0: PatchGAN hinge loss with this weight (0: no discriminator)
    gan_start_step: int = 0  # optimiser step from which the adversarial terms train
    disc_learning_rate: float | None = None  # None: learning_rate
    disc_channels: int = 64  # the discriminator's first width
    disc_layers: int = 3  # stride-2 layers; 3 sees 70x70 patches (2 for 16px images)
    # --- codebook upkeep
    reseed_steps: int = 100  # re-seed dead codes every this many steps (0: never)
    # --- optimisation
    adam_beta2: float = 0.95  # LlamaGen's

    def __post_init__(self) -> None:
        self.model_overrides = common.json_option("model_overrides", self.model_overrides) or {}
        self.validation_data = common.none_if_empty(self.validation_data)
        common.check_training_options(self)
        self.check_pixel_loss()
        if self.gan_weight < 0:
            raise ValueError("loss weights must be >= 0")
        if self.gan_start_step < 0 or self.reseed_steps < 0 or self.num_val_images < 1:
            raise ValueError("gan_start_step and reseed_steps must be >= 0, num_val_images >= 1")


# --- validation ----------------------------------------------------------------------------


@torch.no_grad()
def validate(model: SpatialVQ, images: torch.Tensor, o: VQOptions, step: int) -> dict:
    """PSNR / SSIM of the reconstructions and code usage over the held-out images (eval mode:
    the usage counters are left alone). Writes a grid: originals, then reconstructions."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    recon, ids = [], []
    for chunk in images.split(64):
        out = model(chunk.to(device))
        recon.append(out.recon.float().cpu())
        ids.append(out.ids.cpu())
    recon_all, ids_all = torch.cat(recon), torch.cat(ids)  # (n, 3, H, W), (n, h*w)
    stats = codebook_stats(torch.bincount(ids_all.flatten(), minlength=model.codebook_size))
    record = {
        "step": step,
        "psnr": psnr(recon_all, images).mean().item(),
        "ssim": ssim(recon_all, images).mean().item(),
        "codes_used": int(stats.used),
        "code_usage": float(stats.usage),
        "perplexity": float(stats.perplexity),
        "dead_codes_train": int(model.dead_codes().sum()),  # by the training counters
    }
    save_grid([images[:8], recon_all[:8]], Path(o.output_dir) / "val" / f"step-{step:08d}.png")
    model.train(was_training)
    return record


# --- codebook upkeep -----------------------------------------------------------------------


@torch.no_grad()
def reseed(accelerator: Accelerator, model: SpatialVQ, latents: torch.Tensor, seed: int) -> int:
    """Re-seed dead codes from every process's latest latents; the same on every process (the
    features are gathered and the generator seeded alike, then rank 0's codebook and counters
    are broadcast, since each rank counted usage on its own batches). Returns how many."""
    features = accelerator.gather(latents.detach().contiguous())  # (world * B, h*w, E)
    count = model.reseed_dead_codes(features.cpu(), torch.Generator().manual_seed(seed))
    if accelerator.num_processes > 1:
        torch.distributed.broadcast(model.quantizer.codebook.data, 0)
        torch.distributed.broadcast(model.quantizer.unused_steps, 0)
    return count


# --- the run -------------------------------------------------------------------------------


def main(o: VQOptions) -> dict:
    """Train; returns (and writes as OUTPUT_DIR/summary.json) the summary: steps, images, wall
    time, last training logs and validation, the release folder."""
    wall_start = time.perf_counter()
    # --- setup
    accelerator = common.make_accelerator(o)
    logging.basicConfig(level=logging.INFO if accelerator.is_main_process else logging.WARNING)
    out = Path(o.output_dir)
    resume = common.resolve_resume(out, o.resume_from_checkpoint, o.overwrite_output_dir)
    set_seed(o.seed)  # the same initial weights on every process
    config = SpatialVQConfig.from_preset(o.model_preset, **o.model_overrides)
    model = SpatialVQ(config)
    disc = (
        PatchDiscriminator(config.in_channels, o.disc_channels, o.disc_layers)
        if o.gan_weight > 0
        else None
    )

    # --- data
    loader, shard = train_loader(o, config.image_size)
    val_images = validation_images(o, config.image_size) if accelerator.is_main_process else None
    lpips = load_lpips(o)
    if lpips is not None:
        lpips.to(accelerator.device)

    # --- optimisers and schedule (the codebook is a parameter: the codebook loss trains it)
    optimizer = common.adamw(model, o, ("quantizer.codebook",))
    prepared = [model, optimizer]
    if disc is not None:
        disc_optimizer = common.adamw(disc, o, lr=o.disc_learning_rate or o.learning_rate)
        prepared += [disc, disc_optimizer]
    if shard:
        prepared.append(loader)
    prepared = list(accelerator.prepare(*prepared))
    model, optimizer = prepared[:2]
    if disc is not None:
        disc, disc_optimizer = prepared[2:4]
    if shard:
        loader = prepared[-1]
    accum, world = o.gradient_accumulation_steps, accelerator.num_processes
    global_batch = o.per_device_train_batch_size * accum * world
    max_steps = common.run_length(o, loader, sized=shard)
    scheduler, warmup = common.make_scheduler(accelerator, o, optimizer, max_steps)
    raw_model: SpatialVQ = accelerator.unwrap_model(model)
    raw_disc = accelerator.unwrap_model(disc) if disc is not None else None

    fresh = {"step": 0, "images_seen": 0, "train_seconds": 0.0, "codes_reseeded": 0}
    state = common.start_state(accelerator, resume, o.seed, fresh)
    common.record_options(
        accelerator, o, "vq", resume, config.to_dict(),
        max_steps=max_steps, warmup_steps=warmup, global_batch=global_batch,
    )  # fmt: skip
    logger.info(
        "%s: %.2fM params, grid %s x codebook %d, %d steps x global batch %d",
        o.model_preset, sum(p.numel() for p in raw_model.parameters()) / 1e6, config.grid_size,
        config.codebook_size, max_steps, global_batch,
    )  # fmt: skip

    # --- loop
    last: dict[str, Any] = {}  # the last micro-batch and its output, for the critic

    def loss(batch: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        images = last["images"] = batch.to(accelerator.device, non_blocking=True)
        output = last["output"] = model(images)
        with accelerator.autocast():
            terms = reconstruction_loss(output.recon, images, o, lpips)
            terms["vq"] = output.vq_loss
            terms["loss"] = terms["loss"] + output.vq_loss
            if adversarial(step):
                # Through the unwrapped discriminator with its weights frozen: the
                # generator's gradient reaches the reconstruction, not the critic.
                raw_disc.requires_grad_(False)
                terms["gan_g"] = hinge_g_loss(raw_disc(output.recon).float())
                raw_disc.requires_grad_(True)
                terms["loss"] = terms["loss"] + o.gan_weight * terms["gan_g"]
        return terms

    def adversarial(step: int) -> bool:
        return disc is not None and step > o.gan_start_step

    def critic(batch: torch.Tensor, terms: dict[str, torch.Tensor], step: int) -> None:
        if not adversarial(step):
            return
        images = last["images"]
        with accelerator.accumulate(disc):
            with accelerator.autocast():
                fake = last["output"].recon.detach()
                terms["gan_d"] = hinge_d_loss(disc(images).float(), disc(fake).float())
            accelerator.backward(terms["gan_d"])
            if accelerator.sync_gradients and o.max_grad_norm > 0:
                accelerator.clip_grad_norm_(disc.parameters(), o.max_grad_norm)
            disc_optimizer.step()
            disc_optimizer.zero_grad(set_to_none=True)

    def reseed_dead_codes(step: int) -> None:
        if o.reseed_steps and step % o.reseed_steps == 0:
            latents = last["output"].latents
            state["codes_reseeded"] += reseed(accelerator, raw_model, latents, o.seed + step)

    def code_logs() -> dict[str, float]:
        output = last["output"]
        return {"codes_used": int(output.codes_used), "perplexity": float(output.perplexity),
                "codes_reseeded": state["codes_reseeded"]}  # fmt: skip

    def validate_at(step: int, final: bool) -> dict[str, Any] | None:
        if val_images is None or not ((o.eval_steps and step % o.eval_steps == 0) or final):
            return None
        record = validate(raw_model, val_images, o, step)
        record.update(images_seen=state["images_seen"],
                      train_seconds=round(state["train_seconds"], 1))  # fmt: skip
        return record

    result = train_loop(
        accelerator, o,
        Stage(loss=loss, after_micro=critic, after_step=reseed_dead_codes, logs=code_logs,
              validate=validate_at),
        model=model, optimizer=optimizer, scheduler=scheduler,
        batches=common.endless_batches(loader, state["step"] * accum), state=state,
        max_steps=max_steps, global_batch=global_batch,
    )  # fmt: skip

    # --- save
    summary = {"steps": state["step"], "images_seen": state["images_seen"],
               "train_seconds": state["train_seconds"], "codes_reseeded": state["codes_reseeded"],
               "wall_seconds": time.perf_counter() - wall_start, "train": result.logs,
               "validation": result.record, "model": str(out / "model")}  # fmt: skip
    if accelerator.is_main_process:
        common.save_release(raw_model, out)
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return summary


if __name__ == "__main__":
    common.run_script(main, VQOptions, logger)
