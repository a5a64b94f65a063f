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
``conll2003`` section as the reference, and for no other task (and for fine-tuning and
feature rows only, with the paper's head: partial fine-tuning, ``Partial (freeze K
lowest)``, ``LoRA (r=R)`` rows and linear probes of frozen features have none).

A second layout, ``tasks`` (:func:`render_tasks_markdown`, :func:`render_tasks_csv`), puts
the systems of one model side by side across tasks ("tune or not"): each cell is the task's
own primary dev metric (``record["task"]["primary_metric"]``: accuracy, F1, MCC...), with a
cost table (trainable parameters, train time, examples/s, peak memory) below.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import statistics
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bertprobe.bookkeeping import BOOKKEEPING_OPTIONS

FINETUNE = "finetune"
LORA = "lora"
#: System key of partial fine-tuning: ``partial:K`` froze the embeddings and the K lowest layers.
PARTIAL_PREFIX = "partial:"

#: Configuration values that do not change what a run measures: they never split a row.
#: ``seed`` is what a row averages over; the others name folders, caches or book-keeping
#: (checkpointing, resuming, tracking, compiling), the options a run's name leaves out too.
IGNORED_CONFIG_KEYS = BOOKKEEPING_OPTIONS | {"seed"}

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

#: Options added since the first records were written, with the value a record without them
#: ran with: a missing key counts as this value, so old and new records of one setting share
#: a row. (Kept in step with :class:`bertprobe.config.RunConfig`'s defaults by a test.)
ADDED_OPTION_DEFAULTS: dict[str, object] = {
    "pooling": "first",
    "lora_rank": 8,
    "lora_alpha": 16.0,
    "lora_dropout": 0.1,
    "layer_lr_decay": 1.0,
    "optimizer": "adamw",
    "momentum": 0.9,
    "gradient_accumulation_steps": 1,
    "eval_every": 1,
}

#: Options that only act in some modes (or with some optimizer): elsewhere they never split a row.
_MODE_OPTIONS: dict[str, tuple[str, ...]] = {
    "lora": ("lora_rank", "lora_alpha", "lora_dropout", "lora_target_modules"),
    "partial": ("freeze_layers",),
}

#: Options that say which task and data a run used: in the tasks layout they pick the
#: column, never the row.
TASK_IDENTITY_KEYS = frozenset(
    {
        "task", "data_dir", "hub_dataset", "train_file", "validation_file", "test_file", "text_columns",
        "label_column", "regression",
    }
)  # fmt: skip

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

#: The paper reports test F1 for fine-tuning only.
PAPER_TEST_F1: dict[str, float] = {FINETUNE: 92.4}

#: The paper's numbers are compared only with runs of this task.
PAPER_TASK = "conll2003"

#: The head of each of the paper's rows: a linear layer on the fine-tuned model, a two-layer
#: BiLSTM on frozen features. A row with another head (a linear probe of frozen features,
#: say) is not the paper's experiment and gets no paper value beside it.
PAPER_HEAD = {"finetune": "linear", "feature": "bilstm"}

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
    """``finetune``; ``partial:K`` (K lowest layers frozen); ``lora``; or, for a feature-based
    run, the layer strategy's name."""
    config = _config(record)
    mode = config.get("mode", FINETUNE)
    if mode == FINETUNE:
        return FINETUNE
    if mode == "partial":
        return f"{PARTIAL_PREFIX}{config.get('freeze_layers')}"
    if mode == LORA:
        return LORA
    strategy = str(config.get("layers", "last"))
    return _STRATEGY_SPECS.get(strategy.replace(" ", ""), strategy)


def is_feature_system(key: str) -> bool:
    """Whether a system key names a frozen-feature strategy (not an encoder-training mode)."""
    return key not in (FINETUNE, LORA) and not key.startswith(PARTIAL_PREFIX)


def system_name(key: str, lora_ranks: Iterable[object] = ()) -> str:
    """Display name of a system; LoRA's names the adapters' rank(s) when given."""
    if key.startswith(PARTIAL_PREFIX):
        return f"Partial (freeze {key[len(PARTIAL_PREFIX) :]} lowest)"
    if key == LORA:
        ranks = "/".join(sorted({str(rank) for rank in lora_ranks}, key=lambda text: (len(text), text)))
        return f"LoRA (r={ranks})" if ranks else "LoRA"
    if key.lstrip("-").isdigit():
        return f"Layer {key}"  # a single hidden state, e.g. one point of `bertprobe probe-layers`
    return SYSTEM_NAMES.get(key, f"Feature: {key}")


def _lora_ranks(records: Iterable[Record]) -> list[object]:
    return [_config(record).get("lora_rank", ADDED_OPTION_DEFAULTS["lora_rank"]) for record in records]


def _system_rank(key: str) -> tuple[int, int, str]:
    """Sort key of systems: fine-tuning, partial (fewest frozen first), LoRA, the paper's
    feature rows in its order, then other strategies by name."""
    if key == FINETUNE:
        return 0, 0, ""
    if key.startswith(PARTIAL_PREFIX):
        frozen = key[len(PARTIAL_PREFIX) :]
        return 1, int(frozen) if frozen.isdigit() else 1_000_000, frozen
    if key == LORA:
        return 2, 0, ""
    names = list(SYSTEM_NAMES)
    return 3, names.index(key) if key in names else len(names), key


def data_source(record: Record) -> str:
    data = record.get("data")
    if isinstance(data, dict) and data.get("source"):
        return str(data["source"])
    config = _config(record)
    return str(config.get("data_dir") or f"hub:{config.get('hub_dataset', '?')}")


def primary_metric(record: Record) -> str:
    """The task's primary dev metric as the record names it; ``f1`` for records written
    before records named it (CoNLL tagging only)."""
    task = record.get("task")
    if isinstance(task, dict) and task.get("primary_metric"):
        return str(task["primary_metric"])
    return "f1"


def primary_score(record: Record, split: str = "dev") -> float | None:
    """The primary metric on ``split`` in percent (x100), or ``None`` when not recorded."""
    metrics = record.get("metrics")
    scores = metrics.get(split) if isinstance(metrics, dict) else None
    value = scores.get(primary_metric(record)) if isinstance(scores, dict) else None
    return None if value is None else 100.0 * float(value)


def train_examples(record: Record) -> int | None:
    """Training examples per epoch: windows for tagging tasks, examples for sequence tasks."""
    data = record.get("data")
    if not isinstance(data, dict):
        return None
    windows = data.get("windows")
    if isinstance(windows, dict) and windows.get("train") is not None:
        return int(windows["train"])
    return None if data.get("examples_trained") is None else int(data["examples_trained"])


@dataclass(frozen=True, order=True)
class SectionKey:
    """What must be equal for records to share a table: the model, the data and the metric."""

    model: str
    task: str
    data: str
    context: str
    metric: str = "f1"

    @classmethod
    def of(cls, record: Record) -> SectionKey:
        config = _config(record)
        return cls(
            model=str(config.get("model", "?")),
            task=str(config.get("task", "?")),
            data=data_source(record),
            context=str(config.get("context", "?")),
            metric=primary_metric(record),
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
    def name(self) -> str:
        return system_name(self.system, _lora_ranks(self.records) if self.system == LORA else ())

    @property
    def label(self) -> str:
        return f"{self.name} ({self.label_settings})" if self.label_settings else self.name

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
    def dev_primary(self) -> list[float]:
        """Each seed's primary dev metric (the task's own: accuracy, F1, MCC...) in percent."""
        return [score for record in self.records if (score := primary_score(record)) is not None]

    @property
    def dev_primary_mean(self) -> float | None:
        return _mean(self.dev_primary)

    @property
    def dev_primary_std(self) -> float | None:
        return _std(self.dev_primary)

    @property
    def seeds(self) -> list[object]:
        return [_config(record).get("seed") for record in self.records]

    @property
    def comparable_to_paper(self) -> bool:
        """Same task as the paper's Table 7, all of its training set and, for every seed, the
        paper's head."""
        if self.section.task != PAPER_TASK or not self.records:
            return False
        if any(_config(r).get("train_fraction") not in (None, 1.0) or _config(r).get("max_train_examples")
               for r in self.records):  # fmt: skip
            return False  # the paper trained on all of CoNLL-2003
        return all(_config(r).get("head") == PAPER_HEAD.get(str(_config(r).get("mode"))) for r in self.records)

    @property
    def paper_dev_f1(self) -> float | None:
        return PAPER_DEV_F1.get(self.system) if self.comparable_to_paper else None

    @property
    def paper_test_f1(self) -> float | None:
        return PAPER_TEST_F1.get(self.system) if self.comparable_to_paper else None

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

    @property
    def examples_per_second(self) -> list[float]:
        """Per seed: training examples (windows) x epochs / train seconds."""
        values = []
        for record in self.records:
            timing, examples = record.get("time"), train_examples(record)
            seconds = timing.get("train_seconds") if isinstance(timing, dict) else None
            epochs = _config(record).get("epochs")
            if examples is not None and seconds and isinstance(epochs, int):
                values.append(examples * epochs / float(seconds))
        return values

    @property
    def peak_memory(self) -> tuple[str, int] | None:
        """The largest peak over seeds: GPU memory where recorded, else the process's RSS."""
        for key, kind in (("cuda_max_allocated_bytes", "GPU"), ("process_max_rss_bytes", "RSS")):
            peaks = [
                int(memory[key])
                for record in self.records
                if isinstance(memory := record.get("memory"), dict) and memory.get(key) is not None
            ]
            if peaks:
                return kind, max(peaks)
        return None

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


def row_settings(record: Record, system: str | None = None, ignore: Iterable[str] = ()) -> dict[str, object]:
    """The configuration values that make a row: all but :data:`IGNORED_CONFIG_KEYS` and
    ``ignore``, with options added since old records filled in, unset (``None``) options
    and options of other modes left out."""
    config = _config(record)
    system = system_key(record) if system is None else system
    skipped = set(IGNORED_CONFIG_KEYS) | set(ignore)
    mode = str(config.get("mode", FINETUNE))
    for other, keys in _MODE_OPTIONS.items():
        if other != mode:
            skipped |= set(keys)
    values = {**ADDED_OPTION_DEFAULTS, **config}
    if values.get("optimizer") != "sgd":
        skipped.add("momentum")  # only SGD has momentum
    if values.get("head") not in (None, "bilstm"):
        skipped |= {"lstm_hidden", "lstm_layers"}  # only the BiLSTM head has them
    settings = {key: value for key, value in sorted(values.items()) if key not in skipped and value is not None}
    if not is_feature_system(system):
        settings.pop("layers", None)  # the encoder-training modes always use the last layer, whatever --layers says
    elif "layers" not in skipped:
        settings["layers"] = system  # a spelled-out named strategy joins the named row
    return settings


def _order(row: Row) -> tuple[tuple[int, int, str], float, tuple[float, float], list[str | float]]:
    """Systems in :func:`_system_rank` order; LoRA rows by rank; then the smaller training
    sets first (by ``train_fraction``, then ``max_train_examples``; the whole set last); then
    by their labels, numbers compared as numbers (``epochs=3`` before ``epochs=10``)."""
    return (
        _system_rank(row.system),
        _lora_rank_order(row.system, row.settings),
        _train_size_order(row.settings),
        _natural_key(row.label_settings),
    )


def _train_size_order(settings: dict[str, object]) -> tuple[float, float]:
    fraction = settings.get("train_fraction")
    limit = settings.get("max_train_examples")
    return (
        float(fraction) if isinstance(fraction, (int, float)) else 1.0,
        float(limit) if isinstance(limit, (int, float)) else math.inf,
    )


def _natural_key(text: str) -> list[str | float]:
    """``text`` split into alternating words and numbers: words at even positions, numbers
    (as floats) at odd ones, so two keys always compare like with like."""
    parts: list[str | float] = []
    for position, part in enumerate(re.split(r"(\d+(?:\.\d+)?)", text)):
        parts.append(float(part) if position % 2 else part)
    return parts


def _lora_rank_order(system: str, settings: dict[str, object]) -> float:
    rank = settings.get("lora_rank") if system == LORA else None
    return float(rank) if isinstance(rank, (int, float)) else 0.0


def group_rows(records: Iterable[Record], ignore: Iterable[str] = ()) -> dict[SectionKey, list[Row]]:
    """Sections (sorted) of rows (in the paper's order, then other strategies by name).
    Configuration keys in ``ignore`` do not split rows either (a plot's x-axis, say)."""
    ignore = tuple(ignore)
    rows: dict[tuple[SectionKey, str, str], Row] = {}
    for record in records:
        section, system = SectionKey.of(record), system_key(record)
        settings = row_settings(record, system, ignore)
        key = (section, system, _dumps(settings))
        rows.setdefault(key, Row(section, system, settings)).records.append(record)

    sections: dict[SectionKey, list[Row]] = {}
    for row in rows.values():
        sections.setdefault(row.section, []).append(row)
    for section_rows in sections.values():
        _label_settings(section_rows)
        section_rows.sort(key=_order)
    return dict(sorted(sections.items()))


def _dumps(value: object) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def differing_labels(settings: Sequence[dict[str, object]], skip: Iterable[str] = ()) -> list[str]:
    """For each settings dict, ``key=value, ...`` of the keys whose values differ between them."""
    skip = set(skip)
    keys = sorted({key for values in settings for key in values} - skip)
    differing = [key for key in keys if len({_dumps(values.get(key)) for values in settings}) > 1]
    return [", ".join(f"{key}={_plain(values.get(key))}" for key in differing) for values in settings]


def _label_settings(rows: list[Row]) -> None:
    """Rows of one system that differ in a setting are labelled with the differing values
    (LoRA's rank is in its name already)."""
    by_system: dict[str, list[Row]] = {}
    for row in rows:
        by_system.setdefault(row.system, []).append(row)
    for system, same in by_system.items():
        if len(same) < 2:
            continue
        skip = ("lora_rank",) if system == LORA else ()
        for row, label in zip(same, differing_labels([row.settings for row in same], skip), strict=True):
            row.label_settings = label


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
    return _write_csv(csv_rows(records), CSV_COLUMNS)


# ----------------------------------------------------------------------------- tasks layout
#
# "Tune or not": one section per model; a row per system (fine-tuning, partial, LoRA, each
# feature strategy), a column per task. A column is a (task, data source, primary metric):
# two data sources of one task are two columns, never averaged together. A cell averages
# the seeds of one system on one task; the settings that differ between the records of
# one system on one task split the system into labelled rows, so a cell never mixes them.

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
    "trainable_parameters",
    "train_seconds_mean",
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
    def label(self) -> str:
        name = system_name(self.system, _lora_ranks(self.records) if self.system == LORA else ())
        shown = {key: value for key, value in self.settings.items() if not (self.system == LORA and key == "lora_rank")}
        details = ", ".join(f"{key}={_plain(value)}" for key, value in shown.items())
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

    @property
    def record_count(self) -> int:
        return sum(len(row.records) for row in self.rows)


def task_column(record: Record) -> TaskColumn:
    return TaskColumn(str(_config(record).get("task", "?")), data_source(record), primary_metric(record))


def group_tasks(records: Iterable[Record]) -> list[TaskSection]:
    """One :class:`TaskSection` per model (sorted by model name)."""
    by_model: dict[str, list[Record]] = {}
    for record in records:
        by_model.setdefault(str(_config(record).get("model", "?")), []).append(record)
    sections = []
    for model, model_records in sorted(by_model.items()):
        entries = []
        for record in model_records:
            system = system_key(record)
            entries.append((record, system, task_column(record), row_settings(record, system, TASK_IDENTITY_KEYS)))
        every = [settings for *_, settings in entries]
        uniform = {key for key in _DATA_AMOUNT_KEYS if len({_dumps(settings.get(key)) for settings in every}) == 1}
        common = {key: every[0][key] for key in sorted(uniform) if every[0].get(key) is not None}
        splitting = _splitting_keys([(system, column, settings) for _, system, column, settings in entries], uniform)
        rows: dict[tuple[str, str], TaskRow] = {}
        for record, system, column, settings in entries:
            distinguishing = {key: settings.get(key) for key in sorted(splitting[system])}
            row = rows.setdefault((system, _dumps(distinguishing)), TaskRow(system, distinguishing))
            row.cells.setdefault(column, Row(SectionKey.of(record), system, settings)).records.append(record)
        ordered = sorted(rows.values(), key=_task_row_order)
        columns = sorted({column for row in ordered for column in row.cells}, key=TaskColumn.order)
        sections.append(TaskSection(model, columns, ordered, common))
    return sections


def _task_row_order(row: TaskRow) -> tuple[tuple[int, int, str], float, str]:
    return _system_rank(row.system), _lora_rank_order(row.system, row.settings), _dumps(row.settings)


def _splitting_keys(
    entries: Sequence[tuple[str, TaskColumn, dict[str, object]]], uniform: Iterable[str] = ()
) -> dict[str, set[str]]:
    """Per system: the settings that differ between its records of one task column, and the
    data-amount options wherever any of its records set them (but those in ``uniform``)."""
    forced = set(_DATA_AMOUNT_KEYS) - set(uniform)
    groups: dict[tuple[str, TaskColumn], list[dict[str, object]]] = {}
    for system, column, settings in entries:
        groups.setdefault((system, column), []).append(settings)
    splitting: dict[str, set[str]] = {}
    for (system, _), group in groups.items():
        keys = splitting.setdefault(system, set())
        for key in {key for settings in group for key in settings}:
            if len({_dumps(settings.get(key)) for settings in group}) > 1 or key in forced:
                keys.add(key)
    return splitting


def _format_cell(row: Row | None) -> str:
    if row is None or not row.dev_primary:
        return "—"
    return f"{_format_mean_std(row.dev_primary)} (n={len(row.dev_primary)})"


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


def render_tasks_markdown(records: Iterable[Record]) -> str:
    """Per model: the primary dev score of every system on every task, then the cost of each
    (system, task): trainable parameters, train time, throughput and peak memory."""
    sections = group_tasks(records)
    if not sections:
        raise NoRecordsError("no result records to tabulate")
    blocks = []
    for section in sections:
        count = section.record_count
        lines = [f"## Model `{section.model}` · {count} record{'s' if count != 1 else ''}", ""]
        header = ["System", *(section.column_label(column) for column in section.columns)]
        body = [
            [row.label, *(_format_cell(row.cells.get(column)) for column in section.columns)] for row in section.rows
        ]
        lines += _markdown_table(header, body)
        lines += [
            "",
            "Each task's primary dev metric in %: mean ± sample std (ddof=1) over n seeds; `n/a`: one seed; "
            "`—`: not run. A task with several data sources has a column per source.",
        ]
        if section.common:
            common = ", ".join(f"{key}={_plain(value)}" for key, value in section.common.items())
            lines += ["", f"Every run: {common}."]
        lines += _cross_task_notes(section)
        cost = [
            [
                row.label,
                section.column_label(column),
                _format_parameters(cell.trainable_parameters),
                _format_optional(_mean(cell.train_seconds), ".1f"),
                _format_optional(_mean(cell.examples_per_second), ",.1f"),
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
            *_markdown_table(TASKS_MARKDOWN_COST_COLUMNS, cost),
        ]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def tasks_csv_rows(records: Iterable[Record]) -> list[dict[str, object]]:
    """One row per (model, system, task column), plain values (scores in %, ``None`` where undefined)."""
    out = []
    for section in group_tasks(records):
        for row in section.rows:
            for column in section.columns:
                cell = row.cells.get(column)
                if cell is None:
                    continue
                parameters, peak = cell.trainable_parameters, cell.peak_memory
                out.append(
                    {
                        "model": section.model,
                        "task": column.task,
                        "data": column.data,
                        "metric": column.metric,
                        "column": section.column_label(column),
                        "system": row.label,
                        "strategy": row.system,
                        "settings": ", ".join(f"{key}={_plain(value)}" for key, value in row.settings.items()),
                        "dev_mean": cell.dev_primary_mean,
                        "dev_std": cell.dev_primary_std,
                        "seeds": len(cell.records),
                        "seed_values": ";".join(_plain(seed) for seed in cell.seeds),
                        "trainable_parameters": round(statistics.fmean(parameters)) if parameters else None,
                        "train_seconds_mean": _mean(cell.train_seconds),
                        "train_examples_per_second": _mean(cell.examples_per_second),
                        "peak_memory_bytes": None if peak is None else peak[1],
                        "peak_memory_kind": None if peak is None else peak[0],
                    }
                )
    return out


def render_tasks_csv(records: Iterable[Record]) -> str:
    """The tasks layout in long form: a line per (model, system, task), empty cells where undefined."""
    return _write_csv(tasks_csv_rows(records), TASKS_CSV_COLUMNS)


def _write_csv(rows: Sequence[dict[str, object]], columns: Sequence[str]) -> str:
    if not rows:
        raise NoRecordsError("no result records to tabulate")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: "" if value is None else value for key, value in row.items()})
    return buffer.getvalue()


#: The table layouts of ``bertprobe table --layout``: name -> (Markdown renderer, CSV renderer).
LAYOUTS = {
    "table7": (render_markdown, render_csv),
    "tasks": (render_tasks_markdown, render_tasks_csv),
}
