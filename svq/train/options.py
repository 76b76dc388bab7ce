"""The option groups the training stages share, one dataclass each; a stage's options class
inherits the groups it uses and adds its own fields (HfArgumentParser reads the result as one
dataclass, so every option keeps its `--name` and its YAML key).

Names shared with `transformers.TrainingArguments` mean what they mean there. A stage that
wants another default re-declares the field (it keeps its place in `--help`).

    @dataclass
    class MyOptions(LoggingOptions, OptimizerOptions, StepOptions, RunOptions):
        my_field: int = 3

Groups come first in reverse order of the base list (`RunOptions`, with the required
`output_dir`, last in the list so that it opens `--help`).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RunOptions:
    """Where the run writes, how it resumes, its seed and device."""

    output_dir: str  # checkpoints/, model/ (release), options.yaml, summary.json, logs/
    overwrite_output_dir: bool = False  # start again in a folder that holds checkpoints
    resume_from_checkpoint: str | None = field(
        default=None,
        metadata={
            "aliases": ["--resume"],
            "nargs": "?",
            "const": "latest",
            "help": "a checkpoint folder, or 'latest' (also a bare --resume): the newest "
            "finished checkpoint in output_dir, a fresh start when there is none",
        },
    )
    seed: int = 0  # model init; each process's training noise uses seed + its rank
    use_cpu: bool = False  # train on the CPU even where an accelerator (GPU) exists
    threads_after: str | None = None  # a file: once it exists, the training loop takes one
    # more torch thread (the demo names the DONE file of its other process's last stage before
    # that process waits on this one, so the idle core is used)


@dataclass
class ImageDataOptions:
    """Pictures to train on and to validate with (the tokenizer stages)."""

    train_data: str = "world"  # "world" (rendered on the fly) or open_source(): an image folder,
    # a .json/.txt file list, a saved `datasets` folder, WebDataset shards "a-{000..009}.tar"
    validation_data: str | None = "world"  # the world's validation split, a source, or None
    dataset_split: str = "train"  # split of a saved DatasetDict
    world_seed: int = 0  # the chat world to render (its train and validation splits differ)
    world_length: int = 10_000_000  # pictures per pass of the rendered world (all distinct)
    random_crop: bool = True  # real images: ADM random crop in training (centre crop if False)
    hflip: bool = False  # real images: random horizontal flips (the reference used none)
    dataloader_num_workers: int = 0
    num_val_images: int = 256  # held-out images for PSNR / SSIM (and code usage)


@dataclass
class PixelLossOptions:
    """A reconstruction loss on [-1, 1] pixels: mse * MSE + l1 * L1 + lpips * LPIPS(VGG16)."""

    mse_weight: float = 1.0
    l1_weight: float = 0.0
    lpips_weight: float = 1.0  # LPIPS(VGG16); needs the VGG weights (see svq/lpips.py)
    lpips_trunk_path: str | None = None  # default: $SVQ_LPIPS_DIR or the torch hub cache
    lpips_linear_path: str | None = None  # default: the installed lpips package's vgg.pth

    def check_pixel_loss(self, required: bool = True) -> None:
        """Weights >= 0, and (when `required`) not all of them 0."""
        if min(self.mse_weight, self.l1_weight, self.lpips_weight) < 0:
            raise ValueError("loss weights must be >= 0")
        if required and self.mse_weight + self.l1_weight + self.lpips_weight == 0:
            raise ValueError("mse, l1 and lpips weights are all 0: nothing to reconstruct with")


@dataclass
class StepOptions:
    """How long the run is."""

    max_steps: int = -1  # optimiser steps; -1: num_train_epochs over a sized dataset
    num_train_epochs: float = 1.0


@dataclass
class OptimizerOptions:
    """Batch, AdamW, clipping, schedule and precision."""

    per_device_train_batch_size: int = 32  # global batch = this x accumulation x processes
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-4
    weight_decay: float = 0.0  # on weight matrices only
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0  # 0 turns clipping off
    lr_scheduler_type: str = "cosine"  # any transformers.get_scheduler name
    warmup_steps: int = 0  # > 0 wins over warmup_ratio
    warmup_ratio: float = 0.0
    bf16: bool = False
    fp16: bool = False


@dataclass
class LoggingOptions:
    """Logs and checkpoints."""

    logging_steps: int = 10
    save_steps: int = 500  # also at the end
    save_total_limit: int = 2  # finished checkpoints kept
    report_to: str = "tensorboard"  # an accelerate tracker name, or "none"


@dataclass
class EvalOptions:
    """How often the run validates."""

    eval_steps: int = 500  # also at the end; 0: only at the end


@dataclass
class ImageTrainingOptions(
    EvalOptions, LoggingOptions, OptimizerOptions, StepOptions, PixelLossOptions,
    ImageDataOptions, RunOptions,
):  # fmt: skip
    """Every group a tokenizer trained on pictures uses (stage 1, the spatial VQ)."""
