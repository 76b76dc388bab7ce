import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no hub calls (and no ~23 s retries) in tests

import torch

# The tests' tensors are small: a second intra-op thread only spins, and when the two cores are
# shared (pytest -n 2, or other jobs) it made small steps 10-60x slower than one thread.
torch.set_num_threads(1)

import pytest  # noqa: E402
from accelerate.state import AcceleratorState, GradientState  # noqa: E402


def reset_accelerate() -> None:
    """accelerate keeps process-wide singletons; each training run builds its own Accelerator."""
    AcceleratorState._reset_state(True)
    GradientState._reset_state()


@pytest.fixture(autouse=True)
def fresh_accelerate():
    reset_accelerate()
    yield
    reset_accelerate()
