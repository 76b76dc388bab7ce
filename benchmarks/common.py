"""Shared helpers of the benchmark scripts: timing, the machine record, the results file.

Convention: `benchmarks/NAME.py` prints a table and writes `benchmarks/results/NAME.json`
with the figures, the machine and the command that produced them.
"""

from __future__ import annotations

import json
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from svq.provenance import git_commit
from svq.provenance import machine as svq_machine

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    """What the figures were measured on (load average included: these machines are shared)."""
    return {**svq_machine(), "torch_threads": torch.get_num_threads()}


def commit() -> str:
    """The repository's HEAD commit, with "+dirty" when tracked files differ from it."""
    found = git_commit()
    if found["commit"] is None:
        return "unknown"
    return found["commit"] + ("+dirty" if found["dirty"] else "")


def timed(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall seconds of `fn()` over `repeats` runs after `warmup` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_rate(size: int = 2048, repeats: int = 5, dtype: torch.dtype = torch.float32) -> float:
    """This machine's measured dense matmul rate, FLOP/s, for a size x size product."""
    a = torch.randn(size, size, dtype=dtype)
    b = torch.randn(size, size, dtype=dtype)
    return 2 * size**3 / timed(lambda: a @ b, repeats)


def write_results(name: str, figures: dict) -> Path:
    """Write results/NAME.json with the figures, the command line, the commit and the machine."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    record = {
        "command": "python " + shlex.join(sys.argv),
        "commit": commit(),
        "machine": machine(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **figures,
    }
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def print_table(rows: list[dict], columns: list[str]) -> None:
    widths = [max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(str(row.get(c, "")).ljust(w) for c, w in zip(columns, widths, strict=True)))
