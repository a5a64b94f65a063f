"""The layer-strategy grammar: which hidden states feed the head, and how they are combined.

Plain Python (no torch), so that options and reports can parse and name strategies
without loading it; the modules that combine tensors live in :mod:`bertprobe.layers`.

Hidden-state indexing follows Hugging Face's ``output_hidden_states``: index 0 is the
embedding layer's output and index ``L`` is the last of the model's ``L`` Transformer
layers. Negative indices count from the end (``-1`` is layer ``L``).

A strategy is written ``LAYERS:COMBINE``:

* ``LAYERS`` is a comma-separated list of indices and ranges (``-1,-2,-3,-4``,
  ``0-12``, ``9--1``), or ``all`` (every Transformer layer, ``1..L``, never the
  embeddings) or ``all+emb`` (``0..L``).
* ``COMBINE`` is ``concat`` (in the order listed), ``sum``, ``mean`` or ``weighted``
  (a learned :class:`ScalarMix`). A single layer needs no ``COMBINE``.

The BERT paper's rows have names (see :data:`NAMED_STRATEGIES`). Parsing checks the
syntax at once; :meth:`LayerSpec.resolve` checks indices against a model's depth, which
needs only the model's config, never its weights.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bertprobe.errors import LayerSpecError

COMBINE_MODES = ("concat", "sum", "mean", "weighted")

#: The BERT paper's Table 7 rows (and the fine-tuning row's "last"), by name.
NAMED_STRATEGIES: dict[str, str] = {
    "embeddings": "0",
    "last": "-1",
    "second_last": "-2",
    "last4sum": "-1,-2,-3,-4:sum",
    "last4weighted": "-4,-3,-2,-1:weighted",
    "last4concat": "-1,-2,-3,-4:concat",
    "allweighted": "all:weighted",
}


def _known_strategies_message() -> str:
    named = ", ".join(NAMED_STRATEGIES)
    return (
        f"known names: {named}; or a general spec LAYERS:COMBINE such as "
        f"'-1,-2,-3,-4:concat', '0-12:weighted' or 'all:mean' "
        f"(COMBINE one of {', '.join(COMBINE_MODES)})"
    )


@dataclass(frozen=True)
class LayerSpec:
    """A parsed strategy: which hidden states (possibly relative) and how to combine them."""

    text: str
    layers: tuple[int | str, ...]
    combine: str

    @classmethod
    def parse(cls, text: str) -> LayerSpec:
        """Parse a strategy name or general spec; raise :class:`LayerSpecError` if invalid."""
        spec = NAMED_STRATEGIES.get(text, text).strip()
        layer_part, _, combine = spec.partition(":")
        combine = combine.strip() or "concat"
        if combine not in COMBINE_MODES:
            raise LayerSpecError(
                f"unknown layer strategy {text!r}: combine mode {combine!r} is not one of "
                f"{', '.join(COMBINE_MODES)}; {_known_strategies_message()}"
            )
        layers: list[int | str] = []
        for item in (part.strip() for part in layer_part.split(",")):
            if item in ("all", "all+emb"):
                layers.append(item)
                continue
            match = re.fullmatch(r"(-?\d+)(?:-(-?\d+))?", item)
            if match is None:
                raise LayerSpecError(f"unknown layer strategy {text!r}; {_known_strategies_message()}")
            start = int(match.group(1))
            if match.group(2) is None:
                layers.append(start)
            else:
                layers.append(f"{start}..{int(match.group(2))}")
        if not layers:
            raise LayerSpecError(f"layer strategy {text!r} names no layer; {_known_strategies_message()}")
        return cls(text=text, layers=tuple(layers), combine=combine)

    def resolve(self, num_layers: int) -> ResolvedLayers:
        """Turn relative indices into absolute hidden-state indices for a model of depth ``num_layers``."""

        def absolute(index: int) -> int:
            resolved = index + num_layers + 1 if index < 0 else index
            if not 0 <= resolved <= num_layers:
                raise LayerSpecError(
                    f"layer {index} in strategy {self.text!r} is out of range for a model with "
                    f"{num_layers} Transformer layers: valid indices are 0..{num_layers} "
                    f"(0 = embeddings) or -{num_layers + 1}..-1"
                )
            return resolved

        indices: list[int] = []
        for item in self.layers:
            if item == "all":
                indices.extend(range(1, num_layers + 1))
            elif item == "all+emb":
                indices.extend(range(0, num_layers + 1))
            elif isinstance(item, str):
                start_text, end_text = item.split("..")
                start, end = absolute(int(start_text)), absolute(int(end_text))
                step = 1 if end >= start else -1
                indices.extend(range(start, end + step, step))
            else:
                indices.append(absolute(item))
        if len(set(indices)) != len(indices):
            raise LayerSpecError(f"layer strategy {self.text!r} names a layer twice: {indices}")
        return ResolvedLayers(name=self.text, indices=tuple(indices), combine=self.combine)


@dataclass(frozen=True)
class ResolvedLayers:
    """Absolute hidden-state indices (0 = embeddings) and the combine mode."""

    name: str
    indices: tuple[int, ...]
    combine: str

    def output_dim(self, hidden_size: int) -> int:
        return hidden_size * len(self.indices) if self.combine == "concat" else hidden_size


def resolve_strategy(text: str, num_layers: int) -> ResolvedLayers:
    """Parse and resolve in one step."""
    return LayerSpec.parse(text).resolve(num_layers)
