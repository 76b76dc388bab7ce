"""Two demo records side by side: is each judged figure of the second inside the first's 95%
interval, and is it the same number?

    python experiments/compare_demo_records.py benchmarks/results/demo_quick.json \\
        benchmarks/results/demo_quick_loaded.json

Used to check that a run on a loaded machine gives the quiet run's science (budgets are in
steps, each stage one thread): prints one row per figure and exits 1 if any falls outside.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# (name, path to the value, path to its interval or None) inside a record's "figures"
FIGURES = [
    ("PSNR from the ids (dB)", ("reconstruction", "psnr_ids"), None),
    ("PSNR continuous (dB)", ("reconstruction", "psnr_continuous"), None),
    ("judge on id reconstructions (mean)", ("reconstruction", "judge_on_ids_mean"), None),
] + [
    (f"{route}: {name}", (route, *path), (route, *ci))
    for route in ("chat", "chat_baseline")
    for name, path, ci in (
        ("following", ("following", "mean"), ("following", "ci")),
        ("pictures drawn", ("pictures_drawn", "value"), ("pictures_drawn", "ci")),
        (
            "identity within a dialogue",
            ("identity_within_dialogue", "value"),
            ("identity_within_dialogue", "ci"),
        ),
        ("identity vs persona", ("identity_vs_persona", "value"), ("identity_vs_persona", "ci")),
        ("understanding", ("understanding", "accuracy"), ("understanding", "ci")),
    )
]


def get(record: dict, path: tuple[str, ...]):
    value = record["figures"]
    for key in path:
        value = value[key]
    return value


def main(first: str, second: str) -> int:
    a, b = (json.loads(Path(p).read_text()) for p in (first, second))
    for label, path, record in (("first", first, a), ("second", second, b)):
        load = record["machine"].get("load_average_1_5_15")
        print(f"{label}: {path} ({record['wall_minutes']} min, load {load})")
    print("| figure | first [95% interval] | second | inside | identical |")
    print("|---|---|---|---|---|")
    outside = 0
    for name, path, ci in FIGURES:
        x, y = get(a, path), get(b, path)
        low, high = get(a, ci) if ci else (x, x)
        inside = low <= y <= high
        outside += not inside
        interval = f" [{low:.4g}, {high:.4g}]" if ci else ""
        print(f"| {name} | {x:.4g}{interval} | {y:.4g} | {'yes' if inside else 'NO'} | "
              f"{'yes' if x == y else 'no'} |")  # fmt: skip
    return 1 if outside else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
