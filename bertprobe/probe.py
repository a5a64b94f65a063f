"""``Probe``: the toolkit's model as a plain ``nn.Module`` for the user's own training loop or
the Hugging Face ``Trainer``.

    probe = Probe("bert-base-cased", labels=["O", "B-PER", "I-PER"], mode="feature", layers="last4concat")
    batch = probe.batch([["John", "lives", "here"]], tags=[["B-PER", "O", "O"]])
    output = probe(**batch)            # {"loss": ..., "logits": [B, W, C]}
    output["loss"].backward()

It is what ``bertprobe.run`` trains, without the data loading, caching and bookkeeping of a
run: an encoder (a Hub id, a local folder, or an already loaded ``PreTrainedModel``), a
layer strategy in the ``--layers`` grammar, and a head, in one of the four modes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from bertprobe.adaptation import adapt_encoder
from bertprobe.alignment import encode_split
from bertprobe.batching import WindowCollator, WindowDataset
from bertprobe.config import RunConfig
from bertprobe.encoder import describe, freeze, load_encoder, load_tokenizer
from bertprobe.heads import build_head
from bertprobe.layer_spec import resolve_strategy
from bertprobe.model import ProbeModel, row_loss
from bertprobe.modes import MODE_NAMES, Mode
from bertprobe.tasks.conll import Sentence, TaggedSplit


class Probe(nn.Module):
    """An encoder, a layer combination and a head that tags words (``pooling=None``) or
    classifies whole inputs (``pooling="first"`` or ``"mean"``).

    ``mode``: ``finetune`` trains every weight; ``feature`` freezes the encoder (eval mode,
    no gradients) and trains the head on the chosen layers; ``partial`` freezes the
    embeddings and the lowest ``freeze_layers`` layers; ``lora`` adds low-rank adapters. In
    every mode but ``feature``, encoder weights that no read layer depends on (BERT's pooler)
    are frozen, as in a run. ``head`` defaults to the paper's: a BiLSTM on frozen features of
    a tagging task, else one linear layer.
    """

    def __init__(
        self,
        encoder: str | nn.Module,
        labels: Sequence[str],
        mode: str | Mode = Mode.FINETUNE,
        layers: str = "last",
        pooling: str | None = None,
        head: str | None = None,
        tokenizer=None,
        lstm_hidden: int = 256,
        lstm_layers: int = 2,
        dropout: float = 0.1,
        freeze_layers: int | None = None,
        lora_rank: int = 8,
        lora_alpha: float = 16.0,
    ) -> None:
        super().__init__()
        name = encoder if isinstance(encoder, str) else getattr(encoder.config, "_name_or_path", "model")
        mode = Mode(mode) if mode in MODE_NAMES else mode  # an unknown name is refused by RunConfig
        head = head or Mode(mode).default_head(tagging=pooling is None)
        self.run_config = RunConfig(
            mode=mode,
            model=name,
            head=head,
            lstm_hidden=lstm_hidden,
            lstm_layers=lstm_layers,
            dropout=dropout,
            freeze_layers=freeze_layers,
            lora_rank=lora_rank,
            lora_alpha=lora_alpha,
        ).resolved()  # fmt: skip  (every option checked as a run checks it)
        model = load_encoder(encoder) if isinstance(encoder, str) else encoder
        self.tokenizer = tokenizer if tokenizer is not None or not isinstance(encoder, str) else load_tokenizer(encoder)
        self.info = describe(name, model.config)
        self.labels = list(labels)
        resolved = resolve_strategy(layers, self.info.num_layers)
        frozen = not self.run_config.mode.trains_encoder
        if frozen:
            freeze(model)
        self.adaptation = adapt_encoder(model, self.run_config, self.info, resolved.indices)
        size = resolved.output_dim(self.info.hidden_size)
        classifier = build_head(head, size, len(self.labels), lstm_hidden, lstm_layers, dropout)
        self.model = ProbeModel(model, resolved, classifier, frozen_encoder=frozen, pooling=pooling)

    @property
    def layers(self):
        return self.model.layers

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        word_positions: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **ignored: object,
    ) -> dict[str, torch.Tensor]:
        """``{"logits": [B, R, C]}`` and, given ``labels`` ``[B, R]`` (-100 where a row is
        padding), ``"loss"`` first, as the ``Trainer`` reads it. ``R`` is the words of each
        input (``word_positions``: each word's first sub-token; 0 for padding) or 1 when the
        probe pools. Keys the probe does not use (the ``Trainer``'s extras) are ignored."""
        batch = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            batch["token_type_ids"] = token_type_ids
        if self.model.pooling is None:
            if word_positions is None:
                raise ValueError("a tagging probe needs word_positions: make the batch with Probe.batch")
            batch["word_positions"] = word_positions
            batch["word_mask"] = word_positions > 0  # position 0 is the first special token
        else:
            batch["word_mask"] = torch.ones(len(input_ids), 1, dtype=torch.bool, device=input_ids.device)
        logits = self.model(batch)
        if labels is None:
            return {"logits": logits}
        rows = labels if labels.dim() == 2 else labels.unsqueeze(-1)
        return {"loss": row_loss(logits, rows, batch["word_mask"], regression=False), "logits": logits}

    def batch(
        self, words: Sequence[Sequence[str]], tags: Sequence[Sequence[str]] | None = None, max_length: int | None = None
    ) -> dict[str, torch.Tensor]:
        """Pre-split sentences as the inputs :meth:`forward` takes: sub-tokens, attention mask,
        each word's first sub-token (``word_positions``) and, with ``tags`` (label names), the
        labels. A sentence longer than the model's limit becomes several rows
        (``sentence_index`` says whose), each labelling the words it holds."""
        if self.tokenizer is None:
            raise ValueError("this probe has no tokenizer: pass tokenizer= when giving a loaded model")
        names = tags if tags is not None else [[self.labels[0]] * len(sentence) for sentence in words]
        split = TaggedSplit("batch", [Sentence(list(w), list(t), 0) for w, t in zip(words, names, strict=True)])
        label_to_id = {label: index for index, label in enumerate(self.labels)}
        unknown = sorted({tag for sentence in names for tag in sentence} - set(label_to_id))
        if unknown:
            raise ValueError(f"tags {unknown} are not among this probe's labels {self.labels}")
        limit = min(max_length or self.info.max_positions, self.info.max_positions)
        windows = encode_split(split, self.tokenizer, label_to_id, limit)
        dataset = WindowDataset(windows)
        collated = WindowCollator(self.tokenizer.pad_token_id)([dataset[i] for i in range(len(dataset))])
        batch = {key: collated[key] for key in ("input_ids", "attention_mask", "word_positions")}
        if "token_type_ids" in collated:
            batch["token_type_ids"] = collated["token_type_ids"]
        if tags is not None:
            batch["labels"] = collated["labels"]
        batch["sentence_index"] = torch.tensor([window.sentence_index for window in windows])
        return batch

    def parameter_counts(self) -> dict[str, int]:
        """Trainable and total numbers in the encoder, the layer mix and the head."""
        parameters = list(self.parameters())
        return {
            "trainable": sum(p.numel() for p in parameters if p.requires_grad),
            "total": sum(p.numel() for p in parameters),
        }
