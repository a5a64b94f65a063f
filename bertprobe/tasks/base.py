"""What the training loop needs from a task, whatever its kind."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

    from bertprobe.alignment import EncodedWindow


class Task(ABC):
    """A loaded, encoded task.

    Each split is a list of :class:`EncodedWindow`. A window's *rows* are what the head
    scores: one per labelled word (``pooling is None``) or one pooled vector for the whole
    input (``pooling`` ``"first"`` or ``"mean"``).
    """

    name: str
    labels: list[str]  # class names; empty for regression
    is_regression: bool
    pooling: str | None
    primary_metric: str  # the dev score that picks the best epoch
    windows: dict[str, list[EncodedWindow]]

    @property
    def eval_splits(self) -> tuple[str, ...]:
        return tuple(split for split in ("validation", "test") if split in self.windows)

    @property
    def num_outputs(self) -> int:
        return 1 if self.is_regression else len(self.labels)

    #: Encoder inputs per window: 1, or 2 for sentence pairs encoded apart (each sentence
    #: alone, then combined as ``[u; v; |u - v|; u * v]``; see :mod:`bertprobe.model`).
    inputs_per_window: int = 1

    def encoder_inputs(self, split: str) -> list[EncodedWindow]:
        """What the frozen encoder runs on for ``split``, ``inputs_per_window`` per window in
        window order: the windows themselves unless a pair's sentences are encoded apart."""
        return self.windows[split]

    @abstractmethod
    def score(self, split: str, window_indices: torch.Tensor, predictions: torch.Tensor) -> tuple[dict, list]:
        """Metrics for a split from gathered per-row predictions, and the predictions in data order."""

    @abstractmethod
    def write_predictions(self, path: Path, split: str, predicted: list) -> None:
        """A human- and scorer-readable file of gold and predicted labels."""

    @abstractmethod
    def data_summary(self) -> dict[str, object]:
        """Sizes and source, for the result record."""


def select_training_examples(
    num_examples: int, limit: int | None, seed: int, fraction: float | None = None
) -> set[int] | None:
    """A seeded random subset of training examples: ``limit`` of them, or ``fraction`` of
    them (rounded up, at least one). ``None`` when the whole set is used.

    The subset is a prefix of one seeded permutation, so under one seed every mode gets
    the same examples and a larger limit or fraction gives a superset of a smaller one
    (nested subsets, as a learning curve needs).
    """
    if fraction is not None:
        limit = max(1, math.ceil(fraction * num_examples))
    if limit is None or limit >= num_examples:
        return None
    order = np.random.default_rng(seed).permutation(num_examples)
    return {int(i) for i in order[:limit]}
