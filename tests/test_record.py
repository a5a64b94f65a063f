"""The record's one schema: what the writer produces, what docs/record.md describes, and what
the readers answer for records of older versions."""

from __future__ import annotations

import re
from pathlib import Path

from bertprobe.record import SCHEMA_VERSION, build_record, data_source, primary_metric, schema_version, train_examples

ROOT = Path(__file__).resolve().parent.parent


def minimal_record() -> dict[str, object]:
    return build_record(
        name="n", config={}, encoder={}, layers={}, learned_layer_weights=None, task={}, labels=[], data={},
        metrics={}, training={"best_epoch": 1, "history": [], "optimizer_steps_per_epoch": 1, "final_lr": 0.0,
                              "resumed_from": None, "resumes": [], "processes": []},
        parameters={}, adaptation={}, optimizer={}, time={}, memory={}, feature_cache=None, distributed={},
        provenance={"versions": {}, "machine": {}, "git_commit": "c", "command": "bertprobe"},
    )  # fmt: skip


def test_every_field_the_writer_produces_is_documented():
    documented = set(re.findall(r"^- `([a-z_]+)`", (ROOT / "docs" / "record.md").read_text(), flags=re.M))
    written = set(minimal_record()) | {"health", "encoder_unchanged"}  # added by the training loop
    assert written <= documented, sorted(written - documented)
    assert minimal_record()["schema"] == SCHEMA_VERSION == 2


def test_readers_answer_for_records_of_every_version():
    first = {"config": {"data_dir": "conll/", "mode": "feature"}, "metrics": {}, "data": {"windows": {"train": 7}}}
    assert schema_version(first) == 0
    assert primary_metric(first) == "f1"  # the first records were CoNLL-2003, scored by entity F1
    assert data_source(first) == "conll/"
    assert train_examples(first) == 7
    hub = {"config": {"hub_dataset": "conll2003"}, "metrics": {}}
    assert data_source(hub) == "hub:conll2003" and train_examples(hub) is None
    current = {
        "schema": 2, "config": {}, "metrics": {}, "task": {"primary_metric": "accuracy"},
        "data": {"source": "glue/sst2", "examples_trained": 67},
    }  # fmt: skip
    assert (schema_version(current), primary_metric(current), data_source(current)) == (2, "accuracy", "glue/sst2")
    assert train_examples(current) == 67
