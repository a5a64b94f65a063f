"""How a run adapts the encoder: the four modes and what each implies.

Code asks a mode what it does (``config.mode.trains_encoder``), never compares its name, so
a new mode is added here and nowhere else. Plain Python: options and reports use it without
torch.
"""

from __future__ import annotations

from enum import Enum


class Mode(str, Enum):
    """A string enum: ``Mode("feature") == "feature"``, and records store the plain name."""

    FINETUNE = "finetune"
    FEATURE = "feature"
    PARTIAL = "partial"
    LORA = "lora"
    COSINE = "cosine"

    def __str__(self) -> str:  # the name a user types, in messages and f-strings
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    def __hash__(self) -> int:  # as its name's: a dict keyed by modes answers to plain names
        return str.__hash__(self)

    @property
    def trains_encoder(self) -> bool:
        """Whether gradients flow through the encoder (into its weights or into adapters
        beside them): every mode but the frozen ones, whose encoder runs once, without
        gradients."""
        return self not in (Mode.FEATURE, Mode.COSINE)

    @property
    def trains_anything(self) -> bool:
        """Whether the run trains at all: cosine scores pairs with the frozen encoder as it is."""
        return self is not Mode.COSINE

    @property
    def reads_layers(self) -> bool:
        """Whether ``--layers`` chooses the hidden states the head reads; the other modes
        put their head on the last layer."""
        return self in (Mode.FEATURE, Mode.COSINE)

    @property
    def uses_cache(self) -> bool:
        """Whether the encoder's outputs can be computed once and cached: only a frozen
        encoder gives the same features every epoch."""
        return not self.trains_encoder

    @property
    def default_lr(self) -> float | None:
        """The learning rate when ``--lr`` is not given: the BERT paper's 5e-5 for training
        encoder weights, whole or partial; a randomly initialised head on frozen features, or
        low-rank adapters (which start as a no-op), learn faster and take a larger step."""
        return {Mode.FINETUNE: 5e-5, Mode.FEATURE: 1e-3, Mode.PARTIAL: 5e-5, Mode.LORA: 5e-4, Mode.COSINE: None}[self]

    def default_head(self, tagging: bool) -> str:
        """The head when ``--head`` is not given: for tagging, the paper's two-layer BiLSTM on
        frozen features and a linear layer on a trained encoder; for sentence tasks a linear
        layer. Cosine's "head" is the cosine of a pair's two vectors, with nothing to learn."""
        if self is Mode.COSINE:
            return "cosine"
        return "bilstm" if tagging and self is Mode.FEATURE else "linear"

    @property
    def description(self) -> str:
        return {
            Mode.FINETUNE: "train every encoder weight",
            Mode.FEATURE: "freeze the encoder and train a head on its layers (--layers)",
            Mode.PARTIAL: "freeze the embeddings and the lowest --freeze-layers layers, train the rest",
            Mode.LORA: "train low-rank adapters (peft) beside the frozen encoder's weights",
            Mode.COSINE: "train nothing: score each sentence pair (regression: STS-B, custom) by the cosine of its "
            "two sentences, each encoded alone and pooled from --layers, as SentEval and MTEB do",
        }[self]


MODE_NAMES: tuple[str, ...] = tuple(mode.value for mode in Mode)
