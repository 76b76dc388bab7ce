"""Distance bounds that let a Lloyd pass skip points whose nearest centroid cannot have changed.

Yinyang k-means (Ding et al., ICML 2015), in the form that keeps dense matmuls: the K codes are
split into `groups` runs of consecutive codes, and every point keeps one lower bound per run on
its Euclidean distance to the run's codes other than its own centroid. When the centroids
move, each bound drops by the largest move within its run (triangle inequality). A point whose
distance to its own (moved) centroid is below every bound keeps its centroid without a search;
the others are searched in full, which also refreshes their bounds. The result is the plain
Lloyd assignment (up to rounding-level ties, kept safe by `distance.BOUND_SLACK`); the saving
grows as the centroids settle. Runs are only tight if consecutive codes are near each other,
so `coherent_order` sorts the centroids into such runs once, before the first pass.

Measured and not kept (200k x 64 -> 1024, 2 cores): Yinyang's second filter, searching a point
only in the runs whose bound failed, batched run by run into gathered matmuls. It computed
about half the distances, but the runs left unsearched keep stale bounds, so late passes had
80% of the points failing some run while 0.25% changed centroid, and a gathered 64-code search
costs more per distance than a full tile: no faster (4.3 s vs 4.0 s). Finer runs (32 codes)
searched 4% fewer points and cost more in the grouped minimum; a run centre-and-radius bound
filtered nothing (in 64 dimensions a run's radius exceeds the margins). Leaving each run's
farthest-moving code out of its drop (bounds drop by the second largest move, and the distance
to that code is computed exactly for the points that would otherwise be searched) rescued a
fifth of those points in a pass, but their looser bounds sent them to a search in later passes:
the same total searched over 20 passes (12.1 vs 12.3 full passes) and slower.

Written by hand: faiss and scikit-learn have no bounded Lloyd that works on torch tensors,
streams from disk and all-reduces across ranks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .distance import GROUP, GROUPED_MIN_CODES, NearestCode, bound_group_size

MAX_GROUPS = 32  # bounds per point: 128 bytes of fp32 each, half of a 64-wide fp32 feature
MEMORY_LIMIT = 1 << 30  # bytes of bounds per rank above which `kmeans` runs plain Lloyd
# A chunk with more than this share of its rows to search is searched whole, without gathering
# the rows (early passes, when most points still move).
FULL_SEARCH_SHARE = 0.75


def bound_groups(k: int) -> int:
    """Runs of codes for K = k codes: whole groups of GROUP codes, at most MAX_GROUPS runs;
    0 when k is too small for grouped search (plain Lloyd is cheap there)."""
    if k < GROUPED_MIN_CODES:
        return 0
    return min(MAX_GROUPS, -(-k // GROUP))


def coherent_order(centroids: torch.Tensor, groups: int, iters: int = 5) -> torch.Tensor:
    """A permutation (k,) that puts near centroids next to each other in `groups` runs.

    centroids: (k, E). A few k-means iterations over the centroids themselves, from
    farthest-point starts, pick `groups` centres; the centroids are then sorted by their
    centre, and runs of equal size cut from that order hold mostly one centre's centroids.
    """
    picked = [0]
    nearest = torch.cdist(centroids, centroids[:1]).squeeze(1)  # (k,) to the nearest pick
    for _ in range(groups - 1):
        picked.append(int(nearest.argmax()))
        nearest = torch.minimum(nearest, torch.cdist(centroids, centroids[picked[-1:]]).squeeze(1))
    centres = centroids[picked]
    for _ in range(iters):
        label = torch.cdist(centroids, centres).argmin(dim=1)
        sums = torch.zeros_like(centres).index_add_(0, label, centroids)
        counts = torch.bincount(label, minlength=groups).clamp_min(1)
        centres = sums / counts[:, None]
    label = torch.cdist(centroids, centres).argmin(dim=1)
    return torch.argsort(label, stable=True)


class PointBounds:
    """Per-point state of bounded Lloyd passes over n points (one rank's shard).

    assign: (n,) long, each point's centroid after the last pass; lower: (n, groups) fp32,
    Euclidean lower bounds on the distance to each run's other codes. `ready` is False until a
    first full pass has filled them. sums (k, E) fp64 and counts (k,) long: the per-centroid
    totals of these points under `assign`, which `kmeans` keeps so that a pass only moves the
    points that changed centroid.
    """

    def __init__(self, n: int, groups: int, device: torch.device):
        self.groups = groups
        self.assign = torch.zeros(n, dtype=torch.long, device=device)
        self.lower = torch.zeros(n, groups, device=device)
        self.ready = False
        self.sums = self.counts = torch.empty(0)

    @staticmethod
    def memory(n: int, groups: int) -> int:
        return n * (8 + 4 * groups)

    def moved(self, old: torch.Tensor, new: torch.Tensor) -> None:
        """Lower every bound by the largest move of a code in its run. old, new: (k, E)."""
        drift = (new - old).norm(dim=1)  # (k,) Euclidean
        size = bound_group_size(old.shape[0], self.groups)
        drift = F.pad(drift, (0, size * self.groups - drift.shape[0]))
        self.lower.sub_(drift.view(self.groups, size).amax(dim=1))

    def nearest(
        self,
        search: NearestCode,
        worker: int,
        start: int,
        xs: torch.Tensor,
        centroids: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Nearest centroids of rows start..start+r-1, xs (r, E) prepared, skipping what the
        bounds allow -> ids (r,) long, distances (r,) fp32 (the search's distance), searched."""
        stop = start + xs.shape[0]
        if not self.ready:
            ids, dists, lower = search.nearest_rows(worker, xs, groups=self.groups)
            self.assign[start:stop], self.lower[start:stop] = ids, lower
            return ids, dists, len(ids)
        ids = self.assign[start:stop]
        # Exact distance to the own centroid, from the difference (no cancellation).
        dists = (xs - centroids.index_select(0, ids)).square_().sum(dim=1)  # squared Euclidean
        # One minimum per row: 4x cheaper than comparing every bound and reducing with any().
        need = (self.lower[start:stop].amin(dim=1) < dists.sqrt()).nonzero().squeeze(1)
        if search.distance == "cosine":  # unit vectors: 1 - x.c = ||x - c||^2 / 2
            dists = dists.mul_(0.5)
        if len(need) > FULL_SEARCH_SHARE * len(xs):  # gathering rows would cost more than it saves
            ids, dists, lower = search.nearest_rows(worker, xs, groups=self.groups, hint=ids)
            self.assign[start:stop], self.lower[start:stop] = ids, lower
            return ids, dists, len(ids)
        if len(need):
            found, found_d, lower = search.nearest_rows(
                worker, xs[need], groups=self.groups, hint=ids[need]
            )
            ids[need], dists[need] = found, found_d  # ids is a view: assign is updated too
            self.lower[start + need] = lower
        return ids.clone(), dists, len(need)
