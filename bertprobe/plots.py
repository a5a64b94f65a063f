"""Plots of result records, one function per ``bertprobe plot --kind``:

* ``table7``: our dev F1 per system next to the paper's Table 7, for tagging tasks
  (:func:`plot_table7`);
* ``tasks``: each system's score on each task, dev and (where recorded) test, for GLUE and
  custom tasks as for tagging ones (:func:`plot_tasks`: the tasks layout's table drawn);
* ``layers``: a probe per single layer, dev score against layer index, with fine-tuning as
  a dashed reference line (:func:`plot_layers`, data from :func:`layer_curves`);
* ``cost``: dev score against train time per configuration (:func:`plot_cost`, data from
  :func:`cost_points`);
* ``curve``: learning curves, dev score against the training fraction
  (:func:`plot_learning_curves`, data from :func:`learning_curves`).

Scores are each task's primary dev metric in percent; bands and error bars are the sample
standard deviation over seeds (none for one seed). A seed whose score is missing or NaN
(undefined) is left out of every point, and a point's ``n`` says how many seeds it is over
(``n=2 of 3`` where some were left out); a point with none is not drawn. No figure is
drawn with an empty panel: a panel with nothing to draw is left out, and where every
panel would be, :class:`NoRecordsError` says what the kind needs. Every PNG is written
atomically.
"""

from __future__ import annotations

import json
import math
import os
import re
import statistics
import textwrap
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # after choosing the backend
from matplotlib.figure import Figure

from bertprobe.errors import NoRecordsError
from bertprobe.formatting import seed_count
from bertprobe.record import Record, primary_score, recorded
from bertprobe.results import temporary_beside
from bertprobe.rows import FINETUNE, Row, SectionKey, differing_labels, finetuning_gaps, group_rows, row_settings
from bertprobe.stats import finite, mean_or_none, sample_std
from bertprobe.tasks import TAGGING_TASKS
from bertprobe.tasks_table import TASK_NAMES, TaskColumn, TaskSection, group_tasks


def label_bar_feet(axis, positions: list[int], means: list[float | None], rows: list[Row]) -> None:
    """Each bar's mean and seed count inside its foot, clear of error bars and paper ticks."""
    bottom = axis.get_ylim()[0]
    for x, mean, row in zip(positions, means, rows, strict=True):
        if mean is not None:
            axis.annotate(
                f"{mean:.1f}\nn={seed_count(len(row.dev_f1), len(row.records))}", (x, bottom), xytext=(0, 4),
                textcoords="offset points", ha="center", va="bottom", fontsize=7, color="white",
            )  # fmt: skip


def draw_table7_panel(axis, section: SectionKey, rows: list[Row], width: float) -> bool:
    """One model + data section of :func:`plot_table7` on ``axis``; whether it drew the
    paper's values."""
    positions = list(range(len(rows)))
    means = [row.dev_f1_mean for row in rows]
    stds = [row.dev_f1_std for row in rows]
    heights = [math.nan if mean is None else mean for mean in means]
    errors = [math.nan if std is None else std for std in stds]  # one seed: no error bar
    axis.bar(positions, heights, width=0.6, yerr=errors, capsize=4, color="tab:blue", alpha=0.8, label="ours")
    paper = [(x, row.paper_dev_f1) for x, row in zip(positions, rows, strict=True) if row.paper_dev_f1]
    if paper:
        axis.scatter(
            [x for x, _ in paper],
            [value for _, value in paper],
            marker="_",
            s=700,
            linewidths=2.5,
            color="black",
            zorder=3,
            label="paper (BERT-base)",
        )
    seeds = seed_points(rows)
    if seeds:
        axis.scatter(
            [x for x, _ in seeds],
            [value for _, value in seeds],
            s=9,
            color="navy",
            edgecolors="white",
            linewidths=0.4,
            zorder=4,
            label="ours: each seed",
        )
    reference = finetuning_reference(rows)
    if reference is not None and reference.dev_f1_mean is not None:  # the bar to beat, across the panel
        name = reference.label[0].lower() + reference.label[1:]  # "fine-tuning (lr=5e-5)" where a grid gave several
        line = {"color": "tab:red", "linestyle": "--", "linewidth": 1.2, "zorder": 2}
        axis.axhline(reference.dev_f1_mean, label=f"ours: {name}", **line)
    ours = [(m, s or 0.0) for m, s in zip(means, stds, strict=True) if m is not None]
    lows = [m - s for m, s in ours] + [v for _, v in paper] + [v for _, v in seeds]
    highs = [m + s for m, s in ours] + [v for _, v in paper] + [v for _, v in seeds]
    if lows:  # zoom in on the differences, which are a few points at most
        axis.set_ylim(max(0.0, min(lows) - 5.0), max(highs) + 2.0)
    label_bar_feet(axis, positions, means, rows)
    axis.set_xlim(-0.6, max(len(rows), 3) - 0.4)
    axis.set_xticks(positions)
    axis.set_xticklabels([row.label for row in rows], rotation=30, ha="right", fontsize=8)
    axis.set_ylabel("dev F1 (%)")
    count = sum(len(row.records) for row in rows)
    axis.set_title(
        fit_to_width(
            f"{section.model} · {section.data} ({section.task}, {section.context} context) · {count} records",
            width,
            fontsize=9,
        ),
        fontsize=9,
    )
    axis.grid(axis="y", alpha=0.3)
    axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    return bool(paper)


def plot_table7(records: Iterable[Record], path: str | Path) -> Path:
    """Bars of our mean dev F1 per system (error bars: sample std over seeds, none for one
    seed; a dot per seed, :func:`seed_points`) with the paper's dev F1 as a black tick and
    our fine-tuning's as a dashed line (:func:`finetuning_reference`); one panel per model +
    data section of a tagging task with a dev F1 (:func:`table7_sections`).
    The PNG is written atomically; returns its path."""
    sections = table7_sections(records)
    if not sections:
        raise NoRecordsError(
            "no tagging-task records with a dev F1 to plot: --kind table7 draws entity F1 beside the paper's "
            "Table 7 (conll2003, conll); for GLUE or custom tasks use --kind tasks"
        )
    rows_most = max(len(rows) for rows in sections.values())
    width = max(8.0, 1.1 * rows_most + 2.0)
    figure, axes = plt.subplots(len(sections), 1, figsize=(width, 4.8 * len(sections)), squeeze=False)
    paper_labelled = False
    for axis, (section, rows) in zip(axes[:, 0], sections.items(), strict=True):
        paper_labelled = draw_table7_panel(axis, section, rows, width) or paper_labelled
    title = (
        "CoNLL-2003 NER dev F1: fine-tuning vs frozen features (paper: Devlin et al. 2019, Table 7)"
        if paper_labelled
        else "Dev F1 per system"
    )
    figure.suptitle(fit_to_width(title, width, fontsize=10), fontsize=10)
    return save_atomic(figure, path)


def table7_sections(records: Iterable[Record]) -> dict[SectionKey, list[Row]]:
    """The sections of :func:`bertprobe.rows.group_rows` that the Table 7 figure can draw:
    tagging tasks (its scale is entity F1) where some row has a finite dev F1. A GLUE or
    custom task, or a section whose every seed lacks the score, would be an empty panel."""
    return {
        section: rows
        for section, rows in group_rows(records).items()
        if section.task in TAGGING_TASKS and any(row.dev_f1 for row in rows)
    }


def seed_points(rows: Sequence[Row], spread: float = 0.24) -> list[tuple[float, float]]:
    """Each seed's dev F1 as a point ``(x, F1)`` over its row's bar (bar ``i`` stands at
    ``x = i``), spaced evenly across ``spread`` of the bar's width in record order so that
    close seeds stay apart. A row of one seed has none: its bar is that seed."""
    points: list[tuple[float, float]] = []
    for x, row in enumerate(rows):
        values = row.dev_f1
        if len(values) < 2:
            continue
        step = spread / (len(values) - 1)
        points += [(x - spread / 2 + index * step, value) for index, value in enumerate(values)]
    return points


def finetuning_reference(rows: Sequence[Row]) -> Row | None:
    """The fine-tuning row every other row of a section is set against
    (:func:`bertprobe.rows.finetuning_gaps`); ``None`` when there is none, or several (a
    learning curve's sizes), where one line across the panel would mislead."""
    references = {id(gap.reference): gap.reference for _, gap in finetuning_gaps(rows)}
    if len(references) != 1:
        return None
    [reference] = references.values()
    return reference


def fit_to_width(text: str, width_inches: float, fontsize: float) -> str:
    """``text`` broken into lines that fit a figure ``width_inches`` wide, estimating a
    character at 0.6 of the font size (in points, 72 to the inch)."""
    characters = max(20, int(width_inches * 72 / (0.6 * fontsize)))
    return textwrap.fill(text, characters)


def save_atomic(figure: Figure, path: str | Path) -> Path:
    """Lay out and write ``figure`` as a PNG via a temporary file renamed into place (a reader
    never sees half a file), then close it; returns the path. The saved image grows to hold
    every title, label and legend, so text beyond the figure's edges is never cut off."""
    figure.tight_layout()
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = temporary_beside(target)
    os.close(handle)
    try:
        figure.savefig(temporary, format="png", dpi=120, bbox_inches="tight")
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    finally:
        plt.close(figure)
    return target


# ----------------------------------------------------------------------------- data for the plots


@dataclass(frozen=True)
class CurvePoint:
    """One x value of a curve: the mean primary dev score (%) over ``n`` seeds and its
    sample std (``None`` for one seed)."""

    x: float
    mean: float
    std: float | None
    n: int


@dataclass
class Curve:
    """A line of a plot: points of one configuration in one (model, task, data) section."""

    section: SectionKey
    label: str
    points: list[CurvePoint]
    system: str = ""  # the row's system key: its colour (:func:`colors_by_system`)
    tuned: bool = False  # a tuned variant: drawn dashed, in its system's colour


@dataclass(frozen=True)
class Reference:
    """A horizontal line: fine-tuning's mean dev score in a section."""

    section: SectionKey
    label: str
    mean: float


@dataclass(frozen=True)
class CostPoint:
    """One table row (configuration): mean train seconds, mean dev score (over the ``n`` of
    its ``seeds`` that have a finite one), mean trainable parameters."""

    section: SectionKey
    label: str
    system: str
    seconds: float
    score: float
    std: float | None
    parameters: int | None
    n: int
    seeds: int


def _point(x: float, records: Sequence[Record]) -> CurvePoint | None:
    """The point of ``records`` at ``x``: over the seeds with a finite score; ``None`` without any."""
    scores = finite(primary_score(record) for record in records)
    if not scores:
        return None
    return CurvePoint(x, statistics.fmean(scores), statistics.stdev(scores) if len(scores) > 1 else None, len(scores))


def _short_model(model: str) -> str:
    return model.rstrip("/").split("/")[-1]


def _section_title(section: SectionKey) -> str:
    task = TASK_NAMES.get(section.task, section.task)
    return f"{_short_model(section.model)} · {task} ({section.metric}) · {section.data}"


#: Strategy names that are one hidden state, as integers (``-1``: the last layer).
_SINGLE_LAYER_NAMES = {"embeddings": "0", "last": "-1", "second_last": "-2"}


def single_layer(record: Record) -> int | None:
    """The hidden-state index (0 = embeddings) of a feature run that reads exactly one layer
    (``--layers 3``, ``last``...); ``None`` for other runs and for a learned mix of one layer."""
    if recorded(record, "config", "mode") != "feature":
        return None
    indices = recorded(record, "layers", "indices")
    if isinstance(indices, list):
        combine = recorded(record, "layers", "combine") or "concat"
        return int(indices[0]) if len(indices) == 1 and combine != "weighted" else None
    text = str(recorded(record, "config", "layers") or "last").replace(" ", "")
    match = re.fullmatch(r"(-?\d+)(?::(concat|sum|mean))?", _SINGLE_LAYER_NAMES.get(text, text))
    if match is None:
        return None
    index = int(match.group(1))
    if index >= 0:
        return index
    depth = recorded(record, "encoder", "num_layers")
    return None if depth is None else int(depth) + 1 + index


def layer_curves(records: Iterable[Record]) -> tuple[list[Curve], list[Reference]]:
    """Per (model, task, data) section and per setting of the single-layer feature runs (the
    head, say): mean dev score per layer index, over the layers with a finite score (a
    curve with none is left out). Plus fine-tuning's mean per row of the sections that
    have a curve, as references."""
    records = list(records)
    groups: dict[tuple[SectionKey, str], dict[int, list[Record]]] = {}
    settings_of: dict[tuple[SectionKey, str], dict[str, object]] = {}
    for record in records:
        layer = single_layer(record)
        if layer is None:
            continue
        settings = row_settings(record, ignore=("layers",))
        key = (SectionKey.of(record), json.dumps(settings, sort_keys=True, default=str))
        groups.setdefault(key, {}).setdefault(layer, []).append(record)
        settings_of[key] = settings
    curves = []
    for section in sorted({section for section, _ in groups}):
        keys = sorted(key for key in groups if key[0] == section)
        labels = differing_labels([settings_of[key] for key in keys])
        for key, label in zip(keys, labels, strict=True):
            points = [point for layer, same in sorted(groups[key].items()) if (point := _point(layer, same))]
            name = f"{_short_model(section.model)} · {TASK_NAMES.get(section.task, section.task)}"
            if points:  # every seed of every layer without a finite score: nothing to draw
                curves.append(Curve(section, f"{name} ({label})" if label else name, points))
    sections = {curve.section for curve in curves}
    finetuned = [record for record in records if (record.get("config") or {}).get("mode", FINETUNE) == FINETUNE]
    references = []
    for section, rows in group_rows(finetuned).items():
        if section in sections:
            for row in rows:
                if row.dev_primary_mean is not None:
                    label = f"{_short_model(section.model)} · {TASK_NAMES.get(section.task, section.task)} {row.label}"
                    references.append(Reference(section, label, row.dev_primary_mean))
    return curves, references


def cost_points(records: Iterable[Record]) -> list[CostPoint]:
    """One point per table row that has both a train time and a finite dev score."""
    points = []
    for section, rows in group_rows(records).items():
        for row in rows:
            seconds, score = row.train_seconds, row.dev_primary_mean
            if not seconds or score is None:
                continue
            parameters = row.trainable_parameters
            points.append(
                CostPoint(
                    section,
                    row.label,
                    row.system,
                    statistics.fmean(seconds),
                    score,
                    row.dev_primary_std,
                    round(statistics.fmean(parameters)) if parameters else None,
                    len(row.dev_primary),
                    len(row.records),
                )
            )
    return points


#: Settings a learning curve may vary with the training-set size: the size itself, and the
#: budget a protocol gives each size (more epochs and sparser dev passes for small sets,
#: as in experiments/learning_curve.yaml). Runs differing only in these share a curve.
CURVE_BUDGET_SETTINGS = ("train_fraction", "epochs", "eval_every")


def learning_curves(records: Iterable[Record]) -> list[Curve]:
    """Per table row (:data:`CURVE_BUDGET_SETTINGS` aside): mean dev score per training
    fraction; a run without ``train_fraction`` trained on everything (1.0). Runs limited by
    ``max_train_examples`` have no fraction and are left out."""
    usable = [record for record in records if (record.get("config") or {}).get("max_train_examples") is None]
    curves = []
    for section, rows in group_rows(usable, ignore=CURVE_BUDGET_SETTINGS).items():
        for row in rows:
            by_fraction: dict[float, list[Record]] = {}
            for record in row.records:
                fraction = (record.get("config") or {}).get("train_fraction")
                by_fraction.setdefault(1.0 if fraction is None else float(fraction), []).append(record)
            points = [point for fraction, same in sorted(by_fraction.items()) if (point := _point(fraction, same))]
            if points:
                curves.append(Curve(section, row.label, points, row.system, row.tuned))
    return curves


# ----------------------------------------------------------------------------- drawing


def _band(axis, curve: Curve, color: object, marker: str = "o") -> None:
    """The curve's means as a line with a ± std band (points with one seed add no width); a
    tuned variant dashed, with square markers, in its system's colour."""
    xs = [point.x for point in curve.points]
    means = [point.mean for point in curve.points]
    style = {"linestyle": "--", "marker": "s", "markersize": 5} if curve.tuned else {"marker": marker, "markersize": 4}
    axis.plot(xs, means, color=color, label=curve.label, **style)
    if any(point.std is not None for point in curve.points):
        stds = [point.std or 0.0 for point in curve.points]
        lows = [mean - std for mean, std in zip(means, stds, strict=True)]
        highs = [mean + std for mean, std in zip(means, stds, strict=True)]
        axis.fill_between(xs, lows, highs, color=color, alpha=0.2, linewidth=0)


def _colors(count: int) -> list[object]:
    cycle = plt.get_cmap("tab10")
    return [cycle(index % 10) for index in range(count)]


def colors_by_system(systems: Sequence[str]) -> list[object]:
    """A colour per item, one per distinct system in order of first appearance, so every
    configuration of a system (each training-set size, say) shares its colour; where each
    system has one learning curve, it gets that curve's colour."""
    palette = dict(zip(dict.fromkeys(systems), _colors(len(set(systems))), strict=True))
    return [palette[system] for system in systems]


def plot_layers(records: Iterable[Record], path: str | Path) -> Path:
    """Dev score of a probe on each single layer (x: 0 = embeddings .. L), a line per model
    and task (band: ± sample std over seeds), fine-tuning dashed in the same colour."""
    curves, references = layer_curves(records)
    if not curves:
        raise NoRecordsError("no single-layer feature runs (e.g. --layers 3) with a finite dev score to plot")
    sections = sorted({curve.section for curve in curves})
    color = dict(zip(sections, _colors(len(sections)), strict=True))
    figure, axis = plt.subplots(figsize=(8.0, 5.0))
    markers = "osD^v<>"
    seen: dict[SectionKey, int] = {}
    for curve in curves:
        index = seen[curve.section] = seen.get(curve.section, -1) + 1
        _band(axis, curve, color[curve.section], markers[index % len(markers)])
    for number, reference in enumerate(references):
        axis.axhline(
            reference.mean,
            linestyle=("--", "-.", ":")[number % 3],
            color=color[reference.section],
            linewidth=1.2,
            label=f"{reference.label}: {reference.mean:.1f}",
        )
    depth = max(int(point.x) for curve in curves for point in curve.points)
    axis.set_xticks(range(depth + 1))
    axis.set_xlabel("layer (0 = embeddings)")
    axis.set_ylabel("dev score (%, the task's primary metric)")
    axis.set_title("Probe per layer: mean over seeds, band ± sample std; dashed: fine-tuning", fontsize=10)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, loc="best")
    return save_atomic(figure, path)


def _parameters_text(parameters: int | None) -> str:
    if parameters is None:
        return "? params"
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if parameters >= size:
            return f"{parameters / size:.3g}{suffix} params"
    return f"{parameters} params"


def plot_cost(records: Iterable[Record], path: str | Path) -> Path:
    """Dev score against mean train seconds (log scale), one point per configuration, one
    panel per (model, task, data) section, a colour per system; marker area grows with the
    trainable parameters. Each point carries a number, and the legend under the panel says
    which configuration it is (system, parameters, seeds): long labels beside crowded points
    would overlap."""
    points = cost_points(records)
    if not points:
        raise NoRecordsError("no records with both a train time and a dev score to plot")
    sections = sorted({point.section for point in points})
    counts = [sum(point.section == section for point in points) for section in sections]
    heights = [4.2 + 0.22 * count for count in counts]
    figure, axes = plt.subplots(
        len(sections), 1, figsize=(8.0, sum(heights)), squeeze=False, gridspec_kw={"height_ratios": heights}
    )
    largest = max((point.parameters or 1) for point in points)
    for axis, section in zip(axes[:, 0], sections, strict=True):
        mine = [point for point in points if point.section == section]
        colors = colors_by_system([point.system for point in mine])
        for number, (point, color) in enumerate(zip(mine, colors, strict=True), start=1):
            area = 30.0 + 400.0 * math.sqrt((point.parameters or 1) / largest)
            count = seed_count(point.n, point.seeds)
            label = f"{number}: {point.label} ({_parameters_text(point.parameters)}, n={count})"
            axis.scatter(
                [point.seconds], [point.score], s=area, color=color, alpha=0.7, edgecolors="black", label=label
            )
            if point.std is not None:
                axis.errorbar([point.seconds], [point.score], yerr=[point.std], color=color, capsize=3)
            axis.annotate(str(number), (point.seconds, point.score), xytext=(5, 5), textcoords="offset points",
                          fontsize=8, fontweight="bold")  # fmt: skip
        axis.set_xscale("log")
        axis.set_xlabel("train time (mean over seeds, s; log scale)")
        axis.set_ylabel("dev score (%)")
        axis.set_title(f"{_section_title(section)}: quality against cost", fontsize=9)
        axis.grid(alpha=0.3, which="both")
        axis.margins(x=0.15, y=0.15)
        axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), fontsize=7, markerscale=0.4, frameon=False)
    figure.tight_layout()
    return save_atomic(figure, path)


def plot_learning_curves(records: Iterable[Record], path: str | Path) -> Path:
    """Dev score against the training fraction (log scale), a line per system, one panel per
    (model, task, data) section that has runs on a fraction; band ± sample std over seeds.
    Full-data runs of the other systems in such a section show as single points."""
    curves = learning_curves(records)
    sections = sorted({curve.section for curve in curves if any(point.x < 1.0 for point in curve.points)})
    if not sections:
        raise NoRecordsError(
            "no learning-curve runs (--train-fraction below 1) to plot; runs with --max-train-examples are left out"
        )
    figure, axes = plt.subplots(len(sections), 1, figsize=(8.0, 4.8 * len(sections)), squeeze=False)
    for axis, section in zip(axes[:, 0], sections, strict=True):
        mine = [curve for curve in curves if curve.section == section]
        for curve, color in zip(mine, colors_by_system([curve.system or curve.label for curve in mine]), strict=True):
            _band(axis, curve, color)
        fractions = sorted({point.x for curve in mine for point in curve.points})
        axis.set_xscale("log")
        axis.set_xticks(fractions)
        axis.set_xticklabels([f"{fraction:g}" for fraction in fractions])
        axis.set_xlabel("fraction of the training set (log scale)")
        axis.set_ylabel("dev score (%)")
        axis.set_title(f"{_section_title(section)}: learning curves (band ± sample std)", fontsize=9)
        axis.grid(alpha=0.3, which="both")
        axis.legend(fontsize=7, loc="best")
    return save_atomic(figure, path)


def task_panels(records: Iterable[Record]) -> list[tuple[TaskSection, list[tuple[TaskColumn, str, str]]]]:
    """Per model section of the tasks layout (:func:`bertprobe.tasks_table.group_tasks`), its
    score columns (:meth:`~bertprobe.tasks_table.TaskSection.score_columns`: task and split,
    with their headings) where some system has a finite score; sections with none are left out."""
    panels = []
    for section in group_tasks(records):
        columns = [
            (column, split, heading)
            for column, split, heading in section.score_columns()
            if any((cell := row.cells.get(column)) is not None and cell.primary_scores(split) for row in section.rows)
        ]
        if columns:
            panels.append((section, columns))
    return panels


def plot_tasks(records: Iterable[Record], path: str | Path) -> Path:
    """The tasks layout drawn: per model, a group of bars per task (and split: test beside
    dev where records have it), a bar per system, its height the mean of the task's
    primary metric over the seeds with a finite one (error bars: sample std, none for one
    seed), labelled with the mean and its seed count. The PNG is written atomically."""
    panels = task_panels(records)
    if not panels:
        raise NoRecordsError(
            "no record with a finite score to plot: --kind tasks draws each task's primary metric (dev, and test "
            "where recorded)"
        )
    widest = max(len(columns) * len(section.rows) for section, columns in panels)
    width = max(8.0, 0.45 * widest + 3.0)
    figure, axes = plt.subplots(len(panels), 1, figsize=(width, 4.8 * len(panels)), squeeze=False)
    for axis, (section, columns) in zip(axes[:, 0], panels, strict=True):
        _task_panel(axis, section, columns, width)
    figure.suptitle("Each system on each task: mean over seeds, error bars ± sample std", fontsize=10)
    return save_atomic(figure, path)


def _task_panel(axis, section: TaskSection, columns: Sequence[tuple[TaskColumn, str, str]], width: float) -> None:
    """One model's bars: for each of ``columns`` a group with a bar per system that has a score."""
    step = 0.8 / len(section.rows)
    for index, (row, color) in enumerate(zip(section.rows, _colors(len(section.rows)), strict=True)):
        bars = []  # (x, mean, std, "n=k")
        for position, (column, split, _) in enumerate(columns):
            cell = row.cells.get(column)
            scores = [] if cell is None else cell.primary_scores(split)
            if scores:
                x = position - 0.4 + step * (index + 0.5)
                bars.append((x, mean_or_none(scores), sample_std(scores), seed_count(len(scores), len(cell.records))))
        if not bars:
            continue
        xs, means = [bar[0] for bar in bars], [bar[1] for bar in bars]
        errors = [math.nan if bar[2] is None else bar[2] for bar in bars]
        axis.bar(xs, means, width=0.9 * step, yerr=errors, capsize=3, color=color, alpha=0.85, label=row.label)
        for x, mean, std, count in bars:  # above the error bar, or below a negative one (an MCC under 0)
            top, sign = (mean + (std or 0.0), 1) if mean >= 0 else (mean - (std or 0.0), -1)
            axis.annotate(f"{mean:.1f}\nn={count}", (x, top), xytext=(0, 2 * sign), textcoords="offset points",
                          ha="center", va="bottom" if sign > 0 else "top", fontsize=6)  # fmt: skip
    axis.set_xticks(range(len(columns)))
    axis.set_xticklabels([heading for *_, heading in columns], fontsize=8)
    axis.set_xlim(-0.6, len(columns) - 0.4)
    axis.set_ylabel("score (%, the task's primary metric)")
    count = section.record_count
    title = f"{section.model} · {count} record{'s' if count != 1 else ''} · dev unless marked test"
    axis.set_title(fit_to_width(title, width, fontsize=9), fontsize=9)
    axis.margins(y=0.12)  # room for the labels over the tallest bars
    axis.grid(axis="y", alpha=0.3)
    axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)


#: ``bertprobe plot --kind`` -> the function that draws it.
PLOTS: dict[str, Callable[[Iterable[Record], str | Path], Path]] = {
    "table7": plot_table7,
    "tasks": plot_tasks,
    "layers": plot_layers,
    "cost": plot_cost,
    "curve": plot_learning_curves,
}
