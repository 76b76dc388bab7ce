"""svq's vocabulary: k-means over encoder features and the codebook that turns them into ids.

from svq.codebook import Codebook, kmeans

centroids, counts = kmeans(features, k)  # features (n, E): tensor, array or .npy path
book = Codebook.fit(token_features, num_codes=1024)  # (n, N, E) -> one shared codebook
ids = book.quantize(z)  # (B, N, E) -> (B, N)
z_q = book.lookup(ids)  # (B, N) -> (B, N, E)

Parts:
    codebook  Codebook: centroids as a frozen buffer, quantize / lookup, save / load
    kmeans    k-means in fp32 (k-means++ init, distributed Lloyd passes, a tolerance stop)
    distance  nearest-code search in tiles, shared by k-means and Codebook
    bounds    distance bounds that let a Lloyd pass skip points (Yinyang)
    source    feature matrices read in blocks (tensors, arrays, memory-mapped .npy)
"""

from .codebook import Codebook, CodebookConfig, CodebookOutput, CodebookStats, codebook_stats
from .distance import nearest
from .kmeans import KMeansResult, KMeansStep, kmeans

__all__ = [
    "Codebook",
    "CodebookConfig",
    "CodebookOutput",
    "CodebookStats",
    "KMeansResult",
    "KMeansStep",
    "codebook_stats",
    "kmeans",
    "nearest",
]
