"""Summarise result records as the BERT paper's Table 7: our mean over seeds next to the paper.

Records (the JSON files :func:`bertprobe.train.run` writes) are grouped into **rows**:

* a row is one *system* (``Fine-tuning``, or one feature-based layer strategy) with one
  setting of every configuration value except the seed and the options that cannot change
  a result (:data:`IGNORED_CONFIG_KEYS`); its seeds are averaged;
* rows live in **sections**, one per (model, task, data source, context). Records of
  different models or data are never averaged together: each combination gets its own
  section, with a heading naming it.

Numbers are F1 in percent. ``mean ± std`` uses the sample standard deviation (``ddof=1``).
With a single seed the standard deviation is undefined: the Markdown shows ``n/a`` in its
place (``95.12 ± n/a``), the CSV leaves ``dev_f1_std`` empty, and the plot draws no error
bar. Two rows of the same system that differ in a setting (a hyper-parameter grid, say)
are told apart by the differing values, e.g. ``Fine-tuning (lr=3e-05)``.

The paper's numbers are BERT-base's on CoNLL-2003; they are shown for every model of a
``conll2003`` section as the reference, and for no other task.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

FINETUNE = "finetune"

#: Configuration values that do not change what a run measures: they never split a row.
#: ``seed`` is what a row averages over; the others name folders, caches or book-keeping
#: (``feature_cache``, ``cache_layers`` and ``check_loss_every`` are also left out of the
#: run name's hash in :meth:`bertprobe.config.RunConfig.run_name` for the same reason).
IGNORED_CONFIG_KEYS = frozenset(
    {"seed", "output_dir", "cache_dir", "save_predictions", "tags", "feature_cache", "cache_layers", "check_loss_every"}
)

#: The paper's Table 7 rows in the paper's order: system key -> display name.
SYSTEM_NAMES: dict[str, str] = {
    FINETUNE: "Fine-tuning",
    "embeddings": "Embeddings",
    "second_last": "Second-to-last hidden",
    "last": "Last hidden",
    "last4weighted": "Weighted sum last four hidden",
    "last4concat": "Concat last four hidden",
    "allweighted": "Weighted sum all layers",
    "last4sum": "Sum last four hidden",
}

#: Dev F1 (%) of BERT-base in Table 7 of Devlin et al. (2019), CoNLL-2003 NER.
#: ``last4sum``: the published Table 7 has a "Sum last four hidden" row at 95.9;
#: PROTOCOL.md lists only the weighted sum of the last four (also 95.9).
PAPER_DEV_F1: dict[str, float] = {
    FINETUNE: 96.4,
    "embeddings": 91.0,
    "second_last": 95.6,
    "last": 94.9,
    "last4weighted": 95.9,
    "last4concat": 96.1,
    "allweighted": 95.5,
    "last4sum": 95.9,
}

#: The paper reports test F1 for fine-tuning only.
PAPER_TEST_F1: dict[str, float] = {FINETUNE: 92.4}

#: The paper's numbers are compared only with runs of this task.
PAPER_TASK = "conll2003"

#: Named layer strategies written out (as in :data:`bertprobe.layers.NAMED_STRATEGIES`), so
#: that a run given the spelled-out spec lands in the named row. Kept here so that reading
#: tables does not import torch.
_STRATEGY_SPECS: dict[str, str] = {
    "0": "embeddings",
    "-1": "last",
    "-2": "second_last",
    "-1,-2,-3,-4:sum": "last4sum",
    "-4,-3,-2,-1:weighted": "last4weighted",
    "-1,-2,-3,-4:concat": "last4concat",
    "all:weighted": "allweighted",
}

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
    "paper_dev_f1",
    "paper_test_f1",
    "delta_dev",
    "trainable_parameters",
    "train_seconds_mean",
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

Record = dict[str, object]


class NoRecordsError(ValueError):
    """A folder without any result record."""


# ----------------------------------------------------------------------------- loading


def is_record(payload: object) -> bool:
    return isinstance(payload, dict) and isinstance(payload.get("config"), dict) and "metrics" in payload


def load_records(directory: str | Path) -> list[Record]:
    """Every result record in ``*.json`` files under ``directory`` (recursively), in path order.

    Files and folders whose names start with ``.`` (atomic-write temporaries, caches) are
    skipped, as are JSON files that are not records (no ``config``/``metrics``). A file that
    is not valid JSON is skipped with a warning.
    """
    root = Path(directory)
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a folder")
    records: list[Record] = []
    for path in sorted(root.rglob("*.json")):
        if any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            warnings.warn(f"skipping {path}: not readable JSON ({error})", stacklevel=2)
            continue
        if is_record(payload):
            records.append(payload)
    return records


# ----------------------------------------------------------------------------- grouping


def system_key(record: Record) -> str:
    """``finetune`` for fine-tuning; the layer strategy's name for a feature-based run."""
    config = _config(record)
    if config.get("mode", FINETUNE) == FINETUNE:
        return FINETUNE
    strategy = str(config.get("layers", "last"))
    return _STRATEGY_SPECS.get(strategy.replace(" ", ""), strategy)


def system_name(key: str) -> str:
    return SYSTEM_NAMES.get(key, f"Feature: {key}")


def data_source(record: Record) -> str:
    data = record.get("data")
    if isinstance(data, dict) and data.get("source"):
        return str(data["source"])
    config = _config(record)
    return str(config.get("data_dir") or f"hub:{config.get('hub_dataset', '?')}")


@dataclass(frozen=True, order=True)
class SectionKey:
    """What must be equal for records to share a table: the model and the data."""

    model: str
    task: str
    data: str
    context: str

    @classmethod
    def of(cls, record: Record) -> SectionKey:
        config = _config(record)
        return cls(
            model=str(config.get("model", "?")),
            task=str(config.get("task", "?")),
            data=data_source(record),
            context=str(config.get("context", "?")),
        )


@dataclass
class Row:
    """One system with one setting: its records (one per seed) and the paper's numbers."""

    section: SectionKey
    system: str
    settings: dict[str, object]
    records: list[Record] = field(default_factory=list)
    label_settings: str = ""

    @property
    def label(self) -> str:
        name = system_name(self.system)
        return f"{name} ({self.label_settings})" if self.label_settings else name

    @property
    def dev_f1(self) -> list[float]:
        return _split_f1(self.records, "dev")

    @property
    def test_f1(self) -> list[float]:
        return _split_f1(self.records, "test")

    @property
    def dev_f1_mean(self) -> float | None:
        return _mean(self.dev_f1)

    @property
    def dev_f1_std(self) -> float | None:
        """Sample standard deviation over seeds (ddof=1); ``None`` with fewer than two."""
        return _std(self.dev_f1)

    @property
    def seeds(self) -> list[object]:
        return [_config(record).get("seed") for record in self.records]

    @property
    def paper_dev_f1(self) -> float | None:
        return PAPER_DEV_F1.get(self.system) if self.section.task == PAPER_TASK else None

    @property
    def paper_test_f1(self) -> float | None:
        return PAPER_TEST_F1.get(self.system) if self.section.task == PAPER_TASK else None

    @property
    def delta_dev(self) -> float | None:
        mean = self.dev_f1_mean
        return None if mean is None or self.paper_dev_f1 is None else mean - self.paper_dev_f1

    @property
    def trainable_parameters(self) -> list[int]:
        values = []
        for record in self.records:
            parameters = record.get("parameters")
            if isinstance(parameters, dict) and parameters.get("trainable") is not None:
                values.append(int(parameters["trainable"]))
        return values

    @property
    def train_seconds(self) -> list[float]:
        values = []
        for record in self.records:
            timing = record.get("time")
            if isinstance(timing, dict) and timing.get("train_seconds") is not None:
                values.append(float(timing["train_seconds"]))
        return values

    def layer_weights(self) -> tuple[dict[int, float], float | None, int] | None:
        """Mean softmax weight per layer index and mean gamma over the seeds that learned
        them, with their count; ``None`` when no record of the row has learned weights."""
        per_layer: dict[int, list[float]] = {}
        gammas: list[float] = []
        count = 0
        for record in self.records:
            learned = record.get("learned_layer_weights")
            if not isinstance(learned, dict):
                continue
            count += 1
            for layer, weight in zip(learned.get("layers", []), learned.get("softmax_weights", []), strict=True):
                per_layer.setdefault(int(layer), []).append(float(weight))
            if learned.get("gamma") is not None:
                gammas.append(float(learned["gamma"]))
        if count == 0:
            return None
        means = {layer: statistics.fmean(values) for layer, values in sorted(per_layer.items())}
        return means, _mean(gammas), count


def _config(record: Record) -> dict[str, object]:
    config = record.get("config")
    return config if isinstance(config, dict) else {}


def _split_f1(records: Iterable[Record], split: str) -> list[float]:
    values = []
    for record in records:
        metrics = record.get("metrics")
        scores = metrics.get(split) if isinstance(metrics, dict) else None
        if isinstance(scores, dict) and scores.get("f1") is not None:
            values.append(100.0 * float(scores["f1"]))
    return values


def _mean(values: Sequence[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _std(values: Sequence[float]) -> float | None:
    """Sample standard deviation (ddof=1); undefined (``None``) below two values."""
    return statistics.stdev(values) if len(values) >= 2 else None


def _row_settings(record: Record, system: str) -> dict[str, object]:
    config = _config(record)
    settings = {key: value for key, value in sorted(config.items()) if key not in IGNORED_CONFIG_KEYS}
    if system == FINETUNE:
        settings.pop("layers", None)  # fine-tuning always uses the last layer, whatever --layers says
    else:
        settings["layers"] = system  # a spelled-out named strategy joins the named row
    return settings


def _order(row: Row) -> tuple[int, str, str]:
    names = list(SYSTEM_NAMES)
    rank = names.index(row.system) if row.system in names else len(names)
    return rank, row.system, row.label_settings


def group_rows(records: Iterable[Record]) -> dict[SectionKey, list[Row]]:
    """Sections (sorted) of rows (in the paper's order, then other strategies by name)."""
    rows: dict[tuple[SectionKey, str, str], Row] = {}
    for record in records:
        section, system = SectionKey.of(record), system_key(record)
        settings = _row_settings(record, system)
        key = (section, system, json.dumps(settings, sort_keys=True, default=str))
        rows.setdefault(key, Row(section, system, settings)).records.append(record)

    sections: dict[SectionKey, list[Row]] = {}
    for row in rows.values():
        sections.setdefault(row.section, []).append(row)
    for section_rows in sections.values():
        _label_settings(section_rows)
        section_rows.sort(key=_order)
    return dict(sorted(sections.items()))


def _label_settings(rows: list[Row]) -> None:
    """Rows of one system that differ in a setting are labelled with the differing values."""
    by_system: dict[str, list[Row]] = {}
    for row in rows:
        by_system.setdefault(row.system, []).append(row)
    for same in by_system.values():
        if len(same) < 2:
            continue
        keys = sorted({key for row in same for key in row.settings})
        differing = [key for key in keys if len({json.dumps(row.settings.get(key), default=str) for row in same}) > 1]
        for row in same:
            row.label_settings = ", ".join(f"{key}={_plain(row.settings.get(key))}" for key in differing)


def _plain(value: object) -> str:
    return "none" if value is None else str(value)


# ----------------------------------------------------------------------------- formatting


def _format_mean_std(values: Sequence[float]) -> str:
    mean, std = _mean(values), _std(values)
    if mean is None:
        return "—"
    return f"{mean:.2f} ± {'n/a' if std is None else f'{std:.2f}'}"


def _format_seeds(row: Row) -> str:
    count, distinct = len(row.records), len({json.dumps(seed) for seed in row.seeds})
    return str(count) if distinct == count else f"{count} ({distinct} distinct)"


def _format_parameters(values: Sequence[int]) -> str:
    if not values:
        return "—"
    low, high = min(values), max(values)
    return f"{low:,}" if low == high else f"{low:,}–{high:,}"


def _format_optional(value: float | None, pattern: str) -> str:
    return "—" if value is None else format(value, pattern)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _markdown_table(header: Sequence[str], lines: Iterable[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(_cell(text) for text in line) + " |" for line in lines]
    return out


def section_heading(section: SectionKey, rows: Sequence[Row]) -> str:
    count = sum(len(row.records) for row in rows)
    return (
        f"## Model `{section.model}` · data `{section.data}` ({section.task}) · "
        f"context {section.context} · {count} record{'s' if count != 1 else ''}"
    )


def _main_lines(rows: Sequence[Row]) -> list[list[str]]:
    return [
        [
            row.label,
            _format_mean_std(row.dev_f1),
            _format_mean_std(row.test_f1),
            _format_seeds(row),
            _format_optional(row.paper_dev_f1, ".1f"),
            _format_optional(row.delta_dev, "+.2f"),
            _format_parameters(row.trainable_parameters),
            _format_optional(_mean(row.train_seconds), ".1f"),
        ]
        for row in rows
    ]


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
        lines.append([row.label, str(count), _format_optional(gamma, ".3f"), *cells])
    return [
        "",
        "Learned layer weights (softmax-normalised scalar mix, mean over seeds; largest in bold):",
        "which layers the task leans on.",
        "",
        *_markdown_table(header, lines),
    ]


def render_markdown(records: Iterable[Record]) -> str:
    """One section per (model, task, data, context): heading, main table, notes, and the
    learned layer weights where any row has them."""
    sections = group_rows(records)
    if not sections:
        raise NoRecordsError("no result records to tabulate")
    blocks = []
    for section, rows in sections.items():
        lines = [section_heading(section, rows), ""]
        lines += _markdown_table(MARKDOWN_COLUMNS, _main_lines(rows))
        note = "F1 in %, mean ± sample std (ddof=1) over seeds; `n/a`: one seed."
        if section.task == PAPER_TASK:
            note += (
                " Paper: BERT-base, Devlin et al. (2019) Table 7; paper test F1 (fine-tuning only): "
                f"{PAPER_TEST_F1[FINETUNE]:.1f}."
            )
        else:
            note += f" The paper's Table 7 is {PAPER_TASK} only: no paper values here."
        lines += ["", note]
        lines += _weights_lines(rows)
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def csv_rows(records: Iterable[Record]) -> list[dict[str, object]]:
    """The table's rows as plain values (F1 in %, ``None`` where undefined)."""
    out = []
    for section, rows in group_rows(records).items():
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
                    "dev_f1_mean": _mean(row.dev_f1),
                    "dev_f1_std": _std(row.dev_f1),
                    "test_f1_mean": _mean(row.test_f1),
                    "test_f1_std": _std(row.test_f1),
                    "seeds": len(row.records),
                    "seed_values": ";".join(_plain(seed) for seed in row.seeds),
                    "paper_dev_f1": row.paper_dev_f1,
                    "paper_test_f1": row.paper_test_f1,
                    "delta_dev": row.delta_dev,
                    "trainable_parameters": round(statistics.fmean(parameters)) if parameters else None,
                    "train_seconds_mean": _mean(row.train_seconds),
                }
            )
    return out


def render_csv(records: Iterable[Record]) -> str:
    """Same rows as :func:`render_markdown`, unformatted numbers, empty cells where undefined."""
    rows = csv_rows(records)
    if not rows:
        raise NoRecordsError("no result records to tabulate")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: "" if value is None else value for key, value in row.items()})
    return buffer.getvalue()
