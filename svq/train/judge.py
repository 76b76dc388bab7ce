"""Train the attribute judge on chat-world renders (exact labels, rendered on the fly) and save it.

    python -m svq.train.judge --output_dir runs/judge --eval_images 4000    # a release judge
    python -m svq.train.judge --output_dir /tmp/j --max_steps 2 --eval_images 16  # smoke run

From Python: `train("runs/judge", max_steps=2500)` returns the folder.

The training stream never repeats a picture, so the judge cannot overfit; it never sees
tokenizer output. It trains in the loop every stage shares (svq/train/loop.py: steps, warm-up
and cosine, checkpoints and `--resume`), with a blur + noise augmentation that keeps the labels.
At the end the judge is evaluated on clean renders of the validation split (identities seen in
training, new pictures) and the heldout split (identities never seen), and the output folder
gets config.json + model.safetensors (`AttributeJudge.from_pretrained`), run_config.json (these
options) and metrics.json (per-attribute accuracy and the confusion matrix of every attribute,
rows = true value, columns = predicted), also for blurred (sigma 1 px) and half-size validation
renders: the soft pictures the eval suite will meet.

The shipped judges (svq/eval/judges/) were trained before this loop existed, by a loop of the
judge's own whose options were named `lr`, `batch_size`, `eval_every`, ... (their
run_config.json) and whose cosine ran over the whole run; docs/RESULTS_judge.md.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate.utils import set_seed
from torch.utils.data import DataLoader

from svq.data import SCHEMA, ChatWorldDataset, ChatWorldStream
from svq.eval.judge import AttributeJudge, JudgeConfig
from svq.train import common
from svq.train.loop import Stage, train_loop
from svq.train.options import EvalOptions, LoggingOptions, OptimizerOptions, RunOptions, StepOptions

logger = logging.getLogger("judge")


@dataclass
class JudgeOptions(EvalOptions, LoggingOptions, OptimizerOptions, StepOptions, RunOptions):
    """Every option of a judge run: the shared groups (svq/train/options.py) and these."""

    output_dir: str = "runs/judge"  # the release folder the eval suite loads (+ checkpoints/)
    preset: str = "default"  # JudgeConfig preset
    image_size: int = 64  # render and train at this size (the judge resizes other sizes to it)
    augment: float = 0.5  # per picture, the probability of a blur + noise (labels hold)
    # per batch, the probability that it is shown at half size (area-downsampled; the judge
    # resizes it back): so that one judge also reads pictures of half its size
    half_size: float = 0.0
    init_from: str | None = None  # start from this judge folder's weights (a fine-tune)
    world_seed: int = 0  # which chat world (the eval splits come from the same one)
    eval_images: int = 2000  # clean renders per split for the final table
    dataloader_num_workers: int = 2  # DataLoader processes rendering the stream
    # torch intra-op threads (0: torch's default). One: on a shared CPU, two OpenMP threads
    # waiting for each other made steps 7-18x slower (docs/RESULTS_judge.md).
    threads: int = 1
    # the shared groups' defaults for a judge (bf16 is for GPUs: on this project's CPU a step
    # is 16x slower than in fp32)
    per_device_train_batch_size: int = 64
    max_steps: int = 2_500
    learning_rate: float = 2e-3
    weight_decay: float = 0.05  # on conv and linear weights only
    warmup_steps: int = 100
    max_grad_norm: float = 0.0  # unclipped
    eval_steps: int = 500  # a quick validation check (on eval_images // 4); the tables at the end
    logging_steps: int = 100
    save_steps: int = 1_000
    report_to: str = "none"

    def __post_init__(self) -> None:
        common.check_training_options(self, positive=("eval_images", "image_size"))
        if not 0 <= self.augment <= 1 or not 0 <= self.half_size <= 1:
            raise ValueError("augment and half_size are probabilities in [0, 1]")


def train(output_dir: str | Path, **options) -> Path:
    """Train a judge with `JudgeOptions` (e.g. max_steps=...) and save it to `output_dir`;
    returns that folder (load it with `svq.eval.judge.load_judge`)."""
    main(JudgeOptions(output_dir=str(output_dir), **options))
    return Path(output_dir)


def render_split(split: str, n: int, size: int, world_seed: int) -> tuple[torch.Tensor, ...]:
    """Pictures 0..n-1 of a split: images (n, 3, S, S) in [-1, 1] and labels (n, A)."""
    data = ChatWorldDataset(size=size, length=n, seed=world_seed, split=split, labels=True)
    items = [data[i] for i in range(n)]
    return torch.stack([it.image for it in items]), torch.stack([it.labels for it in items])


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """(B, 3, S, S) -> (B, 3, S, S): a separable Gaussian blur, `sigma` in pixels."""
    radius = max(1, math.ceil(3 * sigma))
    taps = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-(taps**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    k = len(taps)
    padded = F.pad(images, (radius,) * 4, mode="replicate")
    rows = F.conv2d(padded, kernel.view(1, 1, 1, k).expand(3, 1, 1, k), groups=3)
    return F.conv2d(rows, kernel.view(1, 1, k, 1).expand(3, 1, k, 1), groups=3)


def blur_and_noise(
    images: torch.Tensor, prob: float, generator: torch.Generator, max_sigma: float = 1.5
) -> torch.Tensor:
    """Label-preserving augmentation, so that the judge also reads soft pictures (tokenizer
    reconstructions, smaller renders): a fraction `prob` of the pictures get a Gaussian blur
    (sigma 0.3..max_sigma px, one per batch) and pixel noise (std up to 0.05).
    (B, 3, S, S) in [-1, 1] -> same."""
    if prob <= 0:
        return images
    b = images.shape[0]
    sigma = 0.3 + (max_sigma - 0.3) * torch.rand((), generator=generator).item()
    noise = (
        torch.randn(images.shape, generator=generator)
        * 0.05
        * torch.rand(b, 1, 1, 1, generator=generator)
    )
    chosen = (torch.rand(b, generator=generator) < prob).view(b, 1, 1, 1)
    return torch.where(chosen, (gaussian_blur(images, sigma) + noise).clamp(-1, 1), images)


def confusion(pred: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """pred, labels: (n,) -> (C, C) counts, rows = true value, columns = predicted."""
    return torch.bincount(labels * num_classes + pred, minlength=num_classes**2).view(
        num_classes, num_classes
    )


def evaluate(judge: AttributeJudge, images: torch.Tensor, labels: torch.Tensor) -> dict:
    """Per-attribute accuracy and confusion matrices on clean renders."""
    pred = judge.predict(images)  # (n, A)
    report = {}
    for a, (name, values) in enumerate(judge.config.schema.items()):
        matrix = confusion(pred[:, a], labels[:, a], len(values))
        report[name] = {
            "accuracy": (pred[:, a] == labels[:, a]).float().mean().item(),
            "confusion": matrix.tolist(),
        }
    return report


def table(reports: dict[str, dict]) -> str:
    """A markdown table: one row per attribute, one column per split."""
    splits = list(reports)
    lines = ["| attribute | " + " | ".join(splits) + " |", "|---" * (len(splits) + 1) + "|"]
    for name in next(iter(reports.values())):
        cells = [f"{100 * reports[s][name]['accuracy']:.2f}%" for s in splits]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(o: JudgeOptions) -> dict:
    """Train, save, evaluate; returns metrics.json's content."""
    if o.threads > 0:
        torch.set_num_threads(o.threads)
    accelerator = common.make_accelerator(o)
    logging.basicConfig(level=logging.INFO if accelerator.is_main_process else logging.WARNING)
    out = Path(o.output_dir)
    resume = common.resolve_resume(out, o.resume_from_checkpoint, o.overwrite_output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "run_config.json").write_text(json.dumps(asdict(o), indent=2) + "\n")
    started = time.perf_counter()

    # --- data: an endless training stream; fixed clean eval sets
    stream = ChatWorldStream(size=o.image_size, seed=o.world_seed, split="train", labels=True)
    loader = DataLoader(
        stream,
        batch_size=o.per_device_train_batch_size,
        num_workers=o.dataloader_num_workers,
        persistent_workers=o.dataloader_num_workers > 0,
    )
    quick = render_split("validation", max(1, o.eval_images // 4), o.image_size, o.world_seed)

    # --- model, optimiser, schedule
    set_seed(o.seed)
    config = JudgeConfig.from_preset(o.preset, image_size=o.image_size)
    judge = AttributeJudge(config)
    if o.init_from is not None:
        start = AttributeJudge.from_pretrained(o.init_from)
        if start.config != config:
            raise ValueError(f"--init_from {o.init_from} is a judge of another config")
        judge.load_state_dict(start.state_dict())
    judge.check_schema(SCHEMA)
    optimizer = common.adamw(judge, o)
    judge, optimizer = accelerator.prepare(judge, optimizer)
    raw = accelerator.unwrap_model(judge)
    scheduler, _ = common.make_scheduler(accelerator, o, optimizer, o.max_steps)
    state = common.start_state(
        accelerator, resume, o.seed, {"step": 0, "images_seen": 0, "train_seconds": 0.0}
    )
    generator = torch.Generator().manual_seed(o.seed + state["step"])
    logger.info(
        "judge: %.2fM parameters, %d px, batch %d, device %s",
        sum(p.numel() for p in raw.parameters()) / 1e6, o.image_size,
        o.per_device_train_batch_size, accelerator.device,
    )  # fmt: skip

    # --- loop
    def loss(batch: tuple[torch.Tensor, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        images, labels = batch
        images = blur_and_noise(images, o.augment, generator)
        if o.half_size > 0 and torch.rand((), generator=generator).item() < o.half_size:
            images = F.interpolate(images, scale_factor=0.5, mode="area")
        images, labels = images.to(accelerator.device), labels.to(accelerator.device)
        with accelerator.autocast():
            return {"loss": raw.loss(judge(images), labels).float()}

    def quick_check(step: int, final: bool) -> dict | None:
        if final or not (o.eval_steps and step % o.eval_steps == 0):
            return None  # the tables at the end replace the last check
        acc = raw.accuracy(*quick)
        return {"step": step, "mean_accuracy": acc.mean().item(), **raw.named(acc)}

    train_loop(
        accelerator, o, Stage(loss=loss, validate=quick_check),
        model=judge, optimizer=optimizer, scheduler=scheduler,
        batches=common.endless_batches(loader, state["step"]), state=state,
        max_steps=o.max_steps, global_batch=o.per_device_train_batch_size,
    )  # fmt: skip

    # --- save, then the final tables on clean renders
    raw.eval()
    raw.save_pretrained(out)
    size, seed, n = o.image_size, o.world_seed, o.eval_images
    validation = render_split("validation", n, size, seed)
    reports = {
        "validation": evaluate(raw, *validation),
        "heldout": evaluate(raw, *render_split("heldout", n, size, seed)),
        # Not part of the target, but what the eval suite meets: soft and small pictures.
        "validation, blur 1px": evaluate(raw, gaussian_blur(validation[0], 1.0), validation[1]),
        f"validation, rendered at {size // 2}px": evaluate(
            raw, *render_split("validation", n, size // 2, seed)
        ),
    }
    metrics = {
        "steps": state["step"],
        "images_seen": state["images_seen"],
        "minutes": (time.perf_counter() - started) / 60,
        "eval_images": o.eval_images,
        "splits": reports,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    accelerator.end_training()
    logger.info("\n%s", table(reports))
    logger.info("saved the judge to %s (%d steps)", out, state["step"])
    return metrics


if __name__ == "__main__":
    common.run_script(main, JudgeOptions, logger)
