"""Intervals for evaluation figures: a percentile bootstrap over independent units (dialogues,
pictures).

    low, high = bootstrap_ratio(correct, counts)          # 95% interval of sum(c) / sum(n)
    low, high = bootstrap_mean_of_ratios(correct, counts)  # of the mean over columns
    low, high = wilson_interval(successes, trials)        # a pooled proportion's score interval

Every statistic here is a ratio of sums over units, so one bootstrap replicate is a vector of
resampling weights (how often each unit was drawn, a multinomial count) and the replicate's
sums are one matrix product: (B, U) @ (U, C). A column without any count in a replicate is
left out of that replicate's mean, as the point estimate leaves out a column without counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from statistics import NormalDist

import numpy as np

REPLICATES = 2000  # bootstrap resamples; the interval ends move by < 0.5 points between seeds
LEVEL = 0.95


def resample_weights(units: int, replicates: int = REPLICATES, seed: int = 0) -> np.ndarray:
    """(replicates, units) counts: row b says how often each unit is drawn in resample b
    (each row sums to `units`)."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(units, np.full(units, 1.0 / units), size=replicates).astype(np.float64)


def _interval(values: np.ndarray, level: float) -> tuple[float, float] | None:
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return None
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_ratio(
    numerators: Sequence[float],
    denominators: Sequence[float],
    level: float = LEVEL,
    replicates: int = REPLICATES,
    seed: int = 0,
) -> tuple[float, float] | None:
    """Percentile interval of sum(numerators) / sum(denominators), resampling the units
    (entry i of both belongs to unit i). None with no unit or no count."""
    num = np.asarray(numerators, dtype=np.float64).reshape(-1, 1)
    den = np.asarray(denominators, dtype=np.float64).reshape(-1, 1)
    return bootstrap_mean_of_ratios(num, den, level, replicates, seed)


def bootstrap_mean_of_ratios(
    numerators: np.ndarray,
    denominators: np.ndarray,
    level: float = LEVEL,
    replicates: int = REPLICATES,
    seed: int = 0,
) -> tuple[float, float] | None:
    """numerators, denominators: (U, C), unit by column (e.g. dialogue by attribute).
    Percentile interval of the mean over columns of sum_u num[u, c] / sum_u den[u, c], the
    columns without any count left out (as the point estimate leaves them out)."""
    num = np.asarray(numerators, dtype=np.float64)
    den = np.asarray(denominators, dtype=np.float64)
    if num.shape != den.shape or num.ndim != 2:
        raise ValueError(f"numerators {num.shape} and denominators {den.shape} must be (U, C)")
    present = den.sum(0) > 0
    if len(num) == 0 or not present.any():
        return None
    weights = resample_weights(len(num), replicates, seed)  # (B, U)
    sums, counts = weights @ num[:, present], weights @ den[:, present]  # (B, C)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratios = sums / counts  # NaN where a resample drew no count of a column
    drawn = np.isfinite(ratios)
    means = np.where(drawn, ratios, 0).sum(1) / np.maximum(drawn.sum(1), 1)
    return _interval(np.where(drawn.any(1), means, np.nan), level)


def wilson_interval(successes: float, trials: float, level: float = LEVEL) -> tuple[float, float]:
    """The Wilson score interval of successes / trials (trials > 0), as if independent. Unlike
    the bootstrap it keeps a width at 0% and 100%: 104 of 104 gives [0.964, 1], where every
    resample of the units is 104 of 104 again."""
    if not 0 <= successes <= trials or trials <= 0:
        raise ValueError(f"need 0 <= successes <= trials and trials > 0, got {successes}, {trials}")
    z = float(NormalDist().inv_cdf(0.5 + level / 2))
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * np.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return float(low), float(high)


def ratio(numerator: float, denominator: float) -> float | None:
    """numerator / denominator, None for an empty denominator."""
    return float(numerator / denominator) if denominator else None


def mean_of_ratios(numerators: np.ndarray, denominators: np.ndarray) -> float | None:
    """The point estimate `bootstrap_mean_of_ratios` brackets: (U, C) -> the mean over the
    columns with counts of sum num / sum den."""
    num, den = np.asarray(numerators, np.float64), np.asarray(denominators, np.float64)
    if num.size == 0:
        return None
    present = den.sum(0) > 0
    if not present.any():
        return None
    return float((num.sum(0)[present] / den.sum(0)[present]).mean())
