"""The result record: what a run writes, and how readers get at it, in one place.

:func:`build_record` assembles the record :func:`bertprobe.train.run` writes; every field is
described in ``docs/record.md``. Readers (tables, figures, notebooks) use the functions
below rather than indexing the JSON, because records of older versions lack some fields:
each reader says what it answers for such a record.

Versions (the record's ``schema``):

* 0 (no ``schema`` field): the first records. No ``task`` section (CoNLL-2003 tagging,
  scored by entity F1), no ``data.source``, and options added later missing from
  ``config`` (they ran with those options' defaults: :data:`bertprobe.config.RECORD_DEFAULTS`).
* 1: ``task`` names the primary metric; ``data`` says where the data came from;
  ``processes`` lists every process that trained the run, each with ``trim_heap_every``
  (an option since removed).
* 2: ``processes`` entries without ``trim_heap_every``; nothing else changed.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 2

Record = dict[str, object]


def build_record(
    *,
    name: str,
    config: dict[str, object],
    encoder: dict[str, object],
    layers: dict[str, object],
    learned_layer_weights: object,
    task: dict[str, object],
    labels: list[str],
    data: dict[str, object],
    metrics: dict[str, object],
    training: dict[str, object],
    adaptation: dict[str, object],
    optimizer: dict[str, object],
    parameters: dict[str, int],
    time: dict[str, float],
    memory: dict[str, object],
    feature_cache: dict[str, object] | None,
    distributed: dict[str, object],
    provenance: dict[str, object],
) -> Record:
    """The record of one run, from its parts. ``training`` holds ``best_epoch``, ``history``,
    ``optimizer_steps_per_epoch``, ``final_lr``, ``resumed_from``, ``resumes`` and
    ``processes``; ``provenance`` holds ``versions``, ``machine``, ``git_commit`` and
    ``command``. The keys keep the order older records have."""
    return {
        "schema": SCHEMA_VERSION,
        "name": name,
        "config": config,
        "encoder": encoder,
        "layers": layers,
        "learned_layer_weights": learned_layer_weights,
        "task": task,
        "labels": labels,
        "data": data,
        "metrics": metrics,
        **training,
        "parameters": parameters,
        "adaptation": adaptation,
        "optimizer": optimizer,
        "time": time,
        "memory": memory,
        "feature_cache": feature_cache,
        "distributed": distributed,
        **provenance,
    }


def schema_version(record: Record) -> int:
    """The record's version (0 for records written before records had one)."""
    return int(record.get("schema") or 0)  # type: ignore[arg-type]


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


def records_frame(directory: str | Path):
    """The records under ``directory`` as a pandas DataFrame, a row per record: its name, the
    configuration's settings (``config.*``), the dev and test scores (``dev.*``, ``test.*``;
    nested scores flattened with dots) and the train time. pandas is an optional extra
    (``pip install pandas``)."""
    try:
        import pandas
    except ImportError:
        raise ImportError("records_frame needs pandas: pip install pandas") from None

    rows = []
    for record in load_records(directory):
        row = {"name": record.get("name")}
        row.update({f"config.{key}": value for key, value in (record.get("config") or {}).items()})
        for split in ("dev", "test"):
            row.update(_flatten(f"{split}.", (record.get("metrics") or {}).get(split) or {}))
        row["train_seconds"] = (record.get("time") or {}).get("train_seconds")
        rows.append(row)
    return pandas.DataFrame(rows)


def _flatten(prefix: str, values: dict[str, object]) -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(f"{prefix}{key}.", value))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def recorded(record: Record, *keys: str) -> Any:
    """The value under ``record[keys[0]][keys[1]]...``, or ``None`` where a key is missing or
    a level is not a dict: records of older versions lack some sections."""
    value: Any = record
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def data_source(record: Record) -> str:
    """Where the run's data came from, as it was given: a folder or file path, or ``hub:NAME``."""
    if source := recorded(record, "data", "source"):
        return str(source)
    config = record_config(record)
    return str(config.get("data_dir") or f"hub:{config.get('hub_dataset', '?')}")


def data_name(record: Record) -> str:
    """The data set's name for grouping and headings: a local folder's or file's own name
    (``conll2003``, ``MRPC``), whichever path reached it (``../data/conll2003`` and
    ``/srv/data/conll2003`` are one data set), or ``hub:NAME``."""
    source = data_source(record)
    if source.startswith("hub:"):
        return source
    return Path(source.rstrip("/\\")).name or source


def primary_metric(record: Record) -> str:
    """The task's primary dev metric as the record names it; ``f1`` for records written
    before records named it (CoNLL tagging only)."""
    metric = recorded(record, "task", "primary_metric")
    return str(metric) if metric else "f1"


def primary_score(record: Record, split: str = "dev") -> float | None:
    """The primary metric on ``split`` in percent (x100), or ``None`` when not recorded."""
    value = recorded(record, "metrics", split, primary_metric(record))
    return None if value is None else 100.0 * float(value)


def train_examples(record: Record) -> int | None:
    """Training examples per epoch: windows for tagging tasks, examples for sequence tasks."""
    windows = recorded(record, "data", "windows", "train")
    if windows is not None:
        return int(windows)
    examples = recorded(record, "data", "examples_trained")
    return None if examples is None else int(examples)


def record_config(record: Record) -> dict[str, object]:
    config = record.get("config")
    return config if isinstance(config, dict) else {}


def record_f1(record: Record, split: str) -> float | None:
    """A record's entity F1 on ``split`` in percent, ``None`` without one."""
    f1 = recorded(record, "metrics", split, "f1")
    return None if f1 is None else 100.0 * float(f1)
