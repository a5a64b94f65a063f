"""Command line: ``bertprobe train`` (the default), with every RunConfig option as a flag;
``bertprobe sweep FILE.yaml`` runs an experiment file; ``bertprobe probe-layers`` probes
every layer of a model alone; ``bertprobe table DIR`` and ``bertprobe plot DIR --output
FILE.png`` summarise result records."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields

from bertprobe.config import GROUPS, HEADS, SWEEP_OVERRIDES, RunConfig, option_type
from bertprobe.errors import BertprobeError, ConfigError, LayerSpecError, NonFiniteLossError, NoRecordsError
from bertprobe.modes import MODE_NAMES

SUBCOMMANDS = ("train", "table", "plot", "sweep")


def option_help(name: str) -> str:
    """The ``--help`` text of a :class:`RunConfig` option (kept on the field itself)."""
    return next(f.metadata["help"] for f in fields(RunConfig) if f.name == name)


def refuse(problem: object, status: int = 2) -> int:
    """Say what is wrong in one line on standard error; return the exit status (2: bad input)."""
    print(f"bertprobe: error: {problem}", file=sys.stderr)
    return status


def user_errors() -> tuple[type[Exception], ...]:
    """Errors that mean bad input or a state the user must resolve: printed as one line with
    exit status 2, never a traceback (a diverged run, also a :class:`BertprobeError`, is
    caught before them: exit status 3)."""
    return BertprobeError, FileNotFoundError


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples' line breaks; adds ``(default: X)`` where there is a default to
    show and the help text does not already say it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, [], argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)"


TRAIN_EXAMPLES = """examples:
  # frozen encoder, last four layers concatenated, BiLSTM head (the BERT paper's best feature row)
  bertprobe --mode feature --layers last4concat --model bert-base-cased --data-dir conll2003/
  # fine-tune every layer; the same on two GPUs
  bertprobe --mode finetune --model bert-base-cased --data-dir conll2003/
  accelerate launch --multi_gpu --num_processes 2 run.py --mode finetune --model bert-base-cased
  # a GLUE task, LoRA adapters of rank 16
  bertprobe --task sst2 --mode lora --lora-rank 16 --model bert-base-cased --data-dir glue/sst2
  # your own labelled sentences
  bertprobe --task custom --train-file train.tsv --validation-file dev.tsv --text-columns sentence \\
      --label-column label --mode feature --layers last4weighted --model bert-base-cased"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bertprobe",
        usage="bertprobe [train] [OPTIONS]",
        description=(
            "Fine-tune an encoder or probe its frozen layers on one task; write a JSON result record.\n"
            "Other commands, each with its own --help: bertprobe sweep FILE.yaml (an experiment file),\n"
            "bertprobe tune FILE.yaml (equal-effort tuning), bertprobe probe-layers (every layer alone),\n"
            "bertprobe table DIR and bertprobe plot DIR (summaries of records)."
        ),
        epilog=TRAIN_EXAMPLES,
        formatter_class=HelpFormatter,
    )
    groups = {name: parser.add_argument_group(name) for name in GROUPS}
    defaults = RunConfig()
    for field in fields(RunConfig):
        flag = "--" + field.name.replace("_", "-")
        default = getattr(defaults, field.name)
        kwargs: dict[str, object] = {"help": field.metadata["help"]}
        if isinstance(default, bool) or "bool" in str(field.type):
            kwargs["action"] = argparse.BooleanOptionalAction
            kwargs["default"] = default
        elif field.name == "tags":
            kwargs["nargs"] = "*"
            kwargs["default"] = []
        else:
            kwargs["default"] = default.value if field.name == "mode" else default
            kwargs["type"] = option_type(field.type)
        if field.name == "mode":
            kwargs["choices"] = MODE_NAMES
        elif field.name == "head":
            kwargs["choices"] = HEADS
        groups[field.metadata["group"]].add_argument(flag, **kwargs)
    return parser


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


USAGE = """usage: bertprobe [train] [OPTIONS]        one run (bertprobe --help lists the options)
       bertprobe sweep FILE.yaml [...]      every run of an experiment file
       bertprobe tune FILE.yaml [...]       equal-effort tuning of every system of a tuning file
       bertprobe probe-layers [...]         every layer of a model alone
       bertprobe table DIR [...]            records as tables
       bertprobe plot DIR [...]             records as figures
each command has its own --help; e.g. bertprobe --mode feature --layers last4concat --model MODEL --data-dir DIR"""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:  # no options is no run: a run of the defaults would fetch bert-base-cased and train for hours
        print(USAGE)
        return 2
    if argv and argv[0] == "table":
        return table_main(argv[1:])
    if argv and argv[0] == "plot":
        return plot_main(argv[1:])
    if argv and argv[0] == "sweep":
        return sweep_main(argv[1:])
    if argv and argv[0] == "probe-layers":
        return probe_layers_main(argv[1:])
    if argv and argv[0] == "tune":
        return tune_main(argv[1:])
    if argv and argv[0] in SUBCOMMANDS:
        argv = argv[1:]

    try:
        config = config_from_args(argv)  # validates every option before torch is imported
    except (ConfigError, LayerSpecError) as error:
        return refuse(error)
    from bertprobe.train import run

    configure_logging()
    try:
        run(config)
    except NonFiniteLossError as error:
        return refuse(error, status=3)
    except user_errors() as error:
        return refuse(error)
    return 0


def configure_logging() -> None:
    """One timestamped line per message on stderr; Accelerate's logger adds the main-process filter."""
    import logging

    logging.basicConfig(format="%(asctime)s %(message)s", datefmt="%H:%M:%S", level=logging.INFO)
    # Accelerate reports every file of every checkpoint at INFO, eight lines an epoch that
    # drown the results; a warning still shows
    for name in ("accelerate.accelerator", "accelerate.checkpointing"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _load_for_summary(directories: list[str]) -> list[dict[str, object]] | None:
    """The records under every one of ``directories``, or ``None`` after printing why there
    are none. Several folders let a figure put runs of separate sweeps together (a layer
    probe and the fine-tuning run it is compared with, say)."""
    from bertprobe.record import load_records

    records = []
    for directory in directories:
        try:
            records.extend(load_records(directory))
        except NotADirectoryError:
            refuse(f"{directory} is not a folder")
            return None
    if not records:
        refuse(
            f"no result records under {', '.join(directories)} "
            "(looked for *.json files with 'config' and 'metrics', as written by 'bertprobe train')"
        )
        return None
    return records


def layout_for(records: list[dict[str, object]]) -> str:
    """``table7`` (the paper's NER layout, test beside dev) when every record tags words,
    ``tasks`` (a column per task) when any scores whole inputs (GLUE, custom files)."""
    from bertprobe.tasks import TAGGING_TASKS

    tagging = all((record.get("config") or {}).get("task", "conll2003") in TAGGING_TASKS for record in records)
    return "table7" if tagging else "tasks"


def table_main(argv: list[str]) -> int:
    """``bertprobe table DIR [--layout table7|tasks] [--format markdown|csv] [--output FILE]``."""
    parser = argparse.ArgumentParser(
        prog="bertprobe table",
        description="Mean and std over seeds per system. Layout table7: next to the BERT paper's Table 7, "
        "one section per model and data set. Layout tasks: one section per model, a row per system "
        "(fine-tuning, partial, LoRA, feature strategies), a column per task (its primary dev metric, and test "
        "beside it where the records have one), then the cost of each system on each task.",
    )
    parser.add_argument("directory", nargs="+", help="folders searched recursively for result records (*.json)")
    parser.add_argument(
        "--layout",
        choices=("table7", "tasks"),
        help="table7 or tasks (see above); default: table7 when every record tags words, tasks otherwise",
    )
    parser.add_argument("--format", choices=("markdown", "csv"), default="markdown")
    parser.add_argument("--output", help="write the table to this file (atomically) instead of stdout")
    args = parser.parse_args(argv)
    records = _load_for_summary(args.directory)
    if records is None:
        return 2
    from bertprobe.table import LAYOUTS

    render_markdown, render_csv = LAYOUTS[args.layout or layout_for(records)]
    text = render_csv(records) if args.format == "csv" else render_markdown(records)
    if args.output is None:
        sys.stdout.write(text)
    else:
        from bertprobe.results import write_text_atomic

        print(f"table of {len(records)} records: {write_text_atomic(args.output, text)}")
    return 0


def plot_main(argv: list[str]) -> int:
    """``bertprobe plot DIR [--kind table7|tasks|layers|cost|curve] --output FILE.png``."""
    parser = argparse.ArgumentParser(
        prog="bertprobe plot",
        description="table7: bar chart of dev F1 per system (std error bars) with the paper's Table 7 values, for "
        "tagging tasks; tasks: bars of each system's score on each task (dev, and test where recorded), for GLUE "
        "and custom tasks too; layers: dev score of a probe on each single layer, fine-tuning dashed; cost: dev "
        "score against train time per configuration; curve: dev score against --train-fraction per system. A kind "
        "with nothing to draw in the records stops with an error instead of drawing an empty figure.",
    )
    parser.add_argument("directory", nargs="+", help="folders searched recursively for result records (*.json)")
    parser.add_argument(
        "--kind",
        choices=("table7", "tasks", "layers", "cost", "curve"),
        help="default: table7 when every record tags words, tasks otherwise (as bertprobe table's layout)",
    )
    parser.add_argument("--output", required=True, help="PNG file to write")
    args = parser.parse_args(argv)
    records = _load_for_summary(args.directory)
    if records is None:
        return 2
    args.kind = args.kind or layout_for(records)  # the layouts' names are plot kinds too
    from bertprobe.plots import PLOTS

    try:
        path = PLOTS[args.kind](records, args.output)
    except NoRecordsError as error:
        return refuse(f"{', '.join(args.directory)}: {error}")
    print(f"{args.kind} plot of {len(records)} records: {path}")
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
    parser.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="FIELD=VALUE[,VALUE]",
        help="run only the configurations whose setting has one of these values (repeatable; 'none' = unset), "
        "e.g. --where train_fraction=0.01,0.1 --where mode=finetune",
    )
    overridable = SWEEP_OVERRIDES
    types = {name: option_type(f.type) for f in fields(RunConfig) for name in (f.name,) if name in overridable}
    for name in overridable:
        parser.add_argument("--" + name.replace("_", "-"), type=types[name], help=f"override {name} for every run")
    args = vars(parser.parse_args(argv))
    overrides = {name: args[name] for name in overridable if args[name] is not None}
    from bertprobe.sweep import load_experiment, parse_where, run_sweep

    configure_logging()
    try:
        where = parse_where(args["where"])
        experiment = load_experiment(args["experiment"])
        if args["seeds"]:
            experiment["seeds"] = args["seeds"]
        run_sweep(experiment, overrides, use_grid=args["grid"], dry_run=args["dry_run"], where=where)
    except user_errors() as error:
        return refuse(error)
    return 0


def tune_main(argv: list[str]) -> int:
    """``bertprobe tune FILE.yaml [--trials N] [--storage URL] [--final] [--report OUT.md]``."""
    parser = argparse.ArgumentParser(
        prog="bertprobe tune",
        description="Tune every system of a tuning file with the same N random-search trials on dev (an Optuna "
        "study per system; workers sharing its storage split the trials), then re-run each system's best dev "
        "configuration with the file's final seeds, and report the expected best dev score against the number "
        "of trials.",
        epilog="examples:\n  bertprobe tune experiments/tune_conll_1pct.yaml --model sentence-transformers/"
        "all-MiniLM-L6-v2 --data-dir ../shared/data/conll2003\n  bertprobe tune FILE --final\n"
        "  bertprobe tune FILE --report results/tune.md --figure results/tune.png\n"
        "  sbatch --array=0-7 --wrap 'bertprobe tune FILE --storage postgresql://host/db'  # 8 workers, one study",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("tuning", help="YAML tuning file, e.g. experiments/tune_conll_1pct.yaml")
    parser.add_argument("--trials", type=int, help="trials per system (default: the file's)")
    parser.add_argument(
        "--storage",
        help="Optuna storage shared by every worker: a database URL (sqlite:///FILE, postgresql://...) or a "
        "journal file path (default: sqlite OUTPUT_DIR/study.db)",
    )
    parser.add_argument("--systems", help="tune only these systems of the file (comma-separated)")
    parser.add_argument("--final", action="store_true", help="re-run each system's best dev trial with the final seeds")
    parser.add_argument("--report", help="write the summary table (markdown) here; runs nothing")
    parser.add_argument("--figure", help="with --report: draw the expected best dev score per trial budget here")
    for name in ("model", "data_dir", "output_dir", "cache_dir"):
        parser.add_argument("--" + name.replace("_", "-"), help=f"override {name} for every run")
    args = vars(parser.parse_args(argv))
    overrides = {name: args[name] for name in ("model", "data_dir", "output_dir", "cache_dir") if args[name]}
    from bertprobe.tuning import Tuning

    configure_logging()
    try:
        only = [name.strip() for name in args["systems"].split(",")] if args["systems"] else None
        tuning = Tuning(args["tuning"], args["trials"], args["storage"], only, overrides)
        if args["report"]:
            from bertprobe.results import write_text_atomic
            from bertprobe.tune_report import plot_expected_max, render_tuning_markdown, summarize

            summaries = summarize(tuning)
            title = str(tuning.spec.get("description") or tuning.spec.get("name", "tuning"))
            print(f"table: {write_text_atomic(args['report'], render_tuning_markdown(summaries, title))}")
            if args["figure"]:
                print(f"figure: {plot_expected_max(summaries, args['figure'], title)}")
        elif args["final"]:
            tuning.run_finals()
        else:
            tuning.run_trials()
    except user_errors() as error:
        return refuse(error)
    return 0


def probe_layers_main(argv: list[str]) -> int:
    """``bertprobe probe-layers --model M [--task T] [--seeds ...] [--finetune] [--plot FILE.png]``."""
    parser = argparse.ArgumentParser(
        prog="bertprobe probe-layers",
        description="Probe every hidden state of a model on its own (layer 0 = embeddings .. L), with the same "
        "head for each: one feature run per layer and seed, sharing one frozen-feature cache (the encoder runs "
        "once), skipping runs whose record exists; then plot dev score against layer.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", required=True, help=option_help("model"))
    parser.add_argument("--task", default="conll2003", help=option_help("task"))
    parser.add_argument("--data-dir", help=option_help("data_dir"))
    parser.add_argument("--output-dir", default="results/layers", help="where the result records are written")
    parser.add_argument("--cache-dir", default=RunConfig.cache_dir, help=option_help("cache_dir"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1], help="seeds of every run")
    parser.add_argument("--head", default="linear", choices=HEADS, help="the probe, the same on every layer")
    parser.add_argument("--epochs", type=int, help="training epochs of every run (None: the runs' own default)")
    parser.add_argument("--lr", type=float, help="the probes' learning rate (fine-tuning keeps its default)")
    parser.add_argument("--lstm-hidden", type=int, help="--head bilstm: units per direction")
    parser.add_argument("--max-train-examples", type=int, help=option_help("max_train_examples"))
    parser.add_argument("--context", help=option_help("context"))
    parser.add_argument("--finetune", action="store_true", help="also fine-tune (the plot's reference line)")
    parser.add_argument("--plot", help="PNG to draw (default: OUTPUT_DIR/layers.png)")
    parser.add_argument("--dry-run", action="store_true", help="list the runs and whether they exist; run nothing")
    args = parser.parse_args(argv)
    base = {"task": args.task, "output_dir": args.output_dir, "cache_dir": args.cache_dir}
    optional = {"data_dir": args.data_dir, "epochs": args.epochs, "max_train_examples": args.max_train_examples,
                "context": args.context}  # fmt: skip
    base.update({key: value for key, value in optional.items() if value is not None})
    probe = {"head": args.head, "lr": args.lr, "lstm_hidden": args.lstm_hidden}
    probe = {key: value for key, value in probe.items() if value is not None}
    from bertprobe.encoder import describe, load_config
    from bertprobe.sweep import layer_probe_experiment, run_sweep

    configure_logging()
    try:
        depth = describe(args.model, load_config(args.model)).num_layers
        experiment = layer_probe_experiment(args.model, depth, base, args.seeds, args.finetune, probe)
        paths = run_sweep(experiment, {}, dry_run=args.dry_run)
    except user_errors() as error:
        return refuse(error)
    if args.dry_run:
        return 0
    import json

    from bertprobe.plots import plot_layers

    records = [json.loads(path.read_text(encoding="utf-8")) for path in paths if path.exists()]
    target = args.plot or f"{args.output_dir}/layers.png"
    print(f"layers plot of {len(records)} records ({depth} layers + embeddings): {plot_layers(records, target)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
