"""bertprobe.Probe as a user would use it: in a plain PyTorch loop and in the Trainer."""

from __future__ import annotations

import pytest
import torch

import bertprobe
from bertprobe.metrics import entity_scores
from bertprobe.tasks.conll import load_conll_dir

pytestmark = pytest.mark.slow


def sentences(data_dir, split: str):
    corpus = load_conll_dir(data_dir)
    return (
        corpus.label_list(),
        [s.words for s in corpus.splits[split].sentences],
        [s.tags for s in corpus.splits[split].sentences],
    )


def dev_f1(probe, data_dir) -> float:
    labels, words, tags = sentences(data_dir, "validation")
    batch = probe.batch(words, tags)
    probe.eval()
    with torch.no_grad():
        logits = probe(**{k: v for k, v in batch.items() if k != "labels"})["logits"]
    predicted = [
        [labels[int(i)] for i in row[: len(sentence)]] for row, sentence in zip(logits.argmax(-1), words, strict=True)
    ]
    return entity_scores(tags, predicted)["f1"]


@pytest.mark.parametrize(("mode", "layers"), [("finetune", "last"), ("feature", "-1,-2:concat")])
def test_probe_learns_the_toy_task_in_a_plain_pytorch_loop(mode, layers, tiny_model_dir, toy_data_dir):
    torch.manual_seed(0)
    labels, words, tags = sentences(toy_data_dir, "train")
    probe = bertprobe.Probe(str(tiny_model_dir), labels=labels, mode=mode, layers=layers, lstm_hidden=32)
    counts = probe.parameter_counts()
    if mode == "feature":  # the encoder is frozen: only the BiLSTM head and its classifier train
        encoder = sum(p.numel() for p in probe.model.encoder.parameters())
        assert counts["trainable"] == counts["total"] - encoder
    optimizer = torch.optim.AdamW(
        [p for p in probe.parameters() if p.requires_grad], lr=1e-3 if mode == "finetune" else 1e-2
    )
    for _epoch in range(6):
        probe.train()
        for start in range(0, len(words), 16):
            batch = probe.batch(words[start : start + 16], tags[start : start + 16])
            loss = probe(**batch)["loss"]
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    assert dev_f1(probe, toy_data_dir) > 0.8


def test_probe_learns_the_toy_task_with_the_hugging_face_trainer(tiny_model_dir, toy_data_dir, tmp_path):
    from transformers import Trainer, TrainingArguments

    torch.manual_seed(0)
    labels, words, tags = sentences(toy_data_dir, "train")
    probe = bertprobe.Probe(str(tiny_model_dir), labels=labels, mode="finetune")
    rows = [{key: value[0] for key, value in probe.batch([w], [t]).items()} for w, t in zip(words, tags, strict=True)]

    def collate(items):  # pads what Probe.batch made one sentence at a time
        width = max(len(item["input_ids"]) for item in items)
        words_width = max(len(item["word_positions"]) for item in items)

        def pad(key, size, value):
            return torch.stack(
                [torch.nn.functional.pad(item[key], (0, size - len(item[key])), value=value) for item in items]
            )

        return {
            "input_ids": pad("input_ids", width, 0), "attention_mask": pad("attention_mask", width, 0),
            "token_type_ids": pad("token_type_ids", width, 0), "word_positions": pad("word_positions", words_width, 0),
            "labels": pad("labels", words_width, -100),
        }  # fmt: skip

    arguments = TrainingArguments(
        output_dir=str(tmp_path), num_train_epochs=6, per_device_train_batch_size=16, learning_rate=1e-3,
        report_to=[], save_strategy="no", use_cpu=True, logging_strategy="no", remove_unused_columns=False, seed=0,
    )  # fmt: skip
    Trainer(model=probe, args=arguments, train_dataset=rows, data_collator=collate).train()
    assert dev_f1(probe, toy_data_dir) > 0.8


def test_probe_options_are_checked_and_tags_named(tiny_model_dir):
    with pytest.raises(bertprobe.ConfigError, match="--mode partial needs --freeze-layers K"):
        bertprobe.Probe(str(tiny_model_dir), labels=["O", "B-PER"], mode="partial")
    probe = bertprobe.Probe(str(tiny_model_dir), labels=["O", "B-PER"])
    with pytest.raises(ValueError, match=r"tags \['B-LOC'\] are not among this probe's labels"):
        probe.batch([["paris"]], [["B-LOC"]])
    batch = probe.batch([["the", "springville"]])  # spring ##ville: the first sub-token of each word
    assert batch["word_positions"].tolist() == [[1, 2]] and "labels" not in batch
