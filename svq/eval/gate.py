"""The judge's gate: nothing is scored with a judge that cannot read clean pictures.

    gate = judge_gate(judge, image_size=32)     # fresh clean renders at the report's size
    if not gate.passed: print(gate.reason)      # judged figures are then refused

Before any judged figure (following, identity, the judge on reconstructions) is computed, the
judge reads fresh clean renders of the chat world at the size it will be given: half from the
validation split (identities seen in its training), half from the held-out split (identities
never seen), from picture `START` on, which neither its training stream (the train split) nor
its own final tables (validation and held-out pictures 0..eval_images-1) use. It passes when
every attribute is read right at least `THRESHOLD` of the time. Every judged figure is then
reported beside this accuracy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from .reconstruction import world_images

THRESHOLD = 0.97  # per attribute, on clean renders
GATE_IMAGES = 512  # renders per gate: one error moves an attribute by 0.2 points
START = 50_000  # first picture index of each split the gate reads


@dataclass
class GateResult:
    """What the gate measured and decided."""

    passed: bool
    threshold: float
    image_size: int
    n_images: int
    accuracy: dict[str, float]  # per attribute, on the gate's renders
    failing: list[str]  # attributes below the threshold

    @property
    def mean(self) -> float:
        return sum(self.accuracy.values()) / len(self.accuracy)

    @property
    def reason(self) -> str:
        """One line: why judged figures are (not) given."""
        if self.passed:
            return (
                f"the judge passed its gate: >= {self.threshold:.0%} on every attribute of "
                f"{self.n_images} fresh clean {self.image_size} px renders (lowest "
                f"{min(self.accuracy.values()):.1%})"
            )
        below = ", ".join(f"{name} {self.accuracy[name]:.1%}" for name in self.failing)
        return (
            f"judged figures refused: the judge failed its gate on {self.n_images} fresh clean "
            f"{self.image_size} px renders ({below}; needs >= {self.threshold:.0%} on every "
            "attribute): train a better judge with svq/train/judge.py"
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mean": self.mean, "reason": self.reason}


@torch.no_grad()
def judge_gate(
    judge: Any,
    image_size: int,
    n_images: int = GATE_IMAGES,
    threshold: float = THRESHOLD,
    world_seed: int = 0,
) -> GateResult:
    """Score `judge` on `n_images` fresh clean renders at `image_size` (half validation,
    half held-out identities) and decide whether it may score anything."""
    if n_images < 2:
        raise ValueError(f"the gate needs at least 2 pictures, got {n_images}")
    half = n_images // 2
    parts = [
        world_images(n, image_size, split, world_seed, start=START)
        for split, n in (("validation", half), ("heldout", n_images - half))
    ]
    images = torch.cat([images for images, _ in parts])
    labels = torch.cat([labels for _, labels in parts])
    accuracy = judge.named(judge.accuracy(images, labels))
    failing = [name for name, value in accuracy.items() if value < threshold]
    return GateResult(
        passed=not failing,
        threshold=threshold,
        image_size=image_size,
        n_images=n_images,
        accuracy=accuracy,
        failing=failing,
    )
