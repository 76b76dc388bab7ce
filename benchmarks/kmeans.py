"""Benchmark svq's k-means against faiss-cpu and scikit-learn on the same data.

    python benchmarks/kmeans.py           # 200k x 64 -> 1024, 1M x 64 -> 4096, assignment pass
    python benchmarks/kmeans.py --quick   # a smaller sanity run (about a minute)

Every method runs the same number of Lloyd iterations on the same data; the final inertia of
each is computed the same way (sum of squared distances to the nearest final centroid, fp64).
Each fit runs in a fresh process (the libraries' OpenMP runtimes disturb each other in one).
The machine may be shared: the methods run back to back in a rotating order, each repeat's
times are compared as ratios to the faiss run next to it (and best against best), and the
load average is recorded. svq's runs also record when their centroids first became as good as
faiss's final ones (time to faiss's inertia).
The assignment pass (K = 194,560 codes, E = 128, the reference vocabulary) runs in a fresh
process so that its peak memory is its own. Needs the `bench` extra: faiss-cpu, scikit-learn.
Writes benchmarks/results/kmeans.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from svq.codebook import kmeans  # noqa: E402
from svq.codebook.distance import NearestCode, prepare  # noqa: E402

# (rows, dim, k, repeats)
# assign: (rows, dim, K, rows also run through faiss for a ratio)
FULL = {"cases": [(200_000, 64, 1024, 5), (1_000_000, 64, 4096, 2)], "iters": 20,
        "assign": (1_000_000, 128, 194_560, 50_000)}  # fmt: skip
QUICK = {"cases": [(20_000, 32, 128, 2), (50_000, 64, 512, 1)], "iters": 10,
         "assign": (10_000, 128, 194_560, 10_000)}  # fmt: skip
# scikit-learn's greedy k-means++ is a Python loop over centres with full-data distance
# passes; above this many rows * k it alone takes many minutes, so sklearn starts from random.
SKLEARN_KMEANSPP_MAX = 200_000 * 1024


def make_data(n: int, dim: int, k: int, seed: int = 0) -> torch.Tensor:
    """A Gaussian mixture with 4k components of random scale: (n, dim) fp32."""
    gen = torch.Generator().manual_seed(seed)
    centers = torch.randn(4 * k, dim, generator=gen)
    scale = 0.2 + 0.6 * torch.rand(4 * k, 1, generator=gen)
    comp = torch.randint(4 * k, (n,), generator=gen)
    return (centers[comp] + scale[comp] * torch.randn(n, dim, generator=gen)).contiguous()


def inertia(x: torch.Tensor, centroids) -> float:
    return float(nearest_distances(x, torch.as_tensor(np.asarray(centroids))).sum())


def nearest_distances(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    return NearestCode(prepare(centroids, "l2").contiguous(), "l2")(x)[1].double()


# --- the methods: each returns (centroids, iterations run, init used)
def run_svq(x, k, iters, seed, init, bounds=None):
    """Also returns the trace: (seconds since the start, inertia of the centroids so far)
    after every iteration, for the time svq takes to match faiss's final inertia."""
    trace, start = [], time.perf_counter()

    def record(step):
        trace.append((time.perf_counter() - start, step.inertia))

    c, _ = kmeans(x, k, iters=iters, tol=0, init=init, seed=seed, bounds=bounds, callback=record)
    return c, iters, init, trace


def run_faiss(x, k, iters, seed):
    import faiss

    n, dim = x.shape
    km = faiss.Kmeans(dim, k, niter=iters, seed=seed, verbose=False, spherical=False)
    km.cp.max_points_per_centroid = n  # no subsampling: every method sees all the data
    km.cp.min_points_per_centroid = 1
    km.train(x.numpy())
    return km.centroids, iters, "random", None


def run_sklearn(x, k, iters, seed):
    from sklearn.cluster import KMeans

    init = "k-means++" if x.shape[0] * k <= SKLEARN_KMEANSPP_MAX else "random"
    km = KMeans(k, init=init, n_init=1, max_iter=iters, tol=0.0, algorithm="lloyd",
                random_state=seed)  # fmt: skip
    km.fit(x.numpy())
    return km.cluster_centers_, int(km.n_iter_), init, None


METHODS = {
    "svq": lambda x, k, it, s: run_svq(x, k, it, s, "kmeans++"),
    "svq-random-init": lambda x, k, it, s: run_svq(x, k, it, s, "random"),
    "svq-no-bounds": lambda x, k, it, s: run_svq(x, k, it, s, "kmeans++", bounds=False),
    "faiss": run_faiss,
    "sklearn": run_sklearn,
}


def load() -> float:
    return os.getloadavg()[0]


def bench_case(n, dim, k, repeats, iters, threads, seed=0) -> dict:
    x = make_data(n, dim, k, seed)
    runs = []
    names = list(METHODS)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "x.npy"
        np.save(data, x.numpy())
        for r in range(repeats):
            order = names[r % len(names) :] + names[: r % len(names)]  # rotate who goes first
            for name in order:
                if name == "sklearn" and r > 0:
                    continue  # minutes per run (its k-means++ is a Python loop): first repeat
                load_before = load()
                run = fit_in_child(name, data, k, iters, seed + r, threads, Path(tmp) / "c.npy")
                run.update(method=name, repeat=r, load_before=load_before, load_after=load())
                run["inertia"] = inertia(x, np.load(Path(tmp) / "c.npy"))
                runs.append(run)
                print(f"  {n}x{dim}->{k} r{r} {name:16s} {run['wall_s']:8.2f}s inertia "
                      f"{run['inertia']:.6g} (load {load_before:.1f})", flush=True)  # fmt: skip
    summary = {}
    faiss_runs = {run["repeat"]: run for run in runs if run["method"] == "faiss"}
    for name in names:
        mine = [run for run in runs if run["method"] == name]
        summary[name] = {
            "init": mine[0]["init"],
            "iters": mine[0]["iters"],
            "wall_s_best": min(run["wall_s"] for run in mine),
            "wall_s_median": statistics.median(run["wall_s"] for run in mine),
            "cpu_s_median": statistics.median(run["cpu_s"] for run in mine),
            "time_vs_faiss_median": statistics.median(
                run["wall_s"] / faiss_runs[run["repeat"]]["wall_s"] for run in mine
            ),
            # Best against best: on a shared machine the least disturbed run of each method.
            "time_vs_faiss_best": min(run["wall_s"] for run in mine)
            / min(run["wall_s"] for run in faiss_runs.values()),
            # Time until the centroids so far are as good as faiss's final ones (same repeat),
            # over faiss's time; None if they never are within the iterations.
            "time_to_faiss_inertia_vs_faiss_median": median_or_none(
                [time_to_faiss(run, faiss_runs[run["repeat"]]) for run in mine]
            ),
            "inertia_median": statistics.median(run["inertia"] for run in mine),
            "inertia_vs_faiss_median": statistics.median(
                run["inertia"] / faiss_runs[run["repeat"]]["inertia"] - 1 for run in mine
            ),
        }
    return {"rows": n, "dim": dim, "k": k, "iters": iters, "repeats": repeats,
            "summary": summary, "runs": runs}  # fmt: skip


def time_to_faiss(run: dict, faiss_run: dict) -> float | None:
    """Time until a traced run's centroids were as good as faiss's final ones, over faiss's
    time; None without a trace or if they never were."""
    reached = (t for t, value in run["trace"] or [] if value <= faiss_run["inertia"])
    seconds = next(reached, None)
    return seconds / faiss_run["wall_s"] if seconds is not None else None


def median_or_none(values: list[float | None]) -> float | None:
    """The median of the values that are not None; None if all are (or a run never got
    there: then the median would flatter)."""
    if not values or any(v is None for v in values):
        return None
    return statistics.median(values)


def run_child(threads: int, *flags: Any) -> dict:
    """This script in a fresh process with `flags`; returns the JSON of its last line."""
    cmd = [sys.executable, __file__, "--threads", str(threads), *map(str, flags)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[2:])} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def fit_in_child(name, data, k, iters, seed, threads, out) -> dict:
    """Run one method in a fresh process (faiss, scikit-learn and torch each bring their own
    OpenMP runtime; in one process, faiss's 2-thread runs took 3.7 or 7.7 s at random, alone
    always 3.8 s) and return its timing; its centroids go to `out`."""
    return run_child(threads, "--fit-child", name, data, k, iters, seed, out)


def fit_child(name: str, data: str, k: int, iters: int, seed: int, out: str) -> dict:
    """The child's side: fit, save the centroids, return the timing (data loading excluded)."""
    x = torch.from_numpy(np.load(data))  # a view: no torch op runs for faiss or sklearn
    cpu0, t0 = time.process_time(), time.perf_counter()
    centroids, done, init, trace = METHODS[name](x, k, iters, seed)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    np.save(out, np.asarray(centroids, dtype=np.float32))
    return {"init": init, "iters": done, "wall_s": wall, "cpu_s": cpu, "trace": trace}


def peak_rss_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def assign_child(n: int, dim: int, k: int, faiss_rows: int, seed: int = 0) -> dict:
    """One nearest-code pass of n x dim features against k codes, in this (fresh) process;
    then faiss on the first `faiss_rows` rows and svq again on the same rows, for a ratio."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.normalize(torch.randn(n, dim, generator=gen), dim=1)
    codes = torch.nn.functional.normalize(torch.randn(k, dim, generator=gen), dim=1)
    search = NearestCode(codes, "l2")
    before = rss_mib()
    try:  # reset the peak to the current RSS, so the peak below is the pass's own
        Path("/proc/self/clear_refs").write_text("5")
        reset = True
    except OSError:
        reset = False
    load_before, t0 = load(), time.perf_counter()
    ids, _ = search(x)
    wall = time.perf_counter() - t0
    peak = peak_rss_mib()
    result = {
        "rows": n, "dim": dim, "k": k, "wall_s": wall, "gflops": 2.0 * n * k * dim / wall / 1e9,
        "rss_before_mib": before, "peak_rss_mib": peak,
        "peak_extra_mib": peak - before if reset else None, "peak_reset_worked": reset,
        "inputs_mib": (n + k) * dim * 4 / 2**20,
        "distance_tiles_mib": sum(b.numel() for b in search.buffers if b is not None) * 4 / 2**20,
        "tile": [search.rows, search.code_tile], "workers": search.workers,
        "load_before": load_before, "load_after": load(),
    }  # fmt: skip
    import faiss

    index = faiss.IndexFlatL2(dim)
    index.add(codes.numpy())
    sub = x[:faiss_rows]
    t0 = time.perf_counter()
    _, faiss_ids = index.search(sub.numpy(), 1)
    faiss_wall = time.perf_counter() - t0
    t0 = time.perf_counter()
    search(sub)
    svq_wall = time.perf_counter() - t0
    agree = float((torch.from_numpy(faiss_ids[:, 0]) == ids[:faiss_rows]).double().mean())
    result["vs_faiss"] = {
        "rows": len(sub), "faiss_s": faiss_wall, "svq_s": svq_wall,
        "time_vs_faiss": svq_wall / faiss_wall, "same_ids": agree,
    }  # fmt: skip
    return result


def machine() -> dict:
    import faiss
    import sklearn

    model = ""
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if "model name" in ln), "")
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "threads": {"torch": torch.get_num_threads(), "faiss": faiss.omp_get_max_threads()},
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "faiss": faiss.__version__,
        "sklearn": sklearn.__version__,
    }


def print_table(cases: list[dict], assign: dict) -> None:
    print(
        f"\n{'case':18s} {'method':16s} {'init':9s} {'iters':>5s} {'best s':>7s} {'median s':>8s} "
        f"{'x faiss':>7s} {'best/best':>9s} {'to faiss inertia':>16s} {'inertia':>12s} "
        f"{'vs faiss':>8s}"
    )
    for case in cases:
        label = f"{case['rows'] // 1000}k x {case['dim']} -> {case['k']}"
        for name, s in case["summary"].items():
            reach = s["time_to_faiss_inertia_vs_faiss_median"]
            reach = "-" if reach is None else f"{reach:.2f}"
            print(
                f"{label:18s} {name:16s} {s['init']:9s} {s['iters']:5d} {s['wall_s_best']:7.2f} "
                f"{s['wall_s_median']:8.2f} {s['time_vs_faiss_median']:7.2f} "
                f"{s['time_vs_faiss_best']:9.2f} {reach:>16s} "
                f"{s['inertia_median']:12.6g} {100 * s['inertia_vs_faiss_median']:+7.2f}%"
            )
    a, f = assign, assign["vs_faiss"]
    extra = f"{a['peak_extra_mib']:.0f}" if a["peak_extra_mib"] is not None else "?"
    print(
        f"\nassignment pass, {a['rows']:,} x {a['dim']} against K = {a['k']:,}: "
        f"{a['wall_s']:.1f} s ({a['gflops']:.0f} GFLOP/s); peak RSS {a['peak_rss_mib']:.0f} MiB, "
        f"{extra} MiB above the inputs already in memory ({a['inputs_mib']:.0f} MiB); "
        f"distance tiles {a['distance_tiles_mib']:.0f} MiB"
    )
    print(
        f"same pass on {f['rows']:,} rows: svq {f['svq_s']:.1f} s, faiss IndexFlatL2 "
        f"{f['faiss_s']:.1f} s (x faiss {f['time_vs_faiss']:.2f}); "
        f"same ids {100 * f['same_ids']:.2f}%"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a sanity run")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "kmeans.json"))
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="for every library")
    parser.add_argument("--assign-child", nargs=4, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--fit-child", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fit_child:
        name, data, k, iters, seed, out = args.fit_child
        if name.startswith("svq"):
            torch.set_num_threads(args.threads)
        elif name == "faiss":
            import faiss

            faiss.omp_set_num_threads(args.threads)
        else:
            from threadpoolctl import threadpool_limits

            threadpool_limits(args.threads)  # scikit-learn's OpenMP and BLAS
        print(json.dumps(fit_child(name, data, int(k), int(iters), int(seed), out)))
        return
    torch.set_num_threads(args.threads)
    if args.assign_child:
        print(json.dumps(assign_child(*args.assign_child)))
        return

    plan = QUICK if args.quick else FULL
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    load_start = os.getloadavg()
    cases = [bench_case(n, d, k, r, plan["iters"], args.threads) for n, d, k, r in plan["cases"]]
    print(f"  assignment pass {plan['assign']} in a fresh process...", flush=True)
    assign = run_child(args.threads, "--assign-child", *plan["assign"])
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "started_utc": started,
        "machine": machine(),
        "load_average_start": load_start,
        "load_average_end": os.getloadavg(),
        "note": "The machine is shared with other jobs: compare the ratios (paired with the "
        "faiss run of the same repeat), not absolute times. Every fit runs in a fresh "
        "process. Inertia is computed the same way "
        "for every method. faiss starts from random points, svq from k-means++ on a sample "
        "(svq-random-init starts like faiss); svq and svq-random-init keep distance bounds "
        "(svq/codebook/bounds.py), svq-no-bounds is svq without them; sklearn from k-means++ "
        "unless rows * k > "
        f"{SKLEARN_KMEANSPP_MAX}, and only in the first repeat (its k-means++ takes minutes).",
        "data": "Gaussian mixture, 4k components with random centres N(0, I) and scales "
        "U(0.2, 0.8); assignment pass: unit vectors.",
        "cases": cases,
        "assignment_pass": assign,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print_table(cases, assign)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
