"""The option files svq ships (package data), read by name.

| file | what |
|---|---|
| `stage1_*.yaml`, `stage2_*.yaml`, `vq_*.yaml`, `llm_sft_*.yaml` | one training stage's options |
| `demo_<budget>.yaml` | `svq demo --budget`: each stage's file + overrides |
| `accelerate/*.yaml` | `accelerate launch --config_file` for multi-GPU runs |

`config_path("stage1_tiny")` (or `"stage1_tiny.yaml"`) is the shipped file; a path to a file
of your own is used as it is.
"""

from __future__ import annotations

from pathlib import Path

CONFIGS = Path(__file__).resolve().parent
SUFFIXES = (".yaml", ".yml", ".json")


def shipped() -> list[str]:
    """The names of the shipped option files (no suffix), sorted."""
    return sorted(p.stem for p in CONFIGS.glob("*.yaml"))


def shipped_config(name: str) -> Path:
    """The shipped config called `name` (suffix optional); FileNotFoundError listing the
    shipped names if there is none."""
    stem = name if name.endswith(SUFFIXES) else name + ".yaml"
    if "/" not in stem and (CONFIGS / stem).is_file():
        return CONFIGS / stem
    raise FileNotFoundError(
        f"config file {name} does not exist, nor a shipped config of that name "
        f"(shipped: {', '.join(shipped())})"
    )


def config_path(name: str | Path) -> Path:
    """An existing file at `name` as it is, else the shipped config called `name`."""
    path = Path(name)
    return path if path.is_file() else shipped_config(str(name))
