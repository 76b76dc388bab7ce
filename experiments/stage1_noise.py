"""Stage 1's feature noise against the quantisation gap: a demo budget's stage 1 with another
noise scale (`noise_scale`, the preset's otherwise), then that budget's stage 2 on it, to set
beside the demo's own run (the same data, steps and seed).

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python experiments/stage1_noise.py --budget quick \\
        --noise 0.45 --out runs/noise045 --results stage1_noise_quick_045

Writes OUT/stage1 and OUT/stage2 (a demo run's layout) and benchmarks/results/NAME.json: the
stage-1 summary's last validation, and stage 2's held-out PSNR of both decodes before and
after its fine-tune (the gap), with the commit and machine.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from common import write_results

from svq.demo import load_budget, run_script


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", default="quick")
    parser.add_argument("--noise", type=float, required=True, help="stage 1's noise_scale")
    parser.add_argument("--out", type=Path, required=True, help="a folder for the run")
    parser.add_argument("--results", required=True, help="benchmarks/results/NAME.json")
    args = parser.parse_args()
    table = load_budget(args.budget)
    stage1 = dict(table["stage1"])
    stage1["model_overrides"] = {**stage1.get("model_overrides", {}), "noise_scale": args.noise}
    first = run_script(args.out, "stage1", stage1)
    second = run_script(args.out, "stage2", dict(table["stage2"]))
    keys = ("continuous_psnr", "quantized_psnr", "psnr_gap")
    result = {
        "budget": args.budget,
        "noise_scale": args.noise,
        "stage1_options": stage1,
        "stage1": {"train_seconds": first["train_seconds"], "validation": first["validation"]},
        "stage2_before": {k: second["before"][k] for k in keys},
        "stage2_after": {k: second["after"][k] for k in keys},
    }
    print(result, flush=True)
    write_results(args.results, result)


if __name__ == "__main__":
    main()
