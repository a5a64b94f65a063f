"""Result records grouped into rows: the unit every table and figure of bertprobe reports.

Records (the JSON files :func:`bertprobe.train.run` writes) are grouped into **rows**:

* a row is one *system* (``Fine-tuning``, or one feature-based layer strategy) with one
  setting of every configuration value except the seed and the options that cannot change
  a result (:data:`IGNORED_CONFIG_KEYS`); its seeds are averaged;
* rows live in **sections**, one per (model, task, data source, context). Records of
  different models or data are never averaged together: each combination gets its own
  section, with a heading naming it.

Two rows of the same system that differ in a setting (a hyper-parameter grid, say) are told
apart by the differing values, e.g. ``Fine-tuning (lr=3e-05)``.

The paper's numbers are BERT-base's on CoNLL-2003 (Devlin et al., 2019, Table 7). A row
carries them when it is the paper's experiment: a ``conll2003`` row, trained on the whole
training set, of fine-tuning or a feature strategy with the paper's head. Partial
fine-tuning, LoRA rows and linear probes of frozen features have none.

The layouts that render rows are :mod:`bertprobe.table` (Table 7) and
:mod:`bertprobe.tasks_table` (systems across tasks); :mod:`bertprobe.plots` draws them.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bertprobe.config import (
    BOOKKEEPING_OPTIONS,
    DATA_LOCATION_OPTIONS,
    OPTION_CONDITIONS,
    RECORD_DEFAULTS,
    RETIRED_OPTIONS,
    TUNABLE_OPTIONS,
)
from bertprobe.formatting import setting_text
from bertprobe.layer_spec import NAMED_STRATEGIES
from bertprobe.modes import Mode
from bertprobe.paper import PAPER_DEV_F1, PAPER_HEAD, PAPER_TASK, PAPER_TEST_F1
from bertprobe.record import (
    Record,
    data_name,
    primary_metric,
    primary_score,
    record_config,
    record_f1,
    recorded,
    train_examples,
)
from bertprobe.stats import difference_of_means, finite, mean_or_none, sample_std, welch_p_value

FINETUNE = Mode.FINETUNE.value
LORA = Mode.LORA.value
#: System key of partial fine-tuning: ``partial:K`` froze the embeddings and the K lowest layers.
PARTIAL_PREFIX = "partial:"
#: System key of the untrained cosine of sentence pairs: ``cosine:S`` pooled layer strategy S.
COSINE_PREFIX = "cosine:"

#: Configuration values that do not change what a run measures: they never split a row.
#: ``seed`` is what a row averages over; the others name folders, caches or book-keeping
#: (checkpointing, resuming, tracking, compiling), the options a run's name leaves out too;
#: where the data were read from (the section names the data set); options that no longer exist.
IGNORED_CONFIG_KEYS = BOOKKEEPING_OPTIONS | RETIRED_OPTIONS | DATA_LOCATION_OPTIONS | {"seed"}

#: The tag of a tuned system's final runs (``bertprobe tune --final``): their hyper-parameters
#: are the tuning's choice, so a tuned row is the system, "(tuned)", whatever it chose.
TUNED_TAG = "tuned"

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

#: Named layer strategies written out, so that a run given the spelled-out spec lands in the named row.
_STRATEGY_SPECS: dict[str, str] = {spec: name for name, spec in NAMED_STRATEGIES.items()}


# ----------------------------------------------------------------------------- grouping


def system_key(record: Record) -> str:
    """``finetune``; ``partial:K`` (K lowest layers frozen); ``lora``; ``cosine:S`` (pairs
    scored by the cosine of strategy S, untrained); or, for a feature-based run, the layer
    strategy's name."""
    config = record_config(record)
    mode = config.get("mode", FINETUNE)
    if mode == FINETUNE:
        return FINETUNE
    if mode == Mode.PARTIAL:
        return f"{PARTIAL_PREFIX}{config.get('freeze_layers')}"
    if mode == LORA:
        return LORA
    strategy = str(config.get("layers", "last"))
    strategy = _STRATEGY_SPECS.get(strategy.replace(" ", ""), strategy)
    return f"{COSINE_PREFIX}{strategy}" if mode == Mode.COSINE else strategy


def is_feature_system(key: str) -> bool:
    """Whether a system key names a frozen-feature strategy (not an encoder-training mode)."""
    return key not in (FINETUNE, LORA) and not key.startswith((PARTIAL_PREFIX, COSINE_PREFIX))


def system_name(key: str, lora_ranks: Iterable[object] = ()) -> str:
    """Display name of a system; LoRA's names the adapters' rank(s) when given."""
    if key.startswith(PARTIAL_PREFIX):
        return f"Partial (freeze {key[len(PARTIAL_PREFIX) :]} lowest)"
    if key == LORA:
        ranks = "/".join(sorted({str(rank) for rank in lora_ranks}, key=lambda text: (len(text), text)))
        return f"LoRA (r={ranks})" if ranks else "LoRA"
    if key.startswith(COSINE_PREFIX):
        return f"Cosine, untrained ({system_name(key[len(COSINE_PREFIX) :])})"
    if key.lstrip("-").isdigit():
        return f"Layer {key}"  # a single hidden state, e.g. one point of `bertprobe probe-layers`
    return SYSTEM_NAMES.get(key, f"Feature: {key}")


def lora_ranks(records: Iterable[Record]) -> list[object]:
    return [record_config(record).get("lora_rank", RECORD_DEFAULTS["lora_rank"]) for record in records]


def system_rank(key: str) -> tuple[int, int, str]:
    """Sort key of systems: fine-tuning, partial (fewest frozen first), LoRA, the paper's
    feature rows in its order, then other strategies by name."""
    if key == FINETUNE:
        return 0, 0, ""
    if key.startswith(PARTIAL_PREFIX):
        frozen = key[len(PARTIAL_PREFIX) :]
        return 1, int(frozen) if frozen.isdigit() else 1_000_000, frozen
    if key == LORA:
        return 2, 0, ""
    if key.startswith(COSINE_PREFIX):
        return 4, 0, key  # after every trained system
    names = list(SYSTEM_NAMES)
    return 3, names.index(key) if key in names else len(names), key


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
        config = record_config(record)
        return cls(
            model=str(config.get("model", "?")),
            task=str(config.get("task", "?")),
            data=data_name(record),
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
    def tuned(self) -> bool:
        return bool(self.settings.get(TUNED_TAG))

    @property
    def name(self) -> str:
        return row_name(self.system, self.records, self.tuned)

    @property
    def label(self) -> str:
        return f"{self.name} ({self.label_settings})" if self.label_settings else self.name

    @property
    def dev_f1(self) -> list[float]:
        return self.f1_scores("dev")

    @property
    def test_f1(self) -> list[float]:
        return self.f1_scores("test")

    @property
    def dev_f1_mean(self) -> float | None:
        return mean_or_none(self.dev_f1)

    @property
    def dev_f1_std(self) -> float | None:
        """Sample standard deviation over seeds (ddof=1); ``None`` with fewer than two."""
        return sample_std(self.dev_f1)

    @property
    def dev_primary(self) -> list[float]:
        """Each seed's primary dev metric (the task's own: accuracy, F1, MCC...) in percent."""
        return self.primary_scores("dev")

    def primary_scores(self, split: str) -> list[float]:
        """Each seed's primary metric on ``split`` in percent, skipping seeds without a finite
        one (no metric recorded, or NaN: a correlation over constant predictions)."""
        return finite(self.primary_per_seed(split))

    def f1_scores(self, split: str) -> list[float]:
        """Each seed's entity F1 on ``split`` in percent, skipping seeds without a finite one."""
        return finite(self.f1_per_seed(split))

    @property
    def dev_primary_mean(self) -> float | None:
        return mean_or_none(self.dev_primary)

    @property
    def dev_primary_std(self) -> float | None:
        return sample_std(self.dev_primary)

    @property
    def seeds(self) -> list[object]:
        return [record_config(record).get("seed") for record in self.records]

    def f1_per_seed(self, split: str) -> list[float | None]:
        """Each record's entity F1 on ``split`` in percent, in the order of :attr:`seeds`
        (``None`` where a record has none, NaN where it is undefined), so that a seed's score
        stays beside its seed."""
        return [record_f1(record, split) for record in self.records]

    def primary_per_seed(self, split: str) -> list[float | None]:
        """Each record's primary metric on ``split`` in percent, in the order of :attr:`seeds`."""
        return [primary_score(record, split) for record in self.records]

    @property
    def comparable_to_paper(self) -> bool:
        """Same task as the paper's Table 7, all of its training set and, for every seed, the
        paper's head."""
        if self.section.task != PAPER_TASK or not self.records:
            return False
        if any(record_config(r).get("train_fraction") not in (None, 1.0) or record_config(r).get("max_train_examples")
               for r in self.records):  # fmt: skip
            return False  # the paper trained on all of CoNLL-2003
        return all(
            record_config(r).get("head") == PAPER_HEAD.get(str(record_config(r).get("mode"))) for r in self.records
        )

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
        return [int(value) for value in self._recorded("parameters", "trainable")]

    @property
    def train_seconds(self) -> list[float]:
        return [float(value) for value in self._recorded("time", "train_seconds")]

    @property
    def resumed_seeds(self) -> int:
        """How many seeds were resumed from a checkpoint: their train time adds up the
        processes that trained them, which may have run on other machines or allocators."""
        return sum(
            1 for record in self.records if record.get("resumed_from") or len(recorded(record, "processes") or []) > 1
        )

    @property
    def flagged_seeds(self) -> int:
        """How many seeds' records flag their result (``health.flagged``: training diverged
        or learned nothing, see :mod:`bertprobe.health`)."""
        return sum(1 for record in self.records if (recorded(record, "health") or {}).get("flagged"))

    @property
    def examples_per_second(self) -> list[float]:
        """Per seed: training examples (windows) x epochs / train seconds."""
        values = []
        for record in self.records:
            examples, seconds = train_examples(record), recorded(record, "time", "train_seconds")
            epochs = record_config(record).get("epochs")
            if examples is not None and seconds and isinstance(epochs, int):
                values.append(examples * epochs / float(seconds))
        return values

    @property
    def peak_memory(self) -> tuple[str, int] | None:
        """The largest peak over seeds: GPU memory where recorded, else the process's RSS."""
        for key, kind in (("cuda_max_allocated_bytes", "GPU"), ("process_max_rss_bytes", "RSS")):
            if peaks := [int(value) for value in self._recorded("memory", key)]:
                return kind, max(peaks)
        return None

    def _recorded(self, *keys: str) -> list[Any]:
        """Each seed's value under ``keys`` (see :func:`recorded`), skipping seeds without one."""
        return [value for record in self.records if (value := recorded(record, *keys)) is not None]

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
        return means, mean_or_none(gammas), count


def row_settings(record: Record, system: str | None = None, ignore: Iterable[str] = ()) -> dict[str, object]:
    """The configuration values that make a row: all but :data:`IGNORED_CONFIG_KEYS` and
    ``ignore``, with options added since old records filled in, unset (``None``) options
    and options of other modes left out."""
    config = record_config(record)
    system = system_key(record) if system is None else system
    skipped = set(IGNORED_CONFIG_KEYS) | set(ignore)
    values = {**RECORD_DEFAULTS, **config}
    tuned = is_tuned(record)
    if tuned:  # the tuning chose these: one row per tuned system, never split by its choice
        skipped |= TUNABLE_OPTIONS
    for key, conditions in OPTION_CONDITIONS.items():
        if any(values.get(other) not in allowed for other, allowed in conditions.items()):
            skipped.add(key)  # e.g. LoRA's rank in a fine-tuning row, momentum beside AdamW
    settings = {key: value for key, value in sorted(values.items()) if key not in skipped and value is not None}
    if not is_feature_system(system):
        settings.pop("layers", None)  # the encoder-training modes always use the last layer, whatever --layers says
    elif "layers" not in skipped:
        settings["layers"] = system  # a spelled-out named strategy joins the named row
    if tuned:
        settings[TUNED_TAG] = True  # never in one row with untuned runs of the system
    return settings


def row_name(system: str, records: Sequence[Record], tuned: bool) -> str:
    """How a row of ``system``'s ``records`` is named in every layout: LoRA with its ranks,
    and a tuned system's finals marked "(tuned)"."""
    name = system_name(system, lora_ranks(records) if system == LORA else ())
    return f"{name} (tuned)" if tuned else name


def is_tuned(record: Record) -> bool:
    """Whether the record is a final run of a tuned system (``bertprobe tune --final``)."""
    return TUNED_TAG in (record_config(record).get("tags") or ())


def _order(row: Row) -> tuple[tuple[int, int, str], float, tuple[float, float], list[str | float]]:
    """Systems in :func:`system_rank` order; LoRA rows by rank; then the smaller training
    sets first (by ``train_fraction``, then ``max_train_examples``; the whole set last); then
    by their labels, numbers compared as numbers (``epochs=3`` before ``epochs=10``)."""
    return (
        system_rank(row.system),
        lora_rank_order(row.system, row.settings),
        train_size(row.settings),
        _natural_key(row.label_settings),
    )


def train_size(settings: dict[str, object]) -> tuple[float, float]:
    """How much of the training set a row used, as ``(train_fraction, max_train_examples)``
    with the whole set as ``(1.0, inf)``; sorts from the smallest set to the whole."""
    fraction = settings.get("train_fraction")
    limit = settings.get("max_train_examples")
    return (
        float(fraction) if isinstance(fraction, (int, float)) else 1.0,
        float(limit) if isinstance(limit, (int, float)) else math.inf,
    )


def _natural_key(text: str) -> list[str | float]:
    """``text`` split into alternating words and numbers: words at even positions, numbers
    (as floats, an exponent included: ``5e-05`` is below ``0.0001``) at odd ones, so two keys
    always compare like with like."""
    parts: list[str | float] = []
    for position, part in enumerate(re.split(r"(\d+(?:\.\d+)?(?:e[-+]?\d+)?)", text)):
        parts.append(float(part) if position % 2 else part)
    return parts


@dataclass(frozen=True)
class FinetuningGap:
    """A row's F1 minus its fine-tuning reference's, in F1 points: the mean difference over
    seeds with its standard error (see :func:`bertprobe.formatting.difference_of_means`)
    and Welch's two-sided p-value (:func:`bertprobe.formatting.welch_p_value`), and the
    paper's difference where both rows have a paper value."""

    reference: Row
    dev: float | None
    dev_error: float | None
    test: float | None
    test_error: float | None
    paper_dev: float | None
    dev_p: float | None
    test_p: float | None


def finetuning_gaps(rows: Sequence[Row], primary: bool = False) -> list[tuple[Row, FinetuningGap]]:
    """How far each other row of ``rows`` (one section, or one task's cells) is from full
    fine-tuning, in entity F1 or, with ``primary``, in the task's primary metric.

    The reference of a row is the fine-tuning row trained on as much data
    (:func:`train_size`) with the best mean dev score (the paper, too, chose fine-tuning's
    hyper-parameters on dev), among the rows with at least two seeds where there are any:
    a one-seed row is a point of a dev grid, whose gaps would have no error and no p, until
    its seeds are run. Rows with no such fine-tuning row are left out.
    """

    def scores(row: Row, split: str) -> list[float]:
        return _compared_scores(row, split, primary)

    references = finetuning_references(rows, primary)
    gaps = []
    for row in rows:
        size = train_size(row.settings)
        if row.system == FINETUNE or size not in references:
            continue
        reference = references[size]
        dev, dev_error = difference_of_means(scores(row, "dev"), scores(reference, "dev"))
        test, test_error = difference_of_means(scores(row, "test"), scores(reference, "test"))
        paper = None
        if row.paper_dev_f1 is not None and reference.paper_dev_f1 is not None:
            paper = round(row.paper_dev_f1 - reference.paper_dev_f1, 1)  # the paper's values have one decimal
        dev_p = welch_p_value(scores(row, "dev"), scores(reference, "dev"))
        test_p = welch_p_value(scores(row, "test"), scores(reference, "test"))
        gaps.append((row, FinetuningGap(reference, dev, dev_error, test, test_error, paper, dev_p, test_p)))
    return gaps


def finetuning_references(rows: Sequence[Row], primary: bool = False) -> dict[tuple[float, float], Row]:
    """Each training size's fine-tuning reference among ``rows`` (see :func:`finetuning_gaps`)."""
    candidates: dict[tuple[float, float], list[tuple[bool, float, Row]]] = {}
    for row in rows:
        dev = _compared_scores(row, "dev", primary)
        if row.system == FINETUNE and (mean := mean_or_none(dev)) is not None:
            candidates.setdefault(train_size(row.settings), []).append((len(dev) >= 2, mean, row))
    return {size: max(found, key=lambda found: found[:2])[2] for size, found in candidates.items()}


def _compared_scores(row: Row, split: str, primary: bool) -> list[float]:
    """The scores rows are compared by: entity F1, or with ``primary`` the task's primary metric."""
    return row.primary_scores(split) if primary else row.f1_scores(split)


def has_several_finetuning_rows(rows: Sequence[Row]) -> bool:
    """Whether some training size has more than one fine-tuning row to choose a reference from."""
    sizes = [train_size(row.settings) for row in rows if row.system == FINETUNE]
    return len(sizes) > len(set(sizes))


def lora_rank_order(system: str, settings: dict[str, object]) -> float:
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
        key = (section, system, canonical_json(settings))
        rows.setdefault(key, Row(section, system, settings)).records.append(record)

    sections: dict[SectionKey, list[Row]] = {}
    for row in rows.values():
        sections.setdefault(row.section, []).append(row)
    for section_rows in sections.values():
        _label_settings(section_rows)
        section_rows.sort(key=_order)
    return dict(sorted(sections.items()))


def canonical_json(value: object) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def differing_labels(settings: Sequence[dict[str, object]], skip: Iterable[str] = ()) -> list[str]:
    """For each settings dict, ``key=value, ...`` of the keys whose values differ between them."""
    skip = set(skip)
    keys = sorted({key for values in settings for key in values} - skip)
    differing = [key for key in keys if len({canonical_json(values.get(key)) for values in settings}) > 1]
    return [", ".join(f"{key}={setting_text(values.get(key))}" for key in differing) for values in settings]


def _label_settings(rows: list[Row]) -> None:
    """Rows of one system that differ in a setting are labelled with the differing values
    (LoRA's rank is in its name already)."""
    by_system: dict[tuple[str, bool], list[Row]] = {}
    for row in rows:
        by_system.setdefault((row.system, row.tuned), []).append(row)
    for (system, _), same in by_system.items():
        if len(same) < 2:
            continue
        skip = ("lora_rank",) if system == LORA else ()
        for row, label in zip(same, differing_labels([row.settings for row in same], skip), strict=True):
            row.label_settings = label
