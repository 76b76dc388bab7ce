"""Stage 2: the vocabulary (docs/design.md §5) — a k-means codebook over the frozen encoder's 36
tokens, attached to the tokenizer, then optionally a fine-tune that decodes codes sharply.

    python -m svq.train.stage2 svq/configs/stage2_tiny.yaml --model_path runs/s1/model \\
        --output_dir runs/s2 [--flag value]
    torchrun --standalone --nproc_per_node 2 svq/train/stage2.py CONFIG.yaml ...   # 2 CPU processes

1. Features: the stage-1 encoder, frozen and in eval mode (no noise), over the first
   `num_feature_images` training pictures. Each process encodes its own contiguous share into
   one memory-mapped FEATURES_DIR/features.npy (n, N, E) fp32 (a shared disk, as on one node);
   features.json says what they are (weights hash, data, size). A run with the same weights
   and data reuses them instead of encoding again.
2. Codebook: `svq.codebook.Codebook.fit` (k-means in fp32, distributed: each process streams
   its rows of the file), then one pass counting how the fitting data uses the codes. Saved as
   OUTPUT_DIR/codebook.safetensors + codebook.json and reused the same way (e.g. on --resume).
3. Held-out evaluation of the stage-1 weights: PSNR / SSIM of continuous and quantised decodes,
   code usage, perplexity, dead codes, re-encode stability (svq/eval/codebook_metrics.py).
4. Optional fine-tune (`finetune_steps` > 0): the decoder, and with `finetune_encoder` the
   encoder (straight-through the quantiser), learns to reconstruct from the codes; the codebook
   stays frozen. Losses, optimiser, schedule and resumable atomic checkpoints as in stage 1.
5. The same evaluation after it; the release folder OUTPUT_DIR/model (config.json,
   model.safetensors, codebook.safetensors), OUTPUT_DIR/grid.png (originals, continuous,
   quantised, quantised after the fine-tune) and OUTPUT_DIR/summary.json (what `main` returns).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list
from torch import nn
from torch.utils.data import DataLoader, Subset

from svq import StyledVAEVQ
from svq.codebook import Codebook, KMeansStep, codebook_stats
from svq.codebook.distance import check_distance
from svq.codebook.kmeans import INITS
from svq.data import ChatWorldDataset, ImageDataset, ImageStream, TarShards, open_source
from svq.eval.codebook_metrics import code_usage, quantization_error, reencode_stability
from svq.eval.metrics import psnr, ssim
from svq.eval.ordering import encode_all
from svq.images import save_grid
from svq.progress import progress_bar
from svq.train import common
from svq.train.image_data import train_loader, validation_images
from svq.train.loop import Stage, train_loop
from svq.train.losses import load_lpips, reconstruction_loss
from svq.train.options import (
    ImageDataOptions,
    LoggingOptions,
    OptimizerOptions,
    PixelLossOptions,
    RunOptions,
)

logger = logging.getLogger("stage2")
FEATURES_FORMAT = {"format": "svq.features", "version": 1}  # features.json: what the file is


@dataclass
class Stage2Options(
    LoggingOptions, OptimizerOptions, PixelLossOptions, ImageDataOptions, RunOptions
):
    """Every option of a stage-2 run: the shared groups (svq/train/options.py; the pixel loss,
    optimiser and data options are the fine-tune's) and these. A YAML file gives them first;
    `--flag value` overrides it."""

    model_path: str = field(kw_only=True)  # the stage-1 release folder (its OUTPUT_DIR/model)
    # --- features
    num_feature_images: int = 10_000  # training pictures whose N tokens each are clustered
    features_dir: str | None = None  # default OUTPUT_DIR/features; share it to reuse features
    feature_batch_size: int = 64
    # --- codebook (svq.codebook.kmeans)
    num_codes: int = 1024  # K
    per_position: bool = False  # one codebook per token position instead of one shared
    distance: str = "l2"  # "l2" or "cosine"; quantisation uses the same
    kmeans_iters: int = 50  # at most; fewer when the inertia improves by less than kmeans_tol
    kmeans_tol: float = 1e-4  # 0: exactly kmeans_iters iterations
    kmeans_init: str = "kmeans++"  # or "random"
    kmeans_init_sample: int | None = None  # points k-means++ samples from (default 32 K)
    # --- fine-tune with the codebook frozen (0 steps: off)
    finetune_steps: int = field(
        default=0,
        metadata={"aliases": ["--max_steps"], "help": "optimiser steps of the fine-tune; 0: off"},
    )
    finetune_encoder: bool = False  # also train the encoder (straight-through the quantiser)
    # with finetune_encoder: weight of the encoder's pull toward its codes, the mean squared
    # distance of each feature to its nearest code (VQ-VAE's commitment loss; 0: off)
    commitment_weight: float = 0.0
    # the share of each fine-tune batch decoded from its continuous features instead of its
    # codes, so the decoder keeps serving both (0: codes only)
    finetune_continuous_share: float = 0.0
    lpips_weight: float = 0.0  # LPIPS(VGG16) as in stage 1; needs its weights

    def __post_init__(self) -> None:
        self.validation_data = common.none_if_empty(self.validation_data)
        check_distance(self.distance)
        if self.kmeans_init not in INITS:
            raise ValueError(f"kmeans_init must be one of {INITS}, got {self.kmeans_init!r}")
        common.check_training_options(self, positive=(
            "num_codes", "num_feature_images", "feature_batch_size", "kmeans_iters",
            "num_val_images", "save_steps",
        ))  # fmt: skip
        if not 0 <= self.finetune_continuous_share < 1:
            raise ValueError(
                f"finetune_continuous_share must be in [0, 1), got {self.finetune_continuous_share}"
            )
        if self.commitment_weight < 0:
            raise ValueError(f"commitment_weight must be >= 0, got {self.commitment_weight}")
        if self.commitment_weight > 0 and not self.finetune_encoder:
            raise ValueError(
                "commitment_weight pulls the encoder toward its codes: it needs "
                "--finetune_encoder true"
            )
        if self.finetune_steps < 0:
            raise ValueError(
                f"finetune_steps must be >= 0 (0: no fine-tune), got {self.finetune_steps}"
            )
        self.check_pixel_loss(required=self.finetune_steps > 0)


# --- the stage-1 tokenizer -----------------------------------------------------------------


def load_tokenizer(path: str) -> tuple[StyledVAEVQ, str]:
    """The stage-1 release folder -> (model, sha256 of its weights, which keys the features)."""
    folder = Path(path).expanduser()
    weights = folder / "model.safetensors"
    if not (folder / "config.json").is_file() or not weights.is_file():
        raise FileNotFoundError(
            f"model_path {path}: no stage-1 tokenizer there (a folder with config.json and "
            "model.safetensors, as svq/train/stage1.py writes to its OUTPUT_DIR/model)"
        )
    digest = hashlib.sha256()
    with open(weights, "rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    model = StyledVAEVQ.load(folder)
    target = getattr(model.config, "target", "pixels")
    if target != "pixels":
        raise NotImplementedError(
            f"model_path {path}: decoder target {target!r}; stage 2 evaluates and fine-tunes "
            "tokenizers that decode to pixels (target 'pixels') only"
        )
    return model, digest.hexdigest()


# --- data ----------------------------------------------------------------------------------


def feature_images(o: Stage2Options, size: int) -> ImageDataset | ChatWorldDataset | ImageStream:
    """The pictures features are taken from: training pictures, centre-cropped."""
    if o.train_data == "world":
        return ChatWorldDataset(size, o.num_feature_images, o.world_seed, "train")
    source = open_source(o.train_data, o.dataset_split)
    if isinstance(source, TarShards):  # no random access: each process reads its own shards
        return ImageStream(source, size, train=False)
    return ImageDataset(source, size, train=False)


# --- 1. features ---------------------------------------------------------------------------


def _rows(count: int, rank: int, world: int) -> tuple[int, int]:
    """This process's contiguous share [lo, hi) of `count` rows."""
    return rank * count // world, (rank + 1) * count // world


def _write_json(data: dict[str, Any], path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


@torch.no_grad()
def extract_features(
    accelerator: Accelerator, model: StyledVAEVQ, o: Stage2Options, folder: Path, weights: str
) -> tuple[np.ndarray, dict[str, Any], bool]:
    """Encode the feature pictures into FOLDER/features.npy, or reuse the file if it holds
    these weights' features of these pictures. Returns (this process's rows (n_r, N, E) as a
    read-only memory map, the file's description, whether it was reused)."""
    config = model.config
    dataset = feature_images(o, config.image_size)
    count = o.num_feature_images
    if not isinstance(dataset, ImageStream):
        count = min(count, len(dataset))
    world, rank = accelerator.num_processes, accelerator.process_index
    if count < world:
        raise ValueError(f"{count} feature pictures for {world} processes: need one each")
    data = o.train_data if o.train_data == "world" else os.path.abspath(o.train_data)
    key = {
        **FEATURES_FORMAT, "weights_sha256": weights, "train_data": data,
        "dataset_split": o.dataset_split, "world_seed": o.world_seed, "num_images": count,
        "image_size": config.image_size, "num_tokens": config.num_tokens,
        "token_dim": config.token_dim,
    }  # fmt: skip
    path, meta = folder / "features.npy", folder / "features.json"
    decision = [path.is_file() and _read_json(meta) == key]  # rank 0 decides for all
    broadcast_object_list(decision)
    reused = bool(decision[0])
    lo, hi = _rows(count, rank, world)
    if not reused:
        tmp = folder / ".features.npy.tmp"
        if accelerator.is_main_process:
            folder.mkdir(parents=True, exist_ok=True)
            shape = (count, config.num_tokens, config.token_dim)
            np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape).flush()
        accelerator.wait_for_everyone()
        rows = np.load(tmp, mmap_mode="r+")
        # A stream shards itself over processes (and workers); a dataset is indexed.
        pictures = dataset if isinstance(dataset, ImageStream) else Subset(dataset, range(lo, hi))
        loader = DataLoader(
            pictures, batch_size=o.feature_batch_size, num_workers=o.dataloader_num_workers
        )
        model.eval()
        bar = progress_bar(total=hi - lo, desc="features", disable=not accelerator.is_main_process)
        start = lo
        for images in loader:
            images = images[: hi - start]
            features = model.encode(images.to(accelerator.device).float())  # (b, N, E)
            rows[start : start + len(images)] = features.float().cpu().numpy()
            start += len(images)
            bar.update(len(images))
            if start == hi:
                break
        bar.close()
        if start < hi:
            raise ValueError(
                f"{o.train_data}: process {rank} found {start - lo} pictures, needs {hi - lo} "
                f"(num_feature_images {count} over {world} processes)"
            )
        rows.flush()
        del rows
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            os.replace(tmp, path)
            _write_json(key, meta)  # last: a file without its description is never reused
        accelerator.wait_for_everyone()
    return np.load(path, mmap_mode="r")[lo:hi], key, reused


# --- 2. codebook ---------------------------------------------------------------------------


@torch.no_grad()
def code_counts(
    codebook: Codebook, rows: np.ndarray, device: torch.device, block: int = 4096
) -> torch.Tensor:
    """How often the rows (n, N, E) use each code: (K,) shared, (N, K) per position."""
    cfg = codebook.config
    n, k = rows.shape[1], cfg.num_codes
    counts = torch.zeros(n * k if cfg.per_position else k, dtype=torch.long, device=device)
    for start in range(0, len(rows), block):
        features = torch.from_numpy(np.array(rows[start : start + block])).to(device)
        ids = codebook.quantize(features)  # (b, N)
        if cfg.per_position:
            ids = ids + torch.arange(n, device=device) * k  # position p's block of counts
        counts += torch.bincount(ids.flatten(), minlength=counts.numel())
    return counts.view(n, k) if cfg.per_position else counts


def fit_codebook(
    accelerator: Accelerator, rows: np.ndarray, o: Stage2Options, features: dict, out: Path
) -> tuple[Codebook, dict[str, Any]]:
    """k-means over every process's rows, or the codebook a run with the same features and
    options saved in OUTPUT_DIR. Returns it with a record: k-means runs, usage on its data."""
    key = {
        "features": features, "num_codes": o.num_codes, "per_position": o.per_position,
        "distance": o.distance, "kmeans_iters": o.kmeans_iters, "kmeans_tol": o.kmeans_tol,
        "kmeans_init": o.kmeans_init, "kmeans_init_sample": o.kmeans_init_sample,
        "seed": o.seed,
    }  # fmt: skip
    path, meta = out / "codebook.safetensors", out / "codebook.json"
    saved = _read_json(meta)
    decision = [path.is_file() and saved is not None and saved.get("key") == key]
    broadcast_object_list(decision)
    if decision[0]:
        return Codebook.load(path), {**saved["record"], "reused": True}

    steps: list[KMeansStep] = []
    codebook = Codebook.fit(
        rows, o.num_codes, distance=o.distance, per_position=o.per_position,
        iters=o.kmeans_iters, tol=o.kmeans_tol, init=o.kmeans_init,
        init_sample=o.kmeans_init_sample, seed=o.seed, device=accelerator.device,
        progress=accelerator.is_main_process, callback=steps.append,
    )  # fmt: skip
    # The last step of each k-means run (one per position when per_position).
    finals = [s for i, s in enumerate(steps) if i + 1 == len(steps) or steps[i + 1].iteration == 0]
    counts = code_counts(codebook, rows, accelerator.device)
    if accelerator.num_processes > 1:
        counts = accelerator.reduce(counts, reduction="sum")
    stats = codebook_stats(counts.cpu())
    record = {
        "iterations": [s.iteration + 1 for s in finals],
        "inertia": [s.inertia for s in finals],
        "converged": [s.converged for s in finals],
        # Usage over the fitting data (every position's codes counted together).
        "used": int(stats.used.sum()),
        "dead": int(stats.dead.sum()),
        "usage": float(stats.used.sum() / counts.numel()),
        "perplexity": float(stats.perplexity.mean()),  # per codebook, averaged
        "reused": False,
    }
    if accelerator.is_main_process:
        tmp = out / ".codebook.safetensors.tmp"
        out.mkdir(parents=True, exist_ok=True)
        codebook.save(tmp)
        os.replace(tmp, path)
        _write_json({"key": key, "record": record}, meta)
    accelerator.wait_for_everyone()
    return codebook.cpu(), record


# --- 3. evaluation -------------------------------------------------------------------------


@torch.no_grad()
def evaluate(
    model: StyledVAEVQ, images: torch.Tensor, batch_size: int
) -> tuple[dict[str, float], torch.Tensor, torch.Tensor]:
    """Held-out images (n, 3, S, S) -> (figures, continuous decodes, quantised decodes).

    Figures: PSNR / SSIM of decodes of the continuous features and of their nearest codes,
    the gap between them, and how the codes of these images use the codebook."""
    was_training = model.training
    model.eval()
    codebook = model._require_codebook("evaluate")
    images = images.to(next(model.parameters()).device)
    features = encode_all(model, images, batch_size)  # (n, N, E)
    ids = codebook.quantize(features)  # (n, N)
    codes = codebook.lookup(ids)  # (n, N, E)
    continuous = torch.cat([model.decode(f) for f in features.split(batch_size)])
    quantized = torch.cat([model.decode(c) for c in codes.split(batch_size)])
    usage = code_usage(ids, codebook.num_codes, codebook.config.per_position).overall
    record = {
        "continuous_psnr": psnr(continuous, images).mean().item(),
        "continuous_ssim": ssim(continuous, images).mean().item(),
        "quantized_psnr": psnr(quantized, images).mean().item(),
        "quantized_ssim": ssim(quantized, images).mean().item(),
    }
    record["psnr_gap"] = record["continuous_psnr"] - record["quantized_psnr"]
    record.update(
        used=int(usage.used),
        dead=int(usage.dead),
        usage=float(usage.usage),
        perplexity=float(usage.perplexity),
        quantization_error=quantization_error(features, codes),
        reencode_stable=reencode_stability(model, ids, batch_size).tokens,
    )
    model.train(was_training)
    return record, continuous, quantized


# --- 4. fine-tune --------------------------------------------------------------------------


class QuantizedAutoencoder(nn.Module):
    """The fine-tune's forward as one module (DDP syncs gradients of what runs through its
    forward): images -> decoder(nearest codes of the encoder's features), the first
    `round(continuous_share * B)` pictures of a batch decoded from their features themselves;
    with it also the mean squared distance of the features to their codes (the commitment).

    The encoder stays in eval mode even when it trains: the codebook was fitted on its
    noiseless features, and the quantiser is the bottleneck now."""

    def __init__(self, model: StyledVAEVQ, train_encoder: bool, continuous_share: float = 0.0):
        super().__init__()
        self.model = model
        self.train_encoder = train_encoder
        self.continuous_share = continuous_share

    def train(self, mode: bool = True) -> QuantizedAutoencoder:
        super().train(mode)
        self.model.encoder.eval()
        return self

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images: (B, 3, H, W) in [-1, 1] -> reconstructions (B, 3, H, W) and the commitment,
        an fp32 scalar (no gradient unless the encoder trains)."""
        with torch.set_grad_enabled(self.train_encoder and torch.is_grad_enabled()):
            features = self.model.encode(images)  # (B, N, E)
        quantized = self.model.codebook(features).quantized  # straight-through, fp32 search
        commitment = (features.float() - quantized.detach().float()).pow(2).mean()
        keep = round(self.continuous_share * len(images))  # batches are shuffled: any rows do
        if keep:
            quantized = torch.cat([features[:keep], quantized[keep:]])
        return self.model.decode(quantized), commitment


def finetune(
    accelerator: Accelerator, model: StyledVAEVQ, o: Stage2Options, resume: Path | None
) -> dict[str, Any]:
    """Train the decoder (and encoder) on decodes of the frozen codes; returns a record."""
    model.requires_grad_(False)  # the codebook's are buffers; drop_token stays as trained
    model.decoder.requires_grad_(True)
    if o.finetune_encoder:
        model.encoder.requires_grad_(True)
    net = QuantizedAutoencoder(model, o.finetune_encoder, o.finetune_continuous_share)
    loader, shard = train_loader(o, model.config.image_size)
    lpips = load_lpips(o)
    if lpips is not None:
        lpips.to(accelerator.device)
    optimizer = common.adamw(model, o, StyledVAEVQ.NO_DECAY)
    if shard:
        net, optimizer, loader = accelerator.prepare(net, optimizer, loader)
    else:
        net, optimizer = accelerator.prepare(net, optimizer)
    steps, accum = o.finetune_steps, o.gradient_accumulation_steps
    global_batch = o.per_device_train_batch_size * accum * accelerator.num_processes
    scheduler, warmup = common.make_scheduler(accelerator, o, optimizer, steps)
    fresh = {"step": 0, "images_seen": 0, "train_seconds": 0.0}
    state = common.start_state(accelerator, resume, o.seed, fresh)

    def loss(batch: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        images = batch.to(accelerator.device, non_blocking=True)
        recon, commitment = net(images)
        with accelerator.autocast():
            terms = reconstruction_loss(recon, images, o, lpips)
        if o.commitment_weight > 0:
            terms["commitment"] = commitment
            terms["loss"] = terms["loss"] + o.commitment_weight * commitment
        return terms

    result = train_loop(
        accelerator, o, Stage(loss=loss, prefix="finetune"),
        model=net, optimizer=optimizer, scheduler=scheduler,
        batches=common.endless_batches(loader, state["step"] * accum), state=state,
        max_steps=steps, global_batch=global_batch,
    )  # fmt: skip
    model.requires_grad_(False)
    model.eval()
    return {
        "steps": state["step"],
        "images_seen": state["images_seen"],
        "train_seconds": round(state["train_seconds"], 1),
        "global_batch": global_batch,
        "warmup_steps": warmup,
        "encoder_trained": o.finetune_encoder,
        "continuous_share": o.finetune_continuous_share,
        "commitment_weight": o.commitment_weight,
        "train": result.logs,
    }


# --- the run -------------------------------------------------------------------------------


def main(o: Stage2Options) -> dict[str, Any]:
    """Features, codebook, evaluation, optional fine-tune, release; returns the summary that
    is also written to OUTPUT_DIR/summary.json (the main process evaluates: elsewhere the
    "before" and "after" figures are None)."""
    run_started = time.perf_counter()
    accelerator = common.make_accelerator(o)
    logging.basicConfig(level=logging.INFO if accelerator.is_main_process else logging.WARNING)
    out, is_main = Path(o.output_dir), accelerator.is_main_process
    resume = common.resolve_resume(out, o.resume_from_checkpoint, o.overwrite_output_dir)
    model, weights = load_tokenizer(o.model_path)
    model.to(accelerator.device).eval().requires_grad_(False)
    features_dir = Path(o.features_dir) if o.features_dir else out / "features"
    common.record_options(
        accelerator, o, "stage2", resume, model.config.to_dict(),
        features_dir=str(features_dir), weights_sha256=weights,
    )  # fmt: skip
    timings: dict[str, float] = {}

    # --- 1. features
    started = time.perf_counter()
    rows, features, reused = extract_features(accelerator, model, o, features_dir, weights)
    timings["features_s"] = time.perf_counter() - started
    logger.info("features: %s (%s)", features_dir / "features.npy", "reused" if reused else "new")

    # --- 2. codebook
    started = time.perf_counter()
    codebook, kmeans_record = fit_codebook(accelerator, rows, o, features, out)
    model.attach_codebook(codebook)
    timings["codebook_s"] = time.perf_counter() - started
    logger.info("codebook: %s", json.dumps(kmeans_record))
    del rows

    # --- 3. evaluation of the stage-1 weights
    started = time.perf_counter()
    val_images = validation_images(o, model.config.image_size) if is_main else None
    before = grid = None
    if val_images is not None:
        before, continuous, quantized = evaluate(model, val_images, o.feature_batch_size)
        grid = [val_images[:8], continuous[:8].cpu(), quantized[:8].cpu()]
        logger.info("before the fine-tune: %s", json.dumps(before))
    timings["eval_s"] = time.perf_counter() - started
    accelerator.wait_for_everyone()

    # --- 4. fine-tune
    tuned = after = None
    if o.finetune_steps > 0:
        started = time.perf_counter()
        tuned = finetune(accelerator, model, o, resume)
        timings["finetune_s"] = time.perf_counter() - started
        started = time.perf_counter()
        if val_images is not None:
            after, _, quantized = evaluate(model, val_images, o.feature_batch_size)
            grid.append(quantized[:8].cpu())
            logger.info("after the fine-tune: %s", json.dumps(after))
        timings["eval_s"] += time.perf_counter() - started

    # --- 5. release
    summary = {
        "model_path": o.model_path,
        "model": str(out / "model"),
        "processes": accelerator.num_processes,
        "num_codes": o.num_codes,
        "per_position": o.per_position,
        "distance": o.distance,
        "features": {"path": str(features_dir / "features.npy"), "reused": reused,
                     "images": features["num_images"],
                     "vectors": features["num_images"] * features["num_tokens"]},
        "codebook": kmeans_record,
        "before": before,
        "finetune": tuned,
        "after": after,
        "timings": {},
    }  # fmt: skip
    if is_main:
        common.save_release(model, out)  # config.json, model.safetensors, codebook.safetensors
        if grid is not None:
            save_grid(grid, out / "grid.png")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    timings["total_s"] = time.perf_counter() - run_started
    summary["timings"] = {k: round(v, 2) for k, v in timings.items()}
    if is_main:  # written last: its presence means the run finished
        _write_json(summary, out / "summary.json")
    return summary


if __name__ == "__main__":
    common.run_script(main, Stage2Options, logger)
