"""Sentence and sentence-pair classification/regression data: GLUE and the user's own files.

Every source ends as the same :class:`SequenceCorpus`: named splits of
:class:`SequenceExample` (one or two texts and a label). Three ways in:

* :func:`load_glue_dir` reads a GLUE task folder (``train.tsv`` and ``dev.tsv``, tab
  separated, quote characters literal, as GLUE's own readers take them);
* :func:`load_glue_hub` reads the Hugging Face ``glue`` dataset (needs the network);
* :func:`load_custom` reads the user's own ``.tsv``, ``.csv`` or ``.jsonl`` files.

Local GLUE label values are mapped to the Hub's class names (MRPC ``1`` becomes
``equivalent``), and a GLUE corpus takes its label order from the Hub's ``ClassLabel``,
so both GLUE paths give the same ``label_list`` and the same label ids.

GLUE test labels are not public: a GLUE corpus has ``train`` and ``validation`` only.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bertprobe.errors import DataFormatError
from bertprobe.tasks.text_files import not_utf8_error

#: More distinct numeric training labels than this makes an undeclared task regression.
REGRESSION_MIN_DISTINCT = 10

#: Label texts that stand for a missing label (compared case-insensitively): pandas and
#: spreadsheets write a missing value as ``NaN``, and a class of that name would be silent
#: corruption, so such a label is an error, as an empty one is.
MISSING_LABEL_TEXTS = frozenset({"nan"})


@dataclass
class SequenceExample:
    text_a: str
    text_b: str | None
    label: str | float
    source: str  # "file:line" (or "hub:dataset/config[split][row]") for error messages


@dataclass
class SequenceSplit:
    name: str
    examples: list[SequenceExample] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.examples)

    def labels(self) -> list[str | float]:
        return [example.label for example in self.examples]


@dataclass
class SequenceCorpus:
    splits: dict[str, SequenceSplit]
    source: str
    is_regression: bool
    #: Class names in label-id order; empty for regression.
    label_list: list[str]
    #: Training examples held out as dev (:func:`hold_out_dev`); the task's own dev is then test.
    dev_from_train: int | None = None

    def empty_texts(self) -> dict[str, list[str]]:
        """Per split, where (``file:line``) each example with an empty or blank text is (either
        text of a pair). Such examples are kept: the model sees little more than its special
        tokens for them."""
        return {
            name: [
                example.source
                for example in split.examples
                if not example.text_a.strip() or (example.text_b is not None and not example.text_b.strip())
            ]
            for name, split in self.splits.items()
        }

    @property
    def is_pair(self) -> bool:
        """True when the examples carry a second text."""
        return any(example.text_b is not None for split in self.splits.values() for example in split.examples)

    @property
    def num_labels(self) -> int:
        """Output size of a head: one for regression, else the number of classes."""
        return 1 if self.is_regression else len(self.label_list)

    def label_to_id(self) -> dict[str, int]:
        return {label: index for index, label in enumerate(self.label_list)}


# --------------------------------------------------------------------------- reading files


def read_table(
    path: str | Path,
    text_columns: list[str],
    label_column: str,
    delimiter: str | None = None,
    quoting_off: bool | None = None,
    column_names: list[str] | None = None,
) -> list[SequenceExample]:
    """Read examples from a ``.tsv``, ``.csv``, ``.jsonl`` or ``.json`` (JSON Lines) file.

    ``text_columns`` names one column (single sentence) or two (a pair); ``label_column``
    names the label. Delimited files have a header row (line 1) unless ``column_names``
    gives the names, for header-less files such as GLUE's CoLA. ``delimiter`` defaults to a
    tab for ``.tsv`` and a comma for ``.csv``; ``quoting_off`` defaults to on for tabs (quote
    characters are literal, as GLUE's readers take them) and off for commas (standard CSV
    quoting, so a quoted field may hold commas). A byte order mark, CRLF line ends and
    blank lines are accepted. The file must be UTF-8. A byte that is not, a missing column
    in the header, the header repeated further down, a row with the wrong number of fields,
    an empty label or a missing one (``NaN``, :data:`MISSING_LABEL_TEXTS`), or JSON labels
    of mixed types (numbers and strings, say), raises :class:`DataFormatError` naming the
    file, the 1-based line and the reason. Labels are returned as strings.
    """
    file = Path(path)
    if not 1 <= len(text_columns) <= 2:
        raise DataFormatError(f"text_columns must name one or two columns, got {text_columns!r}")
    if not file.is_file():
        raise FileNotFoundError(f"data file {file} does not exist")
    try:
        return _read_file(file, text_columns, label_column, delimiter, quoting_off, column_names)
    except UnicodeDecodeError as error:
        raise not_utf8_error(file, error) from error


def _read_file(
    file: Path,
    text_columns: list[str],
    label_column: str,
    delimiter: str | None,
    quoting_off: bool | None,
    column_names: list[str] | None,
) -> list[SequenceExample]:
    suffix = file.suffix.lower()
    if suffix in (".jsonl", ".json"):
        return _read_json_lines(file, text_columns, label_column)
    if delimiter is None:
        if suffix == ".tsv":
            delimiter = "\t"
        elif suffix == ".csv":
            delimiter = ","
        else:
            raise DataFormatError(
                f"{file}: cannot tell the format from {suffix!r}; use .tsv, .csv or .jsonl, or pass delimiter"
            )
    if quoting_off is None:
        quoting_off = delimiter == "\t"
    return _read_delimited(file, text_columns, label_column, delimiter, quoting_off, column_names)


def _read_delimited(
    file: Path,
    text_columns: list[str],
    label_column: str,
    delimiter: str,
    quoting_off: bool,
    column_names: list[str] | None,
) -> list[SequenceExample]:
    quoting = csv.QUOTE_NONE if quoting_off else csv.QUOTE_MINIMAL
    examples: list[SequenceExample] = []
    with file.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, delimiter=delimiter, quoting=quoting, strict=not quoting_off)
        header = list(column_names) if column_names is not None else None
        header_line = 0
        indices: list[int] = []
        label_index = 0
        if header is not None:
            indices, label_index = _column_indices(file, header, text_columns, label_column, header_line)
        while True:
            start = reader.line_num + 1  # a quoted CSV field may span lines: report where the row starts
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as error:
                raise DataFormatError(f"{file}:{start}: cannot parse the row: {error}") from error
            line = start
            if not row or all(not value.strip() for value in row):
                continue
            if header is None:
                header = [name.strip() for name in row]
                header_line = line
                indices, label_index = _column_indices(file, header, text_columns, label_column, header_line)
                continue
            if header_line and [value.strip() for value in row] == header:
                raise DataFormatError(
                    f"{file}:{line}: the row repeats the header (line {header_line}); a file has one header row, "
                    "its first (were files joined without removing the later headers?)"
                )
            if len(row) != len(header):
                where = f"the header at line {header_line}" if header_line else "the given column names"
                raise DataFormatError(
                    f"{file}:{line}: expected {len(header)} fields ({where}), got {len(row)}; "
                    f"row {delimiter.join(row)[:200]!r}"
                )
            label = row[label_index].strip()
            if not label:
                raise DataFormatError(f"{file}:{line}: the label column {label_column!r} is empty")
            if is_missing_label(label):
                raise DataFormatError(
                    f"{file}:{line}: the label column {label_column!r} is {label!r}, a missing label; "
                    "give the example its label or remove it"
                )
            texts = [row[index] for index in indices]
            examples.append(SequenceExample(texts[0], texts[1] if len(texts) > 1 else None, label, f"{file}:{line}"))
    if header is None:
        raise DataFormatError(f"{file}: the file is empty (no header row)")
    return examples


def _column_indices(
    file: Path, header: list[str], text_columns: list[str], label_column: str, header_line: int
) -> tuple[list[int], int]:
    where = f"{file}:{header_line}" if header_line else str(file)
    missing = [name for name in [*text_columns, label_column] if name not in header]
    if missing:
        raise DataFormatError(
            f"{where}: no column {', '.join(map(repr, missing))} in the header; available columns: {header}"
        )
    return [header.index(name) for name in text_columns], header.index(label_column)


def is_missing_label(text: str) -> bool:
    """Whether a label text stands for a missing label (:data:`MISSING_LABEL_TEXTS`)."""
    return text.strip().lower() in MISSING_LABEL_TEXTS


def _read_json_lines(file: Path, text_columns: list[str], label_column: str) -> list[SequenceExample]:
    examples: list[SequenceExample] = []
    first_type: tuple[str, int] | None = None  # the JSON type of the file's first label, and its line
    with file.open(encoding="utf-8-sig", newline="") as handle:
        for line, raw in enumerate(_physical_lines(handle), start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except json.JSONDecodeError as error:
                raise DataFormatError(
                    f"{file}:{line}: not valid JSON ({error.msg}); expected one object per line"
                ) from error
            if not isinstance(record, dict):
                raise DataFormatError(
                    f"{file}:{line}: expected one JSON object per line (JSON Lines), got {type(record).__name__}"
                )
            for name in [*text_columns, label_column]:
                if name not in record:
                    raise DataFormatError(f"{file}:{line}: no key {name!r}; available keys: {sorted(record)}")
            texts = [_json_text(file, line, name, record[name]) for name in text_columns]
            label = _json_label(file, line, label_column, record[label_column])
            kind = _json_type(record[label_column])
            if first_type is None:
                first_type = kind, line
            elif kind != first_type[0]:
                raise DataFormatError(
                    f"{file}:{line}: the label {label_column!r} is a {kind} ({record[label_column]!r}), but the "
                    f"labels before it are {first_type[0]}s (from line {first_type[1]}); a file's JSON labels must "
                    "all be of one type (numbers, strings or booleans)"
                )
            examples.append(SequenceExample(texts[0], texts[1] if len(texts) > 1 else None, label, f"{file}:{line}"))
    return examples


def _physical_lines(handle: Any) -> Iterator[str]:
    """Lines split at ``\\n`` only (``\\r\\n`` accepted), so JSON strings holding other line breaks stay whole."""
    pending = ""
    for chunk in iter(lambda: handle.read(1 << 16), ""):
        pending += chunk
        *complete, pending = pending.split("\n")
        for line in complete:
            yield line.removesuffix("\r")
    if pending:
        yield pending.removesuffix("\r")


def _json_text(file: Path, line: int, name: str, value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise DataFormatError(f"{file}:{line}: the text in {name!r} is {value!r}, not a string")


def _json_type(value: object) -> str:
    """The JSON type of a label that :func:`_json_label` accepted: boolean, number or string."""
    if isinstance(value, bool):
        return "boolean"
    return "number" if isinstance(value, (int, float)) else "string"


def _json_missing(value: object) -> bool:
    """Whether a JSON label stands for a missing one: ``NaN`` (bare, as pandas writes it, or quoted)."""
    if isinstance(value, float):
        return math.isnan(value)
    return isinstance(value, str) and is_missing_label(value)


def _json_label(file: Path, line: int, name: str, value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if _json_missing(value):
        raise DataFormatError(f"{file}:{line}: the label {name!r} is {value!r}, a missing label")
    if isinstance(value, float) and not math.isfinite(value):
        raise DataFormatError(f"{file}:{line}: the label {name!r} is {value!r}, not a finite number")
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    if value is None or isinstance(value, str):
        raise DataFormatError(f"{file}:{line}: the label {name!r} is missing (empty or null)")
    raise DataFormatError(f"{file}:{line}: the label {name!r} is {value!r}, not a string or number")


# --------------------------------------------------------------------------- building a corpus


def _as_float(value: str | float) -> float | None:
    if isinstance(value, float):
        return value
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _sorted_labels(labels: set[str]) -> list[str]:
    numbers = {label: _as_float(label) for label in labels}
    if all(number is not None for number in numbers.values()):
        return sorted(labels, key=lambda label: (numbers[label], label))
    return sorted(labels)


def build_corpus(
    splits: dict[str, list[SequenceExample]],
    source: str,
    regression: bool | None = None,
    label_list: Sequence[str] | None = None,
) -> SequenceCorpus:
    """Check the splits and settle the task type and label list.

    ``splits`` must hold ``train``. With ``regression=None`` the task is regression when
    the training labels hold more than :data:`REGRESSION_MIN_DISTINCT` distinct numbers
    (:func:`infer_regression`). A regression corpus has float labels (a label that is not
    a finite number is an error naming its own file and line). A classification corpus has
    string labels and its ``label_list`` is ``label_list`` when given (every label must be
    in it), else the training labels sorted (numerically when all look like numbers). An
    empty split, or a label in another split that train never shows, raises
    :class:`DataFormatError`.
    """
    if "train" not in splits:
        raise ValueError(f"build_corpus needs a 'train' split, got {sorted(splits)}")
    for name, examples in splits.items():
        if not examples:
            raise DataFormatError(f"split {name!r} of {source} has no examples")
    if regression is None:
        regression = infer_regression(splits["train"])

    if regression:
        result = {
            name: SequenceSplit(name, [_to_float_example(e, name) for e in examples])
            for name, examples in splits.items()
        }
        for name, split in result.items():
            values = {example.label for example in split.examples}
            if name != "train" and len(values) == 1:
                raise DataFormatError(
                    f"split {name!r} of {source}: every label is {values.pop()}; a regression task is scored by "
                    "Pearson and Spearman correlations, which a constant split leaves undefined"
                )
        return SequenceCorpus(result, source=source, is_regression=True, label_list=[])

    converted = {name: [_to_str_example(e) for e in examples] for name, examples in splits.items()}
    seen_in_train = {str(example.label) for example in converted["train"]}
    if label_list is not None:
        labels = list(label_list)
        if len(set(labels)) != len(labels):
            raise ValueError(f"label_list has repeated labels: {labels}")
        allowed = set(labels)
        for name, examples in converted.items():
            for example in examples:
                if example.label not in allowed:
                    raise DataFormatError(
                        f"{example.source}: label {example.label!r} in split {name!r} is not one of {labels}"
                    )
    else:
        labels = _sorted_labels(seen_in_train)
    for name, examples in converted.items():
        if name == "train":
            continue
        unseen = sorted({str(e.label) for e in examples} - seen_in_train)
        if unseen:
            where = next(e.source for e in examples if e.label in unseen)
            raise DataFormatError(
                f"split {name!r} has labels never seen in train: {unseen} (first at {where}); "
                "the label set must come from the training data"
            )
    result = {name: SequenceSplit(name, examples) for name, examples in converted.items()}
    return SequenceCorpus(result, source=source, is_regression=False, label_list=labels)


def infer_regression(train: Sequence[SequenceExample]) -> bool:
    """Whether an undeclared task is regression: its training labels hold more than
    :data:`REGRESSION_MIN_DISTINCT` distinct numbers.

    Then every training label must be a number: one that is not (``high`` among scores) is
    an error naming its file and line, not a reason to read the scores as classes.
    """
    numbers = [_as_float(example.label) for example in train]
    distinct = {number for number in numbers if number is not None}
    if len(distinct) <= REGRESSION_MIN_DISTINCT:
        return False
    for example, number in zip(train, numbers, strict=True):
        if number is None:
            raise DataFormatError(
                f"{example.source}: label {example.label!r} in split 'train' is not a finite number, but the "
                f"training labels hold {len(distinct)} distinct numbers, so the task is taken for regression; "
                "correct the label, or declare the task classification (--no-regression) if the labels are classes"
            )
    return True


def _to_float_example(example: SequenceExample, split: str) -> SequenceExample:
    number = _as_float(example.label)
    if number is None:
        raise DataFormatError(
            f"{example.source}: label {example.label!r} in split {split!r} is not a number (regression)"
        )
    return replace(example, label=number)


def _to_str_example(example: SequenceExample) -> SequenceExample:
    return example if isinstance(example.label, str) else replace(example, label=str(example.label))


# --------------------------------------------------------------------------- GLUE


#: The seed that picks the training examples held out as dev (``--dev-from-train``): fixed,
#: so that every run and every tuning trial is chosen on the same examples.
HOLDOUT_SEED = 0


def hold_out_dev(corpus: SequenceCorpus, size: int) -> SequenceCorpus:
    """The corpus with ``size`` training examples (a fixed seeded choice, :data:`HOLDOUT_SEED`)
    as its dev split and its own dev split as test: for tasks whose test labels are hidden
    (GLUE), so that epochs and hyper-parameters are chosen on examples the reported score
    never saw. The held-out examples leave the training split."""
    import random

    from bertprobe.errors import ConfigError

    if corpus.splits.get("test") and len(corpus.splits["test"]):
        raise ConfigError(
            f"--dev-from-train is for tasks without a labelled test set; {corpus.source} has one: keep its dev "
            "set for choosing and its test set for reporting"
        )
    train = corpus.splits["train"].examples
    if not 1 <= size < len(train):
        raise ConfigError(
            f"--dev-from-train {size} must leave training examples: {corpus.source} has {len(train)} (give 1.."
            f"{len(train) - 1})"
        )
    held_out = set(random.Random(HOLDOUT_SEED).sample(range(len(train)), size))
    splits = {
        "train": SequenceSplit("train", [example for index, example in enumerate(train) if index not in held_out]),
        "validation": SequenceSplit("validation", [train[index] for index in sorted(held_out)]),
        "test": SequenceSplit("test", list(corpus.splits["validation"].examples)),
    }
    return replace(corpus, splits=splits, dev_from_train=size)


def load_custom(
    train: str | Path,
    validation: str | Path,
    test: str | Path | None = None,
    *,
    text_columns: list[str],
    label_column: str,
    regression: bool | None = None,
    delimiter: str | None = None,
) -> SequenceCorpus:
    """Read the user's own train/validation (and optional test) files into a corpus.

    Formats follow the file extensions (see :func:`read_table`); the task type and label
    list follow :func:`build_corpus`.
    """
    paths: dict[str, str | Path] = {"train": train, "validation": validation}
    if test is not None:
        paths["test"] = test
    splits = {name: read_table(path, text_columns, label_column, delimiter=delimiter) for name, path in paths.items()}
    for name, examples in splits.items():  # name the file: the corpus knows only the folder
        if not examples:
            raise DataFormatError(f"{paths[name]}: the {name} file has no examples (an empty file, or a header alone)")
    return build_corpus(splits, source=str(Path(train).parent), regression=regression)
