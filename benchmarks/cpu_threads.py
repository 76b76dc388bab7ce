"""Training step time on two torch threads against one, for the demos' models.

    python benchmarks/cpu_threads.py            # writes the results (run on an idle machine)
    python benchmarks/cpu_threads.py --steps 2  # a sanity run

The demos run two stages at once, one thread each; when one process has nothing left to do
while the other trains (stage 1 after the spatial VQ, the chat after its baseline), that stage
may take the free core (`threads_after`, svq/train/options.py). This measures what the second
thread buys: the same step, in the demo's precision (bf16 autocast for stage 1 and the chat,
fp32 for the spatial VQ), taken in turn on 1 and 2 threads (`torch.set_num_threads` between
steps, as the training loop does), on a fresh model per thread count. The figure is the median
step and the 1-thread / 2-thread ratio. Writes results/cpu_threads.json.
"""

from __future__ import annotations

import argparse
import statistics
from functools import partial

import torch
from common import print_table, write_results
from cpu_bf16 import LLM_BATCH, LLM_LENGTH, llm_step, timed_step, tokenizer_step, vq_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per model and count")
    args = parser.parse_args()
    builders = {  # name -> (build, bf16 as in the demos)
        "conv32-map (stage 1, quick), batch 32": (partial(tokenizer_step, "conv32-map", 32), True),
        "conv64-map (stage 1, standard), batch 16": (
            partial(tokenizer_step, "conv64-map", 16),
            True,
        ),
        "spatial VQ (quick), batch 16": (partial(vq_step, 16), False),
        f"demo LLM, {LLM_BATCH} x {LLM_LENGTH} tokens": (llm_step, True),
    }
    steps = {}
    for name, (build, bf16) in builders.items():
        for threads in (1, 2):
            torch.set_num_threads(threads)
            model, loss = build()  # a fresh model per thread count: the same start
            steps[name, threads] = timed_step(model, loss, bf16)
            steps[name, threads]()  # warm-up
    times: dict[tuple[str, int], list[float]] = {key: [] for key in steps}
    for _ in range(args.steps):
        for (name, threads), step in steps.items():
            torch.set_num_threads(threads)
            times[name, threads].append(step())
    rows = []
    for name, (_, bf16) in builders.items():
        one, two = (statistics.median(times[name, n]) for n in (1, 2))
        rows.append({"model": name, "bf16": bf16, "one_thread_s": round(one, 4),
                     "two_threads_s": round(two, 4), "speedup": round(one / two, 2)})  # fmt: skip
    print_table(rows, ["model", "bf16", "one_thread_s", "two_threads_s", "speedup"])
    path = write_results(
        "cpu_threads",
        {
            "setting": f"median of {args.steps} steps per model and thread count, taken in "
            "turn (torch.set_num_threads before each); step = forward, loss, backward, clip 1, "
            "AdamW, in the demo's precision",
            "rows": rows,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
