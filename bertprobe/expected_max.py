"""Expected validation performance: the best dev score to expect from n tuning trials.

Given the dev scores of N random-search trials of one system, how good a model would a
budget of n <= N trials find? Dodge et al. (2019, "Show Your Work: Improved Reporting of
Experimental Results") estimate it by drawing n of the N trials *with* replacement; Tang
et al. (2020, "Showing Your Work Doesn't Always Work") show that this is biased low and
draw *without* replacement instead, which is unbiased and equals the sample maximum at
n = N. With the scores sorted, ``v_1 <= ... <= v_N``:

* with replacement: ``E[max] = sum_i v_i * ((i/N)^n - ((i-1)/N)^n)``; the spread is the
  standard deviation of that maximum, ``sqrt(sum_i v_i^2 P_i - E[max]^2)``;
* without replacement: ``E[max] = sum_i v_i * C(i-1, n-1) / C(N, n)`` (the i-th smallest
  score is the maximum of a subset of n when the other n - 1 come from the i - 1 below).

Torch-free: tables and figures import it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ExpectedMax:
    """The expected maximum of n trials and the standard deviation of that maximum."""

    n: int
    mean: float
    std: float


def _sorted_finite(scores: Sequence[float]) -> list[float]:
    values = sorted(float(score) for score in scores if math.isfinite(float(score)))
    if not values:
        raise ValueError("no finite score to estimate from")
    return values


def _check_budget(n: int, count: int) -> None:
    if not 1 <= n <= count:
        raise ValueError(f"n must be in 1..{count} (the number of trials), got {n}")


def with_replacement(scores: Sequence[float], n: int) -> ExpectedMax:
    """Dodge et al.'s estimate: the maximum of n trials drawn with replacement."""
    values = _sorted_finite(scores)
    count = len(values)
    _check_budget(n, count)
    weights = [(i / count) ** n - ((i - 1) / count) ** n for i in range(1, count + 1)]
    mean = sum(w * v for w, v in zip(weights, values, strict=True))
    second = sum(w * v * v for w, v in zip(weights, values, strict=True))
    return ExpectedMax(n, mean, math.sqrt(max(second - mean * mean, 0.0)))


def without_replacement(scores: Sequence[float], n: int) -> ExpectedMax:
    """Tang et al.'s unbiased estimate: the maximum of n of the N trials, drawn without
    replacement (every subset of n equally likely)."""
    values = _sorted_finite(scores)
    count = len(values)
    _check_budget(n, count)
    subsets = math.comb(count, n)
    weights = [math.comb(i - 1, n - 1) / subsets for i in range(1, count + 1)]
    mean = sum(w * v for w, v in zip(weights, values, strict=True))
    second = sum(w * v * v for w, v in zip(weights, values, strict=True))
    return ExpectedMax(n, mean, math.sqrt(max(second - mean * mean, 0.0)))


ESTIMATORS = {"without_replacement": without_replacement, "with_replacement": with_replacement}


def curve(scores: Sequence[float], estimator: str = "without_replacement") -> list[ExpectedMax]:
    """The expected maximum for every budget n = 1..N."""
    function = ESTIMATORS[estimator]
    count = len(_sorted_finite(scores))
    return [function(scores, n) for n in range(1, count + 1)]
