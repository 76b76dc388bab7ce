"""k-means in fp32 outside autocast: `kmeans(features, k) -> (centroids, counts)`.

- Initialisation: greedy k-means++ on a uniform sample of 32 points per centroid, adding
  k / 32 centres per round so that the work is a few large matmuls (about 2 + log k Lloyd
  passes over the sample); or k random points; or given centroids.
- Lloyd iterations stream over the features in blocks (tensors, arrays, or memory-mapped `.npy`
  files larger than memory) and find nearest centroids in tiles (`distance.NearestCode`).
- Updates are count-weighted and correct under torch.distributed: each rank holds its own
  shard, and the per-cluster sums, counts, inertia and re-seeding candidates of all ranks meet
  in one all-reduce per iteration. (The reference averaged per-rank means without weights, one
  all-reduce per cluster, and got NaN for a cluster empty on any rank.)
- Empty clusters are re-seeded from the points farthest from their centroid.
- From K = 512 codes on, per-point distance bounds (`bounds.py`, Yinyang k-means) let a pass
  skip the points whose centroid cannot have changed: the same clusters, fewer distances.
- Stops after `iters` iterations, or earlier when the inertia improves by less than `tol`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm.auto import tqdm

from .bounds import MEMORY_LIMIT, PointBounds, bound_groups, coherent_order
from .distance import NearestCode, check_distance, one_intra_op_thread, prepare, squared_norms
from .source import Features, FeaturesLike

INITS = ("kmeans++", "random")
INIT_SAMPLE_PER_CLUSTER = 32  # default k-means++ sample: 32 points per centroid
MAX_RESEED = 1024  # farthest points kept per rank per pass, to re-seed empty clusters


class KMeansResult(NamedTuple):
    """What `kmeans` returns; unpacks as `centroids, counts = kmeans(...)`."""

    centroids: torch.Tensor  # (k, E) fp32; unit rows for the cosine distance
    counts: torch.Tensor  # (k,) long: points whose mean each centroid is (0: re-seeded last)


@dataclass
class KMeansStep:
    """Passed to `callback` after every iteration (the same on every rank)."""

    iteration: int  # 0-based
    inertia: float  # sum of distances to the nearest centroid, before this update, all ranks
    reseeded: int  # empty clusters re-seeded by this update
    converged: bool  # the last iteration: the inertia improved by less than `tol`
    searched: int  # points whose nearest centroid was searched (the others kept theirs), all ranks


class _Group:
    """The torch.distributed process group when one is running with > 1 rank, else nothing."""

    def __init__(self, distributed: bool | None):
        running = dist.is_available() and dist.is_initialized()
        if distributed and not running:
            raise RuntimeError("distributed=True but torch.distributed is not initialised")
        self.on = running and distributed is not False and dist.get_world_size() > 1
        self.rank = dist.get_rank() if self.on else 0
        self.world = dist.get_world_size() if self.on else 1

    def all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        if self.on:
            dist.all_reduce(t)
        return t

    def broadcast(self, t: torch.Tensor) -> torch.Tensor:
        if self.on:
            dist.broadcast(t, src=0)
        return t

    def gather_rows(self, rows: torch.Tensor, sizes: list[int]) -> torch.Tensor:
        """rows: (sizes[rank], E) on each rank -> (sum(sizes), E), concatenated in rank order."""
        if not self.on:
            return rows
        padded = rows.new_zeros(max(sizes), rows.shape[1])
        padded[: rows.shape[0]] = rows
        parts = [torch.empty_like(padded) for _ in range(self.world)]
        dist.all_gather(parts, padded)
        return torch.cat([p[:s] for p, s in zip(parts, sizes, strict=True)])


def kmeans(
    features: FeaturesLike,
    k: int,
    *,
    iters: int = 50,
    tol: float = 1e-4,
    distance: str = "l2",
    init: str | torch.Tensor = "kmeans++",
    init_sample: int | None = None,
    init_rounds: int = 32,
    seed: int = 0,
    device: torch.device | str | None = None,
    distributed: bool | None = None,
    progress: bool = False,
    callback: Callable[[KMeansStep], None] | None = None,
    rows: int | None = None,
    code_tile: int | None = None,
    workers: int | None = None,
    bounds: bool | None = None,
) -> KMeansResult:
    """Cluster features into k centroids.

    Args:
        features: (n, E) tensor, numpy array / memmap, or path of a `.npy` file, which is
            memory-mapped and streamed block by block. Under torch.distributed, each rank
            passes its own shard (any size >= 1); every rank gets the same result, the one a
            single process gets on the shards concatenated in rank order.
        k: number of centroids, at most the total number of points.
        iters: maximum number of Lloyd iterations.
        tol: stop once an iteration improves the inertia by less than `tol` (relative);
            0 runs exactly `iters` iterations.
        distance: "l2" (squared Euclidean) or "cosine" (1 - cos; spherical k-means, unit
            centroids). `Codebook` quantises with the same distance.
        init: "kmeans++", "random" (k distinct random points), or centroids (k, E) (under
            torch.distributed, rank 0's).
        init_sample: points the initialisation samples from (default 32 k, at least k).
        init_rounds: k-means++ adds k / init_rounds centres per round, each the best of
            2 + log(k) candidates drawn proportionally to their distance (greedy k-means++);
            init_rounds >= k adds them one at a time, as scikit-learn does.
        seed: seeds the sample and the initialisation (the same on every rank).
        device: where to compute; defaults to the features' device (CPU for arrays).
        distributed: None uses torch.distributed when it is initialised with > 1 rank.
        progress: show a progress bar (rank 0).
        callback: called with a `KMeansStep` after every iteration.
        rows, code_tile: tile shape of the distance computation (see `distance.NearestCode`).
        workers: CPU threads (default: torch's intra-op thread count). The whole run keeps
            torch ops single-threaded and spreads row chunks over the workers instead.
        bounds: keep per-point distance bounds (`bounds.py`) so that passes skip points whose
            centroid cannot have changed; the clusters are the same. None: on from k = 512
            when the bounds of this rank's points fit in 1 GiB; True needs k >= 512.

    Returns:
        KMeansResult(centroids (k, E) fp32, counts (k,) long).
    """
    check_distance(distance)
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    if tol < 0:
        raise ValueError(f"tol must be >= 0, got {tol}")
    group = _Group(distributed)
    src = Features(features, device=device)
    shapes = torch.tensor([src.n, src.dim], dtype=torch.float64, device=src.device)
    shapes = group.gather_rows(shapes[None], [1] * group.world)  # (world, 2)
    if not (shapes[:, 1] == src.dim).all():
        raise ValueError(f"every rank must have the same feature width, got {shapes[:, 1]}")
    sizes = [int(s) for s in shapes[:, 0].tolist()]
    n_total, offset = sum(sizes), sum(sizes[: group.rank])
    if not 1 <= k <= n_total:
        raise ValueError(f"k must be in [1, n] = [1, {n_total}] (n = points on all ranks), got {k}")

    if workers is None:
        workers = torch.get_num_threads()
    make_search = partial(
        NearestCode, distance=distance, rows=rows, code_tile=code_tile, workers=workers
    )
    groups = bound_groups(k) if bounds is not False else 0
    if bounds and not groups:
        raise ValueError(f"bounds need k >= 512 (grouped search), got k = {k}")
    if bounds is None and PointBounds.memory(src.n, groups) > MEMORY_LIMIT:
        groups = 0
    on_cpu = src.device.type == "cpu"
    with (
        torch.no_grad(),
        torch.autocast(src.device.type, enabled=False),
        one_intra_op_thread() if on_cpu else nullcontext(),
    ):
        centroids = _initial_centroids(
            src,
            group,
            sizes,
            offset,
            k,
            init,
            init_sample,
            init_rounds,
            seed,
            distance,
            make_search,
        )
        state = order = None
        if groups:  # centroids sorted into runs of near codes; the caller's order is restored
            order = coherent_order(centroids, groups)
            centroids = centroids[order].contiguous()
            state = PointBounds(src.n, groups, src.device)
        reseed = min(k, MAX_RESEED)
        bar = tqdm(total=iters, desc=f"k-means k={k}", disable=not progress or group.rank > 0)
        prev = math.inf
        for it in range(iters):
            sums, counts, inertia, searched, far_d, far_x = _lloyd_pass(
                src, centroids, distance, make_search, group, reseed, state
            )
            if not math.isfinite(inertia):
                raise ValueError("features contain NaN or inf (found in an assignment pass)")
            new, reseeded = _update(centroids, sums, counts, far_d, far_x, distance, order)
            if state is not None:
                state.ready = True
                state.moved(centroids, new)
            centroids = new
            converged = tol > 0 and prev - inertia < tol * inertia
            prev = inertia
            bar.update()
            bar.set_postfix(
                inertia=f"{inertia:.5g}", reseeded=reseeded, searched=f"{searched / n_total:.0%}"
            )
            if callback is not None:
                callback(KMeansStep(it, inertia, reseeded, converged, searched))
            if converged:
                break
        bar.close()
    counts = counts.long()
    if order is not None:
        restore = order.argsort()
        centroids, counts = centroids[restore].contiguous(), counts[restore]
    return KMeansResult(centroids, counts)


def _initial_centroids(
    src: Features,
    group: _Group,
    sizes: list[int],
    offset: int,
    k: int,
    init: str | torch.Tensor,
    init_sample: int | None,
    init_rounds: int,
    seed: int,
    distance: str,
    make_search: Callable[[torch.Tensor], NearestCode],
) -> torch.Tensor:
    """The same (k, E) prepared centroids on every rank."""
    if isinstance(init, torch.Tensor):
        if init.shape != (k, src.dim):
            raise ValueError(f"init centroids must be ({k}, {src.dim}), got {tuple(init.shape)}")
        centroids = prepare(init.to(src.device), distance).contiguous()
    elif init in INITS:
        gen = torch.Generator().manual_seed(seed)
        n_total = sum(sizes)
        if init_sample is None:
            init_sample = INIT_SAMPLE_PER_CLUSTER * k
        size = k if init == "random" else min(n_total, max(k, init_sample))
        sample = _global_sample(src, group, sizes, offset, size, gen)
        sample = prepare(sample, distance)
        if init == "random":
            centroids = sample[torch.randperm(size, generator=gen)[:k].to(src.device)]
        else:
            centroids = _kmeanspp(sample, k, init_rounds, gen, make_search)
    else:
        raise ValueError(f"init must be one of {INITS} or a (k, E) tensor, got {init!r}")
    if not torch.isfinite(centroids).all():
        raise ValueError("features contain NaN or inf (found in the initial centroids)")
    return group.broadcast(centroids)


def _sample_indices(n: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """`size` distinct indices in [0, n), sorted (CPU long)."""
    if size >= n:
        return torch.arange(n)
    if n <= 4 * size:
        return torch.randperm(n, generator=gen)[:size].sort().values
    while True:  # n >> size: draw with replacement and drop repeats; no O(n) permutation
        idx = torch.randint(n, (size + size // 2 + 16,), generator=gen).unique()
        if len(idx) >= size:
            return idx[torch.randperm(len(idx), generator=gen)[:size]].sort().values


def _global_sample(
    src: Features,
    group: _Group,
    sizes: list[int],
    offset: int,
    size: int,
    gen: torch.Generator,
) -> torch.Tensor:
    """A uniform sample of the points of all ranks, (size, E), the same on every rank.

    Indices are drawn over the global row order (rank 0's rows, then rank 1's, ...), so the
    sample, and hence the whole run, does not depend on how the data is split across ranks.
    """
    idx = _sample_indices(sum(sizes), size, gen)
    bounds = torch.tensor([0, *sizes]).cumsum(0)
    per_rank = (torch.searchsorted(idx, bounds[1:]) - torch.searchsorted(idx, bounds[:-1])).tolist()
    mine = idx[(idx >= offset) & (idx < offset + src.n)] - offset
    return group.gather_rows(src.take(mine), per_rank)


def _kmeanspp(
    sample: torch.Tensor,
    k: int,
    rounds: int,
    gen: torch.Generator,
    make_search: Callable[[torch.Tensor], NearestCode],
) -> torch.Tensor:
    """Greedy k-means++ on a prepared sample (s, E), s >= k -> (k, E).

    The first centre is uniform; the others come in `rounds` batches of b. For each of the b
    new centres, 2 + log(k) candidates are drawn with probability proportional to the distance
    to the nearest centre so far (without replacement: the smallest Exp(1) / d keys), and the
    one that lowers the total distance most is kept, as in scikit-learn's greedy k-means++.
    Batches turn k passes of matrix-vector products into a few big matmuls.
    """
    s, device = sample.shape[0], sample.device
    trials = 2 + int(math.log(k))
    rounds = max(1, min(rounds, k))
    first = int(torch.randint(s, (1,), generator=gen))
    picked = [torch.tensor([first], device=device)]
    taken = torch.zeros(s, dtype=torch.bool, device=device)
    taken[first] = True
    sample_sq = squared_norms(sample)  # (s,), reused by every distance pass below
    d = make_search(sample[first : first + 1]).distances(sample, sample_sq)  # (s,)
    remaining, rounds_left = k - 1, max(1, rounds - 1)
    while remaining > 0:
        b = math.ceil(remaining / rounds_left)
        w = d.masked_fill(taken, 0.0)
        positive = int((w > 0).sum())
        if positive >= b * trials:
            keys = torch.empty(s).exponential_(generator=gen).to(device) / w  # inf where w == 0
            cand = keys.topk(b * trials, largest=False).indices.view(trials, b)  # (trials, b)
            gain = make_search(sample[cand.flatten()]).gains(sample, d, sample_sq)
            gain = gain.view(trials, b)
            pick = cand.gather(0, gain.argmax(dim=0, keepdim=True)).squeeze(0)  # (b,)
        else:  # few distinct points left: take all of them, then unused duplicates
            pick = w.nonzero().squeeze(1)[:b]
            pool = (~taken & (w == 0)).nonzero().squeeze(1)
            extra = torch.randperm(len(pool), generator=gen)[: b - len(pick)].to(device)
            pick = torch.cat([pick, pool[extra]])
        taken[pick] = True
        picked.append(pick)
        d = torch.minimum(d, make_search(sample[pick].contiguous()).distances(sample, sample_sq))
        remaining, rounds_left = remaining - b, max(1, rounds_left - 1)
    return sample[torch.cat(picked)].contiguous()


def _lloyd_pass(
    src: Features,
    centroids: torch.Tensor,
    distance: str,
    make_search: Callable[[torch.Tensor], NearestCode],
    group: _Group,
    reseed: int,
    state: PointBounds | None,
) -> tuple[torch.Tensor, torch.Tensor, float, int, torch.Tensor, torch.Tensor]:
    """One assignment pass over all ranks' points; with `state`, a bounded one.

    Returns per-cluster sums (k, E) fp64 and counts (k,) fp64, the total inertia, the points
    searched, and the `reseed` points farthest from their centroid over all ranks: distances
    (r,) descending and the points (r, E).
    """
    k, e = centroids.shape
    device = centroids.device
    search = make_search(centroids)
    # Per-worker accumulators (workers run chunks in any order). Sums are fp64, so that big
    # clusters keep small additions and the order of the chunks changes nothing visible (fp32
    # features add and subtract exactly in fp64 over a wide range of magnitudes). Bounded
    # passes after the first only add what changed to the totals `state` keeps.
    workers = range(search.workers)
    sums = [torch.zeros(k, e, dtype=torch.float64, device=device) for _ in workers]
    counts = [torch.zeros(k, dtype=torch.long, device=device) for _ in workers]
    inertia = [torch.zeros((), dtype=torch.float64, device=device) for _ in workers]
    far_d = [torch.empty(0, device=device) for _ in workers]  # the farthest points so far:
    far_i = [torch.empty(0, dtype=torch.long, device=device) for _ in workers]  # row indices
    searched = [0 for _ in workers]
    for offset, block in src.blocks():

        def accumulate(w, start, xs, ids, d, was=None, offset=offset):  # offset: block's row 0
            if was is None:
                counts[w] += torch.bincount(ids, minlength=k)
                sums[w].index_add_(0, ids, xs.double())
            else:  # only the points that changed centroid (`was`: before) move the sums
                moved = (ids != was).nonzero().squeeze(1)
                if len(moved):
                    to, fro, xm = ids[moved], was[moved], xs[moved].double()
                    counts[w] += torch.bincount(to, minlength=k) - torch.bincount(fro, minlength=k)
                    sums[w].index_add_(0, to, xm).index_add_(0, fro, xm, alpha=-1)
            inertia[w] += d.sum(dtype=torch.float64)
            if len(far_d[w]) == reseed:  # full: only rows beyond the nearest kept one count
                beyond = (d > far_d[w][-1]).nonzero().squeeze(1)
                if len(beyond) == 0:
                    return
                d, rows = d[beyond], beyond + (offset + start)
            else:
                rows = torch.arange(len(d), device=d.device) + (offset + start)
            cand_d, cand_i = torch.cat([far_d[w], d]), torch.cat([far_i[w], rows])
            keep = cand_d.topk(min(reseed, len(cand_d))).indices  # sorted: farthest first
            far_d[w], far_i[w] = cand_d[keep], cand_i[keep]

        x = prepare(block, distance)
        if state is None:
            search.each_chunk(x, accumulate)
            searched[0] += len(x)
            continue

        def bounded(w, rows, x=x, offset=offset, accumulate=accumulate):
            xs, at = x[rows], slice(offset + rows.start, offset + rows.stop)
            was = state.assign[at].clone() if state.ready else None
            ids, d, count = state.nearest(search, w, at.start, xs, centroids)
            searched[w] += count
            accumulate(w, rows.start, xs, ids, d, was)

        search.map_chunks(len(x), bounded, search.chunk_rows)

    far_d, far_i = torch.cat(far_d), torch.cat(far_i)
    keep = far_d.topk(min(reseed, len(far_d))).indices
    far_d, far_i = far_d[keep], far_i[keep]
    order = far_i.argsort()  # sorted rows read sequentially from a memory map
    far_x = prepare(src.take(far_i[order]), distance)[order.argsort()]  # (r, E), by distance

    # One collective: [sums | counts | inertia | a slot per rank for its farthest points].
    # The all-reduce sums the slots, which are zero everywhere but on their owner.
    slots = torch.zeros(group.world, reseed, e + 1, dtype=torch.float64, device=device)
    mine = slots[group.rank]
    mine[:, 0] = -1.0  # distance -1: no point here, never picked
    mine[: len(far_d), 0] = far_d.double()
    mine[: len(far_d), 1:] = far_x.double()
    sums, counts = sum(sums), sum(counts)
    if state is not None:  # this rank's totals, kept for the next pass to update
        if state.ready:
            sums, counts = sums + state.sums, counts + state.counts
        state.sums, state.counts = sums, counts
    scalars = torch.stack([sum(inertia), torch.tensor(float(sum(searched)), dtype=torch.float64)])
    packed = torch.cat([sums.flatten(), counts.double(), scalars.to(device)])
    packed = group.all_reduce(torch.cat([packed, slots.flatten()]))
    sums = packed[: k * e].view(k, e)
    counts = packed[k * e : k * e + k]
    inertia, searched = float(packed[k * e + k]), int(packed[k * e + k + 1])
    slots = packed[k * e + k + 2 :].view(group.world * reseed, e + 1)
    far_d, order = slots[:, 0].topk(min(reseed, len(slots)))
    return sums, counts, inertia, searched, far_d, slots[order, 1:].float()


def _update(
    centroids: torch.Tensor,
    sums: torch.Tensor,
    counts: torch.Tensor,
    far_d: torch.Tensor,
    far_x: torch.Tensor,
    distance: str,
    order: torch.Tensor | None = None,
) -> tuple[torch.Tensor, int]:
    """New centroids: the mean of each cluster; empty ones move to the farthest points.

    order: (k,) the caller's index of each centroid, when they are held in another order
    (bounds); the farthest points go to the empty clusters in the caller's order, so that the
    result does not depend on it.
    """
    new = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], centroids.double())
    new = new.float()
    empty = (counts == 0).nonzero().squeeze(1)
    if order is not None:
        empty = empty[order[empty].argsort()]
    usable = int((far_d > 0).sum())  # a point at distance 0 already is a centroid
    reseeded = min(len(empty), usable)
    new[empty[:reseeded]] = far_x[:reseeded]
    if distance == "cosine":
        new = F.normalize(new, dim=1)
    return new.contiguous(), reseeded
