"""One frozen description of a run, built from the command line or an experiment file."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, fields, replace

from bertprobe.alignment import CONTEXT_MODES
from bertprobe.heads import HEADS
from bertprobe.layers import LayerSpec

MODES = ("finetune", "feature")
POOLING_MODES = ("first", "mean")

#: Learning rates when --lr is not given: the paper's 5e-5 for fine-tuning; a randomly
#: initialised head on frozen features learns faster and takes a larger step.
DEFAULT_LR = {"finetune": 5e-5, "feature": 1e-3}
DEFAULT_HEAD = {"finetune": "linear", "feature": "bilstm"}  # sequence tasks: always linear


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
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1
    max_grad_norm: float = 1.0
    seed: int = 42
    max_train_examples: int | None = None
    output_dir: str = "results/runs"
    cache_dir: str = ".bertprobe_cache"
    feature_cache: bool = True
    cache_layers: str | None = None
    save_predictions: bool = False
    check_loss_every: int = 50
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
        for name in ("epochs", "batch_size", "eval_batch_size", "lstm_hidden", "lstm_layers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
        if self.max_train_examples is not None and self.max_train_examples < 1:
            raise ConfigError("--max-train-examples must be at least 1")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ConfigError("--warmup-fraction must be in [0, 1)")
        return replace(self, head=head, lr=self.lr if self.lr is not None else DEFAULT_LR[self.mode])

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
        ignored = (
            "output_dir", "save_predictions", "cache_dir", "feature_cache", "cache_layers", "check_loss_every", "tags"
        )  # fmt: skip
        settings = {k: v for k, v in resolved.to_dict().items() if k not in ignored}
        digest = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
        model = re.sub(r"[^A-Za-z0-9.]+", "-", self.model.rstrip("/").split("/")[-1])
        layers = re.sub(r"[^A-Za-z0-9]+", "_", self.layers) if self.mode == "feature" else "all"
        return f"{self.task}_{model}_{self.mode}_{layers}_{self.context}_seed{self.seed}_{digest}"
