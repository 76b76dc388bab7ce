"""Training step time of the conv tokenizer options against the `tiny` preset, side by side.

    OMP_NUM_THREADS=1 python benchmarks/tokenizer_step_time.py            # writes the results
    OMP_NUM_THREADS=1 python benchmarks/tokenizer_step_time.py --steps 4  # a sanity run
    OMP_NUM_THREADS=1 python benchmarks/tokenizer_step_time.py --set demo --batch 16

One stage-1 training step (forward, MSE, backward, clip 1, AdamW) at batch 32 and 32 px on one
thread, for `tiny`, `tiny-conv` and the channel plans considered for `tiny-conv`. The models
take their steps in turn (round robin), so a load change on this shared machine hits all of
them alike; the figure is the median step per model and its ratio to `tiny`'s. Writes
results/tokenizer_step_time.json. `--set demo`: the demos' presets and their successors, each
at its own picture size, as ratios to the first of each size (results/..._demo.json).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from common import commit, print_table, write_results

from svq import StyledVAEVQ, SVQConfig

CONV = {"encoder_stem": "conv", "decoder": "conv"}
# name -> (preset, overrides): the presets, then the plans weighed for `tiny-conv`.
VARIANTS: dict[str, tuple[str, dict]] = {
    "tiny": ("tiny", {}),
    "tiny-conv": ("tiny-conv", {}),
    "stem only": ("tiny", {"encoder_stem": "conv", "stem_channels": [16, 32, 64, 64]}),
    "the prototype's widths: stem 32-128, decoder 128-96-64-32": (
        "tiny",
        {
            **CONV,
            "stem_channels": [32, 64, 128, 128],
            "stem_blocks": 0,
            "decoder_channels": [128, 96, 64, 32],
            "decoder_cond_layers": 12,
            "conds_per_block": 3,
        },
    ),
    "tiny-conv, encoder width 64": ("tiny-conv", {"encoder_width": 64}),
}
DEMO: dict[str, tuple[str, dict]] = {
    "conv32-ordered": ("conv32-ordered", {}),
    "conv32-map": ("conv32-map", {}),
    "conv32-map, decoder 128-64-32-32": ("conv32-map", {"decoder_channels": [128, 64, 32, 32]}),
    "conv32-map, decoder 128-64-64-32": ("conv32-map", {"decoder_channels": [128, 64, 64, 32]}),
    "conv64-ordered": ("conv64-ordered", {}),
    "conv64-map": ("conv64-map", {}),
}


def step_fn(model: StyledVAEVQ, images: torch.Tensor):
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, betas=(0.9, 0.99))

    def step() -> None:
        loss = F.mse_loss(model(images).recon, images)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per model")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--set", choices=("options", "demo"), default="options")
    args = parser.parse_args()
    torch.set_num_threads(1)
    variants = VARIANTS if args.set == "options" else DEMO
    steps, params, sizes = {}, {}, {}
    for name, (preset, overrides) in variants.items():
        torch.manual_seed(0)
        model = StyledVAEVQ(SVQConfig.from_preset(preset, **overrides)).train()
        size = sizes[name] = model.config.image_size
        generator = torch.Generator().manual_seed(0)
        images = torch.rand(args.batch, 3, size, size, generator=generator) * 2 - 1
        params[name] = sum(p.numel() for p in model.parameters())
        steps[name] = step_fn(model, images)
        steps[name]()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.steps):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    first = {}  # picture size -> the median step of its first variant
    for name, t in times.items():
        first.setdefault(sizes[name], statistics.median(t))
    ratio = "ratio_to_tiny" if args.set == "options" else "ratio_to_first_of_size"
    rows = [
        {
            "variant": name,
            "image_px": sizes[name],
            "params_M": round(params[name] / 1e6, 3),
            "step_s": round(statistics.median(t), 4),
            ratio: round(statistics.median(t) / first[sizes[name]], 2),
        }
        for name, t in times.items()
    ]
    print_table(rows, ["variant", "image_px", "params_M", "step_s", ratio])
    path = write_results(
        "tokenizer_step_time" + ("" if args.set == "options" else "_demo"),
        {
            "commit": commit(),
            "setting": f"batch {args.batch}, each model at its own picture size, 1 thread, "
            f"median of {args.steps} steps per model taken in turn; step = forward, MSE, "
            "backward, clip 1, AdamW",
            "variants": {n: {"preset": p, "overrides": o} for n, (p, o) in variants.items()},
            "rows": rows,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
