"""`svq demo`: build a fresh tokenizer, fit it briefly on chat-world pictures rendered on the
fly, and write held-out originals and their reconstructions side by side to a PNG.

(The end-to-end pipeline demo grows out of this; for now it is the smallest honest run of the
model: encode -> 36 tokens -> decode, trained for a few seconds on CPU.)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from .config import SVQConfig
from .data import render_tensor, world_record
from .images import save_grid
from .model import StyledVAEVQ


def world_batch(seed: int, split: str, start: int, count: int, size: int) -> torch.Tensor:
    """Chat-world pictures start..start+count-1 of `split`, (count, 3, size, size) in [-1, 1]."""
    return render_tensor([world_record(seed, split, start + i) for i in range(count)], size)


def run_demo(
    out: str | Path,
    preset: str = "tiny",
    steps: int = 400,
    batch_size: int = 32,
    learning_rate: float = 2e-3,
    seed: int = 0,
) -> dict:
    """Train `preset` for `steps` on fresh chat-world pictures (never one seen twice); write
    reconstructions.png, the model folder and summary.json into `out`. Returns the summary."""
    out = Path(out)
    # The tiny model's tensors are small: a second intra-op thread gains nothing, and when the
    # other core is busy it made backward passes ~100x slower on a 2-core machine.
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    config = SVQConfig.from_preset(preset)
    model = StyledVAEVQ(config)
    size = config.image_size
    held_out = world_batch(seed, "validation", 0, 8, size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    start = time.perf_counter()
    model.train()
    for step in range(steps):
        batch = world_batch(seed, "train", step * batch_size, batch_size, size)
        loss = F.mse_loss(model(batch).recon, batch)
        if not torch.isfinite(loss):
            raise RuntimeError(f"non-finite loss {loss.item()} at step {step}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % 50 == 0 or step == steps - 1:
            print(f"step {step:4d}  mse {loss.item():.4f}", flush=True)
    model.eval()
    with torch.no_grad():
        recon = model.decode(model.encode(held_out))
    mse = F.mse_loss(recon.clamp(-1, 1), held_out).item()
    psnr = 10 * torch.log10(torch.tensor(4.0 / mse)).item()  # peak-to-peak 2 in [-1, 1]
    grid = save_grid([held_out, recon], out / "reconstructions.png")
    model.save_pretrained(out / "model")
    summary = {
        "preset": preset,
        "steps": steps,
        "seconds": round(time.perf_counter() - start, 1),
        "held_out_psnr_db": round(psnr, 2),
        "grid": str(grid),
        "model": str(out / "model"),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "demo", help="train a fresh tokenizer briefly on the chat world; show reconstructions"
    )
    parser.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    parser.add_argument("--preset", default="tiny", help="model preset (default tiny)")
    parser.add_argument("--steps", type=int, default=400, help="training steps (default 400)")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    summary = run_demo(args.out, preset=args.preset, steps=args.steps, seed=args.seed)
    print(
        f"held-out PSNR {summary['held_out_psnr_db']} dB after {summary['steps']} steps "
        f"({summary['seconds']} s); originals (top) vs reconstructions (bottom): {summary['grid']}"
    )
    return 0
