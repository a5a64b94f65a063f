"""Plot the Table 7 comparison: our dev F1 per system next to the paper's."""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # after choosing the backend

from bertprobe.table import NoRecordsError, Record, group_rows


def plot_table7(records: Iterable[Record], path: str | Path) -> Path:
    """Bars of our mean dev F1 per system (error bars: sample std over seeds, none for one
    seed) with the paper's dev F1 as a black tick; one panel per model + data section.
    The PNG is written atomically; returns its path."""
    sections = group_rows(records)
    if not sections:
        raise NoRecordsError("no result records to plot")
    rows_most = max(len(rows) for rows in sections.values())
    figure, axes = plt.subplots(
        len(sections), 1, figsize=(max(6.0, 1.1 * rows_most + 2.0), 4.8 * len(sections)), squeeze=False
    )
    paper_labelled = False
    for axis, (section, rows) in zip(axes[:, 0], sections.items(), strict=True):
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
            paper_labelled = True
        ours = [(m, s or 0.0) for m, s in zip(means, stds, strict=True) if m is not None]
        lows = [m - s for m, s in ours] + [v for _, v in paper]
        highs = [m + s for m, s in ours] + [v for _, v in paper]
        if lows:  # zoom in on the differences, which are a few points at most
            axis.set_ylim(max(0.0, min(lows) - 5.0), max(highs) + 2.0)
        bottom = axis.get_ylim()[0]
        for x, mean, row in zip(positions, means, rows, strict=True):
            if mean is not None:  # the value inside the bar's foot, clear of error bars and paper ticks
                axis.annotate(
                    f"{mean:.1f}\nn={len(row.dev_f1)}",
                    (x, bottom),
                    xytext=(0, 4),
                    textcoords="offset points",
                    ha="center",
                    va="bottom",
                    fontsize=7,
                    color="white",
                )
        axis.set_xlim(-0.6, max(len(rows), 3) - 0.4)
        axis.set_xticks(positions)
        axis.set_xticklabels([row.label for row in rows], rotation=30, ha="right", fontsize=8)
        axis.set_ylabel("dev F1 (%)")
        count = sum(len(row.records) for row in rows)
        axis.set_title(
            f"{section.model} · {section.data} ({section.task}, {section.context} context) · {count} records",
            fontsize=9,
        )
        axis.grid(axis="y", alpha=0.3)
        axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    figure.suptitle(
        "CoNLL-2003 NER dev F1: fine-tuning vs frozen features (paper: Devlin et al. 2019, Table 7)"
        if paper_labelled
        else "Dev F1 per system",
        fontsize=10,
    )
    figure.tight_layout()
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(handle)
    try:
        figure.savefig(temporary, format="png", dpi=120)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    finally:
        plt.close(figure)
    return target
