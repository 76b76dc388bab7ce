"""Per-token linear probes of two demo runs side by side: for each attribute, the best single
token's probe accuracy among the first `k` tokens, and over all 36 (from each run's
RUN/report/report.json, section "ordering", `svq.eval.probes`).

    python experiments/probe_compare.py RUN_A RUN_B [--k 6] [--out results.json]

How linearly one token says each attribute is what a per-token reader (the chat's projector)
meets first.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from svq.provenance import provenance


def best_per_attribute(run: Path, k: int) -> dict[str, dict[str, float]]:
    probes = json.loads((run / "report" / "report.json").read_text())["sections"]["ordering"]
    probes = probes["probes"]
    table = probes["accuracy"]  # [token][attribute]
    out = {}
    for a, name in enumerate(probes["attributes"]):
        column = [row[a] for row in table]
        out[name] = {f"best_of_first_{k}": max(column[:k]), "best_of_all": max(column)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs=2)
    parser.add_argument("--k", type=int, default=6)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    a, b = (best_per_attribute(run, args.k) for run in args.runs)
    key = f"best_of_first_{args.k}"
    print(f"| attribute | {args.runs[0].name}: first {args.k} / all | "
          f"{args.runs[1].name}: first {args.k} / all |")  # fmt: skip
    print("|---|---|---|")
    for name in a:
        print(f"| {name} | {a[name][key]:.0%} / {a[name]['best_of_all']:.0%} | "
              f"{b[name][key]:.0%} / {b[name]['best_of_all']:.0%} |")  # fmt: skip
    if args.out:
        result = {**provenance(), "runs": {str(args.runs[0]): a, str(args.runs[1]): b}}
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
