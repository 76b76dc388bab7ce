"""`tiny` against `tiny-conv`: held-out PSNR after the same training, one variant after the other.

    OMP_NUM_THREADS=1 python benchmarks/tokenizer_side_by_side.py                # 250 and 500
    OMP_NUM_THREADS=1 python benchmarks/tokenizer_side_by_side.py --steps 4 --eval_at 2 4

Both variants see identical chat-world pictures at 32 px (training seed 0, batch 32, the same
order), start from torch.manual_seed(0) and train with the same recipe: MSE on pixels, AdamW
betas (0.9, 0.99), no weight decay, lr 2e-3 one-cycle (5% warm-up), gradient clip 1, one
thread, no noise or token dropout beyond the presets' own. PSNR is measured on 256 validation
pictures (clamped to [-1, 1], per picture, then averaged) in eval mode: the continuous
features, no codebook. Train seconds count the training steps only (rendering excluded).
Writes results/tokenizer_side_by_side.json.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from common import commit, print_table, write_results

from svq import StyledVAEVQ, SVQConfig
from svq.data.render import render_tensor
from svq.data.sampler import world_record

BATCH, SIZE, LR, VALIDATION = 32, 32, 2e-3, 256
CONV_ENCODER = {"encoder": "conv", "stem_blocks": 0, "head": "ln", "decoder": "conv",
                "decoder_cond_layers": 9, "conds_per_block": 4}  # fmt: skip
# name -> (preset, overrides); --variants picks some (default: the two presets).
VARIANTS: dict[str, tuple[str, dict]] = {
    "tiny": ("tiny", {}),
    "tiny-conv": ("tiny-conv", {}),
    "tiny-conv, head none": ("tiny-conv", {"head": "none"}),
    "tiny-conv, head v1": ("tiny-conv", {"head": "v1"}),
    # the conv encoder (stem to 4x4, one Linear to 36 x 16, LayerNorm) with the conv decoder
    "conv enc+dec, wide": (
        "tiny",
        {
            **CONV_ENCODER,
            "stem_channels": [32, 64, 128, 128],
            "decoder_channels": [128, 96, 64, 32],
        },
    ),
    "conv enc+dec, lean": (
        "tiny",
        {**CONV_ENCODER, "stem_channels": [16, 32, 64, 128], "decoder_channels": [128, 64, 32, 16]},
    ),
}


@torch.no_grad()
def psnr(model: StyledVAEVQ, images: torch.Tensor) -> float:
    """Mean per-picture PSNR in dB of the reconstructions, pixels in [-1, 1] (peak-to-peak 2)."""
    model.eval()
    recon = torch.cat([model(images[i : i + 64]).recon for i in range(0, len(images), 64)])
    model.train()
    mse = ((recon.clamp(-1, 1) - images) ** 2 / 4).flatten(1).mean(1)  # (B,), on a [0, 1] scale
    return float((-10 * torch.log10(mse)).mean())


def train(name: str, steps: int, eval_at: list[int], validation: torch.Tensor) -> dict:
    preset, overrides = VARIANTS[name]
    torch.manual_seed(0)
    model = StyledVAEVQ(SVQConfig.from_preset(preset, **overrides)).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, betas=(0.9, 0.99), weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=LR, total_steps=steps, pct_start=0.05
    )
    curve, seconds = [], 0.0
    for step in range(1, steps + 1):
        start_index = (step - 1) * BATCH
        images = render_tensor(
            [world_record(0, "train", start_index + j) for j in range(BATCH)], SIZE
        )
        start = time.perf_counter()
        loss = F.mse_loss(model(images).recon, images)
        if not torch.isfinite(loss):
            raise RuntimeError(f"{name}: loss is {loss.item()} at step {step}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        seconds += time.perf_counter() - start
        if step in eval_at:
            point = {
                "step": step,
                "train_s": round(seconds, 1),
                "psnr_db": round(psnr(model, validation), 2),
            }
            curve.append(point)
            print(name, point, flush=True)
    return {
        "preset": preset,
        "overrides": overrides,
        "params": sum(p.numel() for p in model.parameters()),
        "curve": curve,
        "final_train_mse": round(loss.item(), 5),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500, help="length of the one-cycle schedule")
    parser.add_argument("--eval_at", type=int, nargs="+", default=[250, 500])
    parser.add_argument("--variants", nargs="+", default=["tiny", "tiny-conv"], choices=VARIANTS)
    parser.add_argument("--results", default="tokenizer_side_by_side", help="results/NAME.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    validation = render_tensor([world_record(1, "validation", i) for i in range(VALIDATION)], SIZE)
    results = {name: train(name, args.steps, args.eval_at, validation) for name in args.variants}
    rows = [
        {"variant": name, "params_M": round(r["params"] / 1e6, 3), **{
            f"{key}@{p['step']}": p[value] for p in r["curve"]
            for key, value in (("dB", "psnr_db"), ("s", "train_s"))
        }}
        for name, r in results.items()
    ]  # fmt: skip
    print_table(rows, list(rows[0]))
    path = write_results(
        args.results,
        {
            "commit": commit(),
            "setting": f"32 px chat world (train seed 0, validation seed 1, {VALIDATION} "
            f"pictures), batch {BATCH}, {args.steps} steps, MSE, AdamW (0.9, 0.99) wd 0, lr {LR} "
            "one-cycle 5% warm-up, clip 1, torch.manual_seed(0), one thread, one variant after "
            "the other; PSNR of continuous features in eval mode; train_s excludes rendering",
            "results": results,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
