"""The tokenizer stages' objectives, owned here and not by the models (they need LPIPS, which no
model owns): `reconstruction_loss`, weighted MSE, L1 and LPIPS(VGG16) on [-1, 1] pixels from
`PixelLossOptions` (stage 1, stage 2's fine-tune, the spatial VQ, which adds its quantiser's
own loss from `forward`); `code_loss`, stage 1's objective for a decoder with target
"spatial_vq". (The chat model's losses are its `forward`'s, weighted by its config.)"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from svq.lpips import LPIPS


def load_lpips(o: Any) -> LPIPS | None:
    if o.lpips_weight == 0:
        return None
    try:
        return LPIPS.from_pretrained(o.lpips_trunk_path, o.lpips_linear_path)
    except FileNotFoundError as error:
        raise FileNotFoundError(
            f"{error}\n(the perceptual loss has lpips_weight {o.lpips_weight}; "
            "pass --lpips_weight 0 to train with pixel losses only)"
        ) from None


def reconstruction_loss(
    recon: torch.Tensor, images: torch.Tensor, o: Any, lpips: LPIPS | None
) -> dict[str, torch.Tensor]:
    """The weighted loss and its terms, fp32 scalars. recon, images: (B, 3, H, W)."""
    recon = recon.float()
    terms = {"mse": F.mse_loss(recon, images)}
    if o.l1_weight > 0:
        terms["l1"] = F.l1_loss(recon, images)
    if lpips is not None:
        terms["lpips"] = lpips(recon, images).mean()
    weights = {"mse": o.mse_weight, "l1": o.l1_weight, "lpips": o.lpips_weight}
    terms["loss"] = sum(weights[k] * v for k, v in terms.items())
    return terms


def code_loss(logits: torch.Tensor, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """Target "spatial_vq": cross-entropy of the decoder's logits (B, S*S, K) against the
    spatial tokenizer's ids (B, S*S), and the accuracy of the most likely code."""
    logits = logits.float()
    ce = F.cross_entropy(logits.flatten(0, 1), ids.flatten())
    accuracy = (logits.argmax(-1) == ids).float().mean().detach()
    return {"ce": ce, "code_accuracy": accuracy, "loss": ce}
