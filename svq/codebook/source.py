"""Feature matrices read in blocks: in-memory tensors, numpy arrays, or `.npy` files on disk.

A `.npy` path (or an `np.memmap`) is memory-mapped and read one block at a time, so k-means
can stream over more features than fit in memory; tensors and arrays are sliced without a copy.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import torch

FeaturesLike = torch.Tensor | np.ndarray | str | os.PathLike

BLOCK_BYTES = 64 << 20  # fp32 bytes per block read from disk: large reads, bounded memory


def as_array(features: FeaturesLike) -> torch.Tensor | np.ndarray:
    """A tensor or array as it is; a `.npy` path memory-mapped (read lazily)."""
    if isinstance(features, str | os.PathLike):
        if not os.path.isfile(features):
            raise FileNotFoundError(f"feature file {os.fspath(features)} does not exist")
        return np.load(features, mmap_mode="r")
    if not isinstance(features, torch.Tensor | np.ndarray):
        raise TypeError(
            "features must be a torch.Tensor, a numpy array or the path of a .npy file, "
            f"got {type(features).__name__}"
        )
    return features


class Features:
    """An (n, E) feature matrix read in blocks.

    features: a tensor, a numpy array / memmap, or the path of a `.npy` file (memory-mapped).
    device: where blocks go; defaults to the tensor's device, else CPU.
    """

    def __init__(self, features: FeaturesLike, device: torch.device | str | None = None):
        features = as_array(features)
        if isinstance(features, torch.Tensor):
            if not features.is_floating_point():
                raise ValueError(f"features must be floating point, got {features.dtype}")
            default_device = features.device
        else:
            if not np.issubdtype(features.dtype, np.floating):
                raise ValueError(f"features must be floating point, got {features.dtype}")
            default_device = torch.device("cpu")
        if features.ndim != 2 or features.shape[0] < 1 or features.shape[1] < 1:
            raise ValueError(f"expected features of shape (n, E), got {tuple(features.shape)}")
        self.data = features
        self.n, self.dim = int(features.shape[0]), int(features.shape[1])
        self.device = torch.device(device) if device is not None else default_device
        self.block_rows = max(1, BLOCK_BYTES // (4 * self.dim))

    def _to_tensor(self, rows: torch.Tensor | np.ndarray) -> torch.Tensor:
        if isinstance(rows, np.ndarray):
            # A copy: memory-mapped pages become an ordinary (writable) block in memory.
            rows = torch.from_numpy(np.array(rows, dtype=np.float32))
        return rows.to(device=self.device, dtype=torch.float32)

    def blocks(self) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield (start, block (b, E) fp32 on `device`) over all rows, in order."""
        for start in range(0, self.n, self.block_rows):
            yield start, self._to_tensor(self.data[start : start + self.block_rows])

    def take(self, index: torch.Tensor) -> torch.Tensor:
        """index: (m,) sorted long row indices -> rows (m, E) fp32 on `device`."""
        if isinstance(self.data, torch.Tensor):
            return self._to_tensor(self.data[index.to(self.data.device)])
        return self._to_tensor(self.data[index.cpu().numpy()])  # sorted: sequential disk reads
