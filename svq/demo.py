"""`svq demo`: build a fresh tokenizer, fit it briefly on generated pictures, and write the
originals and their reconstructions side by side to a PNG.

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
from .images import save_grid
from .model import StyledVAEVQ


def toy_images(n: int, size: int, seed: int) -> torch.Tensor:
    """n pictures (n, 3, size, size) in [-1, 1]: a two-colour sky/ground split at a random
    horizon with one coloured disc; enough structure for a reconstruction to be judged."""
    g = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    images = torch.empty(n, 3, size, size)
    for i in range(n):
        sky, ground, disc = torch.rand(3, 3, 1, 1, generator=g) * 2 - 1
        horizon = 0.4 + 0.4 * torch.rand((), generator=g)
        cx, cy = torch.rand(2, generator=g) * 0.6 + 0.2
        radius = 0.08 + 0.15 * torch.rand((), generator=g)
        img = torch.where(ys > horizon, ground, sky)
        inside = (xs - cx) ** 2 + (ys - cy) ** 2 < radius**2
        images[i] = torch.where(inside, disc, img)
    return images


def run_demo(
    out: str | Path,
    preset: str = "tiny",
    steps: int = 400,
    batch_size: int = 32,
    learning_rate: float = 2e-3,
    seed: int = 0,
) -> dict:
    """Train `preset` for `steps` on toy pictures; write reconstructions.png, the model folder
    and summary.json into `out`. Returns the summary."""
    out = Path(out)
    torch.manual_seed(seed)
    config = SVQConfig.from_preset(preset)
    model = StyledVAEVQ(config)
    train = toy_images(4096, config.image_size, seed)
    held_out = toy_images(8, config.image_size, seed + 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    start = time.perf_counter()
    model.train()
    for step in range(steps):
        batch = train[torch.randint(len(train), (batch_size,))]
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
    parser = sub.add_parser("demo", help="train a fresh tokenizer briefly and show reconstructions")
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
