"""Sentence and sentence-pair classification or regression (GLUE and the user's own files)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from bertprobe.alignment import EncodedWindow
from bertprobe.results import write_text_atomic
from bertprobe.sequence_metrics import classification_scores, regression_scores
from bertprobe.tasks.base import Task, select_training_examples
from bertprobe.tasks.sequence import SequenceCorpus

POOLING_MODES = ("first", "mean")

logger = logging.getLogger(__name__)


class SequenceTask(Task):
    """One prediction per input, read from a pooled vector of the chosen layers.

    Inputs longer than the model's limit are truncated (longest text first): a sequence
    label belongs to the whole input, so no labelled unit is lost, only context.
    """

    def __init__(
        self,
        name: str,
        corpus: SequenceCorpus,
        tokenizer,
        max_length: int,
        pooling: str,
        primary_metric: str,
        positive_label: str | None,
        max_train_examples: int | None,
        seed: int,
        train_fraction: float | None = None,
        pair_encoding: str = "joint",
    ) -> None:
        if pair_encoding == "separate" and not corpus.is_pair:
            from bertprobe.errors import ConfigError

            raise ConfigError(
                f"--pair-encoding separate applies to sentence-pair tasks; {name} has one text per example"
            )
        if pooling not in POOLING_MODES:
            raise ValueError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLING_MODES)}")
        self.name = name
        self.corpus = corpus
        self.labels = list(corpus.label_list)
        self.is_regression = corpus.is_regression
        self.pooling = pooling
        self.primary_metric = primary_metric
        self.positive_label = positive_label
        self.truncated: dict[str, int] = {}
        self.empty_texts = _count_empty_texts(name, corpus)
        self.windows = {
            split: self._encode(split, tokenizer, max_length) for split in corpus.splits if corpus.splits[split]
        }
        chosen = select_training_examples(len(self.windows["train"]), max_train_examples, seed, train_fraction)
        if chosen is not None:
            self.windows["train"] = [w for i, w in enumerate(self.windows["train"]) if i in chosen]
        self.separate_inputs: dict[str, list[EncodedWindow]] = {}
        if pair_encoding == "separate":
            self.inputs_per_window = 2
            self.separate_inputs = {split: self._encode_apart(split, tokenizer, max_length) for split in self.windows}

    def encoder_inputs(self, split: str) -> list[EncodedWindow]:
        return self.separate_inputs.get(split) or self.windows[split]

    def _encode_apart(self, split: str, tokenizer, max_length: int) -> list[EncodedWindow]:
        """Each kept window's two sentences as inputs of their own, ``a`` then ``b``."""
        examples = self.corpus.splits[split].examples
        kept = [window.sentence_index for window in self.windows[split]]
        texts = [text for index in kept for text in (examples[index].text_a, examples[index].text_b or "")]
        encoded = tokenizer(texts, truncation=True, max_length=max_length)
        return [
            EncodedWindow(ids, None, [0], [0], position // 2, 0) for position, ids in enumerate(encoded["input_ids"])
        ]

    def _encode(self, split: str, tokenizer, max_length: int) -> list[EncodedWindow]:
        examples = self.corpus.splits[split].examples
        first = [e.text_a for e in examples]
        second = [e.text_b or "" for e in examples] if self.corpus.is_pair else None
        encoded = tokenizer(first, second, truncation=True, max_length=max_length)
        full = tokenizer(first, second, truncation=False)
        self.truncated[split] = sum(
            len(a) != len(b) for a, b in zip(encoded["input_ids"], full["input_ids"], strict=True)
        )
        label_to_id = {label: i for i, label in enumerate(self.labels)}
        use_types = "token_type_ids" in encoded and "token_type_ids" in tokenizer.model_input_names
        windows = []
        for index, example in enumerate(examples):
            label = float(example.label) if self.is_regression else label_to_id[str(example.label)]
            windows.append(
                EncodedWindow(
                    input_ids=encoded["input_ids"][index],
                    token_type_ids=encoded["token_type_ids"][index] if use_types else None,
                    word_positions=[0],
                    labels=[label],
                    sentence_index=index,
                    word_offset=0,
                )
            )
        return windows

    def _predicted_in_order(self, split: str, window_indices: torch.Tensor, predictions: torch.Tensor) -> list:
        predicted: list = [None] * len(self.corpus.splits[split].examples)
        for index, row in zip(window_indices.tolist(), predictions[:, 0].tolist(), strict=True):
            example = self.windows[split][index].sentence_index
            if predicted[example] is not None:
                raise RuntimeError(f"{split} example {example} predicted twice")
            predicted[example] = float(row) if self.is_regression else self.labels[int(row)]
        if any(p is None for p in predicted):
            raise RuntimeError(f"{split}: some examples have no prediction")
        return predicted

    def score(self, split: str, window_indices: torch.Tensor, predictions: torch.Tensor) -> tuple[dict, list]:
        predicted = self._predicted_in_order(split, window_indices, predictions)
        gold = [e.label for e in self.corpus.splits[split].examples]
        if self.is_regression:
            return regression_scores([float(g) for g in gold], predicted), predicted
        return classification_scores([str(g) for g in gold], predicted, self.positive_label), predicted

    def write_predictions(self, path: Path, split: str, predicted: list) -> None:
        """JSON lines: the input texts, the gold label and the prediction."""
        lines = [
            json.dumps({"text_a": e.text_a, "text_b": e.text_b, "gold": e.label, "predicted": p})
            for e, p in zip(self.corpus.splits[split].examples, predicted, strict=True)
        ]
        write_text_atomic(path, "\n".join(lines) + "\n")

    def data_summary(self) -> dict[str, object]:
        return {
            "source": self.corpus.source,
            "examples": {split: len(s.examples) for split, s in self.corpus.splits.items()},
            # with --dev-from-train: dev was held out of train, test is the task's own dev set
            "dev_from_train": self.corpus.dev_from_train,
            "examples_trained": len(self.windows["train"]),
            "truncated": self.truncated,
            "empty_texts": self.empty_texts,
            "pair": self.corpus.is_pair,
            "regression": self.is_regression,
        }


def _count_empty_texts(name: str, corpus: SequenceCorpus) -> dict[str, int]:
    """Per split, how many examples have an empty or blank text; a warning names the first few."""
    sources = corpus.empty_texts()
    counts = {split: len(found) for split, found in sources.items()}
    if any(counts.values()):
        first = [source for found in sources.values() for source in found][:3]
        per_split = ", ".join(f"{split} {count}" for split, count in counts.items() if count)
        logger.warning(
            f"{name}: examples with an empty text ({per_split}; first at {', '.join(first)}); "
            "they are kept, and counted in the run record under data.empty_texts"
        )
    return counts
