"""Nearest-code search in fp32, in tiles: the one distance shared by k-means and `Codebook`.

Distances are computed as one matmul per (rows x codes) tile into a preallocated buffer and
reduced to a running minimum, so memory stays at `rows * code_tile` floats per worker whatever
K is (K = 194,560 codes cost the same buffer as K = 8,192).

Two distances:
- "l2": squared Euclidean, ||x||^2 - 2 x.c + ||c||^2.
- "cosine": 1 - cos(x, c); features and codes are L2-normalised first (spherical k-means).

On CPUs, row chunks go to `workers` Python threads that each run torch with one intra-op
thread (torch releases the GIL inside ops). A chunk's handful of small ops then needs no
OpenMP barrier: on a machine shared with other jobs, barriers across threads that the
scheduler has parked made a pass 3-15x slower, while independent workers just slow down.
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import torch
import torch.nn.functional as F

DISTANCES = ("l2", "cosine")

# Tile (floats, most codes) per device type. CPU: 2M floats = 8 MiB of distances per worker,
# at most 2048 codes wide, so at least 1024 rows: compute-bound matmuls whose distances stay in
# the cache, few Python calls per row, and with K = 194,560 codes each code is read from memory
# once per 1024 rows (measured on 2 cores: 1024 x 2048 beats 512 x 2048 by 5% and 128 x 8192
# by 25%). GPU: 1 GiB tiles, few kernel launches.
TILES = {"cpu": (1 << 21, 2048), "cuda": (1 << 28, 32768)}
# Row minima are found in groups of GROUP codes: a value-only minimum over each group (fast,
# vectorised), then an argmin over the group minima and inside the winning group. On CPUs this
# is several times faster than torch.min(dim=1) with indices. Used from GROUPED_MIN_CODES on,
# with the codes padded to a multiple of GROUP by dummies at infinite distance.
GROUP = 64
GROUPED_MIN_CODES = 512
# Most rows per chunk of work a CPU worker takes in `each_chunk` and k-means' bounded passes.
# Each chunk costs dozens of small torch calls (bookkeeping, bounds, argmin hints) whose Python
# and dispatch overhead, partly under the GIL, chunks of one tile of rows (1-2 k) paid
# thousands of times a pass. Distances are still computed one tile of rows at a time
# (`nearest_rows`). Measured on 2 cores, 200k x 64 -> 1024, 20 iterations: 16 k rows 3.40 s
# vs 2 k rows 3.76 s (8 k: 3.52 s, 32 k: 3.41 s); plain Lloyd 4.36 s vs 4.54 s. (Before the
# even split in `map_chunks`; with it, the same within this machine's noise.)
CHUNK_ROWS = 1 << 14
# Rounding margin of the lower bounds (`NearestCode.nearest_rows` with groups), relative to
# ||x||^2 + max ||c||^2: fp32 dot products over E <= a few thousand are far more exact than 1e-5.
BOUND_SLACK = 1e-5

# fn(worker, start, rows (r, E), ids (r,), distances (r,)), called once per chunk of rows.
ChunkFn = Callable[[int, int, torch.Tensor, torch.Tensor, torch.Tensor], None]


def check_distance(distance: str) -> None:
    if distance not in DISTANCES:
        raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")


def prepare(x: torch.Tensor, distance: str) -> torch.Tensor:
    """x: (..., E) -> (..., E) fp32, L2-normalised for the cosine distance."""
    x = x.float()
    return F.normalize(x, dim=-1) if distance == "cosine" else x


def squared_norms(x: torch.Tensor) -> torch.Tensor:
    """x: (M, E) -> (M,) squared L2 norms of the rows."""
    return x.square().sum(dim=-1)  # 3-4x faster than einsum("me,me->m") on CPUs


@contextmanager
def one_intra_op_thread() -> Iterator[None]:
    """torch ops run single-threaded inside; the thread count is restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class NearestCode:
    """Nearest code of each row, reusing one distance buffer per worker across calls.

    codes: (K, E), already `prepare`d (fp32; unit rows for cosine). `rows` x `code_tile` is
    the tile shape (default: from `TILES` for the codes' device). `workers`: threads on CPU
    (default: torch's intra-op thread count); always 1 on GPUs.
    """

    def __init__(
        self,
        codes: torch.Tensor,
        distance: str,
        rows: int | None = None,
        code_tile: int | None = None,
        workers: int | None = None,
    ):
        check_distance(distance)
        if codes.ndim != 2 or codes.dtype != torch.float32:
            raise ValueError(
                f"codes must be (K, E) float32, got {tuple(codes.shape)} {codes.dtype}"
            )
        self.distance = distance
        self.k, self.dim = codes.shape
        device = codes.device
        # The buffer holds bias + alpha * x.c: ||c||^2 - 2 x.c for L2 (||x||^2 is added to the
        # minima only), 1 - x.c for cosine.
        self.alpha = -2.0 if distance == "l2" else -1.0
        bias = squared_norms(codes) if distance == "l2" else torch.ones(self.k, device=device)
        self.group = GROUP if self.k >= GROUPED_MIN_CODES else None
        padded = -(-self.k // GROUP) * GROUP if self.group else self.k
        if padded > self.k:  # dummy codes: zero vectors at distance +inf, never the nearest
            codes = torch.cat([codes, codes.new_zeros(padded - self.k, self.dim)])
            bias = torch.cat([bias, bias.new_full((padded - self.k,), float("inf"))])
        self.codes, self.bias, self.padded = codes, bias, padded
        self.max_sq = float(squared_norms(codes).max()) if distance == "l2" else 1.0
        floats, widest = TILES.get(device.type, TILES["cuda"])
        tile = min(code_tile or widest, padded)
        if self.group:
            tile = max(GROUP, tile // GROUP * GROUP)
        self.code_tile = max(1, tile)
        self.rows = max(1, rows or floats // self.code_tile)
        self.chunk_rows = max(self.rows, CHUNK_ROWS)
        on_cpu = device.type == "cpu"
        self.workers = max(1, workers or torch.get_num_threads()) if on_cpu else 1
        # One flat buffer per worker, made on first use at the size needed (small inputs get
        # small buffers); flat, so that a narrower last tile is still a contiguous (r, kc) view.
        self.buffers: list[torch.Tensor | None] = [None] * self.workers

    # --- the public passes
    @torch.no_grad()
    def __call__(
        self, x: torch.Tensor, x_sq: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (M, E) prepared fp32 -> (ids (M,) long, distances (M,) fp32, >= 0).

        x_sq: optional (M,) squared norms of x (L2), when the caller has them already.
        """
        ids = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
        dists = torch.empty(x.shape[0], device=x.device)

        def store(worker: int, start: int, xs: torch.Tensor, i: torch.Tensor, d: torch.Tensor):
            ids[start : start + len(xs)] = i
            dists[start : start + len(xs)] = d

        self.each_chunk(x, store, x_sq)
        return ids, dists

    @torch.no_grad()
    def distances(self, x: torch.Tensor, x_sq: torch.Tensor | None = None) -> torch.Tensor:
        """x: (M, E) prepared fp32 -> (M,) fp32 distances to the nearest codes, >= 0.

        Values only: without the argmin, several times cheaper than `__call__` on CPUs.
        """
        dists = torch.empty(x.shape[0], device=x.device)

        def chunk(worker: int, rows: slice) -> None:
            best = None
            for _, buf in self._tiles(x[rows], worker):
                tile = buf.amin(dim=1)
                best = tile if best is None else torch.minimum(best, tile)
            if self.distance == "l2":
                best += squared_norms(x[rows]) if x_sq is None else x_sq[rows]
            dists[rows] = best.clamp_min_(0.0)

        self.map_chunks(x.shape[0], chunk)
        return dists

    @torch.no_grad()
    def each_chunk(self, x: torch.Tensor, fn: ChunkFn, x_sq: torch.Tensor | None = None) -> None:
        """Find the nearest codes of x (M, E) chunk by chunk and pass each chunk to `fn`.

        fn(worker, start, rows, ids, distances) runs on the worker's thread, in any order; it
        must only touch its own worker's state.
        """

        def chunk(worker: int, rows: slice) -> None:
            xs = x[rows]  # (r, E)
            ids, dists = self.nearest_rows(worker, xs, x_sq[rows] if x_sq is not None else None)
            fn(worker, rows.start, xs, ids, dists)

        self.map_chunks(x.shape[0], chunk, self.chunk_rows)

    @torch.no_grad()
    def gains(
        self, x: torch.Tensor, d: torch.Tensor, x_sq: torch.Tensor | None = None
    ) -> torch.Tensor:
        """How much each code alone would lower sum(d), d the current distances of x.

        x: (M, E) prepared fp32, d: (M,) -> (K,) fp64: sum over rows of max(0, d - dist(x, c)).
        Used to pick the best of several k-means++ candidates. x_sq: as in `__call__`.
        """
        gains = [
            torch.zeros(self.padded, dtype=torch.float64, device=x.device)
            for _ in range(self.workers)
        ]
        base = d  # minus ||x||^2 for L2, which the buffer lacks
        if self.distance == "l2":
            base = d - (x_sq if x_sq is not None else squared_norms(x))

        def chunk(worker: int, rows: slice) -> None:
            for lo, buf in self._tiles(x[rows], worker):
                torch.sub(base[rows, None], buf, out=buf).clamp_min_(0.0)
                gains[worker][lo : lo + buf.shape[1]] += buf.sum(dim=0)

        self.map_chunks(x.shape[0], chunk)
        return torch.stack(gains).sum(0)[: self.k]

    def nearest_rows(
        self,
        worker: int,
        xs: torch.Tensor,
        rows_sq: torch.Tensor | None = None,
        groups: int = 0,
        hint: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, ...]:
        """Nearest codes of one chunk xs (r, E) on `worker`'s buffer, `rows` rows at a time.

        Returns ids (r,) long and distances (r,) fp32 >= 0; with `groups` > 0 (grouped search
        only, K >= GROUPED_MIN_CODES) also lower (r, groups) fp32: for each of `groups` runs of
        consecutive codes (see `bound_groups`), a lower bound on the Euclidean distance from the
        row to the run's codes other than its nearest one (what k-means' bounds need).
        rows_sq: (r,) squared norms of xs (L2), when the caller has them.
        hint: (r,) long, a likely nearest code per row (grouped search only), e.g. its code in
        the last k-means pass: where it is at the minimum distance it is taken as it is,
        without the (slow) indexed argmin; on an exact tie it may win over a lower index.
        """
        if groups and self.group is None:
            raise ValueError(f"bounds need grouped search: at least {GROUPED_MIN_CODES} codes")
        if len(xs) > self.rows:  # one tile of rows at a time, so that the distances stay cached
            tiles = range(0, len(xs), self.rows)
            parts = [
                self.nearest_rows(
                    worker,
                    xs[lo : lo + self.rows],
                    None if rows_sq is None else rows_sq[lo : lo + self.rows],
                    groups,
                    None if hint is None else hint[lo : lo + self.rows],
                )
                for lo in tiles
            ]
            return tuple(torch.cat(part) for part in zip(*parts, strict=True))
        best = arg = second = None
        minima = []
        for lo, buf in self._tiles(xs, worker):
            tile_hint = hint - lo if hint is not None and self.group else None
            tile_best, tile_arg, tile_minima, tile_second = self._argmin(buf, groups > 0, tile_hint)
            minima.append(tile_minima)
            if best is None:
                best, arg, second = tile_best, tile_arg, tile_second
                continue
            better = tile_best < best  # ties keep the lower index, as one argmin would
            best = torch.where(better, tile_best, best)
            arg = torch.where(better, tile_arg + lo, arg)
            if groups:
                second = torch.where(better, tile_second, second)
        if self.distance == "l2":
            rows_sq = squared_norms(xs) if rows_sq is None else rows_sq
            best = best + rows_sq
        best = best.clamp_min_(0.0)  # rounding can dip below 0
        if not groups:
            return arg, best
        # Group minima (r, fine groups), the nearest code's group holding its runner-up instead.
        minima = torch.cat(minima, dim=1).scatter_(1, (arg // self.group)[:, None], second[:, None])
        per = bound_group_size(self.k, groups) // GROUP
        minima = F.pad(minima, (0, per * groups - minima.shape[1]), value=float("inf"))
        lower = minima.view(len(xs), groups, per).amin(dim=2)  # (r, groups), minus ||x||^2
        # Distances here come from ||x||^2 - 2 x.c + ||c||^2 (L2) or 1 - x.c (cosine): take
        # off a rounding margin before turning them into Euclidean lower bounds.
        if self.distance == "l2":
            lower = lower + rows_sq[:, None] - BOUND_SLACK * (rows_sq + self.max_sq)[:, None]
            lower = lower.clamp_min_(0.0).sqrt_()
        else:  # unit vectors: ||x - c||^2 = 2 (1 - x.c)
            lower = (2.0 * (lower - BOUND_SLACK)).clamp_min_(0.0).sqrt_()
        return arg, best, lower

    # --- the pieces
    def map_chunks(
        self, m: int, chunk: Callable[[int, slice], None], most: int | None = None
    ) -> None:
        """chunk(worker, rows) for slices of at most `most` (default: tile rows) of m rows, on
        `workers` threads: a multiple of `workers` slices of about equal size, so that no
        worker is left with one more whole chunk than the others.
        """
        per_worker = max(1, -(-m // (self.workers * (most or self.rows))))
        step = max(1, -(-m // (self.workers * per_worker)))
        slices = [slice(start, min(start + step, m)) for start in range(0, m, step)]
        if self.workers == 1 or len(slices) == 1:
            for rows in slices:
                chunk(0, rows)
            return
        free: queue.SimpleQueue[int] = queue.SimpleQueue()
        for worker in range(self.workers):
            free.put(worker)

        def run(rows: slice) -> None:
            worker = free.get()  # at most `workers` chunks run at once: one is always free
            try:
                chunk(worker, rows)
            finally:
                free.put(worker)

        with one_intra_op_thread(), ThreadPoolExecutor(self.workers) as pool:
            for _ in pool.map(run, slices):  # re-raises a worker's exception here
                pass

    def _tiles(self, xs: torch.Tensor, worker: int) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield (lo, distances minus the row term (r, kc)) for each tile of codes."""
        r = xs.shape[0]
        flat = self.buffers[worker]
        if flat is None or flat.numel() < r * self.code_tile:
            flat = self.buffers[worker] = xs.new_empty(r * self.code_tile)
        for lo in range(0, self.padded, self.code_tile):
            hi = min(lo + self.code_tile, self.padded)
            buf = flat[: r * (hi - lo)].view(r, hi - lo)
            torch.addmm(self.bias[lo:hi], xs, self.codes[lo:hi].t(), alpha=self.alpha, out=buf)
            yield lo, buf

    def _argmin(
        self, buf: torch.Tensor, bounds: bool = False, hint: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """buf: (r, kc) -> (minima (r,), their column (r,)); the first column on ties.

        With `bounds` (grouped search), also the minimum of each group (r, kc / GROUP) and the
        second smallest value in the winning group (r,); else None, None. hint: (r,) likely
        columns (any value; outside [0, kc) never matches), see `nearest_rows`.
        """
        if self.group is None:
            return (*torch.min(buf, dim=1), None, None)
        r, kc = buf.shape
        n_groups = kc // self.group
        group_minima = buf.view(r, n_groups, self.group).amin(dim=2)  # (r, n_groups)
        best, g = group_minima.min(dim=1)  # best group per row
        arg = hit = None
        if hint is not None:
            col = hint.clamp(0, kc - 1)
            hit = (hint == col) & (buf.gather(1, col[:, None]).squeeze(1) == best)
            g = torch.where(hit, col // self.group, g)
            arg = col
            if bool(hit.all()) and not bounds:
                return best, arg, None, None
        rows = torch.arange(r, device=buf.device) * n_groups + g  # its row in (r * n_groups, G)
        winners = buf.view(r * n_groups, self.group).index_select(0, rows)  # (r, G)
        if hit is None:
            inside = winners.argmin(dim=1)
            arg = g * self.group + inside
        else:  # the indexed argmin only for rows whose hint missed
            inside = arg - g * self.group  # for the hits
            miss = (~hit).nonzero().squeeze(1)
            if len(miss):
                inside[miss] = winners[miss].argmin(dim=1)
                arg = g * self.group + inside
        if not bounds:
            return best, arg, None, None
        second = winners.scatter_(1, inside[:, None], float("inf")).amin(dim=1)
        return best, arg, group_minima, second


def bound_group_size(k: int, groups: int) -> int:
    """Codes per run when k codes (padded to whole groups of GROUP) are cut into `groups` runs
    of whole groups; the last run may be shorter."""
    fine = -(-k // GROUP)
    return -(-fine // groups) * GROUP


def nearest(
    x: torch.Tensor, codes: torch.Tensor, distance: str = "l2"
) -> tuple[torch.Tensor, torch.Tensor]:
    """x: (M, E), codes: (K, E), any float dtype -> (ids (M,) long, distances (M,) fp32).

    fp32 and outside autocast, whatever the caller runs under.
    """
    with torch.autocast(x.device.type, enabled=False):
        return NearestCode(prepare(codes, distance), distance)(prepare(x, distance))
