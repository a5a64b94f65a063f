"""One frozen description of a run, built from the command line or an experiment file."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from bertprobe.alignment import CONTEXT_MODES
from bertprobe.errors import ConfigError
from bertprobe.layer_spec import NAMED_STRATEGIES, LayerSpec
from bertprobe.modes import MODE_NAMES, Mode

POOLING_MODES = ("first", "mean")
#: joint: a pair is one input ([CLS] a [SEP] b [SEP]), one pooled vector; separate: each
#: sentence encoded alone (u, v), the head reads [u; v; |u - v|; u * v], as SentEval does.
PAIR_ENCODINGS = ("joint", "separate")
#: The task heads (built in :mod:`bertprobe.heads`, which checks it builds exactly these).
HEADS = ("linear", "bilstm", "cosine")
OPTIMIZERS = ("adamw", "sgd")
PEFT_MISSING = "--mode lora needs the peft package: pip install peft (or pip install 'bertprobe[lora]')"
MIXED_PRECISION = (None, "no", "fp16", "bf16")  # None: whatever `accelerate launch` says
REPORT_TO = (None, "tensorboard")

#: The groups of ``bertprobe --help``, in order.
TASK = "task and data"
MODEL = "model and layers"
TRAINING = "training"
OUTPUT = "output and bookkeeping"
GROUPS = (TASK, MODEL, TRAINING, OUTPUT)

#: Options that no longer exist but that older records hold: readers ignore them.
RETIRED_OPTIONS = frozenset({"trim_heap_every"})


def option(
    default: object = None,
    help: str = "",
    group: str = TRAINING,
    *,
    first_release: bool = False,
    bookkeeping: bool = False,
    task_identity: bool = False,
    data_location: bool = False,
    sweep_override: bool = False,
    applies_when: dict[str, tuple[object, ...]] | None = None,
    default_factory: object = None,
    record_default: object = None,
    tunable: bool = False,
) -> object:
    """A :class:`RunConfig` field with everything the code knows about the option beside it.

    * ``help``: the text of ``--help``; ``group``: its section there (one of :data:`GROUPS`).
    * ``first_release``: an option of the first release. It always enters a run's name hash;
      options added since enter it only when set away from their default, so older records
      keep their names (and a sweep still recognises them as done). Options added since are
      read as their default in records that lack them (:data:`RECORD_DEFAULTS`).
    * ``bookkeeping``: names folders or caches or keeps books; cannot change what a run
      measures, so it stays out of the run's name and never splits a row of a table.
    * ``task_identity``: says which task and data a run used (the tasks table's column).
    * ``data_location``: says where the data were read from; a table's section names the data
      set (:func:`bertprobe.record.data_name`), so two paths to one folder never split its rows.
    * ``sweep_override``: ``bertprobe sweep`` accepts it to override every run of a file.
    * ``applies_when``: the option acts only when these other options have these values
      (``None`` standing for their default); elsewhere it never splits a row.
    * ``record_default``: what a record without the option ran with, where that is not
      ``default`` (an option whose default came to depend on others).
    * ``tunable``: a hyper-parameter a tuning searches; the settings of a tuned system's
      winner are its method, not another row (:func:`bertprobe.rows.row_settings`).
    """
    assert group in GROUPS, group
    metadata = {
        "help": help, "group": group, "first_release": first_release, "bookkeeping": bookkeeping,
        "task_identity": task_identity, "data_location": data_location, "sweep_override": sweep_override,
        "applies_when": applies_when or {}, "tunable": tunable,
        "record_default": default if record_default is None else record_default,
    }  # fmt: skip
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=metadata)  # type: ignore[arg-type]
    return field(default=default, metadata=metadata)


def option_type(annotation: object) -> type:
    """The type a :class:`RunConfig` field's text value converts to, from its annotation
    (``float | None`` -> ``float``; anything neither float nor int stays ``str``)."""
    text = str(annotation)
    if "float" in text:
        return float
    if "int" in text:
        return int
    return str


def default_cache_dir(environ: dict[str, str] | None = None) -> str:
    """Where frozen features are cached when --cache-dir is not given: ``$BERTPROBE_CACHE``,
    else ``bertprobe`` in the user's cache folder (``$XDG_CACHE_HOME``, else ``~/.cache``), as
    Hugging Face keeps its downloads under ``HF_HOME``; never the current folder."""
    environ = os.environ if environ is None else environ
    if environ.get("BERTPROBE_CACHE"):
        return environ["BERTPROBE_CACHE"]
    base = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "bertprobe")


BILSTM = {"head": (None, "bilstm")}
LORA_ONLY = {"mode": (Mode.LORA,)}


@dataclass(frozen=True)
class RunConfig:
    """Every option of one run. Each field's metadata (:func:`option`) says what the option
    does, where ``--help`` lists it, and whether it names a run or changes its result."""

    mode: Mode = option(
        Mode.FINETUNE, "; ".join(f"{mode}: {mode.description}" for mode in Mode), MODEL, first_release=True
    )
    layers: str = option(
        "last",
        "--mode feature: which hidden states feed the head. Names: " + ", ".join(NAMED_STRATEGIES)
        + "; or LAYERS:COMBINE, e.g. '-1,-2,-3,-4:concat', '0-12:weighted', 'all:mean' (0 = embeddings, -1 = last "
        "layer)",
        MODEL, first_release=True,
    )  # fmt: skip
    model: str = option(
        "bert-base-cased", "Hub id or local folder of a Hugging Face encoder", MODEL, first_release=True,
        sweep_override=True,
    )  # fmt: skip
    task: str = option(
        "conll2003",
        "conll2003 | conll (your CoNLL files) | a GLUE task (sst2, mrpc, rte, cola, stsb, ...) | custom",
        TASK, first_release=True, task_identity=True, sweep_override=True,
    )  # fmt: skip
    data_dir: str | None = option(
        None, "folder with the task's train/validation/test files; without it the Hub dataset is loaded", TASK,
        first_release=True, task_identity=True, data_location=True, sweep_override=True,
    )  # fmt: skip
    hub_dataset: str = option(
        "conll2003", "Hub dataset id of --task conll2003 when --data-dir is not given", TASK, first_release=True,
        task_identity=True, data_location=True, sweep_override=True,
    )  # fmt: skip
    context: str = option(
        "sentence", "tagging tasks: sentence (each sentence alone) or document (as much of its document as fits "
        "around it)", TASK, first_release=True, sweep_override=True,
    )  # fmt: skip
    pooling: str | None = option(
        None, "sentence tasks: first (the [CLS] token) or mean (over tokens) of the chosen layers (default: mean for "
        "--mode feature, whose frozen [CLS] was never trained to sum up a sentence; first when the encoder trains, "
        "as in the BERT paper)", TASK, first_release=True, record_default="first",
    )  # fmt: skip
    pair_encoding: str = option(
        "joint", "sentence pairs, --mode feature: joint (one input, [CLS] a [SEP] b [SEP]) or separate (each "
        "sentence encoded alone, u and v; the head reads [u; v; |u - v|; u * v], as SentEval does)", TASK,
    )  # fmt: skip
    train_file: str | None = option(
        None, "--task custom: training file (.tsv, .csv or .jsonl)", TASK, first_release=True, task_identity=True,
        data_location=True,
    )  # fmt: skip
    validation_file: str | None = option(
        None, "--task custom: dev file", TASK, first_release=True, task_identity=True, data_location=True
    )
    test_file: str | None = option(
        None, "--task custom: test file (optional)", TASK, first_release=True, task_identity=True, data_location=True
    )
    text_columns: str | None = option(
        None, "--task custom: one or two comma-separated text columns, e.g. sentence1,sentence2", TASK,
        first_release=True, task_identity=True,
    )  # fmt: skip
    label_column: str | None = option(
        None, "--task custom: the label column", TASK, first_release=True, task_identity=True
    )
    regression: bool | None = option(
        None, "--task custom: real-valued labels (default: inferred from the training labels)", TASK,
        first_release=True, task_identity=True,
    )  # fmt: skip
    max_length: int | None = option(
        None, "sub-tokens per window (default: the model's own limit)", TASK, first_release=True
    )
    head: str | None = option(
        None, f"{' | '.join(HEADS)} (default: bilstm for --mode feature on tagging tasks, else linear)", MODEL,
        first_release=True,
    )  # fmt: skip
    lstm_hidden: int = option(
        768, "--head bilstm: units per direction", MODEL, first_release=True, sweep_override=True,
        applies_when=BILSTM, tunable=True,
    )  # fmt: skip
    lstm_layers: int = option(
        2, "--head bilstm: stacked BiLSTM layers", MODEL, first_release=True, applies_when=BILSTM, tunable=True
    )
    dropout: float = option(
        0.1, "dropout in the head (on its input, and between BiLSTM layers)", MODEL, first_release=True, tunable=True
    )
    epochs: int = option(3, "training epochs", TRAINING, first_release=True, sweep_override=True, tunable=True)
    lr: float | None = option(
        None, "peak learning rate (default: " + ", ".join(f"{mode.default_lr} {mode}" for mode in Mode) + ")",
        TRAINING, first_release=True, tunable=True,
    )  # fmt: skip
    batch_size: int = option(
        32, "training examples (windows) per batch and process", TRAINING, first_release=True, tunable=True
    )
    eval_batch_size: int = option(
        64, "examples per batch when scoring dev and test", TRAINING, first_release=True, sweep_override=True
    )
    eval_every: int = option(
        1, "evaluate on dev every this many epochs, and always after the last; the best evaluated epoch wins",
        TRAINING,
    )  # fmt: skip
    weight_decay: float = option(
        0.01,
        "weight decay (never on biases, norm weights or the layer mix)",
        TRAINING,
        first_release=True,
        tunable=True,
    )
    warmup_fraction: float = option(
        0.1, "fraction of the steps over which the learning rate rises linearly from 0 (then falls linearly to 0)",
        TRAINING, first_release=True, tunable=True,
    )  # fmt: skip
    max_grad_norm: float = option(
        1.0, "clip the gradients' global norm to this (0: no clipping)", TRAINING, first_release=True, tunable=True
    )
    freeze_layers: int | None = option(
        None, "--mode partial: freeze the embeddings and this many lowest Transformer layers (0..L)", MODEL,
        applies_when={"mode": (Mode.PARTIAL,)},
    )  # fmt: skip
    lora_rank: int = option(
        8, "--mode lora: rank r of each adapter (r * (in + out) weights per adapted Linear)", MODEL,
        applies_when=LORA_ONLY, tunable=True,
    )  # fmt: skip
    lora_alpha: float = option(
        16.0,
        "--mode lora: adapter scale alpha (the update is alpha / r * B A x)",
        MODEL,
        applies_when=LORA_ONLY,
        tunable=True,
    )
    lora_dropout: float = option(
        0.1, "--mode lora: dropout on the adapters' input", MODEL, applies_when=LORA_ONLY, tunable=True
    )
    lora_target_modules: str | None = option(
        None, "--mode lora: comma-separated names of the Linear modules to adapt (default: the attention query "
        "and value projections: query,value for BERT, q_lin,v_lin for DistilBERT, query_proj,value_proj for "
        "DeBERTa)", MODEL, applies_when=LORA_ONLY,
    )  # fmt: skip
    encoder_lr: float | None = option(
        None, "peak learning rate of the encoder's weights (default: --lr)", TRAINING, tunable=True
    )
    head_lr: float | None = option(
        None, "peak learning rate of the head and layer mix (default: --lr)", TRAINING, tunable=True
    )
    layer_lr_decay: float = option(
        1.0, "layer-wise learning-rate decay d: layer i of L trains at encoder-lr * d^(L-i), the embeddings at "
        "encoder-lr * d^L (1 = off)", TRAINING, tunable=True,
    )  # fmt: skip
    optimizer: str = option("adamw", " | ".join(OPTIMIZERS), TRAINING)
    momentum: float = option(
        0.9, "--optimizer sgd: momentum", TRAINING, applies_when={"optimizer": ("sgd",)}, tunable=True
    )
    seed: int = option(
        42,
        "seed of the head's initialisation, the training subset, the batch order and dropout",
        TRAINING,
        first_release=True,
    )
    max_train_examples: int | None = option(
        None, "train on a seeded random subset of this many training examples", TASK, first_release=True,
        sweep_override=True,
    )  # fmt: skip
    dev_from_train: int | None = option(
        None, "sentence tasks whose test labels are hidden (GLUE): hold out this many training examples, the same "
        "ones in every run, as the dev set that picks the best epoch and the tuned settings; the task's own dev set "
        "is then scored once, as test", TASK,
    )  # fmt: skip
    train_fraction: float | None = option(
        None, "train on a seeded random fraction (0, 1] of the training set; nested as it grows", TASK
    )
    gradient_accumulation_steps: int = option(
        1, "one optimizer step per this many batches (effective batch: batch x it x processes)", TRAINING
    )
    mixed_precision: str | None = option(
        None, "no | fp16 | bf16 (default: what `accelerate launch --mixed_precision` says)", TRAINING,
        sweep_override=True,
    )  # fmt: skip
    output_dir: str = option(
        "results/runs", "where the JSON result record (and predictions) are written", OUTPUT, bookkeeping=True,
        sweep_override=True,
    )  # fmt: skip
    cache_dir: str | None = option(
        None, "where frozen features are cached (default: $BERTPROBE_CACHE, else ~/.cache/bertprobe)", OUTPUT,
        bookkeeping=True, sweep_override=True,
    )  # fmt: skip
    feature_cache: bool = option(
        True, "--mode feature: cache the frozen encoder's outputs (--no-feature-cache reruns it every epoch)",
        OUTPUT, bookkeeping=True,
    )  # fmt: skip
    cache_layers: str | None = option(
        None, "--mode feature: also cache the layers of these strategies (';'-separated) for later runs", OUTPUT,
        bookkeeping=True,
    )  # fmt: skip
    save_predictions: bool = option(
        False, "also write 'word gold predicted' CoNLL files for dev and test", OUTPUT, bookkeeping=True
    )
    check_loss_every: int = option(50, "check the running loss for NaN every this many steps", OUTPUT, bookkeeping=True)
    compile: bool = option(False, "torch.compile the model (dynamic shapes)", TRAINING, bookkeeping=True)
    checkpoint: bool = option(
        True, "save a checkpoint after every epoch (removed when the run finishes), for --resume", OUTPUT,
        bookkeeping=True,
    )  # fmt: skip
    checkpoint_every: int = option(
        0, "also checkpoint every this many batches within an epoch (0: at epoch ends only), for epochs longer "
        "than a job may live", OUTPUT, bookkeeping=True, sweep_override=True,
    )  # fmt: skip
    cpu_threads: int | None = option(
        None, "CPU runs: torch threads per process (default: the cores this process may use, divided by the "
        "processes on this machine; `accelerate launch` would otherwise leave one)", TRAINING, bookkeeping=True,
    )  # fmt: skip
    resume: bool = option(
        False, "continue an interrupted run from its last checkpoint under --output-dir/checkpoints", OUTPUT,
        bookkeeping=True,
    )  # fmt: skip
    report_to: str | None = option(
        None, "tensorboard: log each epoch's loss and dev score under --output-dir/tensorboard", OUTPUT,
        bookkeeping=True,
    )  # fmt: skip
    tags: tuple[str, ...] = option(
        help="free-form labels stored in the record", group=OUTPUT, bookkeeping=True, default_factory=tuple
    )

    def __post_init__(self) -> None:
        if not isinstance(self.mode, Mode):
            if self.mode not in MODE_NAMES:
                raise ConfigError(f"--mode {self.mode!r} is not one of {', '.join(MODE_NAMES)}")
            object.__setattr__(self, "mode", Mode(self.mode))

    def resolved(self) -> RunConfig:
        """Fill the mode-dependent defaults and validate every option (no model is loaded)."""
        from bertprobe.tasks import is_tagging

        if self.mode is Mode.COSINE and self.pair_encoding != "separate":  # a cosine compares two vectors
            return replace(self, pair_encoding="separate").resolved()
        if self.pooling is None:  # a frozen [CLS] was never trained to sum up a sentence; the mean reads every token
            frozen_sentence_task = not is_tagging(self.task) and not self.mode.trains_encoder
            return replace(self, pooling="mean" if frozen_sentence_task else "first").resolved()
        self._check_choices()
        LayerSpec.parse(self.layers)
        for spec in self.cache_layer_specs():
            LayerSpec.parse(spec)
        head = self.head or self.mode.default_head(is_tagging(self.task))
        if head not in HEADS:
            raise ConfigError(f"--head {head!r} is not one of {', '.join(HEADS)}")
        self._check_counts()
        self._check_ranges()
        self._check_task_options()
        self._check_adaptation()
        self._check_optimizer()
        return replace(
            self,
            head=head,
            lr=self.lr if self.lr is not None else self.mode.default_lr,
            cache_dir=self.cache_dir or default_cache_dir(),
        )

    def _check_choices(self) -> None:
        """Options that name one of a fixed set of values."""
        from bertprobe.tasks import TASKS

        choices: dict[str, tuple[object, ...]] = {
            "task": tuple(TASKS), "pooling": POOLING_MODES, "context": CONTEXT_MODES,
            "pair_encoding": PAIR_ENCODINGS, "mixed_precision": MIXED_PRECISION, "report_to": REPORT_TO,
            "optimizer": OPTIMIZERS,
        }  # fmt: skip
        for name, allowed in choices.items():
            value = getattr(self, name)
            if value not in allowed:
                names = ", ".join(str(choice) for choice in allowed if choice is not None)
                raise ConfigError(f"--{name.replace('_', '-')} {value!r} is not one of {names}")

    def _check_counts(self) -> None:
        """Options that count something: at least 1, or (where 0 or unset mean off) not negative."""
        for name in (
            "epochs", "batch_size", "eval_batch_size", "eval_every", "lstm_hidden", "lstm_layers", "check_loss_every",
            "gradient_accumulation_steps",
        ):  # fmt: skip
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
        for name in ("max_train_examples", "cpu_threads", "dev_from_train"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        if self.max_length is not None and self.max_length < 3:
            raise ConfigError(
                f"--max-length {self.max_length} leaves no room for a word beside the special tokens; give at least 3 "
                "(or leave it out: the model's own limit)"
            )
        if self.checkpoint_every < 0 or self.checkpoint_every % self.gradient_accumulation_steps:
            raise ConfigError(
                f"--checkpoint-every {self.checkpoint_every} must be 0 (epoch ends only) or a positive multiple of "
                f"--gradient-accumulation-steps ({self.gradient_accumulation_steps}): a checkpoint taken between "
                "two optimizer steps would lose the gradients accumulated so far"
            )

    def _check_ranges(self) -> None:
        """Fractions, rates and the seed."""
        if self.train_fraction is not None and not 0.0 < self.train_fraction <= 1.0:
            raise ConfigError(f"--train-fraction must be in (0, 1], got {self.train_fraction}")
        if self.train_fraction is not None and self.max_train_examples is not None:
            raise ConfigError("give --train-fraction or --max-train-examples, not both")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ConfigError("--warmup-fraction must be in [0, 1)")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"--dropout must be in [0, 1), got {self.dropout}")
        if not 0 <= self.seed < 2**32:
            raise ConfigError(f"--seed must be in 0..{2**32 - 1}, got {self.seed}")
        if not self.weight_decay >= 0.0:
            raise ConfigError(f"--weight-decay must be 0 or positive, got {self.weight_decay}")
        if not self.max_grad_norm >= 0.0:
            raise ConfigError(f"--max-grad-norm must be 0 (no clipping) or positive, got {self.max_grad_norm}")

    def _check_task_options(self) -> None:
        """Options that apply to some tasks or modes only."""
        from bertprobe.tasks import is_tagging

        if self.text_columns is not None and not 1 <= len(self.text_column_names()) <= 2:
            raise ConfigError(
                f"--text-columns {self.text_columns!r} must name one column (single sentences) or two, separated by a "
                "comma (sentence pairs)"
            )
        if is_tagging(self.task) and self.dev_from_train is not None:
            raise ConfigError(
                f"--dev-from-train applies to sentence tasks whose test labels are hidden; {self.task} has a labelled "
                "test set"
            )
        if is_tagging(self.task) and self.pooling != "first":
            raise ConfigError(
                f"--pooling {self.pooling} applies to sentence tasks; {self.task} tags words, each read at its first "
                "sub-token"
            )
        self._check_cosine()
        if self.pair_encoding == "separate" and not (self.mode.uses_cache and self.feature_cache):
            raise ConfigError(
                "--pair-encoding separate encodes each sentence of a pair apart with the frozen encoder: it needs "
                "--mode feature and the feature cache"
            )
        if not self.mode.reads_layers and self.layers != "last":
            raise ConfigError(
                f"--layers applies to --mode feature only: --mode {self.mode} puts its head on the last layer"
            )

    def _check_cosine(self) -> None:
        """--mode cosine trains nothing: it needs sentence pairs, the cache and a fixed mix of
        layers; the cosine "head" belongs to it alone."""
        from bertprobe.tasks import is_tagging

        if (self.head == "cosine") != (self.mode is Mode.COSINE) and self.head is not None:
            raise ConfigError("--head cosine belongs to --mode cosine (which scores pairs and trains nothing)")
        if self.mode is not Mode.COSINE:
            return
        if is_tagging(self.task):
            raise ConfigError(f"--mode cosine scores sentence pairs; {self.task} tags words")
        if not self.feature_cache:
            raise ConfigError(
                "--mode cosine reads each sentence's vector from the feature cache: drop --no-feature-cache"
            )
        if LayerSpec.parse(self.layers).combine == "weighted":
            raise ConfigError(
                f"--layers {self.layers} learns its mix of layers, and --mode cosine trains nothing: give a fixed "
                "combination (a layer, concat, sum or mean)"
            )

    def _check_adaptation(self) -> None:
        """Options of --mode partial and --mode lora. The upper bound of --freeze-layers (the
        model's depth) is checked when the encoder is adapted."""
        if self.mode is Mode.PARTIAL and self.freeze_layers is None:
            raise ConfigError(
                "--mode partial needs --freeze-layers K: the embeddings and the lowest K Transformer layers are "
                "frozen (0 freezes the embeddings only)"
            )
        if self.freeze_layers is not None:
            if self.mode is not Mode.PARTIAL:
                raise ConfigError(f"--freeze-layers applies to --mode partial only, not --mode {self.mode}")
            if self.freeze_layers < 0:
                raise ConfigError(
                    f"--freeze-layers {self.freeze_layers} is out of range: it must be in 0..L, L being the "
                    "model's number of Transformer layers (0 freezes the embeddings only)"
                )
        if self.lora_target_modules is not None:
            if self.mode is not Mode.LORA:
                raise ConfigError(f"--lora-target-modules applies to --mode lora only, not --mode {self.mode}")
            if not self.lora_targets():
                raise ConfigError("--lora-target-modules needs at least one module name, e.g. query,value")
        if self.lora_rank < 1:
            raise ConfigError("--lora-rank must be at least 1")
        if not self.lora_alpha > 0:
            raise ConfigError("--lora-alpha must be positive")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ConfigError("--lora-dropout must be in [0, 1)")
        if self.mode is Mode.LORA and importlib.util.find_spec("peft") is None:
            raise ConfigError(PEFT_MISSING)

    def _check_optimizer(self) -> None:
        for name in ("lr", "encoder_lr", "head_lr"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive")
        if not 0.0 < self.layer_lr_decay <= 1.0:
            raise ConfigError("--layer-lr-decay must be in (0, 1]; 1 gives every encoder layer --encoder-lr")
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError("--momentum must be in [0, 1)")
        if not self.mode.trains_encoder and (self.encoder_lr is not None or self.layer_lr_decay != 1.0):
            option = "--encoder-lr" if self.encoder_lr is not None else "--layer-lr-decay"
            raise ConfigError(f"{option} has no effect in --mode {self.mode}: the encoder is frozen (use --head-lr)")

    def text_column_names(self) -> list[str]:
        """The names of ``--text-columns`` (one, or two for sentence pairs)."""
        return [name.strip() for name in (self.text_columns or "").split(",") if name.strip()]

    def lora_targets(self) -> list[str] | None:
        """The names of ``--lora-target-modules``; ``None`` for the architecture's default."""
        if self.lora_target_modules is None:
            return None
        return [name.strip() for name in self.lora_target_modules.split(",") if name.strip()]

    def cache_layer_specs(self) -> list[str]:
        """``cache_layers`` holds one or more strategies separated by ``;``."""
        return [spec for spec in (self.cache_layers or "").split(";") if spec.strip()]

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["mode"] = self.mode.value
        data["tags"] = list(self.tags)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> RunConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown configuration keys: {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        values = dict(data)
        if "tags" in values:
            values["tags"] = tuple(values["tags"])  # type: ignore[arg-type]
        return cls(**values)  # type: ignore[arg-type]

    def run_name(self) -> str:
        """A readable, unique file name: the main choices, then a hash of everything.

        ``{task}_{model}_{mode}_{layers}[_{context}]_seed{seed}_{digest}``: the context
        (sentence or document) is named for tagging tasks only, as it means nothing to a task
        that scores whole inputs (GLUE, custom files); it still enters the digest, which is
        the same as in the names those tasks' records had before (:meth:`record_names`).
        """
        from bertprobe.tasks import is_tagging

        return self._name(with_context=is_tagging(self.task))

    def record_names(self) -> tuple[str, ...]:
        """The names a record of this run may have been written under, newest first:
        :meth:`run_name`, then, for a task that scores whole inputs, the name with the
        context that such records were given until the context left their names."""
        return tuple(dict.fromkeys((self.run_name(), self._name(with_context=True))))

    def _name(self, with_context: bool) -> str:
        resolved = self.resolved()
        defaults = RunConfig().to_dict()
        settings = {
            k: v
            for k, v in resolved.to_dict().items()
            if k not in BOOKKEEPING_OPTIONS and (k in FIRST_RELEASE_OPTIONS or v != defaults[k])
        }
        digest = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
        model = re.sub(r"[^A-Za-z0-9.]+", "-", self.model.rstrip("/").split("/")[-1])
        layers = re.sub(r"[^A-Za-z0-9]+", "_", self.layers) if self.mode.reads_layers else "all"
        mode = {Mode.PARTIAL: f"partial-freeze{self.freeze_layers}", Mode.LORA: f"lora-r{self.lora_rank}"}
        adaptation = mode.get(self.mode, self.mode.value)
        context = f"_{self.context}" if with_context else ""
        return f"{self.task}_{model}_{adaptation}_{layers}{context}_seed{self.seed}_{digest}"

    def record_path(self) -> Path:
        """Where a finished run writes its record: ``OUTPUT_DIR/RUN_NAME.json``."""
        return Path(self.output_dir) / f"{self.run_name()}.json"


def find_record(config: RunConfig, folder: str | Path | None = None) -> Path | None:
    """The record of ``config`` in ``folder`` (default: its ``output_dir``) under any of its
    :meth:`~RunConfig.record_names`, or ``None``: how ``bertprobe sweep`` and ``bertprobe
    tune`` tell a finished run, so records written under an older name are still found."""
    root = Path(config.output_dir if folder is None else folder)
    for name in config.record_names():
        if (path := root / f"{name}.json").exists():
            return path
    return None


def _options(flag: str) -> frozenset[str]:
    return frozenset(f.name for f in fields(RunConfig) if f.metadata[flag])


#: Options of the first release: always in a run's name hash (see :func:`option`).
FIRST_RELEASE_OPTIONS = _options("first_release")
#: Options that cannot change what a run measures: out of its name, never a row of a table.
BOOKKEEPING_OPTIONS = _options("bookkeeping")
#: Hyper-parameters a tuning searches (see :func:`option`).
TUNABLE_OPTIONS = _options("tunable")
#: Options that say which task and data a run used.
TASK_IDENTITY_OPTIONS = _options("task_identity")
#: Options that say where the data were read from (see :func:`option`).
DATA_LOCATION_OPTIONS = _options("data_location")
#: Options ``bertprobe sweep`` lets the command line override for every run of a file.
SWEEP_OVERRIDES = tuple(f.name for f in fields(RunConfig) if f.metadata["sweep_override"])
#: Where each option acts only with certain values of other options (see :func:`option`).
OPTION_CONDITIONS: dict[str, dict[str, tuple[object, ...]]] = {
    f.name: f.metadata["applies_when"] for f in fields(RunConfig) if f.metadata["applies_when"]
}
#: The value a record without an option ran with: its default (records written before an
#: option existed lack it). Options whose default is unset (``None``) are left out.
RECORD_DEFAULTS: dict[str, object] = {
    f.name: str(f.metadata["record_default"])
    if isinstance(f.metadata["record_default"], Mode)
    else f.metadata["record_default"]
    for f in fields(RunConfig)
    if not f.metadata["bookkeeping"] and f.metadata["record_default"] is not None
}
