"""Where a recorded figure came from: the commit, the machine and the command."""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def git_commit(folder: Path = REPO) -> dict[str, Any]:
    """{"commit": hash or None, "dirty": uncommitted changes?} of the code that ran."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True,
                                text=True, check=True, timeout=10).stdout.strip()  # fmt: skip
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                cwd=folder, capture_output=True, text=True, check=True,
                                timeout=10).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": bool(status.strip())}


def command_line() -> str:
    """The command that ran, as a user would type it: `svq ...`, or `python -m MODULE ...` for
    a module run with -m (its file is sys.argv[0])."""
    program = Path(sys.argv[0])
    if program.name == "svq":
        return shlex.join(["svq", *sys.argv[1:]])
    if program.suffix == ".py" and program.is_relative_to(REPO):
        module = ".".join(program.relative_to(REPO).with_suffix("").parts)
        return shlex.join(["python", "-m", module.removesuffix(".__main__"), *sys.argv[1:]])
    return shlex.join(["python", *sys.argv])


def native_cpu_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AMX / AVX512-BF16); elsewhere autocast
    emulates it, 9-20x slower than fp32 (benchmarks/cpu_bf16.py)."""
    import torch

    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def machine() -> dict[str, Any]:
    """What the run was measured on (the load average too: these machines are shared)."""
    import torch

    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        # `bf16: true` stages run in bf16 here, elsewhere in fp32 (common.make_accelerator)
        "native_cpu_bf16": native_cpu_bf16(),
    }
    if hasattr(os, "getloadavg"):
        info["load_average_1_5_15"] = [round(x, 2) for x in os.getloadavg()]
    return info


def provenance() -> dict[str, Any]:
    """{"command", "commit", "dirty", "machine", "measured_at"} for a results file."""
    return {
        "command": command_line(),
        **git_commit(),
        "machine": machine(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
