"""The ids-to-grid model: shapes, bad input, save/load, per-position codes, that it learns a
mapping in one pass and by confidence decoding."""

import pytest
import torch

from svq.ids_to_grid import IdsToGrid, IdsToGridConfig


def small(**overrides) -> IdsToGrid:
    sizes = {"num_positions": 6, "num_codes": 8, "grid_size": (2, 3), "codebook_size": 5,
             "width": 32, "depth": 2, "heads": 2, "dropout": 0.0}  # fmt: skip
    return IdsToGrid(IdsToGridConfig(**{**sizes, **overrides}))


def test_shapes_and_generate():
    torch.manual_seed(0)
    model = small().eval()
    ids = torch.randint(8, (4, 6))
    assert model(ids).shape == (4, 6, 5)
    for steps in (1, 3, 6):
        grid = model.generate(ids, steps=steps)
        assert grid.shape == (4, 6) and grid.min() >= 0 and grid.max() < 5  # no cell left masked
    first = model.generate(ids, temperature=1.0, generator=torch.Generator().manual_seed(1))
    again = model.generate(ids, temperature=1.0, generator=torch.Generator().manual_seed(1))
    assert torch.equal(first, again)


def test_bad_input_is_named():
    model = small()
    with pytest.raises(ValueError, match=r"expected ids \(B, 6\)"):
        model(torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"ids must be integers in \[0, 8\)"):
        model(torch.full((2, 6), 8))
    with pytest.raises(ValueError, match=r"expected grid \(2, 6\)"):
        model(torch.zeros(2, 6, dtype=torch.long), torch.full((2, 6), 6))
    with pytest.raises(ValueError, match="width 30 not divisible by 4"):
        IdsToGridConfig(width=30, heads=4)
    with pytest.raises(ValueError, match="steps >= 1"):
        model.generate(torch.zeros(1, 6, dtype=torch.long), steps=0)


def test_per_position_codes_differ_by_position():
    torch.manual_seed(0)
    model = small(dropout=0.0).eval()
    same = torch.zeros(1, 6, dtype=torch.long)
    rows = model.code_embed(same + torch.arange(6) * 8)  # what forward looks up
    assert not torch.allclose(rows[0, 0], rows[0, 1])
    shared = small(per_position=False)
    assert shared.code_embed.num_embeddings == 8 and model.code_embed.num_embeddings == 48


def test_save_and_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = small().eval()
    model.save_pretrained(tmp_path / "m")
    loaded = IdsToGrid.from_pretrained(tmp_path / "m").eval()
    ids = torch.randint(8, (3, 6))
    assert torch.equal(model(ids), loaded(ids))
    assert loaded.config == model.config


@pytest.mark.parametrize("masked", [False, True])
def test_learns_a_mapping_in_one_pass_and_by_confidence_decoding(masked):
    torch.manual_seed(0)
    model = small(width=64)
    ids = torch.randint(8, (16, 6))
    targets = torch.randint(5, (16, 6))  # an arbitrary lookup table: learnable only by memory
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(300):
        loss = model.loss(ids, targets, label_smoothing=0.1, masked=masked)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    chance = (model.generate(ids) == targets[torch.randperm(16)]).float().mean()
    assert (model.generate(ids) == targets).float().mean() > 0.95 > chance
    if masked:  # confidence decoding shows the model part of the grid: trained only so
        assert (model.generate(ids, steps=3) == targets).float().mean() > 0.95
