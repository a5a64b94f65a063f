"""One frozen description of a run, built from the command line or an experiment file."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
from dataclasses import asdict, dataclass, field, fields, replace

from bertprobe.alignment import CONTEXT_MODES
from bertprobe.bookkeeping import BOOKKEEPING_OPTIONS
from bertprobe.heads import HEADS
from bertprobe.layers import LayerSpec

MODES = ("finetune", "feature", "partial", "lora")
POOLING_MODES = ("first", "mean")
#: joint: a pair is one input ([CLS] a [SEP] b [SEP]), one pooled vector; separate: each
#: sentence encoded alone (u, v), the head reads [u; v; |u - v|; u * v], as SentEval does.
PAIR_ENCODINGS = ("joint", "separate")
OPTIMIZERS = ("adamw", "sgd")
PEFT_MISSING = "--mode lora needs the peft package: pip install peft (or pip install 'bertprobe[lora]')"
MIXED_PRECISION = (None, "no", "fp16", "bf16")  # None: whatever `accelerate launch` says
REPORT_TO = (None, "tensorboard")

#: The options of the first release: they always enter a run's name hash. Options added
#: since enter it only when set away from their default, so older records keep their names
#: (and a sweep still recognises them as done).
NAME_FIELDS_V1 = frozenset(
    (
        "mode", "layers", "model", "task", "data_dir", "hub_dataset", "context", "pooling", "train_file",
        "validation_file", "test_file", "text_columns", "label_column", "regression", "max_length", "head",
        "lstm_hidden", "lstm_layers", "dropout", "epochs", "lr", "batch_size", "eval_batch_size", "weight_decay",
        "warmup_fraction", "max_grad_norm", "seed", "max_train_examples",
    )
)  # fmt: skip

#: Learning rates when --lr is not given: the paper's 5e-5 for fine-tuning, whole or partial;
#: a randomly initialised head on frozen features, or low-rank adapters (which start as a
#: no-op), learn faster and take a larger step.
DEFAULT_LR = {"finetune": 5e-5, "feature": 1e-3, "partial": 5e-5, "lora": 5e-4}
#: Heads of tagging tasks when --head is not given; sequence tasks: always linear.
DEFAULT_HEAD = {"finetune": "linear", "feature": "bilstm", "partial": "linear", "lora": "linear"}


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


class ConfigError(ValueError):
    """An option value that cannot work; the message names the option."""


@dataclass(frozen=True)
class RunConfig:
    mode: str = "finetune"
    layers: str = "last"
    model: str = "bert-base-cased"
    task: str = "conll2003"
    data_dir: str | None = None
    hub_dataset: str = "conll2003"
    context: str = "sentence"
    pooling: str = "first"
    pair_encoding: str = "joint"
    train_file: str | None = None
    validation_file: str | None = None
    test_file: str | None = None
    text_columns: str | None = None
    label_column: str | None = None
    regression: bool | None = None
    max_length: int | None = None
    head: str | None = None
    lstm_hidden: int = 768
    lstm_layers: int = 2
    dropout: float = 0.1
    epochs: int = 3
    lr: float | None = None
    batch_size: int = 32
    eval_batch_size: int = 64
    eval_every: int = 1
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1
    max_grad_norm: float = 1.0
    freeze_layers: int | None = None
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.1
    lora_target_modules: str | None = None
    encoder_lr: float | None = None
    head_lr: float | None = None
    layer_lr_decay: float = 1.0
    optimizer: str = "adamw"
    momentum: float = 0.9
    seed: int = 42
    max_train_examples: int | None = None
    output_dir: str = "results/runs"
    cache_dir: str | None = None  # default: default_cache_dir()
    feature_cache: bool = True
    cache_layers: str | None = None
    save_predictions: bool = False
    check_loss_every: int = 50
    train_fraction: float | None = None
    gradient_accumulation_steps: int = 1
    mixed_precision: str | None = None
    compile: bool = False
    checkpoint: bool = True
    checkpoint_every: int = 0
    trim_heap_every: int = 0
    cpu_threads: int | None = None
    resume: bool = False
    report_to: str | None = None
    tags: tuple[str, ...] = field(default_factory=tuple)

    def resolved(self) -> RunConfig:
        """Fill the mode-dependent defaults and validate every option (no model is loaded)."""
        if self.mode not in MODES:
            raise ConfigError(f"--mode {self.mode!r} is not one of {', '.join(MODES)}")
        from bertprobe.tasks import TASKS, is_tagging

        if self.task not in TASKS:
            raise ConfigError(f"--task {self.task!r} is not one of {', '.join(TASKS)}")
        if self.pooling not in POOLING_MODES:
            raise ConfigError(f"--pooling {self.pooling!r} is not one of {', '.join(POOLING_MODES)}")
        if self.context not in CONTEXT_MODES:
            raise ConfigError(f"--context {self.context!r} is not one of {', '.join(CONTEXT_MODES)}")
        LayerSpec.parse(self.layers)
        for spec in self.cache_layer_specs():
            LayerSpec.parse(spec)
        head = self.head or (DEFAULT_HEAD[self.mode] if is_tagging(self.task) else "linear")
        if head not in HEADS:
            raise ConfigError(f"--head {head!r} is not one of {', '.join(HEADS)}")
        for name in (
            "epochs", "batch_size", "eval_batch_size", "eval_every", "lstm_hidden", "lstm_layers", "check_loss_every",
        ):  # fmt: skip
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
        if self.max_length is not None and self.max_length < 3:
            raise ConfigError(
                f"--max-length {self.max_length} leaves no room for a word beside the special tokens; give at least 3 "
                "(or leave it out: the model's own limit)"
            )
        if self.text_columns is not None and not 1 <= len(self.text_column_names()) <= 2:
            raise ConfigError(
                f"--text-columns {self.text_columns!r} must name one column (single sentences) or two, separated by a "
                "comma (sentence pairs)"
            )
        if self.max_train_examples is not None and self.max_train_examples < 1:
            raise ConfigError("--max-train-examples must be at least 1")
        if self.train_fraction is not None and not 0.0 < self.train_fraction <= 1.0:
            raise ConfigError(f"--train-fraction must be in (0, 1], got {self.train_fraction}")
        if self.train_fraction is not None and self.max_train_examples is not None:
            raise ConfigError("give --train-fraction or --max-train-examples, not both")
        if self.gradient_accumulation_steps < 1:
            raise ConfigError("--gradient-accumulation-steps must be at least 1")
        if self.checkpoint_every < 0 or self.checkpoint_every % self.gradient_accumulation_steps:
            raise ConfigError(
                f"--checkpoint-every {self.checkpoint_every} must be 0 (epoch ends only) or a positive multiple of "
                f"--gradient-accumulation-steps ({self.gradient_accumulation_steps}): a checkpoint taken between "
                "two optimizer steps would lose the gradients accumulated so far"
            )
        if self.cpu_threads is not None and self.cpu_threads < 1:
            raise ConfigError(f"--cpu-threads must be at least 1, got {self.cpu_threads}")
        if self.trim_heap_every < 0:
            raise ConfigError("--trim-heap-every must be 0 (never) or a positive number of batches")
        if self.trim_heap_every:
            from bertprobe.cpu_heap import heap_trimming_available

            if not heap_trimming_available():
                raise ConfigError("--trim-heap-every needs glibc's malloc_trim (Linux with glibc)")
        if self.mixed_precision not in MIXED_PRECISION:
            choices = ", ".join(str(choice) for choice in MIXED_PRECISION[1:])
            raise ConfigError(f"--mixed-precision {self.mixed_precision!r} is not one of {choices}")
        if self.report_to not in REPORT_TO:
            raise ConfigError(f"--report-to {self.report_to!r} is not one of {', '.join(REPORT_TO[1:])}")
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
        if is_tagging(self.task) and self.pooling != "first":
            raise ConfigError(
                f"--pooling {self.pooling} applies to sentence tasks; {self.task} tags words, each read at its first "
                "sub-token"
            )
        if self.pair_encoding not in PAIR_ENCODINGS:
            raise ConfigError(f"--pair-encoding {self.pair_encoding!r} is not one of {', '.join(PAIR_ENCODINGS)}")
        if self.pair_encoding == "separate" and not (self.mode == "feature" and self.feature_cache):
            raise ConfigError(
                "--pair-encoding separate encodes each sentence of a pair apart with the frozen encoder: it needs "
                "--mode feature and the feature cache"
            )
        if self.mode != "feature" and self.layers != "last":
            raise ConfigError(
                f"--layers applies to --mode feature only: --mode {self.mode} puts its head on the last layer"
            )
        self._check_adaptation()
        self._check_optimizer()
        return replace(
            self,
            head=head,
            lr=self.lr if self.lr is not None else DEFAULT_LR[self.mode],
            cache_dir=self.cache_dir or default_cache_dir(),
        )

    def _check_adaptation(self) -> None:
        """Options of --mode partial and --mode lora. The upper bound of --freeze-layers (the
        model's depth) is checked when the encoder is adapted."""
        if self.mode == "partial" and self.freeze_layers is None:
            raise ConfigError(
                "--mode partial needs --freeze-layers K: the embeddings and the lowest K Transformer layers are "
                "frozen (0 freezes the embeddings only)"
            )
        if self.freeze_layers is not None:
            if self.mode != "partial":
                raise ConfigError(f"--freeze-layers applies to --mode partial only, not --mode {self.mode}")
            if self.freeze_layers < 0:
                raise ConfigError(
                    f"--freeze-layers {self.freeze_layers} is out of range: it must be in 0..L, L being the "
                    "model's number of Transformer layers (0 freezes the embeddings only)"
                )
        if self.lora_target_modules is not None:
            if self.mode != "lora":
                raise ConfigError(f"--lora-target-modules applies to --mode lora only, not --mode {self.mode}")
            if not self.lora_targets():
                raise ConfigError("--lora-target-modules needs at least one module name, e.g. query,value")
        if self.lora_rank < 1:
            raise ConfigError("--lora-rank must be at least 1")
        if not self.lora_alpha > 0:
            raise ConfigError("--lora-alpha must be positive")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ConfigError("--lora-dropout must be in [0, 1)")
        if self.mode == "lora" and importlib.util.find_spec("peft") is None:
            raise ConfigError(PEFT_MISSING)

    def _check_optimizer(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"--optimizer {self.optimizer!r} is not one of {', '.join(OPTIMIZERS)}")
        for name in ("lr", "encoder_lr", "head_lr"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive")
        if not 0.0 < self.layer_lr_decay <= 1.0:
            raise ConfigError("--layer-lr-decay must be in (0, 1]; 1 gives every encoder layer --encoder-lr")
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError("--momentum must be in [0, 1)")
        if self.mode == "feature" and (self.encoder_lr is not None or self.layer_lr_decay != 1.0):
            option = "--encoder-lr" if self.encoder_lr is not None else "--layer-lr-decay"
            raise ConfigError(f"{option} has no effect in --mode feature: the encoder is frozen (use --head-lr)")

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
        """A readable, unique file name: the main choices, then a hash of everything."""
        resolved = self.resolved()
        defaults = RunConfig().to_dict()
        settings = {
            k: v
            for k, v in resolved.to_dict().items()
            if k not in BOOKKEEPING_OPTIONS and (k in NAME_FIELDS_V1 or v != defaults[k])
        }
        digest = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
        model = re.sub(r"[^A-Za-z0-9.]+", "-", self.model.rstrip("/").split("/")[-1])
        layers = re.sub(r"[^A-Za-z0-9]+", "_", self.layers) if self.mode == "feature" else "all"
        mode = {"partial": f"partial-freeze{self.freeze_layers}", "lora": f"lora-r{self.lora_rank}"}
        return f"{self.task}_{model}_{mode.get(self.mode, self.mode)}_{layers}_{self.context}_seed{self.seed}_{digest}"
