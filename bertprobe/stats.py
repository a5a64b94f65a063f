"""The statistics over seeds that every table and figure reports: means and sample standard
deviations of the finite scores, the difference of two systems' means with its standard
error, and Welch's t-test of it."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence

from scipy.stats import t as student_t


def finite(values: Iterable[float | None]) -> list[float]:
    """The values that are finite numbers, in order: ``None`` (a seed without the metric) and
    NaN (a correlation over constant predictions, which the trainer records as NaN) left out."""
    return [value for value in values if value is not None and math.isfinite(value)]


def mean_or_none(values: Sequence[float | None]) -> float | None:
    """Mean of the finite values (:func:`finite`); ``None`` without any."""
    kept = finite(values)
    return statistics.fmean(kept) if kept else None


def sample_std(values: Sequence[float | None]) -> float | None:
    """Sample standard deviation (ddof=1) of the finite values; undefined (``None``) below two."""
    kept = finite(values)
    return statistics.stdev(kept) if len(kept) >= 2 else None


def difference_of_means(values: Sequence[float], reference: Sequence[float]) -> tuple[float | None, float | None]:
    """``mean(values) - mean(reference)`` and its standard error.

    The two sets of seeds are independent runs, so the error of the difference is
    ``sqrt(s_a**2 / n_a + s_b**2 / n_b)`` (each ``s`` the sample std, as in Welch's test);
    it is undefined (``None``) when either side has fewer than two values, and the
    difference itself when either side has none. Only finite values count (:func:`finite`).
    """
    values, reference = finite(values), finite(reference)
    mean, reference_mean = mean_or_none(values), mean_or_none(reference)
    if mean is None or reference_mean is None:
        return None, None
    std, reference_std = sample_std(values), sample_std(reference)
    if std is None or reference_std is None:
        return mean - reference_mean, None
    return mean - reference_mean, math.sqrt(std**2 / len(values) + reference_std**2 / len(reference))


def welch_p_value(values: Sequence[float], reference: Sequence[float]) -> float | None:
    """Two-sided p-value of Welch's t-test that ``values`` and ``reference`` share a mean.

    ``t`` is the difference of means over its standard error (:func:`difference_of_means`),
    with the Welch–Satterthwaite degrees of freedom
    ``(a + b)**2 / (a**2 / (n_a - 1) + b**2 / (n_b - 1))``, ``a = s_a**2 / n_a``,
    ``b = s_b**2 / n_b``: with few seeds on a side they are few, and a difference of two
    standard errors is far from significant (two fine-tuning seeds against five give about
    two degrees of freedom, where ``|t|`` must pass 4.3 for ``p < 0.05``). Undefined
    (``None``) below two finite values on either side, or when neither side varies.
    """
    values, reference = finite(values), finite(reference)
    difference, error = difference_of_means(values, reference)
    if difference is None or not error:  # one value on a side, or neither side varies
        return None
    a, b = statistics.variance(values) / len(values), statistics.variance(reference) / len(reference)
    degrees_of_freedom = (a + b) ** 2 / (a**2 / (len(values) - 1) + b**2 / (len(reference) - 1))
    return float(2 * student_t.sf(abs(difference / error), degrees_of_freedom))
