import contextlib
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


@contextlib.contextmanager
def killed_after_checkpoint(monkeypatch: pytest.MonkeyPatch, step: int):
    """The training run inside dies (KeyboardInterrupt, which this expects) right after it has
    written its checkpoint of `step`, as a run killed between two saves would."""
    from svq.train import common

    real_save = common.save_checkpoint

    def save_then_die(accelerator, root, at, *args):
        folder = real_save(accelerator, root, at, *args)
        if at == step:
            raise KeyboardInterrupt
        return folder

    monkeypatch.setattr(common, "save_checkpoint", save_then_die)
    try:
        with pytest.raises(KeyboardInterrupt):
            yield
    finally:
        monkeypatch.setattr(common, "save_checkpoint", real_save)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    """A saved tiny tokenizer with a 32-code codebook (the CLI tests' model folder)."""
    from test_llm_tiny import svq_model

    folder = tmp_path_factory.mktemp("tok") / "model"
    svq_model(num_codes=32).save_pretrained(folder)
    return folder
