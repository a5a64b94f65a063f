"""The ``tasks`` layout ("tune or not"): the systems of one model side by side across tasks.

One section per model; a row per system (fine-tuning, partial, LoRA, each feature
strategy), a column per task. A column is a (task, data source, primary metric): two data
sources of one task are two columns, never averaged together. A cell averages the seeds of
one system on one task, scored by the task's own primary dev metric
(``record["task"]["primary_metric"]``: accuracy, F1, MCC...) over the seeds whose score is
finite (``n=2 of 3`` where one is missing or NaN, ``— (n=0 of 3)`` where none is), with the
same metric on test in a column beside it wherever a record of the column has a test score
(a custom task's test file; GLUE's test labels are not public, so its tasks show dev only); the
settings that differ between the records of one system on one task split the system into
labelled rows, so a cell never mixes them. Every other system is then set against
fine-tuning on each task (the difference of means with its standard error), and a cost
table (trainable parameters, train time, examples/s, peak memory) follows.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from bertprobe.config import TASK_IDENTITY_OPTIONS
from bertprobe.errors import NoRecordsError
from bertprobe.formatting import (
    FLAGGED_NOTE,
    RESUMED_NOTE,
    flag_label,
    format_difference,
    format_mean_std,
    format_optional,
    format_p_value,
    format_parameters,
    format_train_time,
    joined_scores,
    markdown_table,
    plain,
    seed_count,
    setting_text,
    write_csv,
)
from bertprobe.record import Record, data_name, primary_metric, record_config
from bertprobe.rows import (
    LORA,
    TUNED_TAG,
    FinetuningGap,
    Row,
    SectionKey,
    canonical_json,
    differing_labels,
    finetuning_gaps,
    lora_rank_order,
    row_name,
    row_settings,
    system_key,
    system_rank,
)
from bertprobe.stats import mean_or_none, sample_std

#: Display names of tasks and metrics for the tasks layout's column headings, in column order.
TASK_NAMES: dict[str, str] = {
    "sst2": "SST-2",
    "mrpc": "MRPC",
    "rte": "RTE",
    "cola": "CoLA",
    "stsb": "STS-B",
    "qnli": "QNLI",
    "qqp": "QQP",
    "mnli": "MNLI",
    "wnli": "WNLI",
    "conll2003": "CoNLL-2003",
    "conll": "CoNLL",
    "custom": "Custom",
}
METRIC_NAMES: dict[str, str] = {"accuracy": "acc", "f1": "F1", "matthews": "MCC", "pearson": "Pearson r"}


TASKS_MARKDOWN_COST_COLUMNS = (
    "System",
    "Task",
    "Trainable params",
    "Train time (mean, s)",
    "Train examples/s",
    "Peak memory (MiB)",
)

TASKS_CSV_COLUMNS = (
    "model",
    "task",
    "data",
    "metric",
    "column",
    "system",
    "strategy",
    "settings",
    "dev_mean",
    "dev_std",
    "seeds",
    "seed_values",
    "dev_per_seed",
    "test_mean",
    "test_std",
    "test_per_seed",
    "trainable_parameters",
    "train_seconds_mean",
    "resumed_seeds",
    "finetuning_reference",
    "dev_delta_vs_finetuning",
    "dev_delta_vs_finetuning_se",
    "dev_delta_vs_finetuning_p",
    "test_delta_vs_finetuning",
    "test_delta_vs_finetuning_se",
    "test_delta_vs_finetuning_p",
    "train_examples_per_second",
    "peak_memory_bytes",
    "peak_memory_kind",
)

#: Options that change how much training data a run saw: unless every run of the model has
#: the same value (then stated under the table), they split and label a system's rows
#: wherever set, so a learning-curve point never passes for a full run.
_DATA_AMOUNT_KEYS = ("train_fraction", "max_train_examples")


@dataclass(frozen=True, order=True)
class TaskColumn:
    """A column of the tasks layout: one task on one data source, scored by its primary metric."""

    task: str
    data: str
    metric: str

    def order(self) -> tuple[int, str, str, str]:
        names = list(TASK_NAMES)
        return names.index(self.task) if self.task in names else len(names), self.task, self.data, self.metric


@dataclass
class TaskRow:
    """One system (with the settings that tell it apart on some task) across tasks: a
    :class:`Row` of seeds per task column."""

    system: str
    settings: dict[str, object]
    cells: dict[TaskColumn, Row] = field(default_factory=dict)

    @property
    def records(self) -> list[Record]:
        return [record for cell in self.cells.values() for record in cell.records]

    @property
    def tuned(self) -> bool:
        """Whether these are a tuned system's final runs (a row never mixes them with untuned ones)."""
        return any(cell.tuned for cell in self.cells.values())

    @property
    def label(self) -> str:
        name = row_name(self.system, self.records, self.tuned)
        shown = {key: value for key, value in self.settings.items() if not (self.system == LORA and key == "lora_rank")}
        details = ", ".join(f"{key}={setting_text(value)}" for key, value in shown.items())
        return f"{name} ({details})" if details else name


@dataclass
class TaskSection:
    """Every record of one model: its task columns (in :data:`TASK_NAMES` order) and rows."""

    model: str
    columns: list[TaskColumn]
    rows: list[TaskRow]
    #: Data-amount options (:data:`_DATA_AMOUNT_KEYS`) set to one value in every run of the model.
    common: dict[str, object] = field(default_factory=dict)

    def column_label(self, column: TaskColumn) -> str:
        """``SST-2 acc``; with the data source appended when the task has more than one."""
        name = f"{TASK_NAMES.get(column.task, column.task)} {METRIC_NAMES.get(column.metric, column.metric)}"
        sources = {other.data for other in self.columns if other.task == column.task}
        return f"{name} [{column.data}]" if len(sources) > 1 else name

    def splits(self, column: TaskColumn) -> tuple[str, ...]:
        """``("dev", "test")`` where a record of the column holds its metric on test (NaN
        included), else ``("dev",)``: GLUE's test labels are not public, so its records have none."""
        cells = [cell for row in self.rows if (cell := row.cells.get(column)) is not None]
        has_test = any(score is not None for cell in cells for score in cell.primary_per_seed("test"))
        return ("dev", "test") if has_test else ("dev",)

    def score_columns(self) -> list[tuple[TaskColumn, str, str]]:
        """The score columns of the main and gap tables in order, as (column, split, heading):
        ``SST-2 acc`` for a dev-only task, ``Custom acc dev`` and ``Custom acc test`` beside it
        for a task with test scores."""
        out = []
        for column in self.columns:
            label, splits = self.column_label(column), self.splits(column)
            out += [(column, split, label if len(splits) == 1 else f"{label} {split}") for split in splits]
        return out

    @property
    def has_test(self) -> bool:
        return any(split == "test" for _, split, _ in self.score_columns())

    @property
    def record_count(self) -> int:
        return sum(len(row.records) for row in self.rows)

    def finetuning_gaps(self) -> dict[int, tuple[TaskRow, FinetuningGap]]:
        """Per cell (keyed by ``id``): the fine-tuning row it is set against on its task and
        the gap in the task's primary metric (:func:`bertprobe.rows.finetuning_gaps`)."""
        gaps = {}
        for column in self.columns:
            owners = {id(row.cells[column]): row for row in self.rows if column in row.cells}  # cell -> its row
            cells = [row.cells[column] for row in owners.values()]
            for cell, gap in finetuning_gaps(cells, primary=True):
                gaps[id(cell)] = owners[id(gap.reference)], gap
        return gaps


def task_column(record: Record) -> TaskColumn:
    return TaskColumn(str(record_config(record).get("task", "?")), data_name(record), primary_metric(record))


def group_tasks(records: Iterable[Record]) -> list[TaskSection]:
    """One :class:`TaskSection` per model (sorted by model name)."""
    by_model: dict[str, list[Record]] = {}
    for record in records:
        by_model.setdefault(str(record_config(record).get("model", "?")), []).append(record)
    sections = []
    for model, model_records in sorted(by_model.items()):
        entries = []
        for record in model_records:
            system = system_key(record)
            entries.append((record, system, task_column(record), row_settings(record, system, TASK_IDENTITY_OPTIONS)))
        every = [settings for *_, settings in entries]
        uniform = {
            key for key in _DATA_AMOUNT_KEYS if len({canonical_json(settings.get(key)) for settings in every}) == 1
        }
        common = {key: every[0][key] for key in sorted(uniform) if every[0].get(key) is not None}
        splitting = _splitting_keys(
            [(family(settings, system), column, settings) for _, system, column, settings in entries], uniform
        )
        rows: dict[tuple[tuple[str, bool], str], TaskRow] = {}
        for record, system, column, settings in entries:
            key = family(settings, system)
            distinguishing = {name: settings.get(name) for name in sorted(splitting[key])}
            row = rows.setdefault((key, canonical_json(distinguishing)), TaskRow(system, distinguishing))
            row.cells.setdefault(column, Row(SectionKey.of(record), system, settings)).records.append(record)
        ordered = sorted(rows.values(), key=_task_row_order)
        columns = sorted({column for row in ordered for column in row.cells}, key=TaskColumn.order)
        sections.append(TaskSection(model, columns, ordered, common))
    return sections


def family(settings: dict[str, object], system: str) -> tuple[str, bool]:
    """A system and whether these are its tuned finals: the unit whose rows split by setting,
    so a tuned row is labelled apart from (and never merged with) the system's untuned runs."""
    return system, bool(settings.get(TUNED_TAG))


def _task_row_order(row: TaskRow) -> tuple[tuple[int, int, str], float, bool, str]:
    return (
        system_rank(row.system),
        lora_rank_order(row.system, row.settings),
        row.tuned,
        canonical_json(row.settings),
    )


def _splitting_keys(
    entries: Sequence[tuple[tuple[str, bool], TaskColumn, dict[str, object]]], uniform: Iterable[str] = ()
) -> dict[tuple[str, bool], set[str]]:
    """Per :func:`family`: the settings that differ between its records of one task column,
    and the data-amount options wherever any of its records set them (but those in ``uniform``)."""
    forced = set(_DATA_AMOUNT_KEYS) - set(uniform)
    groups: dict[tuple[tuple[str, bool], TaskColumn], list[dict[str, object]]] = {}
    for key, column, settings in entries:
        groups.setdefault((key, column), []).append(settings)
    splitting: dict[tuple[str, bool], set[str]] = {}
    for (family_key, _), group in groups.items():
        keys = splitting.setdefault(family_key, set())
        for key in {key for settings in group for key in settings}:
            if len({canonical_json(settings.get(key)) for settings in group}) > 1 or key in forced:
                keys.add(key)
    return splitting


def _format_cell(row: Row | None, split: str = "dev") -> str:
    """``mean ± std (n=k)`` on ``split`` over the seeds with a finite score; ``(n=k of N)`` when
    only k of the cell's N seeds have one (``— (n=0 of N)`` when none has); ``—`` when not run."""
    if row is None:
        return "—"
    scores = row.primary_scores(split)
    return f"{format_mean_std(scores)} (n={seed_count(len(scores), len(row.records))})"


def _partly_scored(section: TaskSection) -> bool:
    """Whether some cell of the section has seeds without a finite score (an ``n=k of N`` cell)."""
    return any(
        len(cell.primary_scores(split)) < len(cell.records)
        for row in section.rows
        for column, split, _ in section.score_columns()
        if (cell := row.cells.get(column)) is not None
    )


TASKS_SCORED_NOTE = (
    "`(n=k of N)`: only k of the cell's N seeds have a finite score (a correlation over constant predictions is "
    "undefined, NaN; a record may lack the metric): the mean, the std and the comparison with fine-tuning are over "
    "those k; `— (n=0 of N)`: none has one."
)


def _format_memory(peak: tuple[str, int] | None) -> str:
    return "—" if peak is None else f"{peak[1] / 2**20:,.0f} {peak[0]}"


def _cross_task_notes(section: TaskSection) -> list[str]:
    """Settings of one row that differ between its task columns (epochs per task, say)."""
    notes = []
    for row in section.rows:
        if len(row.cells) < 2:
            continue
        columns = sorted(row.cells, key=TaskColumn.order)
        labels = differing_labels([row.cells[column].settings for column in columns])
        if any(labels):
            parts = "; ".join(
                f"{section.column_label(column)}: {label}" for column, label in zip(columns, labels, strict=True)
            )
            notes.append(f"- {row.label}: {parts}")
    if not notes:
        return []
    return ["", "Settings that differ between the tasks of one row:", "", *notes]


TASKS_TEST_NOTE = (
    "`… dev` and `… test`: a task whose records hold a test score (a custom task given a test file, or a GLUE task "
    "run with --dev-from-train, whose dev is held-out training examples and whose test is GLUE's dev set) shows the "
    "same metric on test beside dev, scored with each run's best dev epoch, and against fine-tuning the test "
    "difference beside the dev one (the reference still chosen on dev); a task with a single column has no test "
    "score (GLUE's test labels are not public)."
)

TASKS_GAP_NOTE = (
    "Against fine-tuning: each cell's primary dev score minus fine-tuning's on the same task with as much "
    "data (the best on dev where there are several, among those with two seeds or more where there are any), "
    "mean difference ± its standard error √(s²/n + s²_ft/n_ft) "
    "over independent seeds, and in brackets the two-sided p of Welch's t-test (not corrected for the several "
    "cells compared); `n/a` where either has one seed; `—`: no fine-tuning to compare with."
)


def _gap_text(gap: FinetuningGap, split: str = "dev") -> str:
    """``+1.23 ± 0.40 (p 0.031)`` on ``split``; the p is left out where it is undefined;
    ``n/a`` where either side has no seed with a finite score on ``split``."""
    difference, error, p = _gap_values(gap, split)
    if difference is None:
        return "n/a"
    text = format_difference(difference, error)
    return text if p is None else f"{text} (p {format_p_value(p)})"


def _gap_values(gap: FinetuningGap | None, split: str) -> tuple[float | None, float | None, float | None]:
    """The difference of means on ``split``, its standard error and Welch's p (``None``s without a gap)."""
    if gap is None:
        return None, None, None
    return (gap.dev, gap.dev_error, gap.dev_p) if split == "dev" else (gap.test, gap.test_error, gap.test_p)


def _gap_lines(section: TaskSection) -> list[str]:
    gaps = section.finetuning_gaps()
    body = []
    for row in section.rows:
        texts = []
        for column, split, _ in section.score_columns():
            cell = row.cells.get(column)
            entry = None if cell is None else gaps.get(id(cell))
            texts.append("—" if entry is None else _gap_text(entry[1], split))
        if any(text != "—" for text in texts):  # fine-tuning itself, and rows with nothing to compare, stay out
            body.append([row.label, *texts])
    if not body:
        return []
    header = ["System", *(heading for _, _, heading in section.score_columns())]
    return ["", TASKS_GAP_NOTE, "", *markdown_table(header, body)]


def _score_table(section: TaskSection) -> list[str]:
    """The section's main table: a row per system, a column per task and split."""
    columns = section.score_columns()
    body = [
        [
            flag_label(row.label, sum(cell.flagged_seeds for cell in row.cells.values())),
            *(_format_cell(row.cells.get(column), split) for column, split, _ in columns),
        ]
        for row in section.rows
    ]
    return markdown_table(["System", *(heading for _, _, heading in columns)], body)


def render_tasks_markdown(records: Iterable[Record]) -> str:
    """Per model: the primary dev score of every system on every task (and test beside it
    where the records have one), then the cost of each
    (system, task): trainable parameters, train time, throughput and peak memory."""
    sections = group_tasks(records)
    if not sections:
        raise NoRecordsError("no result records to tabulate")
    blocks = []
    for section in sections:
        count = section.record_count
        lines = [f"## Model `{section.model}` · {count} record{'s' if count != 1 else ''}", ""]
        lines += _score_table(section)
        lines += [
            "",
            "Each task's primary dev metric in %: mean ± sample std (ddof=1) over n seeds; `n/a`: one seed; "
            "`—`: not run. A task with several data sources has a column per source.",
        ]
        if section.has_test:
            lines += ["", TASKS_TEST_NOTE]
        if _partly_scored(section):
            lines += ["", TASKS_SCORED_NOTE]
        if section.common:
            common = ", ".join(f"{key}={setting_text(value)}" for key, value in section.common.items())
            lines += ["", f"Every run: {common}."]
        lines += _cross_task_notes(section)
        lines += _gap_lines(section)
        cost = [
            [
                row.label,
                section.column_label(column),
                format_parameters(cell.trainable_parameters),
                format_train_time(cell.train_seconds, cell.resumed_seeds),
                format_optional(mean_or_none(cell.examples_per_second), ",.1f"),
                _format_memory(cell.peak_memory),
            ]
            for row in section.rows
            for column in section.columns
            if (cell := row.cells.get(column)) is not None
        ]
        lines += [
            "",
            "Cost per system and task (means over seeds; examples/s: training examples (windows) x epochs / "
            "train seconds; peak memory: the largest over seeds, GPU where recorded, else the process's RSS):",
            "",
            *markdown_table(TASKS_MARKDOWN_COST_COLUMNS, cost),
        ]
        if any(cell.resumed_seeds for row in section.rows for cell in row.cells.values()):
            lines += ["", RESUMED_NOTE]
        if any(cell.flagged_seeds for row in section.rows for cell in row.cells.values()):
            lines += ["", FLAGGED_NOTE]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def tasks_csv_rows(records: Iterable[Record]) -> list[dict[str, object]]:
    """One row per (model, system, task column), plain values (scores in %, ``None`` where undefined)."""
    out = []
    for section in group_tasks(records):
        gaps = section.finetuning_gaps()
        for row in section.rows:
            for column in section.columns:
                cell = row.cells.get(column)
                if cell is None:
                    continue
                parameters, peak = cell.trainable_parameters, cell.peak_memory
                tests = cell.primary_per_seed("test")  # all None for GLUE: no test labels
                reference, gap = gaps.get(id(cell), (None, None))
                out.append(
                    {
                        "model": section.model,
                        "task": column.task,
                        "data": column.data,
                        "metric": column.metric,
                        "column": section.column_label(column),
                        "system": row.label,
                        "strategy": row.system,
                        "settings": ", ".join(f"{key}={plain(value)}" for key, value in row.settings.items()),
                        "dev_mean": cell.dev_primary_mean,
                        "dev_std": cell.dev_primary_std,
                        "seeds": len(cell.records),
                        "seed_values": ";".join(plain(seed) for seed in cell.seeds),
                        "dev_per_seed": joined_scores(cell.primary_per_seed("dev")),
                        "test_mean": mean_or_none(cell.primary_scores("test")),
                        "test_std": sample_std(cell.primary_scores("test")),
                        "test_per_seed": joined_scores(tests) if any(v is not None for v in tests) else "",
                        "trainable_parameters": round(statistics.fmean(parameters)) if parameters else None,
                        "train_seconds_mean": mean_or_none(cell.train_seconds),
                        "resumed_seeds": cell.resumed_seeds,
                        "finetuning_reference": None if reference is None else reference.label,
                        **_csv_gap(gap, "dev"),
                        **_csv_gap(gap, "test"),
                        "train_examples_per_second": mean_or_none(cell.examples_per_second),
                        "peak_memory_bytes": None if peak is None else peak[1],
                        "peak_memory_kind": None if peak is None else peak[0],
                    }
                )
    return out


def _csv_gap(gap: FinetuningGap | None, split: str) -> dict[str, float | None]:
    """The CSV's ``{split}_delta_vs_finetuning`` columns: difference, standard error, p."""
    difference, error, p = _gap_values(gap, split)
    prefix = f"{split}_delta_vs_finetuning"
    return {prefix: difference, f"{prefix}_se": error, f"{prefix}_p": p}


def render_tasks_csv(records: Iterable[Record]) -> str:
    """The tasks layout in long form: a line per (model, system, task), empty cells where undefined."""
    return write_csv(tasks_csv_rows(records), TASKS_CSV_COLUMNS)
