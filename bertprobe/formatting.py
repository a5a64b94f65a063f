"""Numbers into table cells: how the layouts print the statistics over seeds
(:mod:`bertprobe.stats`). Shared by the two table layouts, :mod:`bertprobe.table` and
:mod:`bertprobe.tasks_table`."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Sequence
from decimal import Decimal

from bertprobe.errors import NoRecordsError
from bertprobe.stats import finite, mean_or_none, sample_std


def format_p_value(p: float | None) -> str:
    """A p-value to three decimals, ``<0.001`` below that, ``n/a`` when undefined."""
    if p is None:
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def plain(value: object) -> str:
    return "none" if value is None else str(value)


def setting_text(value: object, significant: int | None = None) -> str:
    """A configuration value as a row label or settings cell writes it: a float below 0.01 in
    the short scientific form learning rates are written in (``5e-5``, ``2.12e-4``, where
    ``str`` writes ``5e-05`` but ``0.0002``), any other value as :func:`plain` does.
    ``significant`` first rounds a float to that many significant digits."""
    if not isinstance(value, float):
        return plain(value)
    if significant is not None:
        value = float(f"{value:.{significant}g}")
    if value == 0 or not math.isfinite(value) or abs(value) >= 0.01:
        return f"{value:g}" if significant is not None else str(value)
    return f"{Decimal(repr(value)):e}"


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
