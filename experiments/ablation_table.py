"""The markdown table of the tokenizer ablation, from its results files.

    python experiments/ablation_table.py benchmarks/results/tokenizer_ablation_*.json

One row per variant: training seconds, PSNR from the continuous features and from per-position
and shared ids (k-means, no fine-tune), the judge on the reconstructions (the lowest of place,
season and time of day; the mean of the six identity attributes), the judge on the first 6
tokens' decodes (place, season), the prefix curve at k = 6, 18, 36 and the smallest cost of
swapping a block of 6 tokens.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

COLUMNS = (
    "variant", "s/step", "cont dB", "ids dB", "shared ids dB", "scene min (cont / ids)",
    "identity mean (cont / ids)", "first 6: place / season", "prefix 6 / 18 / 36 dB",
    "min block swap dB",
)  # fmt: skip


def row(name: str, r: dict) -> list[str]:
    cont, ids = r["continuous"], r["ids_per_position"]
    prefix = r["prefix_psnr"]
    first6 = r["judge_first6"]
    return [
        name,
        f"{r['s_per_step']:.3f}",
        f"{cont['psnr'][0]:.2f}",
        f"{ids['psnr'][0]:.2f}",
        f"{r['ids_shared']['psnr'][0]:.2f}",
        f"{cont['judge']['scene_min']:.0%} / {ids['judge']['scene_min']:.0%}",
        f"{cont['judge']['identity_mean']:.0%} / {ids['judge']['identity_mean']:.0%}",
        f"{first6['place']:.0%} / {first6['season']:.0%}",
        " / ".join(f"{prefix[k]:.1f}" for k in ("6", "18", "36")),
        f"{min(r['block_swap_drop_db'].values()):.2f}",
    ]


def main(paths: list[str]) -> None:
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    for path in paths:
        record = json.loads(Path(path).read_text())
        for name, result in record["results"].items():
            print("| " + " | ".join(row(name, result)) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
