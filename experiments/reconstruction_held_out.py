"""Tokenizers side by side on more held-out pictures than a demo's report draws: PSNR of the
continuous and id decodes with standard errors, the paired difference against the first
model, and the judge on the id decodes.

    HF_HUB_OFFLINE=1 python experiments/reconstruction_held_out.py \\
        --models old=runs/demo-a/stage2/model new=runs/demo-b/stage2/model \\
        --judge runs/demo-b/judge --num_images 1024 --results reconstruction_held_out

The pictures are the chat world's validation split (seed 0) from its first one: a demo report
scores its first 64 of them, so those are included.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from common import write_results

from svq import StyledVAEVQ
from svq.data.schema import IDENTITY_ATTRIBUTES
from svq.eval.judge import load_judge
from svq.eval.metrics import psnr
from svq.eval.reconstruction import world_images

SCENE = ("place", "season", "time_of_day")


def mean_se(values: torch.Tensor) -> dict[str, float]:
    return {"mean": values.mean().item(), "se": (values.std() / len(values) ** 0.5).item()}


@torch.no_grad()
def decodes(model: StyledVAEVQ, images: torch.Tensor, batch: int = 64) -> dict[str, torch.Tensor]:
    """(n, 3, S, S) -> {"continuous": ..., "ids": ...} decodes, each (n, 3, S, S)."""
    out: dict[str, list[torch.Tensor]] = {"continuous": [], "ids": []}
    for chunk in images.split(batch):
        features = model.encode(chunk)
        out["continuous"].append(model.decode(features))
        out["ids"].append(model.detokenize(model.codebook.quantize(features)))
    return {k: torch.cat(v) for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", required=True, help="NAME=FOLDER (with codebook)")
    parser.add_argument("--judge", required=True, help="an AttributeJudge folder")
    parser.add_argument("--num_images", type=int, default=1024)
    parser.add_argument("--results", required=True, help="benchmarks/results/NAME.json")
    args = parser.parse_args()
    models = dict(item.split("=", 1) for item in args.models)
    judge = load_judge(args.judge)
    pictures: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # size -> (images, labels)
    rows, first = [], None
    for name, folder in models.items():
        model = StyledVAEVQ.from_pretrained(folder).eval()
        size = model.config.image_size
        if size not in pictures:  # rendered once per picture size
            pictures[size] = world_images(args.num_images, size, "validation", 0)
        images, labels = pictures[size]
        recon = decodes(model, images)
        scores = {k: psnr(v, images) for k, v in recon.items()}  # (n,) each
        accuracy = judge.named(judge.accuracy(recon["ids"].clamp(-1, 1), labels))
        row = {
            "model": name,
            "folder": folder,
            **{f"{k}_psnr": mean_se(v) for k, v in scores.items()},
            "gap_db": (scores["continuous"] - scores["ids"]).mean().item(),
            "judge_on_ids": accuracy,
            "identity_mean": sum(accuracy[a] for a in IDENTITY_ATTRIBUTES)
            / len(IDENTITY_ATTRIBUTES),
            "scene_min": min(accuracy[a] for a in SCENE),
        }
        if first is None:
            first = scores
        else:
            row["paired_vs_first"] = {k: mean_se(scores[k] - first[k]) for k in scores}
        rows.append(row)
        c, i = row["continuous_psnr"], row["ids_psnr"]
        print(f"{name}: continuous {c['mean']:.2f} +- {c['se']:.2f} dB, ids {i['mean']:.2f} +- "
              f"{i['se']:.2f} dB, identity {row['identity_mean']:.1%}, scene min "
              f"{row['scene_min']:.1%}", row.get("paired_vs_first", ""), flush=True)  # fmt: skip
    write_results(args.results, {"num_images": args.num_images, "split": "validation",
                                 "world_seed": 0, "rows": rows})  # fmt: skip


if __name__ == "__main__":
    main()
