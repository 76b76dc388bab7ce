"""eval/stats.py: bootstrap intervals on cases whose answer is known."""

import numpy as np
import pytest

from eval.stats import bootstrap_mean_of_ratios, bootstrap_ratio, mean_of_ratios


def test_bootstrap_of_a_proportion_matches_the_normal_interval():
    rng = np.random.default_rng(1)
    hits = (rng.random(600) < 0.3).astype(float)
    p = hits.mean()
    low, high = bootstrap_ratio(hits, np.ones_like(hits))
    half = 1.96 * np.sqrt(p * (1 - p) / len(hits))  # 0.037 here
    assert low == pytest.approx(p - half, abs=0.006) and high == pytest.approx(p + half, abs=0.006)


def test_units_are_resampled_whole():
    # 20 dialogues of 10 requests each, all right or all wrong: the interval is that of 20
    # units, far wider than 200 independent requests would give
    right = np.array([10.0] * 10 + [0.0] * 10)
    low, high = bootstrap_ratio(right, np.full(20, 10.0))
    assert high - low > 0.35  # 2 x 1.96 x sqrt(0.25 / 20) = 0.44
    assert bootstrap_ratio(np.full(5, 3.0), np.full(5, 3.0)) == (1.0, 1.0)  # no spread at all
    assert bootstrap_ratio([], []) is None and bootstrap_ratio([0.0], [0.0]) is None


def test_mean_of_ratios_leaves_out_columns_without_counts():
    num = np.array([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    den = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    assert mean_of_ratios(num, den) == pytest.approx((1.0 + 0.5) / 2)
    low, high = bootstrap_mean_of_ratios(num, den, seed=3)
    assert 0.5 <= low <= 0.75 <= high <= 1.0
    with pytest.raises(ValueError, match="must be"):
        bootstrap_mean_of_ratios(num, den[:, :2])
