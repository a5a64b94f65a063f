"""Task registry: a name on the command line -> a loaded, encoded :class:`Task`.

``conll2003`` (the paper's NER), ``conll`` (any CoNLL-format tagging data, its own tag
set), the GLUE tasks by name (``sst2``, ``mrpc``, ``rte``, ``cola``, ``stsb``, ...), and
``custom`` (the user's TSV/CSV/JSON-lines files).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bertprobe.tasks.glue import GLUE_TASKS

if TYPE_CHECKING:
    from bertprobe.tasks.base import Task

TAGGING_TASKS = ("conll2003", "conll")
SEQUENCE_TASKS = (*GLUE_TASKS, "custom")
TASKS = (*TAGGING_TASKS, *SEQUENCE_TASKS)

#: The dev score that picks the best epoch, per GLUE task (the task's first official metric).
GLUE_PRIMARY = {name: spec.metrics[0] for name, spec in GLUE_TASKS.items()}


def is_tagging(task: str) -> bool:
    return task in TAGGING_TASKS


def load_task(config, tokenizer, max_length: int) -> Task:
    """Load and encode the task a :class:`~bertprobe.config.RunConfig` names."""
    from bertprobe.errors import ConfigError

    if config.task in TAGGING_TASKS:
        from bertprobe.tasks.conll import load_conll_dir, load_conll_hub
        from bertprobe.tasks.tagging import TaggingTask

        if config.task == "conll" and not config.data_dir:
            raise ConfigError("--task conll reads your own CoNLL files: give --data-dir")
        corpus = load_conll_dir(config.data_dir) if config.data_dir else load_conll_hub(config.hub_dataset)
        return TaggingTask(
            config.task,
            corpus,
            tokenizer,
            max_length,
            config.context,
            config.max_train_examples,
            config.seed,
            config.train_fraction,
        )

    from bertprobe.tasks.classification import SequenceTask
    from bertprobe.tasks.glue import load_glue_dir, load_glue_hub
    from bertprobe.tasks.sequence import hold_out_dev, load_custom

    if config.task == "custom":
        if not (config.train_file and config.validation_file and config.text_columns and config.label_column):
            raise ConfigError("--task custom needs --train-file, --validation-file, --text-columns and --label-column")
        corpus = load_custom(
            config.train_file,
            config.validation_file,
            config.test_file,
            text_columns=config.text_column_names(),
            label_column=config.label_column,
            regression=config.regression,
        )
        primary = "pearson" if corpus.is_regression else "accuracy"
        positive = None
    else:
        spec = GLUE_TASKS[config.task]
        corpus = load_glue_dir(config.task, config.data_dir) if config.data_dir else load_glue_hub(config.task)
        primary, positive = GLUE_PRIMARY[config.task], spec.positive_label
    if config.dev_from_train is not None:
        corpus = hold_out_dev(corpus, config.dev_from_train)
    return SequenceTask(
        config.task, corpus, tokenizer, max_length, config.pooling, primary, positive,
        config.max_train_examples, config.seed, config.train_fraction, config.pair_encoding,
    )  # fmt: skip
