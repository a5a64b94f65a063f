"""Datasets and padding collators for windows (sub-token inputs) and cached word features."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Dataset, Sampler

from bertprobe.alignment import EncodedWindow


class WindowDataset(Dataset):
    """Windows as sub-token inputs; item ``i`` also carries its own index for reassembly."""

    def __init__(self, windows: Sequence[EncodedWindow]) -> None:
        self.windows = list(windows)

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> dict[str, object]:
        window = self.windows[index]
        item: dict[str, object] = {
            "input_ids": window.input_ids,
            "word_positions": window.word_positions,
            "labels": window.labels,
            "window_index": index,
        }
        if window.token_type_ids is not None:
            item["token_type_ids"] = window.token_type_ids
        return item


def _pad(rows: Sequence[Sequence[int | float]], value: int, dtype: torch.dtype = torch.long) -> torch.Tensor:
    width = max(len(row) for row in rows)
    out = torch.full((len(rows), width), value, dtype=dtype)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.as_tensor(row, dtype=dtype)
    return out


def _pad_labels(items: list[dict[str, object]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels padded with -100 (float for regression targets) and the mask of real rows."""
    rows = [item["labels"] for item in items]
    dtype = torch.float32 if any(isinstance(v, float) for row in rows for v in row) else torch.long
    lengths = torch.tensor([len(row) for row in rows])
    labels = _pad(rows, -100, dtype)
    return labels, torch.arange(labels.shape[1])[None, :] < lengths[:, None]


class WindowCollator:
    """Pads each batch to its own longest window (dynamic padding)."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, items: list[dict[str, object]]) -> dict[str, torch.Tensor]:
        input_ids = _pad([item["input_ids"] for item in items], self.pad_token_id)
        lengths = torch.tensor([len(item["input_ids"]) for item in items])
        batch = {
            "input_ids": input_ids,
            "attention_mask": (torch.arange(input_ids.shape[1])[None, :] < lengths[:, None]).long(),
            "word_positions": _pad([item["word_positions"] for item in items], 0),
            "window_index": torch.tensor([item["window_index"] for item in items]),
        }
        batch["labels"], batch["word_mask"] = _pad_labels(items)
        if "token_type_ids" in items[0]:
            batch["token_type_ids"] = _pad([item["token_type_ids"] for item in items], 0)
        return batch


class FeatureCollator:
    """Pads cached word features ``[W, K, H]`` to ``[B, W_max, K, H]``."""

    def __call__(self, items: list[dict[str, object]]) -> dict[str, torch.Tensor]:
        features = [item["features"] for item in items]
        width = max(f.shape[0] for f in features)
        out = features[0].new_zeros((len(items), width, *features[0].shape[1:]))
        for i, f in enumerate(features):
            out[i, : f.shape[0]] = f
        labels, word_mask = _pad_labels(items)
        return {
            "features": out,
            "labels": labels,
            "word_mask": word_mask,
            "window_index": torch.tensor([item["window_index"] for item in items]),
        }


def epoch_batch_sizes(count: int, batch_size: int, processes: int = 1) -> list[int]:
    """The sizes of an epoch's training batches, in the order they are cut.

    One process: ``count // batch_size`` full batches and one short batch for the rest.
    ``processes`` data-parallel processes train one batch each per step, so the epoch needs
    a multiple of that many batches: the fewest that hold ``count`` windows in batches of at
    most ``batch_size``. The batches after the full ones share the rest evenly. (Only where
    fewer than ``processes`` windows would be left for them, which needs ``batch_size`` 1,
    does one batch hold more than ``batch_size``.) Every window is in exactly one batch.
    """
    if count < processes:
        raise ValueError(f"{processes} processes need at least {processes} training examples; there are {count}")
    batches = processes * math.ceil(math.ceil(count / batch_size) / processes)
    if batches > count:
        batches = processes * (count // processes)
    full = min(count // batch_size, batches)
    while full and (count - full * batch_size < batches - full or (full == batches and count > full * batch_size)):
        full -= 1
    rest, left = count - full * batch_size, batches - full
    return [batch_size] * full + [rest // left + (i < rest % left) for i in range(left)]


class LengthGroupedBatches(Sampler[list[int]]):
    """Shuffled training batches of similar-length examples, so dynamic padding wastes little.

    Each epoch: shuffle all indices (seeded by ``seed`` and the epoch number), cut them
    into pools of ``pool_batches`` batches, sort each pool by length, cut it into batches
    of the sizes :func:`epoch_batch_sizes` gives and shuffle the batch order. Every index
    appears in exactly one batch, and with ``processes`` > 1 the batch count is a multiple
    of it, so every round of one batch per process is complete.

    The sampler has no ``batch_size`` attribute on purpose: Accelerate then shards it as
    batches of varying size and hands every round to the processes as it is. With a
    ``batch_size`` it skips each round whose last batch is short (the shuffled short batch
    lands there about one epoch in N), losing N batches without a word.
    """

    def __init__(
        self, lengths: Sequence[int], max_batch_size: int, seed: int = 0, pool_batches: int = 50, processes: int = 1
    ) -> None:
        self.lengths = list(lengths)
        self.max_batch_size = max_batch_size
        self.seed = seed
        self.pool_batches = pool_batches
        self.sizes = epoch_batch_sizes(len(self.lengths), max_batch_size, processes)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.sizes)

    def __iter__(self) -> Iterator[list[int]]:
        generator = torch.Generator().manual_seed(self.seed * 1000003 + self.epoch)
        self.epoch += 1
        order = torch.randperm(len(self.lengths), generator=generator).tolist()
        batches: list[list[int]] = []
        start = 0
        for first in range(0, len(self.sizes), self.pool_batches):
            sizes = self.sizes[first : first + self.pool_batches]
            pool = sorted(order[start : start + sum(sizes)], key=lambda i: -self.lengths[i])
            start += sum(sizes)
            for size in sizes:
                batches.append(pool[:size])
                pool = pool[size:]
        for i in torch.randperm(len(batches), generator=generator).tolist():
            yield batches[i]


class SortedBatches(Sampler[list[int]]):
    """Evaluation batches of ``batch_size`` examples in order of decreasing length.

    Unlike training, evaluation keeps a ``batch_size``: Accelerate pads the last round
    with repeated examples, and ``gather_for_metrics`` drops them again by counting them
    from it, so each example is scored once.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int) -> None:
        self.lengths = list(lengths)
        self.batch_size = batch_size

    def __len__(self) -> int:
        return (len(self.lengths) + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[list[int]]:
        order = sorted(range(len(self.lengths)), key=lambda i: -self.lengths[i])
        yield from (order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size))
