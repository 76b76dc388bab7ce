"""What only a GPU shows: bf16 agreement and training throughput of the tokenizer presets.

    python benchmarks/gpu.py   # needs a CUDA device; writes results/gpu.json

1. Agreement, per preset, on the same weights and pictures (eval mode): CUDA fp32 against CPU
   fp32 (a device bug shows here), and CUDA bf16 autocast against CUDA fp32 (features and
   reconstruction: relative error ||a - b|| / ||b||, and the PSNR of the bf16 reconstruction
   against the fp32 one); then one bf16 training step (MSE): loss and every gradient finite.
2. Throughput: a full bf16 training step (forward, backward, AdamW) in images/s and peak GPU
   memory, for `base` with and without gradient checkpointing and for the CPU-scale presets.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from common import print_table, timed, write_results

from svq import StyledVAEVQ, SVQConfig

PRESETS = ("base", "base-v1", "conv64-ordered", "conv32-ordered")


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12)).item()


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR of a against b for pictures in [-1, 1] (peak-to-peak 2)."""
    mse = F.mse_loss(a.float().clamp(-1, 1), b.float().clamp(-1, 1)).item()
    return 10 * torch.log10(torch.tensor(4.0 / max(mse, 1e-12))).item()


def agreement(preset: str, batch: int, device: str = "cuda") -> dict:
    torch.manual_seed(0)
    config = SVQConfig.from_preset(preset)
    model = StyledVAEVQ(config).eval()
    size = config.image_size
    images = torch.rand(batch, 3, size, size) * 2 - 1
    with torch.no_grad():
        cpu_features = model.encode(images)
        cpu_recon = model.decode(cpu_features)
        model.to(device)
        gpu = images.to(device)
        features = model.encode(gpu)
        recon = model.decode(features)
        with torch.autocast(device, dtype=torch.bfloat16):
            bf16_features = model.encode(gpu)
            bf16_recon = model.decode(bf16_features)
    model.train()
    with torch.autocast(device, dtype=torch.bfloat16):
        loss = F.mse_loss(model(gpu).recon.float(), gpu)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    finite = bool(torch.isfinite(loss)) and all(bool(torch.isfinite(g).all()) for g in grads)
    return {
        "preset": preset,
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "cuda_vs_cpu_features": f"{relative_error(features.cpu(), cpu_features):.1e}",
        "cuda_vs_cpu_recon": f"{relative_error(recon.cpu(), cpu_recon):.1e}",
        "bf16_vs_fp32_features": f"{relative_error(bf16_features, features):.1e}",
        "bf16_vs_fp32_recon": f"{relative_error(bf16_recon, recon):.1e}",
        "bf16_recon_psnr_db": round(psnr(bf16_recon, recon), 1),
        "bf16_step_finite": finite,
        "grads": len(grads),
    }


def throughput(preset: str, batch: int, repeats: int, checkpointing: bool) -> dict:
    torch.manual_seed(0)
    config = SVQConfig.from_preset(preset, gradient_checkpointing=checkpointing)
    model = StyledVAEVQ(config).cuda().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    size = config.image_size
    images = torch.rand(batch, 3, size, size, device="cuda") * 2 - 1

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = F.mse_loss(model(images).recon.float(), images)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    seconds = timed(step, repeats, warmup=2)
    return {
        "preset": preset,
        "image_px": size,
        "checkpointing": checkpointing,
        "batch": batch,
        "step_ms": round(1e3 * seconds, 1),
        "img_per_s": round(batch / seconds, 1),
        "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks/gpu.py needs a CUDA device; none is visible")
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 in the agreement check
    torch.backends.cudnn.allow_tf32 = False
    agree = [agreement(p, 8) for p in PRESETS]
    print_table(agree, list(agree[0]))
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    speed = [
        throughput("base", 32, args.repeats, checkpointing=True),
        throughput("base", 32, args.repeats, checkpointing=False),
        throughput("conv64-ordered", 256, args.repeats, checkpointing=False),
        throughput("conv32-ordered", 256, args.repeats, checkpointing=False),
    ]
    print()
    print_table(speed, list(speed[0]))
    path = write_results(
        "gpu", {"device": torch.cuda.get_device_name(), "agreement": agree, "throughput": speed}
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
