import itertools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import svq.codebook.distance
import svq.codebook.source
from svq.codebook import KMeansStep, kmeans, nearest
from svq.codebook.bounds import bound_groups, coherent_order
from svq.codebook.distance import NearestCode, bound_group_size

ROOT = Path(__file__).resolve().parents[1]


def planted(k=12, per=150, dim=8, spread=0.3, seed=0):
    """k well-separated unit-scale clusters of `per` points each, shuffled: (k*per, dim)."""
    gen = torch.Generator().manual_seed(seed)
    centers = F.normalize(torch.randn(k, dim, generator=gen), dim=1) * 10
    labels = torch.arange(k).repeat_interleave(per)
    x = centers[labels] + spread * torch.randn(k * per, dim, generator=gen)
    order = torch.randperm(k * per, generator=gen)
    return x[order], labels[order], centers


def brute(x, c, distance="l2"):
    """All distances (M, K) the slow, obvious way."""
    if distance == "cosine":
        return 1 - F.normalize(x, dim=1) @ F.normalize(c, dim=1).T
    return torch.cdist(x.double(), c.double()).square().float()


@pytest.mark.parametrize("distance", ["l2", "cosine"])
@pytest.mark.parametrize("source", ["tensor", "array", "npy"])
def test_recovers_planted_clusters(distance, source, tmp_path):
    x, _, centers = planted()
    features = x
    if source != "tensor":
        features = x.numpy()
    if source == "npy":
        np.save(tmp_path / "x.npy", x.numpy())
        features = tmp_path / "x.npy"
    centroids, counts = kmeans(features, 12, distance=distance, seed=1)
    assert centroids.dtype == torch.float32 and centroids.shape == (12, 8)
    assert counts.dtype == torch.long and counts.tolist() == [150] * 12
    # One found centroid per planted centre, close to the centre's (direction's) mean.
    found, dist = nearest(centers, centroids, distance)
    assert sorted(found.tolist()) == list(range(12))
    assert dist.max() < (0.05 if distance == "l2" else 1e-3)
    if distance == "cosine":
        torch.testing.assert_close(centroids.norm(dim=1), torch.ones(12))


@pytest.mark.parametrize("distance", ["l2", "cosine"])
def test_one_iteration_is_an_exact_lloyd_step(distance):
    """Given centroids, one iteration = brute-force assignment then count-weighted means."""
    x, labels, _ = planted(k=6, per=40, seed=2)
    init = torch.stack([x[labels == j][0] for j in range(6)]) + 0.5  # no cluster left empty
    steps = []
    centroids, counts = kmeans(
        x, 6, iters=1, init=init, distance=distance, callback=steps.append, rows=7, code_tile=4
    )
    xs = F.normalize(x, dim=1) if distance == "cosine" else x
    d = brute(x, init, distance)
    ids = d.argmin(dim=1)
    expected = torch.stack([xs[ids == j].mean(0) for j in range(6)])
    if distance == "cosine":
        expected = F.normalize(expected, dim=1)
    torch.testing.assert_close(centroids, expected, atol=1e-5, rtol=1e-5)
    assert counts.tolist() == torch.bincount(ids, minlength=6).tolist()
    assert steps[0].inertia == pytest.approx(d.min(dim=1).values.double().sum().item(), rel=1e-5)


@pytest.mark.parametrize("distance", ["l2", "cosine"])
@pytest.mark.parametrize("k", [37, 600])  # 600: grouped minima, codes padded to 640
def test_tiled_search_equals_brute_force(distance, k):
    gen = torch.Generator().manual_seed(0)
    x, codes = torch.randn(100, 5, generator=gen), torch.randn(k, 5, generator=gen)
    want = brute(x, codes, distance)
    prepared = (F.normalize(codes, dim=1) if distance == "cosine" else codes).contiguous()
    xs = F.normalize(x, dim=1) if distance == "cosine" else x
    # (None, None, 2): one tile's worth of rows, cut in two for the two workers
    configs = [(None, None, 1), (None, None, 2), (7, 5, 2), (1, 1, 1), (100, k, 1), (9, 64, 3)]
    for rows, tile, workers in configs:
        search = NearestCode(prepared, distance, rows, tile, workers)
        ids, dist = search(xs)
        assert torch.equal(ids, want.argmin(dim=1))
        torch.testing.assert_close(dist, want.min(dim=1).values, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(search.distances(xs), dist, atol=1e-6, rtol=1e-6)  # values only
        # Memory is one tile per worker, whatever K is.
        used = [b.numel() for b in search.buffers if b is not None]
        assert max(used) <= search.rows * search.code_tile and len(used) <= workers


def test_chunks_of_work_are_balanced():
    """A multiple of `workers` slices of at most `rows` rows, about equal, each row once."""
    search = NearestCode(torch.randn(8, 3), "l2", rows=10, workers=2)
    for m, sizes in [(0, []), (3, [2, 1]), (20, [10, 10]), (45, [8, 8, 8, 8, 8, 5])]:
        seen: list[slice] = []
        search.map_chunks(m, lambda worker, rows, seen=seen: seen.append(rows))
        seen.sort(key=lambda rows: rows.start)
        assert [rows.stop - rows.start for rows in seen] == sizes
        assert [rows.start for rows in seen] == [0, *itertools.accumulate(sizes)][:-1]
    assert search(torch.zeros(0, 3))[0].shape == (0,)  # no rows: no chunks


@pytest.mark.parametrize("distance", ["l2", "cosine"])
def test_search_hint_changes_nothing(distance):
    """A hint (e.g. last pass's code) skips the argmin where it is the minimum; right, wrong
    or out-of-range hints give the plain result, bounds included, across several tiles."""
    gen = torch.Generator().manual_seed(1)
    x, codes = torch.randn(300, 6, generator=gen), torch.randn(700, 6, generator=gen)
    codes = (F.normalize(codes, dim=1) if distance == "cosine" else codes).contiguous()
    xs = F.normalize(x, dim=1) if distance == "cosine" else x
    search = NearestCode(codes, distance, code_tile=256)  # 3 tiles, the last one padded
    plain = search.nearest_rows(0, xs, groups=4)
    hint = plain[0].clone()
    hint[::3] = torch.randint(700, (100,), generator=gen)  # wrong ones
    hint[1::7] = -5  # out of range: never taken
    hint[2::11] = 10_000
    row_tiles = NearestCode(codes, distance, rows=64, code_tile=256)  # 5 tiles of rows too
    for h in [plain[0], hint]:
        for s in [search, row_tiles]:
            hinted = s.nearest_rows(0, xs, groups=4, hint=h)
            for a, b in zip(plain, hinted, strict=True):
                assert torch.equal(a, b)
            assert torch.equal(s.nearest_rows(0, xs, hint=h)[0], plain[0])
    assert max(b.numel() for b in row_tiles.buffers if b is not None) == 64 * 256


def test_bounds_with_empty_clusters_equal_plain_lloyd():
    """Bounded passes update the cluster sums by the points that moved: re-seeded clusters
    (their points arrive in later passes) still give plain Lloyd's result."""
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(4000, 6, generator=gen)
    init = x[torch.randperm(4000, generator=gen)[:520]] + 0.01
    init[:30] += 50.0  # 30 centroids far from every point: empty after the first pass
    steps, plain_steps = [], []
    plain = kmeans(x, 520, iters=6, tol=0, init=init, bounds=False, callback=plain_steps.append)
    run = kmeans(x, 520, iters=6, tol=0, init=init, bounds=True, callback=steps.append, workers=2)
    assert steps[0].reseeded == 30 and steps[-1].searched < 4000
    torch.testing.assert_close(run.centroids, plain.centroids, atol=1e-6, rtol=1e-6)
    assert torch.equal(run.counts, plain.counts)
    assert [s.reseeded for s in steps] == [s.reseeded for s in plain_steps]


def test_worker_threads_give_the_single_thread_result(monkeypatch):
    monkeypatch.setattr(svq.codebook.distance, "CHUNK_ROWS", 16)  # chunks of work: one tile of rows
    x, _, _ = planted(k=10, per=80)
    threads = torch.get_num_threads()
    one = kmeans(x, 10, iters=4, tol=0, workers=1, rows=16)
    two = kmeans(x, 10, iters=4, tol=0, workers=2, rows=16)  # 50 chunks over 2 threads
    torch.testing.assert_close(two.centroids, one.centroids)
    assert torch.equal(two.counts, one.counts)
    assert torch.get_num_threads() == threads  # restored after the run


def test_fp32_outside_autocast():
    x, _, _ = planted(k=4, per=30)
    ref = kmeans(x, 4, iters=3, tol=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        run = kmeans(x.bfloat16().float(), 4, iters=3, tol=0)
        ids, dist = nearest(x.bfloat16(), ref.centroids)
    assert run.centroids.dtype == torch.float32 and dist.dtype == torch.float32
    torch.testing.assert_close(run.centroids, ref.centroids, atol=0.05, rtol=0)
    assert torch.equal(ids, nearest(x, ref.centroids)[0])


def test_iterations_tolerance_and_progress(capsys):
    x, _, _ = planted()
    steps = []
    kmeans(x, 12, iters=7, tol=0, callback=steps.append, progress=True)
    assert "k-means k=12" in capsys.readouterr().err
    assert [s.iteration for s in steps] == list(range(7)) and not any(s.converged for s in steps)
    inertia = [s.inertia for s in steps]
    assert all(b <= a * (1 + 1e-6) for a, b in itertools.pairwise(inertia))
    steps = []
    kmeans(x, 12, iters=50, tol=1e-4, callback=steps.append)
    assert len(steps) < 50 and steps[-1].converged and isinstance(steps[-1], KMeansStep)


def test_empty_cluster_reseeded_from_farthest_point():
    x, _, _ = planted(k=5, per=40, seed=4)
    init = x[:5].clone()
    init[2] = 1e4  # nothing is nearest to it
    steps = []
    centroids, counts = kmeans(x, 5, iters=1, init=init, callback=steps.append)
    assert steps[0].reseeded == 1 and counts[2] == 0
    farthest = brute(x, init).min(dim=1).values.argmax()
    torch.testing.assert_close(centroids[2], x[farthest])
    # Later iterations use it: every cluster ends non-empty.
    _, counts = kmeans(x, 5, iters=5, tol=0, init=init)
    assert (counts > 0).all()


def test_init_with_duplicate_points_and_k_equal_n():
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]).repeat(50, 1)  # 3 distinct points
    centroids, counts = kmeans(x, 3, seed=5)
    assert sorted(map(tuple, centroids.tolist())) == [(0, 0), (0, 1), (1, 0)]
    assert counts.tolist() == [50, 50, 50]
    small = torch.randn(6, 3)
    for init in ["kmeans++", "random"]:
        centroids, counts = kmeans(small, 6, init=init)  # every point its own centroid
        assert counts.tolist() == [1] * 6
        assert torch.equal(centroids[centroids[:, 0].argsort()], small[small[:, 0].argsort()])


def test_streaming_blocks_equal_in_memory(tmp_path, monkeypatch):
    x, _, _ = planted(k=8, per=100)
    np.save(tmp_path / "x.npy", x.numpy())
    ref = kmeans(x, 8, iters=4, tol=0)
    monkeypatch.setattr(svq.codebook.source, "BLOCK_BYTES", 33 * 4 * 8)  # blocks of 33 rows
    assert svq.codebook.source.Features(tmp_path / "x.npy").block_rows == 33
    run = kmeans(tmp_path / "x.npy", 8, iters=4, tol=0)
    torch.testing.assert_close(run.centroids, ref.centroids)
    assert torch.equal(run.counts, ref.counts)


@pytest.mark.parametrize("distance", ["l2", "cosine"])
def test_bounds_skip_points_and_change_nothing(distance, tmp_path, monkeypatch):
    """Bounded passes (k >= 512) give plain Lloyd's clusters, in the caller's centroid order,
    while searching fewer points as the centroids settle; also when streaming blocks."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(3000, 8, generator=gen) * (0.5 + torch.rand(3000, 1, generator=gen))
    init = x[torch.randperm(3000, generator=gen)[:600]] + 0.01  # no point exactly a centroid
    plain_steps, steps = [], []
    plain = kmeans(
        x, 600, iters=8, tol=0, init=init, distance=distance, bounds=False,
        callback=plain_steps.append,
    )  # fmt: skip
    run = kmeans(x, 600, iters=8, tol=0, init=init, distance=distance, callback=steps.append)
    torch.testing.assert_close(run.centroids, plain.centroids, atol=1e-6, rtol=1e-6)
    assert torch.equal(run.counts, plain.counts)
    for a, b in zip(plain_steps, steps, strict=True):
        assert b.inertia == pytest.approx(a.inertia, rel=1e-6)
    assert [s.searched for s in plain_steps] == [3000] * 8
    assert steps[0].searched == 3000 and steps[-1].searched < 0.8 * 3000  # bounds (on by default)
    # The same from a memory-mapped file read in blocks of 700 rows, in tiles of 128 codes
    # (group minima from several tiles), in chunks of at most 250 rows (4 of 175 a block) on
    # two threads, searched in tiles of 100 rows.
    np.save(tmp_path / "x.npy", x.numpy())
    monkeypatch.setattr(svq.codebook.source, "BLOCK_BYTES", 700 * 4 * 8)
    monkeypatch.setattr(svq.codebook.distance, "CHUNK_ROWS", 250)
    streamed = kmeans(
        tmp_path / "x.npy", 600, iters=8, tol=0, init=init, distance=distance,
        code_tile=128, rows=100, workers=2,
    )  # fmt: skip
    torch.testing.assert_close(streamed.centroids, plain.centroids, atol=1e-6, rtol=1e-6)
    assert torch.equal(streamed.counts, plain.counts)


def test_bound_groups_and_order():
    assert bound_groups(511) == 0 and bound_groups(512) == 8 and bound_groups(600) == 10
    assert bound_groups(194_560) == 32
    assert bound_group_size(600, 10) == 64 and bound_group_size(194_560, 32) == 95 * 64
    gen = torch.Generator().manual_seed(0)
    blobs = torch.arange(4).repeat_interleave(50)[torch.randperm(200, generator=gen)]
    c = torch.randn(200, 4, generator=gen) + 20 * blobs[:, None]  # 4 far blobs, shuffled
    order = coherent_order(c, 4)
    assert sorted(order.tolist()) == list(range(200))

    def blobs_per_run(labels):  # distinct blobs in each run of 50 consecutive codes
        return [len(labels[i : i + 50].unique()) for i in range(0, 200, 50)]

    # Shuffled, every run holds all 4 blobs; ordered, one each.
    assert blobs_per_run(blobs) == [4, 4, 4, 4]
    assert blobs_per_run(blobs[order]) == [1, 1, 1, 1]
    with pytest.raises(ValueError, match="k >= 512"):
        kmeans(torch.randn(100, 4), 10, bounds=True)


def test_bad_input_raises():
    x = torch.randn(20, 4)
    with pytest.raises(ValueError, match="k must be"):
        kmeans(x, 21)
    with pytest.raises(ValueError, match="k must be"):
        kmeans(x, 0)
    with pytest.raises(ValueError, match="shape"):
        kmeans(x[None], 2)
    with pytest.raises(ValueError, match="floating"):
        kmeans(torch.ones(20, 4, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="distance"):
        kmeans(x, 2, distance="manhattan")
    with pytest.raises(ValueError, match=r"\(2, 4\)"):
        kmeans(x, 2, init=torch.zeros(3, 4))
    with pytest.raises(ValueError, match="init"):
        kmeans(x, 2, init="farthest")
    bad = x.clone()
    bad[7, 1] = float("nan")
    for init in ["kmeans++", "random", bad[:2].nan_to_num()]:
        with pytest.raises(ValueError, match="NaN"):
            kmeans(bad, 2, init=init)
    with pytest.raises(FileNotFoundError):
        kmeans("/nonexistent/features.npy", 2)
    with pytest.raises(TypeError):
        kmeans([[0.0, 1.0]], 1)


def test_two_gloo_processes_equal_one_process(tmp_path):
    """torchrun, 2 ranks with 70/30 shards of a memmap == one process on all the data."""
    from kmeans_worker import fits

    x, _, _ = planted(k=6, per=120, dim=6, seed=7)
    data = x.reshape(-1, 4, 6).numpy()  # (180, 4, 6): 180 images of 4 tokens
    np.save(tmp_path / "data.npy", data)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += [str(ROOT / "tests" / "kmeans_worker.py"), str(tmp_path / "data.npy")]
    cmd += [str(tmp_path / "out.pt"), "6"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    two = torch.load(tmp_path / "out.pt")
    one = fits(np.load(tmp_path / "data.npy", mmap_mode="r"), 6)
    assert two.keys() == one.keys()
    for name in one:
        torch.testing.assert_close(two[name], one[name], atol=1e-5, rtol=1e-5, msg=name)
    assert (one["cos_counts"] > 0).all()  # the far initial centroid was re-seeded
    plain = kmeans(x, 512, iters=4, tol=0, seed=3, bounds=False)
    torch.testing.assert_close(one["bounded_centroids"], plain.centroids)
    assert torch.equal(one["bounded_counts"], plain.counts)
