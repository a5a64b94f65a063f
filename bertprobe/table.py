"""Render rows as the BERT paper's Table 7: our mean over seeds next to the paper's numbers.

One section per (model, task, data, context) (see :mod:`bertprobe.rows` for how records
become rows). Numbers are F1 in percent. ``mean ± std`` uses the sample standard deviation
(``ddof=1``). With a single seed the standard deviation is undefined: the Markdown shows
``n/a`` in its place (``95.12 ± n/a``), the CSV leaves ``dev_f1_std`` empty, and the plot
draws no error bar. A seed whose score is missing or NaN (undefined) is left out of the mean
and std: the cell then says how many seeds it is over (``95.12 ± 0.40 (2 of 3)``), and shows
``—`` when none has a score; the Seeds column counts every record. Beneath the main table,
every other row is set against full fine-tuning (:func:`bertprobe.rows.finetuning_gaps`:
the difference of means with its standard error, and the paper's difference); then, for
``last4weighted`` and ``allweighted`` rows, the learned layer weights.

The other layout, ``tasks`` (:mod:`bertprobe.tasks_table`), puts the systems of one model
side by side across tasks. :data:`LAYOUTS` names both for ``bertprobe table --layout``.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Sequence

from bertprobe.errors import NoRecordsError
from bertprobe.formatting import (
    FLAGGED_NOTE,
    RESUMED_NOTE,
    flag_label,
    format_difference,
    format_optional,
    format_p_value,
    format_parameters,
    format_seed_scores,
    format_train_time,
    joined_scores,
    markdown_table,
    plain,
    write_csv,
)
from bertprobe.paper import PAPER_TASK, PAPER_TEST_F1
from bertprobe.record import Record
from bertprobe.rows import (
    FINETUNE,
    FinetuningGap,
    Row,
    SectionKey,
    finetuning_gaps,
    group_rows,
    has_several_finetuning_rows,
)
from bertprobe.stats import mean_or_none, sample_std
from bertprobe.tasks_table import render_tasks_csv, render_tasks_markdown

CSV_COLUMNS = (
    "model",
    "task",
    "data",
    "context",
    "system",
    "strategy",
    "settings",
    "dev_f1_mean",
    "dev_f1_std",
    "test_f1_mean",
    "test_f1_std",
    "seeds",
    "seed_values",
    "dev_f1_per_seed",
    "test_f1_per_seed",
    "paper_dev_f1",
    "paper_test_f1",
    "delta_dev",
    "trainable_parameters",
    "train_seconds_mean",
    "resumed_seeds",
    "finetuning_reference",
    "delta_dev_vs_finetuning",
    "delta_dev_vs_finetuning_se",
    "delta_dev_vs_finetuning_p",
    "delta_test_vs_finetuning",
    "delta_test_vs_finetuning_se",
    "delta_test_vs_finetuning_p",
    "paper_delta_dev_vs_finetuning",
)

MARKDOWN_COLUMNS = (
    "System",
    "Dev F1 (mean ± std)",
    "Test F1 (mean ± std)",
    "Seeds",
    "Paper dev F1",
    "Δ dev vs paper",
    "Trainable params",
    "Train time (mean, s)",
)


def _format_seeds(row: Row) -> str:
    count, distinct = len(row.records), len({json.dumps(seed) for seed in row.seeds})
    return str(count) if distinct == count else f"{count} ({distinct} distinct)"


def section_heading(section: SectionKey, rows: Sequence[Row]) -> str:
    count = sum(len(row.records) for row in rows)
    return (
        f"## Model `{section.model}` · data `{section.data}` ({section.task}) · "
        f"context {section.context} · {count} record{'s' if count != 1 else ''}"
    )


#: Explains the ``(k of n)`` of a score cell; printed under a table that shows one.
SCORED_NOTE = (
    "`(k of n)`: only k of the row's n seeds (the Seeds column) have a finite F1 (a record may lack the metric, "
    "or hold NaN where it is undefined): the mean, the std and the comparisons with fine-tuning are over those k; "
    "`—`: no seed has one."
)


def _main_lines(rows: Sequence[Row]) -> list[list[str]]:
    return [
        [
            flag_label(row.label, row.flagged_seeds),
            format_seed_scores(row.f1_per_seed("dev"), len(row.records)),
            format_seed_scores(row.f1_per_seed("test"), len(row.records)),
            _format_seeds(row),
            format_optional(row.paper_dev_f1, ".1f"),
            format_optional(row.delta_dev, "+.2f"),
            format_parameters(row.trainable_parameters),
            format_train_time(row.train_seconds, row.resumed_seeds),
        ]
        for row in rows
    ]


GAP_NOTE = (
    "Against fine-tuning: each row's F1 minus that of the fine-tuning row trained on as much data "
    "(the best on dev where there are several, among those with two seeds or more where there are any), "
    "mean difference ± its standard error "
    "√(s²/n + s²_ft/n_ft) over independent seeds; p: two-sided Welch's t-test of the difference "
    "(Welch–Satterthwaite degrees of freedom, few when a row has few seeds; not corrected for the several "
    "rows compared); `n/a` where either row has one seed."
)


def _gap_lines(rows: Sequence[Row]) -> list[str]:
    gaps = finetuning_gaps(rows)
    if not gaps:
        return []
    references = {id(gap.reference) for _, gap in gaps}
    several = len(references) > 1 or has_several_finetuning_rows(rows)  # name the reference where one was chosen
    header = [
        "System",
        *(["Against"] if several else []),
        "Δ dev F1 vs fine-tuning",
        "p (dev)",
        "Δ test F1 vs fine-tuning",
        "p (test)",
        "Paper Δ dev",
    ]
    lines = [
        [
            row.label,
            *([gap.reference.label] if several else []),
            format_difference(gap.dev, gap.dev_error),
            format_p_value(gap.dev_p),
            format_difference(gap.test, gap.test_error),
            format_p_value(gap.test_p),
            format_optional(gap.paper_dev, "+.1f"),
        ]
        for row, gap in gaps
    ]
    return ["", GAP_NOTE, "", *markdown_table(header, lines)]


def _layer_label(layer: int) -> str:
    return "L0 (emb)" if layer == 0 else f"L{layer}"


def _weights_lines(rows: Sequence[Row]) -> list[str]:
    weighted = [(row, learned) for row in rows if (learned := row.layer_weights()) is not None]
    if not weighted:
        return []
    layers = sorted({layer for _, (means, _, _) in weighted for layer in means})
    header = ["System", "Seeds", "γ (mean)", *(_layer_label(layer) for layer in layers)]
    lines = []
    for row, (means, gamma, count) in weighted:
        top = max(means.values()) if means else None
        cells = []
        for layer in layers:
            if layer not in means:
                cells.append("")
            else:
                text = f"{means[layer]:.3f}"
                cells.append(f"**{text}**" if means[layer] == top else text)
        lines.append([row.label, str(count), format_optional(gamma, ".3f"), *cells])
    return [
        "",
        "Learned layer weights (softmax-normalised scalar mix, mean over seeds; largest in bold):",
        "which layers the task leans on.",
        "",
        *markdown_table(header, lines),
    ]


def _partly_scored(row: Row) -> bool:
    """Whether some but not all of the row's seeds have a finite dev or test F1 (a ``(k of n)`` cell)."""
    return any(0 < len(row.f1_scores(split)) < len(row.records) for split in ("dev", "test"))


def render_markdown(records: Iterable[Record]) -> str:
    """One section per (model, task, data, context): heading, main table, notes, and the
    learned layer weights where any row has them."""
    sections = group_rows(records)
    if not sections:
        raise NoRecordsError("no result records to tabulate")
    blocks = []
    for section, rows in sections.items():
        lines = [section_heading(section, rows), ""]
        lines += markdown_table(MARKDOWN_COLUMNS, _main_lines(rows))
        note = "F1 in %, mean ± sample std (ddof=1) over seeds; `n/a`: one seed."
        if section.task == PAPER_TASK:
            note += (
                " Paper: BERT-base, Devlin et al. (2019) Table 7; paper test F1 (fine-tuning only): "
                f"{PAPER_TEST_F1[FINETUNE]:.1f}."
            )
        else:
            note += f" The paper's Table 7 is {PAPER_TASK} only: no paper values here."
        lines += ["", note]
        if any(_partly_scored(row) for row in rows):
            lines += ["", SCORED_NOTE]
        if any(row.resumed_seeds for row in rows):
            lines += ["", RESUMED_NOTE]
        if any(row.flagged_seeds for row in rows):
            lines += ["", FLAGGED_NOTE]
        lines += _gap_lines(rows)
        lines += _weights_lines(rows)
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def csv_rows(records: Iterable[Record]) -> list[dict[str, object]]:
    """The table's rows as plain values (F1 in %, ``None`` where undefined)."""
    out = []
    for section, rows in group_rows(records).items():
        gaps = {id(row): gap for row, gap in finetuning_gaps(rows)}
        for row in rows:
            parameters = row.trainable_parameters
            out.append(
                {
                    "model": section.model,
                    "task": section.task,
                    "data": section.data,
                    "context": section.context,
                    "system": row.label,
                    "strategy": row.system,
                    "settings": row.label_settings,
                    "dev_f1_mean": mean_or_none(row.dev_f1),
                    "dev_f1_std": sample_std(row.dev_f1),
                    "test_f1_mean": mean_or_none(row.test_f1),
                    "test_f1_std": sample_std(row.test_f1),
                    "seeds": len(row.records),
                    "seed_values": ";".join(plain(seed) for seed in row.seeds),
                    "dev_f1_per_seed": joined_scores(row.f1_per_seed("dev")),
                    "test_f1_per_seed": joined_scores(row.f1_per_seed("test")),
                    "paper_dev_f1": row.paper_dev_f1,
                    "paper_test_f1": row.paper_test_f1,
                    "delta_dev": row.delta_dev,
                    "trainable_parameters": round(statistics.fmean(parameters)) if parameters else None,
                    "train_seconds_mean": mean_or_none(row.train_seconds),
                    "resumed_seeds": row.resumed_seeds,
                    **_gap_values(gaps.get(id(row))),
                }
            )
    return out


def _gap_values(gap: FinetuningGap | None) -> dict[str, object]:
    """The CSV's against-fine-tuning columns; empty for fine-tuning and rows without a reference."""
    if gap is None:
        return dict.fromkeys(CSV_COLUMNS[CSV_COLUMNS.index("finetuning_reference") :])
    return {
        "finetuning_reference": gap.reference.label,
        "delta_dev_vs_finetuning": gap.dev,
        "delta_dev_vs_finetuning_se": gap.dev_error,
        "delta_dev_vs_finetuning_p": gap.dev_p,
        "delta_test_vs_finetuning": gap.test,
        "delta_test_vs_finetuning_se": gap.test_error,
        "delta_test_vs_finetuning_p": gap.test_p,
        "paper_delta_dev_vs_finetuning": gap.paper_dev,
    }


def render_csv(records: Iterable[Record]) -> str:
    """Same rows as :func:`render_markdown`, unformatted numbers, empty cells where undefined."""
    return write_csv(csv_rows(records), CSV_COLUMNS)


#: The table layouts of ``bertprobe table --layout``: name -> (Markdown renderer, CSV renderer).
LAYOUTS = {
    "table7": (render_markdown, render_csv),
    "tasks": (render_tasks_markdown, render_tasks_csv),
}
