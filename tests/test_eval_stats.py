"""svq/eval/stats.py: bootstrap intervals on cases whose answer is known."""

import numpy as np
import pytest

from svq.eval.stats import bootstrap_mean_of_ratios, bootstrap_ratio, mean_of_ratios


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


def test_wilson_interval_known_values_and_its_use_at_the_edges():
    from svq.eval.chat_scores import _figure
    from svq.eval.stats import wilson_interval

    low, high = wilson_interval(30, 100)  # the textbook case: [0.219, 0.396]
    assert low == pytest.approx(0.2189, abs=1e-4) and high == pytest.approx(0.3958, abs=1e-4)
    assert wilson_interval(104, 104) == (pytest.approx(104 / (104 + 1.959964**2)), 1.0)
    assert wilson_interval(0, 10)[0] == 0.0
    with pytest.raises(ValueError, match="successes <= trials"):
        wilson_interval(3, 2)
    # one proportion at 100%: the bootstrap alone says [1, 1]; the figure keeps a width
    drawn = _figure(np.full(52, 2.0), np.full(52, 2.0), seed=0)
    assert drawn["value"] == 1.0 and drawn["ci"][1] == 1.0 and drawn["ci"][0] < 0.97
    # in the middle the bootstrap over units is the wider one and is kept
    right = np.array([10.0] * 10 + [0.0] * 10)
    assert _figure(right, np.full(20, 10.0), seed=0)["ci"] == bootstrap_ratio(
        right, np.full(20, 10.0)
    )
