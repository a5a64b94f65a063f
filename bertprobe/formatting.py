"""Numbers into table cells: the statistics over seeds and how the layouts print them, and
the error of a table or figure with nothing in it.

Shared by the two table layouts, :mod:`bertprobe.table` and :mod:`bertprobe.tasks_table`, and
by :mod:`bertprobe.rows` (the seed statistics).
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections.abc import Iterable, Sequence

from scipy.stats import t as student_t

from bertprobe.errors import NoRecordsError


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


def format_p_value(p: float | None) -> str:
    """A p-value to three decimals, ``<0.001`` below that, ``n/a`` when undefined."""
    if p is None:
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def plain(value: object) -> str:
    return "none" if value is None else str(value)


def joined_scores(scores: Sequence[float | None]) -> str:
    """Scores as one CSV cell, ``;``-separated in seed order, an empty entry where a seed has none
    (``nan`` where its score is undefined)."""
    return ";".join("" if score is None else repr(score) for score in scores)


def format_mean_std(values: Sequence[float | None]) -> str:
    """``mean ± std`` of the finite values (``n/a`` for the std of one), ``—`` without any."""
    mean, std = mean_or_none(values), sample_std(values)
    if mean is None:
        return "—"
    return f"{mean:.2f} ± {'n/a' if std is None else f'{std:.2f}'}"


def seed_count(scored: int, seeds: int) -> str:
    """How many seeds a mean is over: ``3`` when every seed of the row has a finite score,
    ``2 of 3`` when only some have one."""
    return str(scored) if scored == seeds else f"{scored} of {seeds}"


def format_seed_scores(values: Sequence[float | None], seeds: int) -> str:
    """:func:`format_mean_std` of a row's scores (one per seed, ``seeds`` of them), followed
    by ``(k of n)`` when only ``k`` of them are finite; ``—`` when none is."""
    scored = len(finite(values))
    if scored == 0:
        return "—"
    text = format_mean_std(values)
    return text if scored == seeds else f"{text} ({seed_count(scored, seeds)})"


def format_difference(difference: float | None, error: float | None) -> str:
    """A signed difference ± its standard error (``n/a`` when undefined), ``—`` without one."""
    if difference is None:
        return "—"
    return f"{difference:+.2f} ± {'n/a' if error is None else f'{error:.2f}'}"


def format_parameters(values: Sequence[int]) -> str:
    if not values:
        return "—"
    low, high = min(values), max(values)
    return f"{low:,}" if low == high else f"{low:,}–{high:,}"


#: Marks a train time that adds up several processes (a run resumed from a checkpoint).
RESUMED_MARK = "†"
RESUMED_NOTE = (
    f"{RESUMED_MARK}: some seeds were resumed from a checkpoint; their train time adds up the processes "
    "that trained them (records since the `processes` list name each), which may have run on other machines "
    "or allocators."
)


#: Marks a system some of whose seeds' records flag their result.
FLAGGED_MARK = "‡"
FLAGGED_NOTE = (
    f"{FLAGGED_MARK}: some seeds' records flag their result (`health.reasons`): training diverged or learned nothing "
    "(one class for every dev example, no entity found); their scores are in the mean."
)


def flag_label(label: str, flagged_seeds: int) -> str:
    """``label`` marked with :data:`FLAGGED_MARK` when a seed's result is flagged."""
    return f"{label} {FLAGGED_MARK}" if flagged_seeds else label


def format_train_time(seconds: Sequence[float], resumed_seeds: int) -> str:
    """Mean train time in seconds, marked with :data:`RESUMED_MARK` when a seed was resumed."""
    text = format_optional(mean_or_none(seconds), ".1f")
    return f"{text} {RESUMED_MARK}" if resumed_seeds and seconds else text


def format_optional(value: float | None, pattern: str) -> str:
    return "—" if value is None else format(value, pattern)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown_table(header: Sequence[str], lines: Iterable[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(_cell(text) for text in line) + " |" for line in lines]
    return out


def write_csv(rows: Sequence[dict[str, object]], columns: Sequence[str]) -> str:
    """``rows`` as CSV text with a header line; ``None`` becomes an empty cell."""
    if not rows:
        raise NoRecordsError("no result records to tabulate")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: "" if value is None else value for key, value in row.items()})
    return buffer.getvalue()
