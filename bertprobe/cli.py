"""Command line: ``bertprobe train`` (the default), with every RunConfig option as a flag;
``bertprobe sweep FILE.yaml`` runs an experiment file; ``bertprobe table DIR`` and
``bertprobe plot DIR --output FILE.png`` summarise result records."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields

from bertprobe.config import DEFAULT_LR, MODES, ConfigError, RunConfig
from bertprobe.heads import HEADS
from bertprobe.layers import NAMED_STRATEGIES

SUBCOMMANDS = ("train", "table", "plot", "sweep")

HELP = {
    "mode": f"{' | '.join(MODES)}: train every encoder weight, or freeze the encoder and train a head",
    "layers": (
        "feature mode: which hidden states feed the head. Names: "
        + ", ".join(NAMED_STRATEGIES)
        + "; or LAYERS:COMBINE, e.g. '-1,-2,-3,-4:concat', '0-12:weighted', 'all:mean' "
        "(0 = embeddings, -1 = last layer)"
    ),
    "model": "Hub id or local folder of a Hugging Face encoder",
    "task": "conll2003 | conll (your CoNLL files) | a GLUE task (sst2, mrpc, rte, cola, stsb, ...) | custom",
    "pooling": "sequence tasks: first (the [CLS] token) or mean (over tokens) of the chosen layers",
    "train_file": "--task custom: training file (.tsv, .csv or .jsonl)",
    "validation_file": "--task custom: dev file",
    "test_file": "--task custom: test file (optional)",
    "text_columns": "--task custom: one or two comma-separated text columns, e.g. sentence1,sentence2",
    "label_column": "--task custom: the label column",
    "regression": "--task custom: real-valued labels (default: inferred from the training labels)",
    "data_dir": "folder with train/validation/test CoNLL files; without it the Hub dataset is loaded",
    "hub_dataset": "Hub dataset id used when --data-dir is not given",
    "context": "sentence: each sentence alone; document: as much of its document as fits around it",
    "max_length": "sub-token limit per window (default: the model's own limit)",
    "head": f"{' | '.join(HEADS)} (default: linear for finetune, bilstm for feature)",
    "lstm_hidden": "BiLSTM units per direction",
    "lr": f"peak learning rate (default: {DEFAULT_LR['finetune']} finetune, {DEFAULT_LR['feature']} feature)",
    "max_train_examples": "train on a seeded random subset of this many training sentences",
    "output_dir": "where the JSON result record (and predictions) are written",
    "cache_dir": "where frozen features are cached (feature mode)",
    "feature_cache": "feature mode: cache the frozen encoder's outputs (--no-feature-cache reruns it every epoch)",
    "save_predictions": "also write 'word gold predicted' CoNLL files for dev and test",
    "cache_layers": "feature mode: also cache the layers of these strategies (';'-separated) for later runs",
    "check_loss_every": "check the running loss for NaN every this many steps",
    "tags": "free-form labels stored in the record",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bertprobe",
        description="Fine-tune an encoder or probe its frozen layers; write a result record.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    defaults = RunConfig()
    for field in fields(RunConfig):
        flag = "--" + field.name.replace("_", "-")
        default = getattr(defaults, field.name)
        kwargs: dict[str, object] = {"help": HELP.get(field.name, field.name.replace("_", " "))}
        if isinstance(default, bool) or "bool" in str(field.type):
            kwargs["action"] = argparse.BooleanOptionalAction
            kwargs["default"] = default
        elif field.name == "tags":
            kwargs["nargs"] = "*"
            kwargs["default"] = []
        else:
            kwargs["default"] = default
            kwargs["type"] = _field_type(field.type)
        if field.name == "mode":
            kwargs["choices"] = MODES
        parser.add_argument(flag, **kwargs)
    return parser


def _field_type(annotation: object):
    text = str(annotation)
    if "float" in text:
        return float
    if "int" in text:
        return int
    return str


def _attach_dash_values(argv: list[str]) -> list[str]:
    """``--layers -1,-2:concat`` -> ``--layers=-1,-2:concat``: argparse would read a value
    that starts with a dash as an option."""
    joined: list[str] = []
    index = 0
    while index < len(argv):
        if argv[index] == "--layers" and index + 1 < len(argv):
            joined.append(f"--layers={argv[index + 1]}")
            index += 2
        else:
            joined.append(argv[index])
            index += 1
    return joined


def config_from_args(argv: list[str]) -> RunConfig:
    namespace = vars(build_parser().parse_args(_attach_dash_values(argv)))
    namespace["tags"] = tuple(namespace["tags"])
    return RunConfig(**namespace).resolved()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "table":
        return table_main(argv[1:])
    if argv and argv[0] == "plot":
        return plot_main(argv[1:])
    if argv and argv[0] == "sweep":
        return sweep_main(argv[1:])
    if argv and argv[0] in SUBCOMMANDS:
        argv = argv[1:]
    from bertprobe.encoder import ModelLoadError
    from bertprobe.layers import LayerSpecError
    from bertprobe.tasks.conll import DataFormatError

    try:
        config = config_from_args(argv)  # validates every option before torch is imported
    except (ConfigError, LayerSpecError) as error:
        print(f"bertprobe: error: {error}", file=sys.stderr)
        return 2
    from bertprobe.train import NonFiniteLossError, run

    try:
        run(config)
    except (ConfigError, LayerSpecError, ModelLoadError, DataFormatError, FileNotFoundError) as error:
        print(f"bertprobe: error: {error}", file=sys.stderr)
        return 2
    except NonFiniteLossError as error:
        print(f"bertprobe: error: {error}", file=sys.stderr)
        return 3
    return 0


def _load_for_summary(directory: str) -> list[dict[str, object]] | None:
    """The records under ``directory``, or ``None`` after printing why there are none."""
    from bertprobe.table import load_records

    try:
        records = load_records(directory)
    except NotADirectoryError:
        print(f"bertprobe: error: {directory} is not a folder", file=sys.stderr)
        return None
    if not records:
        print(
            f"bertprobe: error: no result records under {directory} "
            "(looked for *.json files with 'config' and 'metrics', as written by 'bertprobe train')",
            file=sys.stderr,
        )
        return None
    return records


def table_main(argv: list[str]) -> int:
    """``bertprobe table DIR [--format markdown|csv] [--output FILE]``."""
    parser = argparse.ArgumentParser(
        prog="bertprobe table",
        description="Mean and std over seeds per system, next to the BERT paper's Table 7; "
        "one section per model and data set.",
    )
    parser.add_argument("directory", help="folder searched recursively for result records (*.json)")
    parser.add_argument("--format", choices=("markdown", "csv"), default="markdown")
    parser.add_argument("--output", help="write the table to this file (atomically) instead of stdout")
    args = parser.parse_args(argv)
    records = _load_for_summary(args.directory)
    if records is None:
        return 2
    from bertprobe.table import render_csv, render_markdown

    text = render_csv(records) if args.format == "csv" else render_markdown(records)
    if args.output is None:
        sys.stdout.write(text)
    else:
        from bertprobe.results import write_text_atomic

        print(f"table of {len(records)} records: {write_text_atomic(args.output, text)}")
    return 0


def plot_main(argv: list[str]) -> int:
    """``bertprobe plot DIR --output FILE.png``."""
    parser = argparse.ArgumentParser(
        prog="bertprobe plot",
        description="Bar chart of dev F1 per system (std error bars) with the paper's Table 7 values.",
    )
    parser.add_argument("directory", help="folder searched recursively for result records (*.json)")
    parser.add_argument("--output", required=True, help="PNG file to write")
    args = parser.parse_args(argv)
    records = _load_for_summary(args.directory)
    if records is None:
        return 2
    from bertprobe.plots import plot_table7

    print(f"plot of {len(records)} records: {plot_table7(records, args.output)}")
    return 0


def sweep_main(argv: list[str]) -> int:
    """``bertprobe sweep FILE.yaml [--model M] [--data-dir D] [--output-dir O] [--seeds ...] [--grid]``."""
    parser = argparse.ArgumentParser(
        prog="bertprobe sweep",
        description="Run every row x seed of an experiment file, skipping runs whose record exists.",
    )
    parser.add_argument("experiment", help="YAML experiment file, e.g. experiments/table7.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", help="override the file's seeds")
    parser.add_argument("--grid", action="store_true", help="also run the file's dev-set hyper-parameter grid")
    parser.add_argument("--dry-run", action="store_true", help="list the runs and whether they exist; run nothing")
    overridable = ("model", "data_dir", "output_dir", "cache_dir", "context", "lstm_hidden", "epochs",
                   "max_train_examples", "task", "hub_dataset", "eval_batch_size")  # fmt: skip
    types = {name: _field_type(f.type) for f in fields(RunConfig) for name in (f.name,) if name in overridable}
    for name in overridable:
        parser.add_argument("--" + name.replace("_", "-"), type=types[name], help=f"override {name} for every run")
    args = vars(parser.parse_args(argv))
    overrides = {name: args[name] for name in overridable if args[name] is not None}
    from bertprobe.encoder import ModelLoadError
    from bertprobe.layers import LayerSpecError
    from bertprobe.sweep import load_experiment, run_sweep
    from bertprobe.tasks.conll import DataFormatError

    try:
        experiment = load_experiment(args["experiment"])
        if args["seeds"]:
            experiment["seeds"] = args["seeds"]
        run_sweep(experiment, overrides, use_grid=args["grid"], dry_run=args["dry_run"])
    except (ConfigError, LayerSpecError, ModelLoadError, DataFormatError, FileNotFoundError) as error:
        print(f"bertprobe: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
