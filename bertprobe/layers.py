"""The modules that combine hidden states: :class:`ScalarMix` (ELMo's learned weighted
sum) and :class:`LayerCombiner` (concat, sum, mean or weighted); the strategy grammar they
follow is in :mod:`bertprobe.layer_spec`."""

from __future__ import annotations

import torch
from torch import nn

from bertprobe.layer_spec import ResolvedLayers


class ScalarMix(nn.Module):
    r"""Learned weighted sum of ``K`` layers, as in ELMo (Peters et al., 2018).

    .. math::  \mathrm{mix}(h_1, \dots, h_K) = \gamma \sum_{k=1}^{K} \mathrm{softmax}(w)_k \, h_k

    ``w`` starts at zero (an equal-weight average) and ``gamma`` at one; both are learned.
    (A fixed plain average is the ``mean`` combine mode.) With ``layer_norm``, each ``h_k``
    is first normalised over its hidden dimension (zero mean, unit variance, no learned
    scale), as ELMo's ``do_layer_norm`` does, so layers of different scale mix evenly.
    Usable alone on any model's stacked hidden states.
    """

    def __init__(self, num_layers: int, layer_norm: bool = False) -> None:
        super().__init__()
        self.scalar_weights = nn.Parameter(torch.zeros(num_layers))
        self.gamma = nn.Parameter(torch.ones(()))
        self.layer_norm = layer_norm

    def normalized_weights(self) -> torch.Tensor:
        return torch.softmax(self.scalar_weights, dim=0)

    def forward(self, stacked: torch.Tensor) -> torch.Tensor:
        """``stacked`` is ``[..., K, H]``; returns ``[..., H]``."""
        if self.layer_norm:
            stacked = nn.functional.layer_norm(stacked, stacked.shape[-1:])
        weights = self.normalized_weights().to(stacked.dtype)
        return self.gamma.to(stacked.dtype) * torch.einsum("...kh,k->...h", stacked, weights)


class LayerCombiner(nn.Module):
    """Combines the ``K`` selected layers, given stacked as ``[..., K, H]``."""

    def __init__(self, layers: ResolvedLayers) -> None:
        super().__init__()
        self.layers = layers
        self.mix = ScalarMix(len(layers.indices)) if layers.combine == "weighted" else None

    def forward(self, stacked: torch.Tensor) -> torch.Tensor:
        mode = self.layers.combine
        if mode == "concat":
            return stacked.flatten(start_dim=-2)
        if mode == "sum":
            return stacked.sum(dim=-2)
        if mode == "mean":
            return stacked.mean(dim=-2)
        assert self.mix is not None
        return self.mix(stacked)

    def learned_weights(self) -> dict[str, object] | None:
        """The scalar mix's softmax weights per layer and its scale, for the result record."""
        if self.mix is None:
            return None
        weights = self.mix.normalized_weights().detach().float().cpu().tolist()
        return {
            "layers": list(self.layers.indices),
            "softmax_weights": weights,
            "gamma": float(self.mix.gamma.detach().float().cpu()),
        }


def select_layers(hidden_states: tuple[torch.Tensor, ...], indices: tuple[int, ...]) -> torch.Tensor:
    """Stack the chosen hidden states ``[B, T, H]`` into ``[B, T, K, H]`` in the given order."""
    return torch.stack([hidden_states[i] for i in indices], dim=-2)
