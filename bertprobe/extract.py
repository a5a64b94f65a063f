"""Frozen features for the user's own use, read through the toolkit's verified cache."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from bertprobe.alignment import EncodedWindow, encode_split
from bertprobe.config import default_cache_dir
from bertprobe.encoder import describe, freeze, load_encoder, load_tokenizer
from bertprobe.features import FeatureCache, FeatureDataset, weights_digest
from bertprobe.layer_spec import resolve_strategy
from bertprobe.tasks.conll import Sentence, TaggedSplit

POOLINGS = ("first", "mean")


def extract_features(
    model: str,
    inputs: Sequence[Sequence[str]] | Sequence[str],
    layers: str = "last",
    pooling: str | None = None,
    cache_dir: str | None = None,
    device: str | torch.device = "cpu",
) -> list[np.ndarray]:
    """The frozen encoder's hidden states of ``layers`` (the ``--layers`` grammar's layer
    list; their combination is left to the caller), float16, one array per input:

    * pre-split sentences (lists of words): ``[words, K, H]``, each word read at its first
      sub-token, the sentence alone as context (a sentence longer than the model's limit is
      read in windows, and its rows are put back together in word order);
    * texts (strings) with ``pooling`` ``"first"`` or ``"mean"``: ``[1, K, H]``.

    The features are read through the cache that runs use (``cache_dir``, by default
    ``$BERTPROBE_CACHE`` or ``~/.cache/bertprobe``), keyed by the encoder's weights and the
    exact inputs, verified when read: the same call again encodes nothing.
    """
    texts = bool(inputs) and isinstance(inputs[0], str)
    if texts and pooling not in POOLINGS:
        raise ValueError(f"texts need pooling 'first' or 'mean' (one vector per text), got {pooling!r}")
    if not texts and pooling is not None:
        raise ValueError("pre-split sentences give one row per word: pooling applies to texts only")
    tokenizer = load_tokenizer(model)
    encoder = load_encoder(model)
    freeze(encoder)
    info = describe(model, encoder.config)
    indices = resolve_strategy(layers, info.num_layers).indices
    windows = _text_windows(inputs, tokenizer, info.max_positions) if texts else _word_windows(inputs, tokenizer, info)
    cache = FeatureCache(cache_dir or default_cache_dir(), model, weights_digest(encoder), pooling=pooling)
    cached, _ = cache.build_or_find(
        windows, indices, indices, encoder.to(device), tokenizer.pad_token_id, "extract", torch.device(device)
    )
    dataset = FeatureDataset(cached, windows, indices)
    rows: list[list[np.ndarray]] = [[] for _ in inputs]
    for index, window in enumerate(windows):  # windows come in sentence order, words in order
        rows[window.sentence_index].append(dataset[index]["features"].numpy())
    return [np.concatenate(parts) for parts in rows]


def _word_windows(sentences: Sequence[Sequence[str]], tokenizer, info) -> list[EncodedWindow]:
    split = TaggedSplit("extract", [Sentence(list(words), ["O"] * len(words), 0) for words in sentences])
    return encode_split(split, tokenizer, {"O": 0}, info.max_positions)


def _text_windows(texts: Sequence[str], tokenizer, max_length: int) -> list[EncodedWindow]:
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length)
    types = encoded.get("token_type_ids") if "token_type_ids" in tokenizer.model_input_names else None
    return [
        EncodedWindow(ids, types[index] if types else None, [0], [0], index, 0)
        for index, ids in enumerate(encoded["input_ids"])
    ]
