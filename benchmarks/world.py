"""How fast the data layer makes pictures, on one core in one process.

    .venv/bin/python benchmarks/world.py            # prints a table, writes results/world.json

Rows: rendering alone; the on-the-fly stream that stage-1 training reads (sampling + rendering
+ tensor); writing the on-disk world (PNG + metadata + dialogues); and decoding + ADM-cropping
a real-size JPEG the way ImageStream does. Each figure is the median of `--repeats` runs. The
issue asks for >= 300 pictures/s at 64 px on one core from the stream.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import PIL
import torch

from svq.data import ChatWorldStream, Preprocess, load_image, render, world_record, write_world

TARGET_64 = 300  # pictures per second at 64 px, one core (issue 3)


def timed(work: Callable[[], int], repeats: int) -> tuple[float, int]:
    """Median seconds of `work` (which returns how many pictures it made) over `repeats`."""
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        count = work()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs), count


def bench_render(size: int, n: int) -> Callable[[], int]:
    records = [world_record(0, "train", i) for i in range(n)]
    return lambda: sum(1 for r in records if render(r, size) is not None)


def bench_stream(size: int, n: int) -> Callable[[], int]:
    def work() -> int:
        stream = iter(ChatWorldStream(size=size, seed=0))
        for _ in range(n):
            next(stream)
        return n

    return work


def bench_write(size: int, n: int) -> Callable[[], int]:
    def work() -> int:
        with tempfile.TemporaryDirectory() as tmp:
            summary = write_world(Path(tmp) / "world", n=n, size=size, n_eval=0)
        return sum(summary.images.values())

    return work


def bench_real(size: int, n: int) -> Callable[[], int]:
    # A 512x384 photo-sized JPEG (a rendered picture, resized), decoded and cropped n times.
    buffer = io.BytesIO()
    render(world_record(0, "train", 0), 512).resize((512, 384)).save(buffer, "JPEG", quality=90)
    data, crop = buffer.getvalue(), Preprocess(size, train=True)
    generator = torch.Generator().manual_seed(0)
    return lambda: sum(1 for _ in range(n) if crop(load_image(data), generator) is not None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="pictures per run at 64 px")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "world.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    n64, n256 = args.n, max(1, args.n // 8)
    cases = [
        ("render", 64, bench_render(64, n64)),
        ("stream (sample + render + tensor)", 64, bench_stream(64, n64)),
        ("write_world (PNG + jsonl)", 64, bench_write(64, n64)),
        ("render", 256, bench_render(256, n256)),
        ("stream (sample + render + tensor)", 256, bench_stream(256, n256)),
        ("write_world (PNG + jsonl)", 256, bench_write(256, n256)),
        ("real JPEG 512x384 -> ADM random crop", 256, bench_real(256, n256)),
    ]
    rows = []
    print(f"{'what':<38} {'size':>5} {'pictures':>9} {'seconds':>8} {'pictures/s':>11}")
    for name, size, work in cases:
        seconds, count = timed(work, args.repeats)
        rate = round(count / seconds, 1)
        rows.append(
            {
                "what": name,
                "size": size,
                "pictures": count,
                "seconds": round(seconds, 3),
                "pictures_per_s": rate,
            }
        )
        print(f"{name:<38} {size:>5} {count:>9} {seconds:>8.3f} {count / seconds:>11.1f}")
    stream64 = rows[1]["pictures_per_s"]
    verdict = "ok" if stream64 >= TARGET_64 else "BELOW TARGET"
    print(f"stream at 64 px: {stream64:.0f} pictures/s (target >= {TARGET_64}): {verdict}")
    result = {
        "command": " ".join(["python benchmarks/world.py", *sys.argv[1:]]),
        "machine": {
            "cpu_count": torch.multiprocessing.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "pillow": PIL.__version__,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "load_average_1min": round(os.getloadavg()[0], 2),  # other work sharing the cores
        },
        "repeats": args.repeats,
        "target_stream_64_pictures_per_s": TARGET_64,
        "results": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
