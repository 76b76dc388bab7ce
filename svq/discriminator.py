"""PatchGAN discriminator (pix2pix / taming-transformers `NLayerDiscriminator`) and hinge losses,
for the optional adversarial term of the spatial VQ's training (svq/train/vq.py).

The discriminator scores overlapping patches: (B, 3, H, W) -> (B, 1, H', W') logits, each
seeing a receptive field of 70x70 pixels at the default 3 layers. Training code owns it; it is
not part of any released tokenizer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PatchDiscriminator(nn.Module):
    """Conv 4x4 stride 2 + LeakyReLU, then `layers - 1` more stride-2 convs and one stride-1 conv
    with GroupNorm (instead of taming's BatchNorm, which mixes real and fake batches and is
    awkward under DDP), then a 1-channel conv: a logit per patch."""

    def __init__(self, in_channels: int = 3, channels: int = 64, layers: int = 3):
        super().__init__()
        if channels < 1 or layers < 1:
            raise ValueError(f"need channels >= 1 and layers >= 1, got {channels}, {layers}")
        blocks: list[nn.Module] = [
            nn.Conv2d(in_channels, channels, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
        ]
        width = channels
        for i in range(1, layers + 1):
            out = channels * min(2**i, 8)
            stride = 2 if i < layers else 1
            blocks += [
                nn.Conv2d(width, out, 4, stride=stride, padding=1, bias=False),
                nn.GroupNorm(min(32, out // 4), out),
                nn.LeakyReLU(0.2),
            ]
            width = out
        blocks.append(nn.Conv2d(width, 1, 4, stride=1, padding=1))
        self.net = nn.Sequential(*blocks)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: (B, C, H, W) in [-1, 1] -> patch logits (B, 1, H', W')."""
        return self.net(images)


def hinge_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """The discriminator's hinge loss: mean relu(1 - real) + mean relu(1 + fake), halved."""
    return 0.5 * (F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean())


def hinge_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """The generator's side: raise the discriminator's score of its reconstructions."""
    return -fake_logits.mean()
