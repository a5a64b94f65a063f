"""GLUE's tasks: each one's files, columns, labels and metrics, read from the published TSV
folders (byte order marks and literal quotes included) or from the Hub's ``glue`` dataset,
into the generic :class:`~bertprobe.tasks.sequence.SequenceCorpus`."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from bertprobe.errors import DataFormatError
from bertprobe.tasks.sequence import SequenceCorpus, SequenceExample, build_corpus, read_table


@dataclass(frozen=True)
class GlueTaskSpec:
    """Where a GLUE task lives locally and on the Hub, and how it is scored."""

    name: str
    #: Folder name in the GLUE download (``SST-2``) and its files.
    folder: str
    text_columns: tuple[str, ...]
    label_column: str
    #: Local label value → Hub class name; values not listed are kept as they are.
    local_labels: dict[str, str]
    hub_config: str
    hub_text_columns: tuple[str, ...]
    hub_label_column: str
    #: The Hub's ``ClassLabel`` names in id order; empty for regression.
    label_names: tuple[str, ...]
    #: Keys of :func:`bertprobe.sequence_metrics.classification_scores` or ``regression_scores``.
    metrics: tuple[str, ...]
    is_regression: bool = False
    positive_label: str | None = None
    train_file: str = "train.tsv"
    dev_file: str = "dev.tsv"
    #: Header-less local files (CoLA) name their columns here.
    local_column_names: tuple[str, ...] | None = None
    hub_validation_split: str = "validation"


GLUE_TASKS: dict[str, GlueTaskSpec] = {
    "sst2": GlueTaskSpec(
        name="sst2",
        folder="SST-2",
        text_columns=("sentence",),
        label_column="label",
        local_labels={"0": "negative", "1": "positive"},
        hub_config="sst2",
        hub_text_columns=("sentence",),
        hub_label_column="label",
        label_names=("negative", "positive"),
        metrics=("accuracy",),
    ),
    "mrpc": GlueTaskSpec(
        name="mrpc",
        folder="MRPC",
        text_columns=("#1 String", "#2 String"),
        label_column="Quality",
        local_labels={"0": "not_equivalent", "1": "equivalent"},
        hub_config="mrpc",
        hub_text_columns=("sentence1", "sentence2"),
        hub_label_column="label",
        label_names=("not_equivalent", "equivalent"),
        metrics=("f1", "accuracy"),
        positive_label="equivalent",
    ),
    "rte": GlueTaskSpec(
        name="rte",
        folder="RTE",
        text_columns=("sentence1", "sentence2"),
        label_column="label",
        local_labels={},
        hub_config="rte",
        hub_text_columns=("sentence1", "sentence2"),
        hub_label_column="label",
        label_names=("entailment", "not_entailment"),
        metrics=("accuracy",),
    ),
    "cola": GlueTaskSpec(
        name="cola",
        folder="CoLA",
        text_columns=("sentence",),
        label_column="label",
        local_labels={"0": "unacceptable", "1": "acceptable"},
        hub_config="cola",
        hub_text_columns=("sentence",),
        hub_label_column="label",
        label_names=("unacceptable", "acceptable"),
        metrics=("matthews",),
        positive_label="acceptable",
        local_column_names=("source", "label", "original_label", "sentence"),
    ),
    "qnli": GlueTaskSpec(
        name="qnli",
        folder="QNLI",
        text_columns=("question", "sentence"),
        label_column="label",
        local_labels={},
        hub_config="qnli",
        hub_text_columns=("question", "sentence"),
        hub_label_column="label",
        label_names=("entailment", "not_entailment"),
        metrics=("accuracy",),
    ),
    "qqp": GlueTaskSpec(
        name="qqp",
        folder="QQP",
        text_columns=("question1", "question2"),
        label_column="is_duplicate",
        local_labels={"0": "not_duplicate", "1": "duplicate"},
        hub_config="qqp",
        hub_text_columns=("question1", "question2"),
        hub_label_column="label",
        label_names=("not_duplicate", "duplicate"),
        metrics=("f1", "accuracy"),
        positive_label="duplicate",
    ),
    "mnli": GlueTaskSpec(
        name="mnli",
        folder="MNLI",
        text_columns=("sentence1", "sentence2"),
        label_column="gold_label",
        local_labels={},
        hub_config="mnli",
        hub_text_columns=("premise", "hypothesis"),
        hub_label_column="label",
        label_names=("entailment", "neutral", "contradiction"),
        metrics=("accuracy",),
        dev_file="dev_matched.tsv",
        hub_validation_split="validation_matched",
    ),
    "stsb": GlueTaskSpec(
        name="stsb",
        folder="STS-B",
        text_columns=("sentence1", "sentence2"),
        label_column="score",
        local_labels={},
        hub_config="stsb",
        hub_text_columns=("sentence1", "sentence2"),
        hub_label_column="label",
        label_names=(),
        metrics=("pearson", "spearman"),
        is_regression=True,
    ),
}


def glue_task(task: str) -> GlueTaskSpec:
    """The spec of a GLUE task by name (``sst2``, ``SST-2`` and ``sst-2`` all work)."""
    key = task.lower().replace("-", "").replace("_", "")
    if key in GLUE_TASKS:
        return GLUE_TASKS[key]
    raise ValueError(f"unknown GLUE task {task!r}; known tasks: {', '.join(GLUE_TASKS)}")


def load_glue_dir(task: str, data_dir: str | Path) -> SequenceCorpus:
    """Read a GLUE task's ``train.tsv`` and dev file; dev becomes the ``validation`` split.

    ``data_dir`` is either the task folder itself or the GLUE root holding it
    (``data_dir/SST-2``). Labels are mapped to the Hub's class names.
    """
    spec = glue_task(task)
    root = Path(data_dir)
    folder = root / spec.folder if (root / spec.folder).is_dir() else root
    if not (folder / spec.train_file).is_file():
        raise FileNotFoundError(f"no {spec.train_file} for GLUE task {spec.name} in {root} or {root / spec.folder}")
    splits: dict[str, list[SequenceExample]] = {}
    for split, file_name in (("train", spec.train_file), ("validation", spec.dev_file)):
        examples = read_table(
            folder / file_name,
            list(spec.text_columns),
            spec.label_column,
            delimiter="\t",
            quoting_off=True,
            column_names=list(spec.local_column_names) if spec.local_column_names else None,
        )
        splits[split] = [_map_local_label(spec, example) for example in examples]
    return build_corpus(
        splits,
        source=str(folder),
        regression=spec.is_regression,
        label_list=None if spec.is_regression else spec.label_names,
    )


def _map_local_label(spec: GlueTaskSpec, example: SequenceExample) -> SequenceExample:
    label = str(example.label)
    if spec.is_regression:
        return example
    mapped = spec.local_labels.get(label, label)
    if mapped not in spec.label_names:
        expected = sorted(spec.local_labels) if spec.local_labels else list(spec.label_names)
        raise DataFormatError(
            f"{example.source}: label {label!r} is not a {spec.name} label; expected one of {expected}"
        )
    return replace(example, label=mapped)


def load_glue_hub(task: str, dataset_name: str = "glue") -> SequenceCorpus:
    """Load a GLUE task with ``datasets.load_dataset(dataset_name, config)`` (needs the network).

    Integer labels become the dataset's ``ClassLabel`` names, so the corpus matches
    :func:`load_glue_dir`'s. The unlabelled test split is dropped.
    """
    from datasets import load_dataset

    spec = glue_task(task)
    dataset = load_dataset(dataset_name, spec.hub_config)
    source = f"hub:{dataset_name}/{spec.hub_config}"
    label_feature = dataset["train"].features[spec.hub_label_column]
    names: list[str] | None = list(label_feature.names) if hasattr(label_feature, "names") else None
    if names is not None and spec.label_names and tuple(names) != spec.label_names:
        raise DataFormatError(f"{source}: class names {names} differ from the expected {list(spec.label_names)}")
    splits: dict[str, list[SequenceExample]] = {}
    for split, hub_split in (("train", "train"), ("validation", spec.hub_validation_split)):
        part = dataset[hub_split]
        texts = [list(part[column]) for column in spec.hub_text_columns]
        labels = list(part[spec.hub_label_column])
        examples = []
        for row, label in enumerate(labels):
            where = f"{source}[{hub_split}][{row}]"
            if names is not None:
                if not 0 <= int(label) < len(names):
                    raise DataFormatError(f"{where}: label id {label} is not a class of {names}")
                value: str | float = names[int(label)]
            else:
                value = float(label)
            examples.append(SequenceExample(texts[0][row], texts[1][row] if len(texts) > 1 else None, value, where))
        splits[split] = examples
    return build_corpus(
        splits,
        source=source,
        regression=spec.is_regression,
        label_list=names if names is not None and not spec.is_regression else None,
    )


# --------------------------------------------------------------------------- the user's files
