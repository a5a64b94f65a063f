"""Token tagging (NER): CoNLL-2003 or any CoNLL-format data with its own tag set."""

from __future__ import annotations

from pathlib import Path

import torch

from bertprobe.alignment import EncodedWindow, encode_split
from bertprobe.errors import DataFormatError
from bertprobe.metrics import entity_scores
from bertprobe.results import write_text_atomic
from bertprobe.tasks.base import Task, select_training_examples
from bertprobe.tasks.conll import TaggedCorpus


class TaggingTask(Task):
    """One prediction per word, scored with entity-level F1."""

    pooling = None
    is_regression = False
    primary_metric = "f1"

    def __init__(
        self,
        name: str,
        corpus: TaggedCorpus,
        tokenizer,
        max_length: int,
        context: str,
        max_train_examples: int | None,
        seed: int,
        train_fraction: float | None = None,
    ) -> None:
        if context == "document" and not corpus.has_documents:
            lacking = ", ".join(name for name, split in corpus.splits.items() if not split.has_documents)
            raise DataFormatError(
                f"--context document needs document boundaries (-DOCSTART- lines), which {corpus.source} lacks "
                f"(splits: {lacking}): without them every sentence of a file would see unrelated sentences as its "
                f"context. Use the original CoNLL files with --data-dir, or --context sentence"
            )
        self.name = name
        self.corpus = corpus
        self.labels = corpus.label_list()
        label_to_id = {label: index for index, label in enumerate(self.labels)}
        num_sentences = len(corpus.splits["train"].sentences)
        chosen = select_training_examples(num_sentences, max_train_examples, seed, train_fraction)
        self.windows = {  # a training subset encodes only its own sentences (the rest stay context)
            split: encode_split(
                sentences, tokenizer, label_to_id, max_length, context, only=chosen if split == "train" else None
            )
            for split, sentences in corpus.splits.items()
        }

    def score(self, split: str, window_indices: torch.Tensor, predictions: torch.Tensor) -> tuple[dict, list]:
        sentences = self.corpus.splits[split].sentences
        predicted = reassemble_sentences(
            [len(s.words) for s in sentences], self.windows[split], window_indices, predictions, self.labels
        )
        return entity_scores([s.tags for s in sentences], predicted), predicted

    def write_predictions(self, path: Path, split: str, predicted: list) -> None:
        """``word gold predicted`` lines, a blank line after each sentence (conlleval input)."""
        lines = []
        for sentence, tags in zip(self.corpus.splits[split].sentences, predicted, strict=True):
            lines.extend(f"{w} {g} {p}" for w, g, p in zip(sentence.words, sentence.tags, tags, strict=True))
            lines.append("")
        write_text_atomic(path, "\n".join(lines) + "\n")

    def data_summary(self) -> dict[str, object]:
        return {
            "source": self.corpus.source,
            "sentences": {split: len(s.sentences) for split, s in self.corpus.splits.items()},
            "windows": {split: len(w) for split, w in self.windows.items()},
            "words_trained": sum(len(w.labels) for w in self.windows["train"]),
        }


def reassemble_sentences(
    sentence_lengths: list[int],
    windows: list[EncodedWindow],
    window_indices: torch.Tensor,
    predictions: torch.Tensor,
    labels: list[str],
) -> list[list[str]]:
    """Word-level tags per sentence from per-window predictions; every word exactly once."""
    predicted: list[list[str | None]] = [[None] * length for length in sentence_lengths]
    for index, row in zip(window_indices.tolist(), predictions.tolist(), strict=True):
        window = windows[index]
        sentence = predicted[window.sentence_index]
        for offset, label_id in enumerate(row[: len(window.labels)]):
            position = window.word_offset + offset
            if sentence[position] is not None:
                raise RuntimeError(f"word {position} of sentence {window.sentence_index} predicted twice")
            sentence[position] = labels[int(label_id)]
    for number, sentence in enumerate(predicted):
        if any(tag is None for tag in sentence):
            raise RuntimeError(f"sentence {number} has words without a prediction")
    return predicted  # type: ignore[return-value]
