"""The probe: an encoder (optional when features are cached), a layer combination and a head."""

from __future__ import annotations

import torch
from torch import nn

from bertprobe.layer_spec import ResolvedLayers
from bertprobe.layers import LayerCombiner


def gather_words(
    hidden_states: tuple[torch.Tensor, ...],
    indices: tuple[int, ...],
    positions: torch.Tensor,
    sources: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pick each word's first-sub-token vector from the chosen layers.

    ``hidden_states[i]`` is ``[E, T, H]``, ``positions`` is ``[B, W]``; the result is
    ``[B, W, K, H]`` with the ``K`` layers in the order of ``indices``. Gathering before
    combining keeps the work proportional to words, not sub-tokens. Window ``b`` reads row
    ``sources[b]`` of the hidden states (several windows with the same sub-tokens share one
    encoded row); without ``sources``, row ``b`` (then ``E = B``).
    """
    if sources is not None:
        return torch.stack([hidden_states[i][sources.unsqueeze(-1), positions] for i in indices], dim=-2)
    index = positions.unsqueeze(-1).expand(-1, -1, hidden_states[0].shape[-1])
    return torch.stack([hidden_states[i].gather(1, index) for i in indices], dim=-2)


def pool_tokens(
    hidden_states: tuple[torch.Tensor, ...], indices: tuple[int, ...], attention_mask: torch.Tensor, pooling: str
) -> torch.Tensor:
    """One vector per input from the chosen layers: ``[B, 1, K, H]``.

    ``first`` takes the first token (``[CLS]``/``<s>``); ``mean`` averages every
    non-padding token (special tokens included), weighting each token equally.
    """
    if pooling == "first":
        return torch.stack([hidden_states[i][:, 0] for i in indices], dim=-2).unsqueeze(1)
    if pooling == "mean":
        mask = attention_mask.unsqueeze(-1).to(hidden_states[0].dtype)
        counts = mask.sum(dim=1).clamp(min=1)
        pooled = [(hidden_states[i] * mask).sum(dim=1) / counts for i in indices]
        return torch.stack(pooled, dim=-2).unsqueeze(1)
    raise ValueError(f"unknown pooling {pooling!r}")


def extract_rows(
    hidden_states: tuple[torch.Tensor, ...],
    indices: tuple[int, ...],
    batch: dict[str, torch.Tensor],
    pooling: str | None,
    sources: torch.Tensor | None = None,
) -> torch.Tensor:
    """What the head scores, ``[B, R, K, H]``: each labelled word's first sub-token
    (``pooling=None``, R = words) or one pooled vector per input (R = 1).

    With ``sources`` (see :func:`gather_words`), ``batch["word_positions"]`` has a row per
    window and ``batch["attention_mask"]`` a row per encoded input.
    """
    if pooling is None:
        return gather_words(hidden_states, indices, batch["word_positions"], sources)
    pooled = pool_tokens(hidden_states, indices, batch["attention_mask"], pooling)
    return pooled if sources is None else pooled[sources]


def distinct_inputs(inputs: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """The batch's distinct rows (equal ``input_ids``, ``attention_mask`` and token types)
    and, for each window, the row that holds its input; ``None`` when every row differs,
    and the inputs are returned as they came."""
    rows = torch.cat([inputs[key] for key in sorted(inputs)], dim=1)
    _, sources = torch.unique(rows, dim=0, return_inverse=True)
    distinct = int(sources.max()) + 1
    if distinct == len(rows):
        return inputs, None
    order = torch.arange(len(rows), device=rows.device)
    first = torch.full((distinct,), len(rows), device=rows.device).scatter_reduce(0, sources, order, "amin")
    return {key: value[first] for key, value in inputs.items()}, sources


def pair_features(rows: torch.Tensor) -> torch.Tensor:
    """``[B, 2, D]`` (the two sentences of each pair, encoded apart: ``u`` and ``v``) to
    ``[B, 1, 4D]``: ``[u; v; |u - v|; u * v]``, the sentence-pair features of SentEval and
    InferSent, which let a linear head compare the sentences."""
    u, v = rows[:, 0], rows[:, 1]
    return torch.cat([u, v, (u - v).abs(), u * v], dim=-1).unsqueeze(1)


class ProbeModel(nn.Module):
    """Scores every row (labelled word, or pooled input) from the chosen hidden states.

    ``forward`` takes either sub-token inputs (``input_ids``, ``attention_mask``, maybe
    ``token_type_ids``, and ``word_positions``), which run the encoder, or cached
    ``features`` ``[B, R, K, H]`` from a frozen encoder; both with ``word_mask`` (the
    mask of real rows). With ``frozen_encoder`` the encoder never trains and stays in
    eval mode. Returns scores ``[B, R, C]``.
    """

    def __init__(
        self,
        encoder: nn.Module | None,
        layers: ResolvedLayers,
        head: nn.Module,
        frozen_encoder: bool,
        pooling: str | None = None,
        pairs_apart: bool = False,
    ) -> None:
        super().__init__()
        self.pooling = pooling
        self.pairs_apart = pairs_apart  # features hold two rows per example: see pair_features
        self.encoder = encoder
        self.layers = layers
        self.combiner = LayerCombiner(layers)
        self.head = head
        self.frozen_encoder = frozen_encoder

    def train(self, mode: bool = True) -> ProbeModel:
        super().train(mode)
        if self.frozen_encoder and self.encoder is not None:
            self.encoder.eval()
        return self

    def encode(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """``[B, R, K, H]`` row features from the encoder.

        Where no gradient reaches the encoder and it is in eval mode (evaluation; a frozen
        encoder without the cache), windows of the batch with identical inputs are encoded
        once: with document context the sentences of a short document share one window.
        """
        assert self.encoder is not None, "this probe has no encoder: pass cached features"
        inputs = {key: batch[key] for key in ("input_ids", "attention_mask", "token_type_ids") if key in batch}
        needs_grad = torch.is_grad_enabled() and not self.frozen_encoder
        sources = None
        if not needs_grad and not self.encoder.training and not torch.compiler.is_compiling():
            inputs, sources = distinct_inputs(inputs)
        with torch.set_grad_enabled(needs_grad):
            output = self.encoder(**inputs, output_hidden_states=True, return_dict=True)
        to_extract = {"word_positions": batch.get("word_positions"), "attention_mask": inputs["attention_mask"]}
        return extract_rows(output.hidden_states, self.layers.indices, to_extract, self.pooling, sources)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        features = batch["features"] if "features" in batch else self.encode(batch)
        combined = self.combiner(features.to(self.head_dtype()))
        if self.pairs_apart:
            combined = pair_features(combined)
        return self.head(combined, batch["word_mask"])

    def head_dtype(self) -> torch.dtype:
        parameter = next(self.head.parameters(), None)  # a cosine "head" has none
        return torch.float32 if parameter is None else parameter.dtype


def row_loss(logits: torch.Tensor, labels: torch.Tensor, word_mask: torch.Tensor, regression: bool) -> torch.Tensor:
    """Mean cross-entropy over real rows (padding rows carry label -100), or mean squared
    error of the single output for regression."""
    if regression:
        return nn.functional.mse_loss(logits[..., 0].float()[word_mask], labels.float()[word_mask])
    return nn.functional.cross_entropy(logits.flatten(0, 1).float(), labels.flatten().long(), ignore_index=-100)
