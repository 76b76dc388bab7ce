"""Train the attribute judge on chat-world renders (exact labels, rendered on the fly) and save it.

    python -m svq.eval.train_judge --output_dir runs/judge --eval_images 4000    # a release judge
    python -m svq.eval.train_judge --output_dir /tmp/j --max_steps 2 --eval_images 16  # smoke run

The 64 px judge the repository ships (svq/eval/judges/world64, `judge.shipped_judge`) is the
first command's judge: 2,500 steps of 64 pictures at 64 px, ~25 minutes on one core of this
project's CPU.

From Python: `train("runs/judge", max_steps=2500)` returns the folder.

The training stream never repeats a picture, so the judge cannot overfit; it never sees
tokenizer output. At the end the judge is evaluated on clean renders of the validation split
(identities seen in training, new pictures) and the heldout split (identities never seen), and
the output folder gets config.json + model.safetensors (`AttributeJudge.from_pretrained`),
run_config.json (these options, resolved) and metrics.json (per-attribute accuracy and the
confusion matrix of every attribute, rows = true value, columns = predicted), also for blurred
(sigma 1 px) and half-size validation renders: the soft pictures the eval suite will meet.

The budget is in steps, so a loaded machine trains the same judge as a quiet one, only later.
The learning rate warms up, then follows a cosine over the run's progress: steps done /
max_steps, or, when a user sets the explicit wall-clock cap `max_minutes` (off by default),
the larger of that and minutes spent / max_minutes, so a run cut short by its cap still
anneals.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from transformers import HfArgumentParser

from svq.data import SCHEMA, ChatWorldDataset, ChatWorldStream
from svq.eval.judge import AttributeJudge, JudgeConfig


@dataclass
class JudgeTrainingArguments:
    output_dir: str = "runs/judge"  # the release folder the eval suite loads
    preset: str = "default"  # JudgeConfig preset
    image_size: int = 64  # render and train at this size (the judge resizes other sizes to it)
    batch_size: int = 64
    max_steps: int = 2_500
    # > 0: an explicit wall-clock cap (the schedule follows it); off by default, since a time
    # budget makes the judge depend on the machine's load
    max_minutes: float = 0.0
    lr: float = 2e-3  # AdamW peak learning rate
    weight_decay: float = 0.05  # on conv and linear weights only
    warmup_steps: int = 100
    augment: float = 0.5  # per picture, the probability of a blur + noise (labels hold)
    # per batch, the probability that it is shown at half size (area-downsampled; the judge
    # resizes it back): so that one judge also reads pictures of half its size
    half_size: float = 0.0
    init_from: str | None = None  # start from this judge folder's weights (a fine-tune)
    # autocast in bfloat16 for the convs: for GPUs; on a CPU without native bf16 (this project's
    # 2-core machine) a training step is 16x slower than in fp32
    bf16: bool = False
    world_seed: int = 0  # which chat world (the eval splits come from the same one)
    seed: int = 0  # initialisation and augmentation
    eval_images: int = 2000  # clean renders per split for the final table
    eval_every: int = 500  # steps between quick validation checks (on eval_images // 4)
    log_every: int = 100
    num_workers: int = 2  # DataLoader processes rendering the stream
    # torch intra-op threads (0: torch's default). One: on a shared CPU, two OpenMP threads
    # waiting for each other made steps 7-18x slower (docs/RESULTS_judge.md).
    threads: int = 1


def train(output_dir: str | Path, **options) -> Path:
    """Train a judge with `JudgeTrainingArguments` options (e.g. max_steps=...)
    and save it to `output_dir`; returns that folder (load it with `svq.eval.judge.load_judge`)."""
    main(JudgeTrainingArguments(output_dir=str(output_dir), **options))
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


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on conv / linear weights; none on norms and biases."""
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    rest = [p for n, p in model.named_parameters() if p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def lr_at(step: int, progress: float, args: JudgeTrainingArguments) -> float:
    """Linear warm-up over warmup_steps, then a cosine from lr to 0 over `progress` in [0, 1]."""
    if step < args.warmup_steps:
        return args.lr * (step + 1) / args.warmup_steps
    return args.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


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


def main(args: JudgeTrainingArguments) -> dict:
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "run_config.json").write_text(json.dumps(asdict(args), indent=2) + "\n")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    # --- data: an endless training stream; fixed clean eval sets
    stream = ChatWorldStream(size=args.image_size, seed=args.world_seed, split="train", labels=True)
    loader = DataLoader(
        stream,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        persistent_workers=args.num_workers > 0,
    )
    quick = render_split(
        "validation", max(1, args.eval_images // 4), args.image_size, args.world_seed
    )

    # --- model and optimizer
    config = JudgeConfig.from_preset(args.preset, image_size=args.image_size)
    judge = AttributeJudge(config)
    if args.init_from is not None:
        start = AttributeJudge.from_pretrained(args.init_from)
        if start.config != config:
            raise ValueError(f"--init_from {args.init_from} is a judge of another config")
        judge.load_state_dict(start.state_dict())
    judge = judge.to(device)
    judge.check_schema(SCHEMA)
    optimizer = torch.optim.AdamW(param_groups(judge, args.weight_decay), lr=args.lr)
    generator = torch.Generator().manual_seed(args.seed)
    print(
        f"judge: {sum(p.numel() for p in judge.parameters()) / 1e6:.2f}M parameters, "
        f"{args.image_size}px, batch {args.batch_size}, device {device}",
        flush=True,
    )

    # --- loop
    start = time.time()
    step, seen = 0, 0
    for images, labels in loader:
        minutes = (time.time() - start) / 60
        progress = step / args.max_steps
        if args.max_minutes > 0:
            progress = max(progress, minutes / args.max_minutes)
        if step >= args.max_steps or progress >= 1.0:
            break
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, progress, args)
        images = blur_and_noise(images, args.augment, generator).to(device)
        if args.half_size > 0 and torch.rand((), generator=generator).item() < args.half_size:
            images = F.interpolate(images, scale_factor=0.5, mode="area")
        labels = labels.to(device)
        judge.train()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
            loss = judge.loss(judge(images), labels)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {loss.item()} at step {step}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step, seen = step + 1, seen + len(images)
        if step % args.log_every == 0 or step == 1:
            print(
                f"step {step} loss {loss.item():.4f} lr {optimizer.param_groups[0]['lr']:.2e} "
                f"{seen / (time.time() - start):.1f} img/s {minutes:.1f} min",
                flush=True,
            )
        if step % args.eval_every == 0:
            acc = judge.accuracy(*quick)
            worst = sorted(judge.named(acc).items(), key=lambda kv: kv[1])[:4]
            worst_text = ", ".join(f"{name} {value:.4f}" for name, value in worst)
            print(f"step {step} quick validation: mean {acc.mean():.4f}; {worst_text}", flush=True)

    # --- save, then the final tables on clean renders
    judge.eval()
    judge.save_pretrained(out)
    size, seed, n = args.image_size, args.world_seed, args.eval_images
    validation = render_split("validation", n, size, seed)
    reports = {
        "validation": evaluate(judge, *validation),
        "heldout": evaluate(judge, *render_split("heldout", n, size, seed)),
        # Not part of the target, but what the eval suite meets: soft and small pictures.
        "validation, blur 1px": evaluate(judge, gaussian_blur(validation[0], 1.0), validation[1]),
        f"validation, rendered at {size // 2}px": evaluate(
            judge, *render_split("validation", n, size // 2, seed)
        ),
    }
    metrics = {
        "steps": step,
        "images_seen": seen,
        "minutes": (time.time() - start) / 60,
        "eval_images": args.eval_images,
        "splits": reports,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    print(table(reports), flush=True)
    print(f"saved the judge to {out} ({step} steps, {seen} pictures)", flush=True)
    return metrics


if __name__ == "__main__":
    (parsed,) = HfArgumentParser(JudgeTrainingArguments).parse_args_into_dataclasses()
    main(parsed)
