"""Train the ids-to-grid model offline on rendered pictures: picture -> the tokenizer's 36 ids
(input) and the spatial VQ's grid ids (target). No LLM: the pictures are unlimited.

    python -m svq.train.ids_to_grid --svq_path RUN/stage2/model --spatial_vq_path RUN/vq/model \\
        --output_dir runs/ids-to-grid

Both tokenizers encode `num_train_images` chat-world training pictures once (the ids fit in
memory); the model trains `max_steps` batches drawn from them in the loop every stage shares
(AdamW, warm-up + cosine, checkpoints and --resume; label smoothing, MaskGIT masking unless
--no_masked). At the end, on `num_val_images` validation
pictures it reports (OUTPUT_DIR/summary.json, with the command, commit and machine; the
release is OUTPUT_DIR/model):

- grid-cell accuracy against the spatial VQ's own ids, for each `decode_steps`;
- PSNR of the spatial VQ's decode of the predicted grid, beside the spatial VQ's decode of its
  own ids (the ceiling: a perfect grid) and the tokenizer's decoder on the same 36 ids (the
  route it replaces or joins);
- with a shipped judge for the picture size that passes its gate: the judge per attribute on
  each of those three decodes.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from accelerate.utils import set_seed

from svq import StyledVAEVQ
from svq.data import ChatWorldDataset
from svq.eval.gate import judge_gate
from svq.eval.judge import load_judge, shipped_judge
from svq.eval.metrics import psnr
from svq.ids_to_grid import IdsToGrid, IdsToGridConfig
from svq.progress import progress_bar
from svq.provenance import provenance
from svq.spatial_vq import SpatialVQ
from svq.train import common
from svq.train.loop import Stage, train_loop
from svq.train.options import LoggingOptions, OptimizerOptions, RunOptions, StepOptions

logger = logging.getLogger("ids_to_grid")


@dataclass
class IdsToGridOptions(LoggingOptions, OptimizerOptions, StepOptions, RunOptions):
    """Every option of an ids-to-grid run: the shared groups (svq/train/options.py) and these."""

    svq_path: str = ""  # a tokenizer release with its codebook (svq/train/stage2.py's OUT/model)
    spatial_vq_path: str = ""  # a spatial VQ release (svq/train/vq.py's OUT/model)
    output_dir: str = "runs/ids-to-grid"
    # --- data: chat-world pictures, encoded once
    world_seed: int = 0
    num_train_images: int = 20_000
    num_val_images: int = 512
    encode_batch_size: int = 128
    # --- model
    width: int = 128
    depth: int = 3
    heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.1
    # --- loss
    label_smoothing: float = 0.1
    masked: bool = True  # MaskGIT training (needed for decode_steps > 1)
    # --- evaluation
    decode_steps: list[int] = field(default_factory=lambda: [1, 4])
    # --- the shared groups' defaults for this model
    max_steps: int = 2_000
    per_device_train_batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    adam_beta2: float = 0.99
    warmup_steps: int = 100
    logging_steps: int = 100
    report_to: str = "none"

    def __post_init__(self) -> None:
        for name in ("svq_path", "spatial_vq_path"):
            if not getattr(self, name):
                raise ValueError(f"--{name} is required")
        common.check_training_options(self, positive=("num_train_images", "num_val_images"))
        if not self.decode_steps or min(self.decode_steps) < 1:
            raise ValueError(f"decode_steps must be >= 1, got {self.decode_steps}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")


def load_tokenizers(o: IdsToGridOptions) -> tuple[StyledVAEVQ, SpatialVQ]:
    """Both tokenizers, frozen, in eval mode (the svq one with its codebook)."""
    spatial = SpatialVQ.from_pretrained(o.spatial_vq_path).requires_grad_(False).eval()
    return StyledVAEVQ.load(o.svq_path, require_codebook=True), spatial


@torch.no_grad()
def encode(
    svq: StyledVAEVQ, spatial: SpatialVQ, split: str, count: int, o: IdsToGridOptions
) -> dict[str, torch.Tensor]:
    """Pictures 0..count-1 of `split` -> ids (count, 36), grid (count, h*w), and the pictures
    at the spatial VQ's size (count, 3, S, S) for the validation split."""
    size, spatial_size = svq.config.image_size, spatial.config.image_size
    pictures = ChatWorldDataset(size, count, o.world_seed, split)
    at_spatial = pictures if spatial_size == size else ChatWorldDataset(
        spatial_size, count, o.world_seed, split
    )  # fmt: skip
    ids, grids, images = [], [], []
    starts = range(0, count, o.encode_batch_size)
    for start in progress_bar(starts, desc=f"encoding {split} pictures"):
        batch = range(start, min(start + o.encode_batch_size, count))
        x = torch.stack([pictures[i] for i in batch])
        ids.append(svq.codebook.quantize(svq.encode(x).float()))
        x = x if at_spatial is pictures else torch.stack([at_spatial[i] for i in batch])
        grids.append(spatial.encode(x))
        if split != "train":
            images.append(x)
    out = {"ids": torch.cat(ids).long(), "grid": torch.cat(grids).long()}
    if images:
        out["images"] = torch.cat(images)
    return out


def build_model(svq: StyledVAEVQ, spatial: SpatialVQ, o: IdsToGridOptions) -> IdsToGrid:
    book = svq.codebook.config
    config = IdsToGridConfig(
        num_positions=svq.config.num_tokens, num_codes=book.num_codes,
        per_position=book.per_position, grid_size=tuple(spatial.grid_size),
        codebook_size=spatial.codebook_size, width=o.width, depth=o.depth, heads=o.heads,
        mlp_ratio=o.mlp_ratio, dropout=o.dropout,
    )  # fmt: skip
    return IdsToGrid(config)


def batches(data: dict[str, torch.Tensor], o: IdsToGridOptions) -> Iterator[tuple]:
    """(ids (b, 36), grid (b, h*w)) batches forever, each pass over the pictures reshuffled."""
    generator = torch.Generator().manual_seed(o.seed)
    n, b = len(data["ids"]), o.per_device_train_batch_size
    while True:
        order = torch.randperm(n, generator=generator)
        for start in range(0, n - b + 1, b):
            rows = order[start : start + b]
            yield data["ids"][rows], data["grid"][rows]


def train(model: IdsToGrid, data: dict[str, torch.Tensor], o: IdsToGridOptions) -> list[dict]:
    """The shared loop (svq/train/loop.py) on the encoded pictures; returns the logged records
    (the loss of the logged step's batch, the learning rate, speed, gradient norm)."""
    accelerator = common.make_accelerator(o)
    resume = common.resolve_resume(o.output_dir, o.resume_from_checkpoint, o.overwrite_output_dir)
    optimizer = common.adamw(model, o)
    model, optimizer = accelerator.prepare(model, optimizer)
    scheduler, _ = common.make_scheduler(accelerator, o, optimizer, o.max_steps)
    state = common.start_state(
        accelerator, resume, o.seed, {"step": 0, "pictures_seen": 0, "train_seconds": 0.0}
    )
    raw = accelerator.unwrap_model(model)

    def loss(batch: tuple[torch.Tensor, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        ids, grid = (t.to(accelerator.device) for t in batch)
        with accelerator.autocast():
            return {"loss": raw.loss(ids, grid, o.label_smoothing, o.masked).float()}

    result = train_loop(
        accelerator, o, Stage(loss=loss, seen="pictures_seen", speed="pictures_per_s"),
        model=model, optimizer=optimizer, scheduler=scheduler,
        batches=common.endless_batches(batches(data, o), state["step"]), state=state,
        max_steps=o.max_steps, global_batch=o.per_device_train_batch_size,
    )  # fmt: skip
    accelerator.end_training()
    return result.history


@torch.no_grad()
def evaluate(
    model: IdsToGrid, svq: StyledVAEVQ, spatial: SpatialVQ, val: dict, o: IdsToGridOptions
) -> dict:
    """Grid accuracy and PSNR (and the gated judge) of each route on the validation pictures."""
    model.eval()
    images, ids, grid = val["images"], val["ids"], val["grid"]
    chunks = range(0, len(ids), o.encode_batch_size)

    def batched(fn) -> torch.Tensor:
        return torch.cat([fn(slice(s, s + o.encode_batch_size)) for s in chunks])

    decodes = {
        "spatial VQ, its own ids (ceiling)": batched(lambda s: spatial.decode(grid[s])),
        "tokenizer decoder, same 36 ids": batched(
            lambda s: svq.decode(svq.codebook.lookup(ids[s]))
        ),
    }
    if svq.config.image_size != spatial.config.image_size:  # compare at the spatial VQ's size
        size = spatial.config.image_size
        decodes["tokenizer decoder, same 36 ids"] = torch.nn.functional.interpolate(
            decodes["tokenizer decoder, same 36 ids"], size=(size, size), mode="bilinear"
        )
    accuracy = {}
    for steps in o.decode_steps:
        predicted = batched(lambda s, k=steps: model.generate(ids[s], steps=k))
        accuracy[str(steps)] = (predicted == grid).float().mean().item()
        decodes[f"ids-to-grid, {steps} pass(es)"] = batched(
            lambda s, p=predicted: spatial.decode(p[s])
        )
    report: dict = {"grid_accuracy": accuracy, "chance_grid_accuracy": _majority(grid)}
    report["psnr"] = {}
    for name, x in decodes.items():
        values = psnr(x, images)  # (B,) per picture
        report["psnr"][name] = {"mean": values.mean().item(),
                                "se": (values.std() / math.sqrt(len(values))).item()}  # fmt: skip
    report["judge"] = _judged(decodes, spatial.config.image_size, o)
    return report


def _majority(grid: torch.Tensor) -> float:
    """Accuracy of predicting each cell's most frequent code (a blind baseline)."""
    hits = sum(torch.bincount(grid[:, c]).max().item() for c in range(grid.shape[1]))
    return hits / grid.numel()


def _judged(decodes: dict[str, torch.Tensor], size: int, o: IdsToGridOptions) -> dict:
    try:
        judge = load_judge(shipped_judge(size))
    except ValueError as error:
        return {"status": "not run", "reason": str(error)}
    gate = judge_gate(judge, size)
    if not gate.passed:
        return {"status": "refused", "reason": gate.reason}
    labels = torch.tensor([r.labels() for r in _records(size, o)])
    return {
        "status": "passed",
        "gate_lowest": min(gate.accuracy.values()),
        "per_route": {name: judge.named(judge.accuracy(x, labels)) for name, x in decodes.items()},
    }


def _records(size: int, o: IdsToGridOptions) -> list:
    data = ChatWorldDataset(size, o.num_val_images, o.world_seed, "validation")
    return [data.record(i) for i in range(o.num_val_images)]


def main(o: IdsToGridOptions) -> dict:
    set_seed(o.seed)
    out = Path(o.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    svq, spatial = load_tokenizers(o)
    started = time.perf_counter()
    data = encode(svq, spatial, "train", o.num_train_images, o)
    val = encode(svq, spatial, "validation", o.num_val_images, o)
    encode_s = time.perf_counter() - started
    model = build_model(svq, spatial, o)
    logs = train(model, data, o)
    train_s = time.perf_counter() - started - encode_s
    summary = {
        **provenance(),
        "options": asdict(o),
        "params": sum(p.numel() for p in model.parameters()),
        "encode_seconds": round(encode_s, 1),
        "train_seconds": round(train_s, 1),
        "train_log": logs,
        "validation": evaluate(model, svq, spatial, val, o),
    }
    common.save_release(model, out)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    logger.info("validation: %s", json.dumps(summary["validation"]))
    return summary


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:%(name)s:%(message)s")
    common.run_script(main, IdsToGridOptions, logger)
