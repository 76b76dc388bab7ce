import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no hub calls (and no ~23 s retries) in tests

import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)  # one thread per worker: two workers share two cores
