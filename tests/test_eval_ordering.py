import itertools

import pytest
import torch
from torch import nn

from svq import StyledVAEVQ, SVQConfig
from svq.eval.ordering import (
    default_groups,
    encode_all,
    group_ablation,
    prefix_curve,
    replace_tokens,
    single_token_ablation,
)

N, SIZE = 6, 16


class Toy(nn.Module):
    """A model whose information layout is known: picture = sum_i token_i * pattern_i.

    Token i is the coefficient of a fixed random pattern (E = 1), so `encode` is exact.
    `used`: the tokens `decode` reads (the others are dead). `copies`: only patterns 0 and 1
    are used, each written three times (tokens j, j + 2, j + 4) and decoded as the median of
    its three copies: any one token is redundant, a group of two copies is not."""

    def __init__(self, used=range(N), copies=False):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.register_buffer("patterns", torch.randn(N, 3, SIZE, SIZE, generator=g) * 0.3)
        self.used = list(used)
        self.copies = copies
        self.drop_token = None

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        flat = self.patterns.flatten(1)  # (N, P)
        coef = torch.linalg.lstsq(flat.T, images.flatten(1).T).solution.T  # (B, N)
        if self.copies:
            coef = coef[:, :2].repeat(1, 3)
        return coef.unsqueeze(-1)  # (B, N, 1)

    def decode(self, features: torch.Tensor) -> torch.Tensor:
        coef = features.squeeze(-1)  # (B, N)
        if self.copies:
            median = coef.reshape(-1, 3, 2).median(dim=1).values  # (B, 2)
            coef = torch.cat([median, torch.zeros_like(coef[:, 2:])], dim=1)
        mask = torch.zeros(N)
        mask[self.used] = 1
        return torch.einsum("bn,nchw->bchw", coef * mask, self.patterns)


def toy_images(model: Toy, batch: int = 16) -> torch.Tensor:
    coef = 0.3 * torch.randn(batch, N, generator=torch.Generator().manual_seed(1))
    if model.copies:
        coef[:, 2:] = 0
    return torch.einsum("bn,nchw->bchw", coef, model.patterns)


def test_prefix_curve_rises_with_every_live_token_and_stays_flat_over_dead_ones():
    live, dead = Toy(), Toy(used=range(2))
    for model in (live, dead):
        rows = prefix_curve(model, toy_images(live), batch_size=5)
        assert [r["k"] for r in rows] == list(range(N + 1))
        psnrs = [r["psnr"] for r in rows]
        if model is live:
            assert all(b > a + 0.2 for a, b in itertools.pairwise(psnrs))
        else:  # tokens 2.. are dead: nothing changes after k = 2
            assert psnrs[1] > psnrs[0] + 0.2 and psnrs[2] > psnrs[1] + 0.2
            assert max(psnrs[2:]) - min(psnrs[2:]) < 1e-4


def test_group_ablation_finds_redundant_tokens_that_single_ablation_misses():
    model = Toy(copies=True)
    images = toy_images(model)
    singles = single_token_ablation(model, images)
    (group,) = group_ablation(model, images, [(2, 6)])
    # Any one token swapped for another image's: the median keeps the picture, drop ~0.
    assert max(abs(s["drop_db"]) for s in singles) < 1e-3
    assert group["drop_db"] > 10 and group["drop_db"] > 3 * group["drop_se"]
    dead = Toy(used=range(2))
    rows = group_ablation(dead, toy_images(dead), [(2, 6), (0, 2)], mode="fill")
    assert abs(rows[0]["drop_db"]) < 1e-4 and rows[1]["drop_db"] > 1.0


def test_replace_tokens_and_default_groups():
    f = torch.arange(2 * 4 * 1, dtype=torch.float).reshape(2, 4, 1)
    out = replace_tokens(f, 1, 3, torch.full((1,), -1.0))
    assert out[:, :, 0].tolist() == [[0, -1, -1, 3], [4, -1, -1, 7]]
    with pytest.raises(ValueError, match="within"):
        replace_tokens(f, 2, 5, torch.zeros(1))
    groups = default_groups(36)
    assert (6, 36) in groups and (30, 36) in groups and (0, 6) in groups
    assert len(groups) == len(set(groups)) == 10


def test_real_model_prefix_ends_match_full_decode_and_mode_is_restored():
    torch.manual_seed(0)
    model = StyledVAEVQ(SVQConfig.from_preset("tiny")).train()
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1
    rows = prefix_curve(model, images, ks=[0, 36])
    assert model.training  # restored
    with torch.no_grad():
        model.eval()
        from svq.eval.metrics import psnr

        full = psnr(model.decode(model.encode(images)), images).mean().item()
        mean_fill = encode_all(model, images).mean(0)
        empty = psnr(model.decode(mean_fill.expand(4, -1, -1)), images).mean().item()
    assert rows[1]["psnr"] == pytest.approx(full, abs=1e-4)
    assert rows[0]["psnr"] == pytest.approx(empty, abs=1e-4)  # no drop token: the mean fill
    with pytest.raises(ValueError, match=r"within 0\.\.36"):
        prefix_curve(model, images, ks=[37])
    dropout = StyledVAEVQ(SVQConfig.from_preset("tiny", token_dropout="nested"))
    with torch.no_grad():
        dropout.drop_token.fill_(0.5)
    got = prefix_curve(dropout, images, ks=[0])[0]["psnr"]
    with torch.no_grad():
        dropout.eval()
        want = psnr(dropout.decode(torch.full((4, 36, 16), 0.5)), images).mean().item()
    assert got == pytest.approx(want, abs=1e-4)  # its learned drop token is the fill
