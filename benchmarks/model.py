"""Tokenizer speed: batched experts vs a per-expert loop, and model throughput.

    python benchmarks/model.py           # full run, writes results/model.json
    python benchmarks/model.py --quick   # a smaller sanity run

1. The expert MLPs of the encoder (36 per-query MLPs) as one batched matmul against the seed's
   Python loop over 36 separate MLP modules, forward and forward+backward, at widths 256 and 1024.
2. Encoder+decoder forward and forward+backward images/s for the `tiny` and `small` presets,
   with FLOPs per image (torch's FlopCounterMode) and the fraction of this machine's measured
   fp32 matmul rate that the model reaches.
3. On a CUDA machine, also the `base` preset in bf16: images/s and peak memory.
Every pair that is compared is timed back to back in one run: read the ratios.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from common import matmul_rate, print_table, timed, write_results
from gpu import throughput
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from svq import StyledVAEVQ, SVQConfig
from svq.layers import ExpertMlp, Mlp


class ExpertLoop(nn.Module):
    """The seed's way: one `Mlp` module per expert, applied in a Python loop. Built from the
    same weights as a batched `ExpertMlp`, so both compute the same function."""

    def __init__(self, experts: ExpertMlp):
        super().__init__()
        n, width, hidden = experts.fc1.weight.shape
        self.mlps = nn.ModuleList(Mlp(width, hidden) for _ in range(n))
        with torch.no_grad():
            for i, mlp in enumerate(self.mlps):
                mlp.fc1.weight.copy_(experts.fc1.weight[i].T)
                mlp.fc1.bias.copy_(experts.fc1.bias[i])
                mlp.fc2.weight.copy_(experts.fc2.weight[i].T)
                mlp.fc2.bias.copy_(experts.fc2.bias[i])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, n, W) -> (B, n, W)."""
        return torch.stack([mlp(x[:, i]) for i, mlp in enumerate(self.mlps)], dim=1)


def bench_experts(width: int, batch: int, repeats: int) -> list[dict]:
    experts = ExpertMlp(36, width, 4 * width)
    loop = ExpertLoop(experts)
    x = torch.randn(batch, 36, width, requires_grad=True)
    torch.testing.assert_close(experts(x), loop(x), rtol=1e-4, atol=1e-4)
    rows = []
    for mode in ("forward", "forward+backward"):

        def run(module, mode=mode):
            if mode == "forward":
                with torch.no_grad():
                    module(x)
            else:
                module(x).sum().backward()

        batched_s = timed(lambda run=run: run(experts), repeats)
        loop_s = timed(lambda run=run: run(loop), repeats)
        rows.append(
            {
                "what": f"experts W={width} B={batch}",
                "mode": mode,
                "batched_ms": round(1e3 * batched_s, 2),
                "loop_ms": round(1e3 * loop_s, 2),
                "loop/batched": round(loop_s / batched_s, 2),
            }
        )
    return rows


def flops_per_image(model: StyledVAEVQ, images: torch.Tensor, backward: bool) -> float:
    with FlopCounterMode(display=False) as counter:
        out = model(images)
        if backward:
            out.recon.square().mean().backward()
    return counter.get_total_flops() / images.shape[0]


def bench_model(preset: str, batch: int, repeats: int, rate: float) -> list[dict]:
    torch.manual_seed(0)
    config = SVQConfig.from_preset(preset)
    model = StyledVAEVQ(config).train()
    images = torch.rand(batch, 3, config.image_size, config.image_size) * 2 - 1
    params = sum(p.numel() for p in model.parameters())
    rows = []
    for mode in ("forward", "forward+backward"):
        backward = mode != "forward"

        def step(backward=backward):
            if backward:
                model.zero_grad(set_to_none=True)
                F.mse_loss(model(images).recon, images).backward()
            else:
                with torch.no_grad():
                    model(images)

        seconds = timed(step, repeats)
        flops = flops_per_image(model, images, backward)
        model.zero_grad(set_to_none=True)
        rows.append(
            {
                "what": f"{preset} ({params / 1e6:.2f}M params, {config.image_size}px)",
                "mode": mode,
                "batch": batch,
                "img_per_s": round(batch / seconds, 1),
                "gflop_per_img": round(flops / 1e9, 3),
                "matmul_fraction": round(flops * batch / seconds / rate, 3),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, smaller batches")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: torch's). On a shared machine use 1: a second "
        "thread that waits for a busy core made small backward passes ~100x slower here",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = 2 if args.quick else 5

    rate = matmul_rate()
    print(f"measured fp32 matmul rate: {rate / 1e9:.0f} GFLOP/s\n")
    expert_rows = bench_experts(256, 8 if args.quick else 32, repeats)
    expert_rows += bench_experts(1024, 2 if args.quick else 8, repeats)
    print_table(expert_rows, ["what", "mode", "batched_ms", "loop_ms", "loop/batched"])
    print()
    model_rows = bench_model("tiny", 32, repeats, rate)
    model_rows += bench_model("small", 8 if args.quick else 32, repeats, rate)
    columns = ["what", "mode", "batch", "img_per_s", "gflop_per_img", "matmul_fraction"]
    print_table(model_rows, columns)
    figures = {
        "matmul_gflops_fp32": round(rate / 1e9, 1),
        "experts": expert_rows,
        "model": model_rows,
    }
    if torch.cuda.is_available():
        base_rows = [throughput("base", 8 if args.quick else 32, repeats, checkpointing=True)]
        print()
        print_table(base_rows, list(base_rows[0]))
        figures["base_cuda"] = base_rows
    path = write_results("model" + ("_quick" if args.quick else ""), figures)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
