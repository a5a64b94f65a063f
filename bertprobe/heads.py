"""Task heads that turn word vectors ``[B, W, D]`` into tag scores ``[B, W, C]``."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from bertprobe.config import HEADS


class LinearTagger(nn.Module):
    """Dropout and one linear layer: the BERT paper's fine-tuning head."""

    def __init__(self, input_dim: int, num_labels: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(input_dim, num_labels)

    def forward(self, words: torch.Tensor, word_mask: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(words))


class BiLSTMTagger(nn.Module):
    """The paper's feature-based head: a randomly initialised bidirectional LSTM
    (``num_layers`` layers, ``hidden_size`` units per direction) and a linear layer.
    Padding words are packed away, so they never leak into the recurrent state."""

    def __init__(
        self,
        input_dim: int,
        num_labels: int,
        hidden_size: int = 768,
        num_layers: int = 2,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.lstm = nn.LSTM(
            input_dim,
            hidden_size,
            num_layers=num_layers,
            bidirectional=True,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.classifier = nn.Linear(2 * hidden_size, num_labels)

    def forward(self, words: torch.Tensor, word_mask: torch.Tensor) -> torch.Tensor:
        lengths = word_mask.sum(dim=1).clamp(min=1).cpu()
        words = self.dropout(words)
        # The recurrence always runs in float32, outside autocast: under CUDA autocast
        # cuDNN casts an LSTM to float16 whatever the autocast dtype, so a bf16 run would
        # train it in fp16 with no loss scaling (gradients underflow), and CPU autocast has
        # no half-precision LSTM kernel at all. The linear layer after it follows autocast.
        with torch.autocast(words.device.type, enabled=False):
            packed = pack_padded_sequence(words.float(), lengths, batch_first=True, enforce_sorted=False)
            output, _ = self.lstm(packed)
        unpacked, _ = pad_packed_sequence(output, batch_first=True, total_length=words.shape[1])
        return self.classifier(self.dropout(unpacked))


class PairCosine(nn.Module):
    """No parameters: each pair's score is the cosine of its two vectors ``u`` and ``v``, read
    from the pair features ``[u; v; |u - v|; u * v]`` (:func:`bertprobe.model.pair_features`)
    of width ``4 D``; ``[B, 1, 4D] -> [B, 1, 1]``."""

    def __init__(self, input_dim: int) -> None:
        super().__init__()
        self.width = input_dim // 4

    def forward(self, pairs: torch.Tensor, word_mask: torch.Tensor) -> torch.Tensor:
        u, v = pairs[..., : self.width].float(), pairs[..., self.width : 2 * self.width].float()
        return nn.functional.cosine_similarity(u, v, dim=-1).unsqueeze(-1)


def build_head(
    name: str, input_dim: int, num_labels: int, lstm_hidden: int, lstm_layers: int, dropout: float
) -> nn.Module:
    if name == "linear":
        return LinearTagger(input_dim, num_labels, dropout)
    if name == "bilstm":
        return BiLSTMTagger(input_dim, num_labels, lstm_hidden, lstm_layers, dropout)
    if name == "cosine":
        return PairCosine(input_dim)
    raise ValueError(f"unknown head {name!r}; choose one of {', '.join(HEADS)}")
