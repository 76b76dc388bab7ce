"""Per-token probes and the token-swap test, on planted signals."""

import math

import pytest
import torch

from svq import StyledVAEVQ, SVQConfig
from svq.data import ATTRIBUTES, ChatWorldDataset
from svq.eval.judge import AttributeJudge, JudgeConfig
from svq.eval.probes import encode_world, fit_probes, token_swap_test

NUM_CLASSES = (4, 3, 2)
NAMES = ("ordinal", "colour", "binary")


def planted(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (n, 6, 8) of noise, except: token 3 holds attribute 0 (4 ordered values) as a
    scalar on one direction, token 1 holds attribute 2 in its sign, and attribute 1 is spread
    over tokens 4 and 5 (each alone reads it only partly)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.stack([torch.randint(0, k, (n,), generator=g) for k in NUM_CLASSES], 1)
    x = torch.randn(n, 6, 8, generator=g)
    # One direction, four ordered values: a least-squares probe would mask the middle ones.
    x[:, 3] += torch.outer(labels[:, 0].float() * 3.0, torch.tensor([1.0, -1, 0, 0, 0, 0, 0, 0]))
    x[:, 1, 5] += (labels[:, 2].float() * 2 - 1) * 4.0
    x[:, 4, 0] += (labels[:, 1] == 1).float() * 6.0  # token 4: "is it 1?"
    x[:, 5, 0] += (labels[:, 1] == 2).float() * 6.0  # token 5: "is it 2?"
    return x, labels


def test_probe_finds_each_planted_token_and_only_it():
    x, y = planted(600, seed=0)
    xt, yt = planted(400, seed=1)
    result = fit_probes(x, y, xt, yt, NUM_CLASSES, NAMES, iters=100, all_tokens=True)
    acc = result.accuracy  # (6, 3)
    assert acc.shape == (6, 3)
    assert acc[3, 0] > 0.95 and acc[1, 2] > 0.95
    others = [t for t in range(6) if t != 3]
    assert (acc[others, 0] < result.baseline[0] + 0.1).all()  # noise tokens: chance
    assert (acc[[0, 2, 3, 4, 5], 2] < result.baseline[2] + 0.1).all()
    # Attribute 1 is split over tokens 4 and 5: each alone is partial, both together are not.
    assert 0.5 < acc[4, 1] < 0.8 and 0.5 < acc[5, 1] < 0.8
    assert result.all_tokens[1] > 0.95 and (result.all_tokens > 0.9).all()
    assert result.best_token()["ordinal"] == 3 and result.best_token()["binary"] == 1
    assert result.gain()[3, 0] > 0.9 and result.gain()[0, 0] < 0.15
    assert len(result.table().splitlines()) == 2 + 6 + 2
    alone = fit_probes(x, y, xt, yt, NUM_CLASSES, NAMES, iters=100)
    assert alone.all_tokens is None and torch.equal(alone.accuracy, acc)
    assert len(alone.table().splitlines()) == 2 + 6 + 1


def test_probe_rejects_mismatched_inputs():
    x, y = planted(20, seed=0)
    with pytest.raises(ValueError, match="test features"):
        fit_probes(x, y, x[:, :5], y, NUM_CLASSES, NAMES)
    with pytest.raises(ValueError, match="labels"):
        fit_probes(x, y[:, :2], x, y, NUM_CLASSES, NAMES)
    with pytest.raises(ValueError, match="out of range"):
        fit_probes(x, y + 5, x, y, NUM_CLASSES, NAMES)


def test_encode_world_pairs_features_with_labels():
    def encode(images):  # (B, 3, 32, 32) -> (B, 4, 3): the mean colour of each quadrant
        quads = images.unfold(2, 16, 16).unfold(3, 16, 16)  # (B, 3, 2, 2, 16, 16)
        return quads.mean((-1, -2)).flatten(2).transpose(1, 2)

    features, labels = encode_world(encode, n=5, size=32, split="heldout", batch_size=2)
    assert features.shape == (5, 4, 3) and labels.shape == (5, len(ATTRIBUTES))
    data = ChatWorldDataset(size=32, length=5, split="heldout", labels=True)
    assert torch.equal(labels[4], data[4].labels)
    torch.testing.assert_close(features[4], encode(data[4].image[None])[0])


class RegionJudge:
    """Reads attribute a as 'is the mean of image row a above 0' (0 or 1)."""

    attributes = ("a", "b", "c")

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return (images[:, 0, :3].mean(-1) > 0).long()  # (B, 3)


def region_decoder(controls: dict[int, int]):
    """tokens (B, N, E) -> images (B, 3, 4, 4): row a is bright when the first component of the
    token controlling attribute a is positive; other tokens do nothing."""

    def decode(tokens: torch.Tensor) -> torch.Tensor:
        images = torch.full((len(tokens), 3, 4, 4), -0.5)
        for attribute, token in controls.items():
            images[:, :, attribute] = torch.where(tokens[:, token, 0] > 0, 0.5, -0.5).view(-1, 1, 1)
        return images * 3  # out of range on purpose: the test clamps before judging

    return decode


def test_swap_reports_exactly_the_attribute_each_token_controls():
    g = torch.Generator().manual_seed(0)
    tokens = torch.randn(32, 5, 2, generator=g)
    decode = region_decoder({0: 0, 1: 2, 2: 3})  # tokens 1 and 4 are dead
    result = token_swap_test(decode, RegionJudge(), tokens, batch_size=7)
    assert result.changed.shape == (5, 3) and result.positions == tuple((i,) for i in range(5))
    expected = torch.zeros(5, 3, dtype=torch.bool)
    expected[0, 0] = expected[2, 1] = expected[3, 2] = True
    assert torch.equal(result.changed > 0, expected)
    # Swapping the controlling token always hands over the donor's value.
    assert result.adopted[0, 0] == result.adopted[2, 1] == result.adopted[3, 2] == 1.0
    assert result.carriers() == {"a": [0], "b": [2], "c": [3]}
    assert len(result.table().splitlines()) == 2 + 5


def test_swap_groups_ids_and_explicit_donors():
    tokens = torch.tensor([[1, 1, 0], [0, 0, 0]])  # ids (B, N): id 1 means "bright"

    def decode(ids):  # (B, 3) -> (B, 3, 3, 4): row a bright when token a is 1
        return torch.where(ids.view(-1, 1, 3, 1) == 1, 1.0, -1.0).expand(-1, 3, 3, 4)

    donors = torch.tensor([[0, 1, 1], [0, 0, 0]])
    result = token_swap_test(decode, RegionJudge(), tokens, donors, positions=[(0, 2), 1])
    assert result.positions == ((0, 2), (1,))
    # Group (0, 2): picture 0 reads a: 1 -> 0 and c: 0 -> 1; picture 1 is unchanged.
    assert result.changed.tolist() == [[0.5, 0.0, 0.5], [0.0, 0.0, 0.0]]
    assert result.adopted[0, 0] == 1.0 and result.adopted[0, 2] == 1.0
    assert math.isnan(result.adopted[0, 1])  # no pair reads b differently
    assert result.table().splitlines()[2] == "| 0,2 | 50 / 100 | 0 / - | 50 / 100 |"
    with pytest.raises(ValueError, match="positions"):
        token_swap_test(decode, RegionJudge(), tokens, donors, positions=[3])
    with pytest.raises(ValueError, match="donors"):
        token_swap_test(decode, RegionJudge(), tokens, donors[:1])


def test_swap_runs_on_a_real_tokenizer_and_judge():
    torch.manual_seed(0)
    model = StyledVAEVQ(SVQConfig.from_preset("tiny")).eval()
    judge = AttributeJudge(JudgeConfig.from_preset("tiny", image_size=16)).eval()  # resizes
    images = torch.stack([ChatWorldDataset(size=32, length=4)[i] for i in range(4)])
    with torch.no_grad():
        features = model.encode(images)
    result = token_swap_test(model.decode, judge, features, positions=[0, range(18, 36)])
    assert result.changed.shape == (2, len(ATTRIBUTES))
    assert ((result.changed >= 0) & (result.changed <= 1)).all()
    assert result.attributes == ATTRIBUTES
