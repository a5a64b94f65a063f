"""What a tuning bought: per system, its trials' best dev score, the expected best of n
trials (n = 1, 5, N), the winning configuration and when it was found, and the winner
re-run with the final seeds (dev and test). Torch-free."""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bertprobe.config import find_record
from bertprobe.expected_max import ExpectedMax, curve
from bertprobe.formatting import format_seed_scores, setting_text
from bertprobe.results import read_record
from bertprobe.tuning import Tuning, best_trial, dev_score

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: characters per line of a figure's title: a tuning's description is often longer than one line
TITLE_WIDTH = 64

ESTIMATOR_NOTE = (
    "E[best of n]: the dev score to expect from the best of n random-search trials, estimated from the N trials "
    "without replacement (Tang et al., 2020: unbiased, and the best trial's score at n = N), ± the standard "
    "deviation of that best; the figure also draws Dodge et al.'s (2019) with-replacement estimate, which is "
    "lower. Final: the best dev trial's settings re-run with each final seed (mean ± std; test scores were never "
    "used to choose)."
)


@dataclass
class SystemSummary:
    name: str
    budget: int
    scores: list[float]  # dev, by trial index
    best_index: int | None = None
    best_settings: dict[str, object] = field(default_factory=dict)
    final_dev: list[float] = field(default_factory=list)  # in %
    final_test: list[float] = field(default_factory=list)  # in %
    final_seeds: int = 0

    def expected(self, estimator: str = "without_replacement") -> list[ExpectedMax]:
        finite = [score for score in self.scores if math.isfinite(score)]
        return curve(finite, estimator) if finite else []


def summarize(tuning: Tuning) -> list[SystemSummary]:
    """Every selected system's trials and final runs, read from their records (where they
    exist): a report needs no study, only the records and the options that named them."""
    summaries = []
    for system in tuning.systems:
        trials = tuning.trials_of(system)
        summary = SystemSummary(system.name, tuning.count, [score for _, _, score in trials])
        if trials and any(math.isfinite(score) for *_, score in trials):
            summary.best_index, summary.best_settings, _ = best_trial(trials)
            configs = tuning.final_configs(system, trials)
            summary.final_seeds = len(configs)
            for config in configs:
                if (path := find_record(config)) is not None:
                    record = read_record(path)
                    summary.final_dev.append(100 * dev_score(record))
                    summary.final_test.append(100 * dev_score(record, "test"))
        summaries.append(summary)
    return summaries


def _expected_at(summary: SystemSummary, n: int) -> str:
    points = summary.expected()
    if len(points) < n:
        return "—"
    point = points[n - 1]
    return f"{100 * point.mean:.2f} ± {100 * point.std:.2f}"


def _settings(settings: dict[str, object]) -> str:
    return ", ".join(f"{key}={setting_text(value, significant=3)}" for key, value in sorted(settings.items()))


def render_tuning_markdown(summaries: list[SystemSummary], title: str) -> str:
    budget = max(summary.budget for summary in summaries)
    header = ["System", "Trials", "E[best of 1]", "E[best of 5]", f"E[best of {budget}]", "Best trial (#)",
              "Its settings", "Final dev", "Final test"]  # fmt: skip
    rows = []
    for summary in summaries:
        done = len(summary.scores)
        best = (
            "—"
            if summary.best_index is None
            else f"{100 * summary.scores[summary.best_index]:.2f} (#{summary.best_index + 1})"
        )
        rows.append([
            summary.name, f"{done} of {summary.budget}", _expected_at(summary, 1), _expected_at(summary, 5),
            _expected_at(summary, budget) if done == budget else "—", best, _settings(summary.best_settings) or "—",
            format_seed_scores(summary.final_dev, summary.final_seeds) if summary.final_dev else "—",
            format_seed_scores(summary.final_test, summary.final_seeds) if summary.final_test else "—",
        ])  # fmt: skip
    lines = [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += ["", f"Dev and test scores in %. Best trial: the trial number (#1 first) at which the best dev score was "
              f"found. {ESTIMATOR_NOTE}"]  # fmt: skip
    return "\n".join(lines) + "\n"


def plot_expected_max(summaries: list[SystemSummary], path: str | Path, title: str) -> Path:
    """One curve per system: the expected best dev score against the number of trials, with
    its spread; dashed, the with-replacement estimate."""
    import matplotlib.pyplot as plt

    figure = draw_expected_max(summaries, title)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(target, dpi=120)
    plt.close(figure)
    return target


def draw_expected_max(summaries: list[SystemSummary], title: str) -> Figure:
    """The figure :func:`plot_expected_max` saves (the caller closes it): trial budgets on an
    integer axis, and a long title wrapped to the figure's width."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    drawable = [summary for summary in summaries if summary.expected()]
    if not drawable:
        raise ValueError("no system has a finished trial to draw")
    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    for summary in drawable:
        points = summary.expected()
        budgets = [point.n for point in points]
        means = [100 * point.mean for point in points]
        spread = [100 * point.std for point in points]
        (line,) = axes.plot(budgets, means, marker="o", markersize=3, label=summary.name)
        low = [mean - std for mean, std in zip(means, spread, strict=True)]
        high = [mean + std for mean, std in zip(means, spread, strict=True)]
        axes.fill_between(budgets, low, high, color=line.get_color(), alpha=0.15)
        replaced = [100 * point.mean for point in summary.expected("with_replacement")]
        axes.plot(budgets, replaced, linestyle="--", linewidth=1, color=line.get_color())
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("trials (random search)")
    axes.set_ylabel("expected best dev score (%)")
    axes.set_title(textwrap.fill(title, TITLE_WIDTH), fontsize="medium")
    axes.legend(fontsize="small")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return figure
