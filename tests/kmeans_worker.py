"""Run by tests/test_kmeans.py under `torchrun --nproc_per_node 2` (gloo, CPU).

Each rank takes an unequal shard of the features in data.npy and runs the same fits that the
test runs in one process on all the data; rank 0 writes the results to out.pt.
Usage: kmeans_worker.py DATA.npy OUT.pt K
"""

import sys

import numpy as np
import torch
import torch.distributed as dist

from svq.codebook import Codebook, kmeans

SHARE_OF_RANK0 = 0.7  # unequal shards: unweighted averaging of per-rank means would show


def fits(data: np.ndarray, k: int) -> dict[str, torch.Tensor]:
    """The fits compared between one process (all data) and two ranks (a shard each).

    data: (n, N, E) array; a memmap slice on the ranks, so the L2 fit streams from disk.
    """
    flat = data.reshape(-1, data.shape[-1])  # (n * N, E), still memory-mapped
    l2 = kmeans(flat, k, iters=8, tol=0, seed=3)
    # A centroid far from all data is empty in the first pass and must be re-seeded from the
    # farthest point of all ranks, the same on every rank.
    init = torch.from_numpy(np.array(flat[:k], dtype=np.float32))
    init[0] = 1e3
    cosine = kmeans(
        torch.from_numpy(np.array(flat)), k, iters=5, tol=0, distance="cosine", init=init
    )
    # k >= 512: grouped search with per-point bounds (each rank keeps its own points' bounds).
    bounded = kmeans(flat, 512, iters=4, tol=0, seed=3, bounds=True)
    book = Codebook.fit(torch.from_numpy(np.array(data)), k, per_position=True, iters=5, tol=0)
    return {
        "l2_centroids": l2.centroids,
        "l2_counts": l2.counts,
        "cos_centroids": cosine.centroids,
        "cos_counts": cosine.counts,
        "bounded_centroids": bounded.centroids,
        "bounded_counts": bounded.counts,
        "book_codes": book.codes,
        "book_counts": book.counts,
    }


def main(data_path: str, out_path: str, k: int) -> None:
    dist.init_process_group("gloo")
    data = np.load(data_path, mmap_mode="r")
    cut = int(len(data) * SHARE_OF_RANK0)
    shard = data[:cut] if dist.get_rank() == 0 else data[cut:]
    result = fits(shard, k)
    if dist.get_rank() == 0:
        torch.save(result, out_path)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
