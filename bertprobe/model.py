"""The probe: an encoder (optional when features are cached), a layer combination and a head."""

from __future__ import annotations

import torch
from torch import nn

from bertprobe.layers import LayerCombiner, ResolvedLayers


def gather_words(
    hidden_states: tuple[torch.Tensor, ...], indices: tuple[int, ...], positions: torch.Tensor
) -> torch.Tensor:
    """Pick each word's first-sub-token vector from the chosen layers.

    ``hidden_states[i]`` is ``[B, T, H]``, ``positions`` is ``[B, W]``; the result is
    ``[B, W, K, H]`` with the ``K`` layers in the order of ``indices``. Gathering before
    combining keeps the work proportional to words, not sub-tokens.
    """
    index = positions.unsqueeze(-1).expand(-1, -1, hidden_states[0].shape[-1])
    return torch.stack([hidden_states[i].gather(1, index) for i in indices], dim=-2)


class WordTagger(nn.Module):
    """Scores every labelled word from the chosen hidden states.

    ``forward`` takes either sub-token inputs (``input_ids``, ``attention_mask``, maybe
    ``token_type_ids``, and ``word_positions``), which run the encoder, or cached
    ``features`` ``[B, W, K, H]`` from a frozen encoder; both with ``word_mask``.
    With ``frozen_encoder`` the encoder never trains and stays in eval mode.
    """

    def __init__(
        self,
        encoder: nn.Module | None,
        layers: ResolvedLayers,
        head: nn.Module,
        frozen_encoder: bool,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.layers = layers
        self.combiner = LayerCombiner(layers)
        self.head = head
        self.frozen_encoder = frozen_encoder

    def train(self, mode: bool = True) -> WordTagger:
        super().train(mode)
        if self.frozen_encoder and self.encoder is not None:
            self.encoder.eval()
        return self

    def encode(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """``[B, W, K, H]`` word features from the encoder."""
        assert self.encoder is not None, "this probe has no encoder: pass cached features"
        inputs = {key: batch[key] for key in ("input_ids", "attention_mask", "token_type_ids") if key in batch}
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen_encoder):
            output = self.encoder(**inputs, output_hidden_states=True, return_dict=True)
            return gather_words(output.hidden_states, self.layers.indices, batch["word_positions"])

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        features = batch["features"] if "features" in batch else self.encode(batch)
        combined = self.combiner(features.to(self.head_dtype()))
        return self.head(combined, batch["word_mask"])

    def head_dtype(self) -> torch.dtype:
        return next(self.head.parameters()).dtype


def tagging_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over labelled words (padding words carry label -100)."""
    return nn.functional.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100)
