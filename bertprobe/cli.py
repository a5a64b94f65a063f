"""Command line: ``bertprobe train`` (the default), with every RunConfig option as a flag."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields

from bertprobe.config import DEFAULT_LR, MODES, TASKS, ConfigError, RunConfig
from bertprobe.heads import HEADS
from bertprobe.layers import NAMED_STRATEGIES

SUBCOMMANDS = ("train",)

HELP = {
    "mode": f"{' | '.join(MODES)}: train every encoder weight, or freeze the encoder and train a head",
    "layers": (
        "feature mode: which hidden states feed the head. Names: "
        + ", ".join(NAMED_STRATEGIES)
        + "; or LAYERS:COMBINE, e.g. '-1,-2,-3,-4:concat', '0-12:weighted', 'all:mean' "
        "(0 = embeddings, -1 = last layer)"
    ),
    "model": "Hub id or local folder of a Hugging Face encoder",
    "task": f"one of {', '.join(TASKS)}",
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
        if isinstance(default, bool):
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


if __name__ == "__main__":
    raise SystemExit(main())
