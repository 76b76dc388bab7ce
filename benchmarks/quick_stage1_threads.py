"""The quick demo's stage 1 on one or two threads, its pictures drawn in a loader worker or in
the training process: steps per second of the real training script.

    python benchmarks/quick_stage1_threads.py             # writes the results (idle machine)
    python benchmarks/quick_stage1_threads.py --steps 20  # a sanity run

Each setting runs `svq/train/stage1.py` with the quick demo's stage-1 options
(svq/configs/demo_quick.yaml) for `--steps` steps in a fresh process (OMP_NUM_THREADS, and
`dataloader_num_workers` 1 or 0), one setting after another; the figure is the run's own
`train_seconds` (the training loop, validation aside). Once the spatial VQ is done the quick
demo's stage 1 has the machine's second core: this says whether a loader worker or a second
torch thread should have it. Writes results/quick_stage1_threads.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from common import print_table, write_results

from svq.configs import shipped_config
from svq.demo import flags, load_budget

ROOT = Path(__file__).resolve().parents[1]

SETTINGS = [(1, 1), (1, 0), (2, 1), (2, 0)]  # (torch threads, loader workers)


def run(steps: int, threads: int, workers: int) -> float:
    """Seconds the training loop took for `steps` quick stage-1 steps."""
    options = dict(load_budget("quick")["stage1"])
    config = shipped_config(options.pop("config"))
    options.update(max_steps=steps, warmup_steps=max(1, steps // 20), eval_steps=0,
                   save_steps=steps, num_val_images=8, token_eval_images=4,
                   dataloader_num_workers=workers)  # fmt: skip
    with tempfile.TemporaryDirectory() as out:
        argv = [sys.executable, "-m", "svq.train.stage1", str(config), *flags(options)]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
        subprocess.run([*argv, "--output_dir", out], check=True, env=env, cwd=ROOT,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        return json.loads((Path(out) / "summary.json").read_text())["train_seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400, help="training steps per setting")
    args = parser.parse_args()
    rows = []
    for threads, workers in SETTINGS:
        seconds = run(args.steps, threads, workers)
        rate = round(args.steps / seconds, 2)
        rows.append({"threads": threads, "loader_workers": workers,
                     "train_s": round(seconds, 1), "steps_per_s": rate})  # fmt: skip
    base = rows[0]["steps_per_s"]
    for row in rows:
        row["speedup"] = round(row["steps_per_s"] / base, 2)
    print_table(rows, ["threads", "loader_workers", "train_s", "steps_per_s", "speedup"])
    path = write_results(
        "quick_stage1_threads",
        {"setting": f"the quick demo's stage 1, {args.steps} steps per setting, one process "
                    "after another on an idle machine; speedup against 1 thread + 1 worker",
         "rows": rows},
    )  # fmt: skip
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
