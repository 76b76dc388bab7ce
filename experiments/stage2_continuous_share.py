"""Stage 2's fine-tune with a share of each batch decoded from the continuous features
(`finetune_continuous_share`): what it costs the ids and saves the continuous decode.

Runs a demo budget's stage 2 (svq/configs/demo_<budget>.yaml, the features of one demo run's
stage 1 reused) once per share, one after another in this process, and records the held-out
PSNR of both decodes before and after each fine-tune.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python experiments/stage2_continuous_share.py \\
        --run runs/demo-quick --budget quick --shares 0 0.25 0.5 \\
        --out runs/share --results stage2_continuous_share_quick

`--num_codes K`: the codebooks' size instead of the budget's (the ids' bits against the gap).
`--finetune_encoder`: the encoder trains too, straight-through the quantiser;
`--commitment_weight W` pulls it toward its codes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from common import write_results

from svq.demo import load_budget, script_argv
from svq.train import common, stage2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a demo run with stage1/model")
    parser.add_argument("--budget", default="quick")
    parser.add_argument("--shares", type=float, nargs="+", required=True)
    parser.add_argument("--finetune_steps", type=int, help="default: the budget's")
    parser.add_argument("--num_feature_images", type=int, help="default: the budget's")
    parser.add_argument("--num_codes", type=int, help="codes per codebook; default: the budget's")
    parser.add_argument("--finetune_encoder", action="store_true", help="train the encoder too")
    parser.add_argument("--commitment_weight", type=float, default=0.0)
    parser.add_argument("--out", type=Path, required=True, help="a folder for the runs")
    parser.add_argument("--results", required=True, help="benchmarks/results/NAME.json")
    args = parser.parse_args()
    options = load_budget(args.budget)["stage2"]
    options.pop("finetune_continuous_share", None)  # the sweep's
    if args.finetune_steps is not None:
        options["finetune_steps"] = args.finetune_steps
    if args.num_codes is not None:
        options["num_codes"] = args.num_codes
    if args.finetune_encoder:
        options["finetune_encoder"] = True
        options["commitment_weight"] = args.commitment_weight
    features = args.run / "stage2" / "features"  # the demo's, reused
    if args.num_feature_images is not None:
        options["num_feature_images"] = args.num_feature_images
        features = args.out / f"features-{args.num_feature_images}"  # not the run's own
    rows = []
    for share in args.shares:
        n = options["num_feature_images"]
        codes = options["num_codes"]
        encoder = f"-encoder-c{args.commitment_weight:g}" if args.finetune_encoder else ""
        out = args.out / f"share{share:g}-steps{options['finetune_steps']}-fit{n}-k{codes}{encoder}"
        argv = script_argv("stage2", options, args.run)
        argv += ["--output_dir", str(out), "--finetune_continuous_share", str(share),
                 "--features_dir", str(features)]  # fmt: skip
        start = time.perf_counter()
        parsed = common.parse_options(stage2.Stage2Options, argv)
        summary = stage2.main(parsed)
        row = {
            "share": share,
            "finetune_steps": options["finetune_steps"],
            "num_feature_images": n,
            "num_codes": codes,
            "finetune_encoder": args.finetune_encoder,
            "commitment_weight": args.commitment_weight,
            "num_val_images": parsed.num_val_images,
            "seconds": round(time.perf_counter() - start, 1),
            "before": {k: summary["before"][k] for k in ("continuous_psnr", "quantized_psnr")},
            "after": {k: summary["after"][k] for k in ("continuous_psnr", "quantized_psnr")},
        }
        rows.append(row)
        print(row, flush=True)
    print("| share | steps | continuous before / after dB | ids before / after dB |")
    print("|---|---|---|---|")
    for r in rows:
        b, a = r["before"], r["after"]
        print(f"| {r['share']:g} | {r['finetune_steps']} | {b['continuous_psnr']:.2f} / "
              f"{a['continuous_psnr']:.2f} | {b['quantized_psnr']:.2f} / "
              f"{a['quantized_psnr']:.2f} |")  # fmt: skip
    write_results(args.results, {"run": str(args.run), "budget": args.budget, "rows": rows})


if __name__ == "__main__":
    main()
