import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from svq import StyledVAEVQ, SVQConfig
from svq.codebook import Codebook, CodebookConfig, codebook_stats


def random_book(distance="l2", per_position=False, k=16, dim=8, n=5, seed=0) -> Codebook:
    gen = torch.Generator().manual_seed(seed)
    shape = (n, k, dim) if per_position else (k, dim)
    counts = torch.randint(0, 5, shape[:-1], generator=gen)
    return Codebook.from_codes(torch.randn(shape, generator=gen), distance, counts)


def features(batch=4, n=5, dim=8, seed=1) -> torch.Tensor:
    return torch.randn(batch, n, dim, generator=torch.Generator().manual_seed(seed))


def distances(z: torch.Tensor, codes: torch.Tensor, distance: str) -> torch.Tensor:
    """z: (M, E), codes: (K, E) -> (M, K), the obvious way."""
    if distance == "cosine":
        return 1 - F.normalize(z, dim=-1) @ F.normalize(codes, dim=-1).T
    return torch.cdist(z.double(), codes.double()).square()


@pytest.mark.parametrize("distance", ["l2", "cosine"])
@pytest.mark.parametrize("per_position", [False, True])
def test_lookup_of_quantize_is_the_nearest_code(distance, per_position):
    book = random_book(distance, per_position)
    z = features()
    ids = book.quantize(z)
    assert ids.shape == (4, 5) and ids.dtype == torch.long
    q = book.lookup(ids)
    assert q.shape == (4, 5, 8) and q.dtype == torch.float32
    for p in range(5):
        codes = book.codes[p] if per_position else book.codes
        d = distances(z[:, p], codes, distance)  # (B, K)
        assert torch.equal(ids[:, p], d.argmin(dim=1))
        torch.testing.assert_close(q[:, p], codes[ids[:, p]])
    # A code quantises to itself.
    again = book.quantize(q)
    torch.testing.assert_close(book.lookup(again), q)


def test_per_position_ids_index_each_positions_own_codebook():
    book = random_book(per_position=True)
    ids = torch.full((1, 5), 3)
    q = book.lookup(ids)
    for p in range(5):
        torch.testing.assert_close(q[0, p], book.codes[p, 3])
    assert not torch.allclose(q[0, 0], q[0, 1])  # same id, different vectors
    # Shared codebooks take any leading shape.
    shared = random_book()
    assert shared.quantize(torch.randn(2, 3, 7, 8)).shape == (2, 3, 7)
    assert shared.lookup(torch.zeros(6, dtype=torch.long)).shape == (6, 8)


def test_cosine_codes_are_unit_and_scale_free():
    book = random_book("cosine")
    torch.testing.assert_close(book.codes.norm(dim=-1), torch.ones(16))
    z = features()
    assert torch.equal(book.quantize(z), book.quantize(3.7 * z))


def test_quantize_runs_in_fp32_outside_autocast():
    book = random_book()
    z = features()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ids = book.quantize(z)
    assert torch.equal(ids, book.quantize(z))
    assert torch.equal(book.quantize(z.double()), ids)


def test_codes_stay_fp32_when_the_model_is_cast():
    book = random_book()
    codes = book.codes.clone()
    z = features()
    ids = book.quantize(z)
    book.to(torch.bfloat16)
    assert book.codes.dtype == torch.float32 and torch.equal(book.codes, codes)
    assert torch.equal(book.quantize(z.bfloat16().float()), book.quantize(z.bfloat16()))
    assert torch.equal(book.quantize(z), ids)


def test_forward_passes_gradients_straight_through():
    book = random_book()
    z = features().requires_grad_()
    out = book(z)
    torch.testing.assert_close(out.quantized, book.lookup(out.ids))
    out.quantized.sum().backward()
    torch.testing.assert_close(z.grad, torch.ones_like(z))


@pytest.mark.parametrize("per_position", [False, True])
def test_save_load_round_trip(tmp_path, per_position):
    book = random_book("cosine", per_position)
    book.save(tmp_path / "book.safetensors")
    loaded = Codebook.load(tmp_path / "book.safetensors")
    assert loaded.config == book.config
    assert torch.equal(loaded.codes, book.codes) and torch.equal(loaded.counts, book.counts)
    z = features()
    assert torch.equal(loaded.quantize(z), book.quantize(z))
    assert loaded.state_dict().keys() == {"codes", "counts"}


def test_load_rejects_foreign_or_mismatched_files(tmp_path):
    save_file({"codes": torch.zeros(4, 2)}, tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="not an svq codebook"):
        Codebook.load(tmp_path / "other.safetensors")
    book = random_book()
    book.save(tmp_path / "book.safetensors")
    with pytest.raises(FileNotFoundError):
        Codebook.load(tmp_path / "missing.safetensors")
    # Metadata that disagrees with the tensors.
    from safetensors import safe_open

    with safe_open(tmp_path / "book.safetensors", "pt") as f:
        meta = f.metadata()
    meta["config"] = meta["config"].replace('"num_codes": 16', '"num_codes": 17')
    save_file({"codes": book.codes, "counts": book.counts}, tmp_path / "bad.safetensors", meta)
    with pytest.raises(ValueError, match="config says"):
        Codebook.load(tmp_path / "bad.safetensors")
    meta["config"] = '{"num_codes": 16, "colour": "red"}'
    save_file({"codes": book.codes, "counts": book.counts}, tmp_path / "bad.safetensors", meta)
    with pytest.raises(ValueError, match="unreadable codebook config"):
        Codebook.load(tmp_path / "bad.safetensors")


def test_stats_usage_perplexity_dead_codes():
    stats = codebook_stats(torch.tensor([5, 5, 5, 5, 0, 0]))
    assert stats.used == 4 and stats.dead == 2
    assert stats.usage.item() == pytest.approx(4 / 6)
    assert stats.perplexity.item() == pytest.approx(4.0)
    skewed = codebook_stats(torch.tensor([9, 1]))
    entropy = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))
    assert skewed.perplexity.item() == pytest.approx(math.exp(entropy))
    book = random_book(per_position=True, k=4, n=2)
    ids = torch.tensor([[0, 1], [0, 2], [0, 3]])  # position 0 uses 1 code, position 1 uses 3
    stats = book.stats(ids)
    assert stats.used.tolist() == [1, 3] and stats.dead.tolist() == [3, 1]
    assert stats.perplexity[0].item() == pytest.approx(1.0)
    stored = book.stats()  # from the fitting counts
    assert stored.used.tolist() == (book.counts > 0).sum(-1).tolist()


def test_bad_input_raises():
    book = random_book(per_position=True)
    with pytest.raises(ValueError, match=r"\(\.\.\., 5, 8\)"):
        book.quantize(torch.randn(4, 6, 8))
    with pytest.raises(ValueError, match=r"\(\.\.\., 5, 8\)"):
        book.quantize(torch.randn(4, 5, 7))
    with pytest.raises(ValueError, match=r"in \[0, 16\)"):
        book.lookup(torch.full((2, 5), 16))
    with pytest.raises(ValueError, match=r"in \[0, 16\)"):
        book.lookup(torch.full((2, 5), -1))
    with pytest.raises(ValueError, match="integer"):
        book.lookup(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="integer"):
        book.lookup(torch.zeros(2, 5, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\(\.\.\., 5\)"):
        book.lookup(torch.zeros(2, 4, dtype=torch.long))
    nan = features()
    nan[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        book.quantize(nan)
    with pytest.raises(ValueError, match="distance"):
        CodebookConfig(num_codes=4, dim=2, distance="dot")
    with pytest.raises(ValueError, match="num_tokens"):
        CodebookConfig(num_codes=4, dim=2, per_position=True)
    with pytest.raises(ValueError, match="NaN"):
        Codebook.from_codes(torch.full((3, 2), float("nan")))


@pytest.mark.parametrize("per_position", [False, True])
def test_fit_from_token_features(tmp_path, per_position):
    gen = torch.Generator().manual_seed(2)
    centers = torch.randn(3, 4, 6, generator=gen) * 5  # 3 kinds of image, 4 tokens, E = 6
    z = centers[torch.randint(3, (60,), generator=gen)] + 0.1 * torch.randn(60, 4, 6, generator=gen)
    np.save(tmp_path / "z.npy", z.numpy())
    k = 3 if per_position else 12
    book = Codebook.fit(tmp_path / "z.npy", k, per_position=per_position, seed=0)
    assert book.codes.shape == ((4, 3, 6) if per_position else (12, 6))
    assert book.config.per_position == per_position
    assert (book.counts.sum(-1) == (60 if per_position else 240)).all()
    # Planted token features are reproduced within their noise.
    error = (book.lookup(book.quantize(z)) - z).norm(dim=-1)
    assert error.max() < 1.0


def test_attaches_to_the_tokenizer():
    torch.manual_seed(0)
    model = StyledVAEVQ(SVQConfig.from_preset("tiny")).eval()
    images = torch.rand(3, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        z = model.encode(images)  # (3, 36, 16)
        model.codebook = Codebook.fit(z, 8, iters=3)  # shared: 3 * 36 vectors, 8 codes
        ids = model.tokenize(images)
        assert ids.shape == (3, 36) and ids.dtype == torch.long
        assert model.detokenize(ids).shape == (3, 3, 32, 32)
    # Not part of the weights: save_pretrained writes it as codebook.safetensors beside them.
    assert not [k for k in model.state_dict() if k.startswith("codebook.")]
