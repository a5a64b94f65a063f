"""The options' one home: what each RunConfig field says about itself, what is derived from
it, and that options, the command line's parsing and the reports import without torch."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from bertprobe.cli import build_parser, config_from_args
from bertprobe.config import (
    BOOKKEEPING_OPTIONS,
    DATA_LOCATION_OPTIONS,
    FIRST_RELEASE_OPTIONS,
    GROUPS,
    RECORD_DEFAULTS,
    RETIRED_OPTIONS,
    SWEEP_OVERRIDES,
    TASK_IDENTITY_OPTIONS,
    RunConfig,
    find_record,
)
from bertprobe.errors import ConfigError
from bertprobe.modes import Mode
from bertprobe.tasks import is_tagging

ROOT = Path(__file__).resolve().parent.parent

#: The options of the first release, written out: every committed record's name hashes them,
#: so this set may never change (an option added later enters a name only when set).
FIRST_RELEASE = {
    "mode", "layers", "model", "task", "data_dir", "hub_dataset", "context", "pooling", "train_file",
    "validation_file", "test_file", "text_columns", "label_column", "regression", "max_length", "head",
    "lstm_hidden", "lstm_layers", "dropout", "epochs", "lr", "batch_size", "eval_batch_size", "weight_decay",
    "warmup_fraction", "max_grad_norm", "seed", "max_train_examples",
}  # fmt: skip


def test_first_release_options_are_the_ones_committed_names_hash():
    assert FIRST_RELEASE_OPTIONS == FIRST_RELEASE


def committed_records() -> list[tuple[Path, dict[str, object]]]:
    """Every committed record with its file, but those written before every first-release
    option existed (one, of the earliest commit): an older rule named them."""
    found = []
    for path in sorted((ROOT / "results").rglob("*.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(record, dict) and set(record.get("config") or {}) >= FIRST_RELEASE and "metrics" in record:
            found.append((path, record))
    return found


def test_every_committed_record_keeps_its_name():
    """A sweep finds each committed record under the name it was written under, so it reruns
    no finished run: the options' move onto their fields renamed no run, and the context
    left the names of sentence-level tasks (GLUE, custom) without renaming their records.
    The lookup is the sweep's own (:func:`find_record`); a tagging task's name is unchanged,
    and a sentence-level task's new name is the old one without its context, same digest."""
    records = committed_records()
    assert len(records) > 150
    sentence_level = 0
    for path, record in records:
        values = {key: value for key, value in record["config"].items() if key not in RETIRED_OPTIONS}
        config = RunConfig.from_dict(values)
        assert path.stem == record["name"]
        assert find_record(config, path.parent) == path, record["name"]
        context = f"_{values['context']}_seed"
        if is_tagging(config.task):
            assert config.run_name() == record["name"]
        else:  # written before the change under the older name, or since under the newer one
            sentence_level += 1
            new_name = config.run_name()
            assert "_sentence_" not in new_name and "_document_" not in new_name
            assert record["name"] in (new_name, new_name.replace("_seed", context, 1)), record["name"]
    assert sentence_level >= 27  # results/tune_or_not_minilm


def test_names_of_sentence_level_tasks_have_no_context(tmp_path: Path):
    """GLUE and custom runs are named without the context, which means nothing for them; a
    record written under the older name (with it) is still found, the newer name first."""
    glue = RunConfig(task="rte", output_dir=str(tmp_path))
    assert glue.run_name() == "rte_bert-base-cased_finetune_all_seed42_" + glue.run_name().rsplit("_", 1)[1]
    custom = RunConfig(task="custom", mode="feature", layers="last4concat", seed=3, output_dir=str(tmp_path))
    assert re.fullmatch(r"custom_bert-base-cased_feature_last4concat_seed3_[0-9a-f]{8}", custom.run_name())
    old = f"rte_bert-base-cased_finetune_all_sentence_seed42_{glue.run_name().rsplit('_', 1)[1]}"
    assert glue.record_names() == (glue.run_name(), old)
    assert find_record(glue) is None and glue.record_path() == tmp_path / f"{glue.run_name()}.json"
    (tmp_path / f"{old}.json").write_text("{}", encoding="utf-8")
    assert find_record(glue) == tmp_path / f"{old}.json"
    glue.record_path().write_text("{}", encoding="utf-8")
    assert find_record(glue) == glue.record_path()
    tagging = RunConfig(context="document")
    assert "_document_seed42_" in tagging.run_name() and tagging.record_names() == (tagging.run_name(),)
    assert RunConfig(task="rte", context="document").run_name() != glue.run_name()  # still in the digest


def test_every_option_has_help_a_group_and_one_kind():
    for field in fields(RunConfig):
        assert field.metadata["group"] in GROUPS, field.name
        help_text = field.metadata["help"]
        assert len(help_text) > len(field.name) and help_text != field.name.replace("_", " "), field.name
    assert not BOOKKEEPING_OPTIONS & FIRST_RELEASE_OPTIONS
    assert not BOOKKEEPING_OPTIONS & TASK_IDENTITY_OPTIONS
    assert {
        "task", "data_dir", "hub_dataset", "train_file", "validation_file", "test_file", "text_columns",
        "label_column", "regression",
    } == TASK_IDENTITY_OPTIONS  # fmt: skip
    assert {"data_dir", "hub_dataset", "train_file", "validation_file", "test_file"} == DATA_LOCATION_OPTIONS
    assert DATA_LOCATION_OPTIONS <= TASK_IDENTITY_OPTIONS
    assert {"compile", "cpu_threads", "output_dir", "checkpoint_every", "resume"} <= BOOKKEEPING_OPTIONS
    assert "mixed_precision" not in BOOKKEEPING_OPTIONS  # it changes the numbers


def test_record_defaults_are_the_fields_defaults_for_what_changes_a_result():
    assert RECORD_DEFAULTS["pair_encoding"] == "joint" and RECORD_DEFAULTS["lora_rank"] == 8
    assert RECORD_DEFAULTS["mode"] == "finetune" and type(RECORD_DEFAULTS["mode"]) is str
    assert not set(RECORD_DEFAULTS) & BOOKKEEPING_OPTIONS
    assert "lr" not in RECORD_DEFAULTS  # unset: the mode's default fills it when a run resolves


def test_mode_is_an_enum_that_reads_and_writes_plain_names():
    config = RunConfig(mode="feature")
    assert config.mode is Mode.FEATURE and config.mode == "feature" and f"{config.mode}" == "feature"
    assert config.to_dict()["mode"] == "feature" and json.dumps(config.to_dict()["mode"]) == '"feature"'
    assert [mode for mode in Mode if mode.trains_encoder] == [Mode.FINETUNE, Mode.PARTIAL, Mode.LORA]
    assert [mode for mode in Mode if mode.reads_layers] == [Mode.FEATURE, Mode.COSINE]
    assert [mode for mode in Mode if mode.uses_cache] == [Mode.FEATURE, Mode.COSINE]
    assert [mode for mode in Mode if not mode.trains_anything] == [Mode.COSINE]
    assert RunConfig(mode="lora").resolved().lr == 5e-4 and RunConfig().resolved().lr == 5e-5
    with pytest.raises(ConfigError, match=r"--mode 'frozen' is not one of finetune, feature, partial, lora, cosine"):
        RunConfig(mode="frozen")


def test_help_groups_options_and_ends_with_examples():
    text = build_parser().format_help()
    headings = [line[:-1] for line in text.splitlines() if line.endswith(":") and not line.startswith(" ")]
    assert headings == ["options", *GROUPS, "examples"]
    assert "(default: None)" not in text and "(default: --lr)" not in text
    blocks = re.split(r"\n  (?=--)", text.split("examples:")[0])[1:]  # one per option
    assert len(blocks) == len(fields(RunConfig))
    assert all(" ".join(block.split()).count("default") <= 1 for block in blocks), blocks
    assert "--trim-heap-every" not in text
    section = text.split("training:")[1].split("output and bookkeeping:")[0]
    assert "--lr LR" in section and "--epochs EPOCHS" in section and "--layers" not in section


def test_sweep_overrides_come_from_the_fields():
    assert {"model", "data_dir", "output_dir", "cache_dir", "epochs", "checkpoint_every"} <= set(SWEEP_OVERRIDES)
    from bertprobe.cli import sweep_main

    with pytest.raises(SystemExit):
        sweep_main(["file.yaml", "--lr", "1e-3"])  # not overridable: each row sets its own


def test_command_line_gives_the_same_config_as_python():
    assert (
        config_from_args(["--mode", "feature", "--layers", "-1,-2:concat", "--seed", "1"])
        == RunConfig(mode="feature", layers="-1,-2:concat", seed=1).resolved()
    )


BLOCK_TORCH = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("torch", "transformers", "accelerate", "peft"):
            raise ImportError(f"{name} is blocked: this code must not need it")
sys.meta_path.insert(0, Block())
"""


def test_options_parsing_and_reports_import_without_torch(tmp_path):
    """With torch (and what needs it) unimportable: the options, the layer-spec grammar, the
    command line's parsing and validation, and the tables of the committed records."""
    script = (
        BLOCK_TORCH
        + f"""
import bertprobe.config, bertprobe.layer_spec, bertprobe.modes, bertprobe.rows, bertprobe.table
import bertprobe.tasks_table, bertprobe.tune_report, bertprobe.sweep, bertprobe.tuning
from bertprobe.cli import config_from_args, main
config = config_from_args(["--mode", "feature", "--layers", "last4concat", "--model", "m"])
assert config.layers == "last4concat" and config.lr == 1e-3
assert main(["table", {str(ROOT / "results" / "table7_minilm")!r}]) == 0
assert not any(name.split(".")[0] == "torch" for name in sys.modules)
print("no torch")
"""
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Concat last four hidden" in result.stdout and result.stdout.rstrip().endswith("no torch")


def test_frozen_sentence_tasks_pool_by_the_mean_unless_told_otherwise():
    assert RunConfig(task="sst2", mode="feature").resolved().pooling == "mean"
    assert RunConfig(task="sst2", mode="finetune").resolved().pooling == "first"  # [CLS], as the paper fine-tunes
    assert RunConfig(task="sst2", mode="lora").resolved().pooling == "first"
    assert RunConfig(task="conll2003", mode="feature").resolved().pooling == "first"  # words: their first piece
    assert RunConfig(task="sst2", mode="feature", pooling="first").resolved().pooling == "first"
    assert RECORD_DEFAULTS["pooling"] == "first"  # what records written before the option ran with
    assert "(default: mean for --mode feature" in " ".join(build_parser().format_help().split())
