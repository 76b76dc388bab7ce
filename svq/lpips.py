"""LPIPS v0.1 (VGG16 trunk) as a frozen perceptual loss, without torchvision.

LPIPS (Zhang et al. 2018, the `lpips` package, version 0.1): shift and scale the [-1, 1] images,
run VGG16's conv trunk, take the five taps relu1_2 .. relu5_3, unit-normalise each tap along
channels, square the difference of the two images' taps, weight channels with learned
non-negative 1x1 weights (`lin0` .. `lin4`), average over space and sum over taps.

State-dict names are those of the real files, so they load by name:
  - trunk: `features.N.weight` / `features.N.bias`, the layout of torchvision's
    `vgg16().features` (its checkpoint vgg16-397923af.pth, or a safetensors copy);
  - linear: `linN.model.1.weight`, (1, C, 1, 1), the layout of the lpips package's
    `weights/v0.1/vgg.pth` (index 1 because lpips puts a Dropout at index 0).
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from .hub import check_state_dict

VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
VGG16_FILE = "vgg16-397923af.pth"
ENV_DIR = "SVQ_LPIPS_DIR"  # a folder holding vgg16-397923af.pth (or vgg16.safetensors) and vgg.pth
# torchvision's VGG16 configuration "D": conv widths, "M" = 2x2 max-pool.
VGG16_LAYERS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
TAP_INDICES = (
    3,
    8,
    15,
    22,
    29,
)  # `features` indices of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
TAP_CHANNELS = (64, 128, 256, 512, 512)
# lpips ScalingLayer: (x - shift) / scale maps [-1, 1] images to ImageNet-normalised inputs.
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
EPS = 1e-10  # lpips normalize_tensor


def vgg16_features() -> nn.Sequential:
    """torchvision's `vgg16().features` up to relu5_3 (index 29; the last pool has no weights)."""
    layers: list[nn.Module] = []
    channels = 3
    for spec in VGG16_LAYERS:
        if spec == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, spec, kernel_size=3, padding=1), nn.ReLU()]
            channels = spec
    return nn.Sequential(*layers)


class _LinearHead(nn.Module):
    """lpips NetLinLayer: a bias-free 1x1 conv C -> 1. Index 0 stands in for lpips' Dropout
    (inactive at evaluation) so the weight's name is `model.1.weight` as in vgg.pth."""

    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Identity(), nn.Conv2d(channels, 1, 1, bias=False))
        # Until real weights load, every channel counts alike: a valid (non-negative) metric.
        nn.init.constant_(self.model[1].weight, 1.0 / channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def _normalize(x: torch.Tensor) -> torch.Tensor:
    """Unit length along channels, as lpips.normalize_tensor (eps added to the norm)."""
    return x / (x.pow(2).sum(dim=1, keepdim=True).sqrt() + EPS)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors file, or of a torch checkpoint read with weights_only=True."""
    path = str(path)
    if path.endswith(".safetensors"):
        return load_file(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} is not a state dict (a mapping of names to tensors)")
    return state


class LPIPS(nn.Module):
    """Frozen LPIPS-VGG16 distance. Build, then load weights (`from_pretrained` does both).

    Every parameter is frozen (requires_grad False); gradients flow to `input` only.
    """

    def __init__(self):
        super().__init__()
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)
        self.features = vgg16_features()
        # Named lin0..lin4 (not a ModuleList) so the keys are those of lpips' vgg.pth.
        for i, channels in enumerate(TAP_CHANNELS):
            self.add_module(f"lin{i}", _LinearHead(channels))
        self.requires_grad_(False)
        self.eval()

    # --- weights
    def load_trunk(self, state: dict[str, torch.Tensor], source: str = "trunk state dict") -> None:
        """Load VGG16 conv weights keyed `features.N.*` (torchvision checkpoint; `classifier.*`
        is ignored), bare `N.*` (a `features` state dict) or `net.sliceK.N.*` (an lpips model)."""
        if any(k.startswith("net.slice") for k in state):  # a whole lpips model: its trunk
            state = {
                re.sub(r"^net\.slice\d\.", "", k): v
                for k, v in state.items()
                if k.startswith("net.slice")
            }
        found = {
            k.removeprefix("features."): v
            for k, v in state.items()
            if not k.startswith("classifier.")
        }
        check_state_dict(self.features.state_dict(), found, source)
        self.features.load_state_dict(found)

    def load_linear(
        self, state: dict[str, torch.Tensor], source: str = "linear state dict"
    ) -> None:
        """Load the lpips v0.1 weights keyed `linN.model.1.weight` (other keys are ignored)."""
        found = {k: v for k, v in state.items() if re.fullmatch(r"lin\d\.model\.1\.weight", k)}
        expected = {k: v for k, v in self.state_dict().items() if k.startswith("lin")}
        check_state_dict(expected, found, source)
        negative = [k for k, v in found.items() if (v < 0).any()]
        if negative:
            # lpips clamps these at zero while training them; negative values mean another file.
            raise ValueError(f"{source}: LPIPS linear weights must be >= 0; negative in {negative}")
        self.load_state_dict(found, strict=False)

    @classmethod
    def from_pretrained(
        cls, trunk_path: str | Path | None = None, linear_path: str | Path | None = None
    ) -> LPIPS:
        """Build and load real weights from local files; no download.

        trunk_path: torchvision's vgg16-397923af.pth or a safetensors copy. Default: the first of
            $SVQ_LPIPS_DIR/vgg16.safetensors, $SVQ_LPIPS_DIR/vgg16-397923af.pth and the torch hub
            cache ($TORCH_HOME/hub/checkpoints/vgg16-397923af.pth) that exists.
        linear_path: the lpips package's weights/v0.1/vgg.pth. Default: $SVQ_LPIPS_DIR/vgg.pth,
            then the installed lpips package's copy (found without importing lpips, which would
            import torchvision).
        Raises FileNotFoundError saying how to get a missing file.
        """
        trunk = _resolve(trunk_path, _trunk_candidates(), "VGG16 trunk", _TRUNK_HELP)
        linear = _resolve(linear_path, _linear_candidates(), "LPIPS linear", _LINEAR_HELP)
        model = cls()
        model.load_trunk(read_state_dict(trunk), str(trunk))
        model.load_linear(read_state_dict(linear), str(linear))
        return model

    # --- distance
    def taps(self, images: torch.Tensor) -> list[torch.Tensor]:
        """images: (B, 3, H, W) in [-1, 1] -> the five taps, channel-normalised, fp32,
        (B, C_i, H / 2^i, W / 2^i) for i = 0..4."""
        x = (images - self.shift.to(images.dtype)) / self.scale.to(images.dtype)
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in TAP_INDICES:
                # fp32: under fp16 autocast eps=1e-10 rounds to 0 and an all-zero relu column
                # would give 0/0.
                out.append(_normalize(x.float()))
        return out

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """input, target: (B, 3, H, W) in [-1, 1], H, W >= 16 -> distance (B,) fp32.

        The target's features are computed without gradients (it is the fixed reference);
        gradients flow to `input` only. Call `.mean()` for a loss.
        """
        if input.shape != target.shape or input.ndim != 4 or input.shape[1] != 3:
            raise ValueError(
                f"LPIPS expects input and target of one shape (B, 3, H, W), got "
                f"{tuple(input.shape)} and {tuple(target.shape)}"
            )
        if min(input.shape[-2:]) < 16:
            raise ValueError(f"LPIPS needs H, W >= 16 (4 poolings), got {tuple(input.shape[-2:])}")
        with torch.no_grad():
            target_taps = self.taps(target)
        input_taps = self.taps(input)
        total = input.new_zeros(input.shape[0], dtype=torch.float32)
        with torch.autocast(device_type=input.device.type, enabled=False):
            for i, (a, b) in enumerate(zip(input_taps, target_taps, strict=True)):
                lin = getattr(self, f"lin{i}")
                weight = lin.model[1].weight.float()
                total = total + F.conv2d((a - b).pow(2), weight).mean(dim=(1, 2, 3))
        return total


_TRUNK_HELP = (
    "Get torchvision's ImageNet VGG16 weights once (528 MB):\n"
    f"  mkdir -p ~/.cache/torch/hub/checkpoints && curl -L -o "
    f"~/.cache/torch/hub/checkpoints/{VGG16_FILE} {VGG16_URL}\n"
    f"or put {VGG16_FILE} (or vgg16.safetensors with the same keys) in ${ENV_DIR}, "
    "or pass trunk_path=..."
)
_LINEAR_HELP = (
    "Get the lpips v0.1 linear weights (7 kB) with\n"
    "  pip install --no-deps lpips\n"
    "(--no-deps: lpips requires torchvision, which must not be installed here; svq reads only "
    f"its weights/v0.1/vgg.pth), or copy that vgg.pth into ${ENV_DIR}, or pass linear_path=..."
)


def _trunk_candidates() -> list[Path]:
    found = []
    if os.environ.get(ENV_DIR):
        folder = Path(os.environ[ENV_DIR])
        found += [folder / "vgg16.safetensors", folder / VGG16_FILE]
    return [*found, Path(torch.hub.get_dir()) / "checkpoints" / VGG16_FILE]


def _linear_candidates() -> list[Path]:
    found = [Path(os.environ[ENV_DIR]) / "vgg.pth"] if os.environ.get(ENV_DIR) else []
    spec = importlib.util.find_spec("lpips")  # locates the package without running it
    if spec is not None and spec.origin:
        found.append(Path(spec.origin).parent / "weights" / "v0.1" / "vgg.pth")
    return found


def _resolve(explicit: str | Path | None, candidates: list[Path], what: str, how: str) -> Path:
    if explicit is not None:
        if not Path(explicit).is_file():
            raise FileNotFoundError(f"{what} weights file {explicit} does not exist.\n{how}")
        return Path(explicit)
    for path in candidates:
        if path.is_file():
            return path
    looked = ", ".join(str(p) for p in candidates) or "nowhere (no default location)"
    raise FileNotFoundError(
        f"{what} weights not found (looked in: {looked}).\n{how}\n"
        "To train without the perceptual loss instead, set the LPIPS loss weight to 0."
    )
