"""One training loop for every mode, under Accelerate.

``run(config)`` loads the data and the encoder, builds the probe, trains with AdamW and a
linear warm-up/decay schedule, evaluates on dev after every epoch, restores the best-dev
weights, evaluates them on test and writes one result record (main process only).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from bertprobe.alignment import EncodedWindow, encode_split
from bertprobe.batching import FeatureCollator, LengthGroupedBatches, WindowCollator, WindowDataset
from bertprobe.config import ConfigError, RunConfig
from bertprobe.encoder import EncoderInfo, describe, freeze, load_config, load_encoder, load_tokenizer
from bertprobe.features import FeatureCache, FeatureDataset, weights_digest
from bertprobe.heads import build_head
from bertprobe.layers import ResolvedLayers, resolve_strategy
from bertprobe.metrics import entity_scores
from bertprobe.model import WordTagger, tagging_loss
from bertprobe.results import (
    command_line,
    git_commit,
    machine_description,
    package_versions,
    peak_memory_bytes,
    write_json_atomic,
)
from bertprobe.tasks.conll import TaggedCorpus, load_conll_dir, load_conll_hub

EVAL_SPLITS = ("validation", "test")


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclass
class PreparedTask:
    corpus: TaggedCorpus
    labels: list[str]
    windows: dict[str, list[EncodedWindow]]


def load_corpus(config: RunConfig) -> TaggedCorpus:
    corpus = load_conll_dir(config.data_dir) if config.data_dir else load_conll_hub(config.hub_dataset)
    if config.context == "document" and not corpus.has_documents:
        raise ConfigError(
            f"--context document needs document boundaries (-DOCSTART- lines), which {corpus.source} "
            f"lacks; use the original CoNLL files with --data-dir, or --context sentence"
        )
    return corpus


def select_training_sentences(num_sentences: int, limit: int | None, seed: int) -> set[int] | None:
    """A seeded random subset of training sentences; a larger limit gives a superset of a
    smaller one under the same seed (the subsets are nested)."""
    if limit is None or limit >= num_sentences:
        return None
    order = np.random.default_rng(seed).permutation(num_sentences)
    return {int(i) for i in order[:limit]}


def prepare_task(config: RunConfig, tokenizer, info: EncoderInfo) -> PreparedTask:
    corpus = load_corpus(config)
    labels = corpus.label_list()
    label_to_id = {label: index for index, label in enumerate(labels)}
    max_length = min(config.max_length or info.max_positions, info.max_positions)
    windows = {
        name: encode_split(split, tokenizer, label_to_id, max_length, config.context)
        for name, split in corpus.splits.items()
    }
    chosen = select_training_sentences(len(corpus.splits["train"].sentences), config.max_train_examples, config.seed)
    if chosen is not None:
        windows["train"] = [w for w in windows["train"] if w.sentence_index in chosen]
    return PreparedTask(corpus, labels, windows)


def count_parameters(*modules: torch.nn.Module | None) -> dict[str, int]:
    params = {id(p): p for m in modules if m is not None for p in m.parameters()}.values()
    return {
        "trainable": sum(p.numel() for p in params if p.requires_grad),
        "total": sum(p.numel() for p in params),
    }


def build_optimizer(model: torch.nn.Module, config: RunConfig, total_steps: int):
    from transformers import get_linear_schedule_with_warmup

    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        is_norm_or_bias = name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name or ".mix." in name
        (no_decay if is_norm_or_bias else decay).append(parameter)
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=config.lr)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_fraction * total_steps), total_steps)
    return optimizer, scheduler


def sentence_predictions(
    split_sentences: list,
    windows: list[EncodedWindow],
    window_indices: torch.Tensor,
    predictions: torch.Tensor,
    labels: list[str],
) -> list[list[str]]:
    """Reassemble word-level tag predictions per sentence; every word exactly once."""
    predicted: list[list[str | None]] = [[None] * len(s.words) for s in split_sentences]
    for index, row in zip(window_indices.tolist(), predictions.tolist(), strict=True):
        window = windows[index]
        sentence = predicted[window.sentence_index]
        for offset, label_id in enumerate(row[: len(window.labels)]):
            position = window.word_offset + offset
            if sentence[position] is not None:
                raise RuntimeError(f"word {position} of sentence {window.sentence_index} predicted twice")
            sentence[position] = labels[label_id]
    used = {windows[i].sentence_index for i in window_indices.tolist()}
    for sentence_index in used:
        if any(tag is None for tag in predicted[sentence_index]):
            raise RuntimeError(f"sentence {sentence_index} has words without a prediction")
    return [predicted[i] for i in sorted(used)]  # type: ignore[misc]


def predict(model, loader, accelerator) -> tuple[torch.Tensor, torch.Tensor]:
    """Window indices and per-word predictions, gathered from every process exactly once."""
    model.eval()
    indices, predictions = [], []
    with torch.inference_mode():
        for batch in loader:
            logits = model(batch)
            predicted = logits.argmax(dim=-1).masked_fill(~batch["word_mask"], -100)
            predicted = accelerator.pad_across_processes(predicted, dim=1, pad_index=-100)
            window_index, predicted = accelerator.gather_for_metrics((batch["window_index"], predicted))
            indices.append(window_index.cpu())
            predictions.append(predicted.cpu())
    width = max(p.shape[1] for p in predictions)
    padded = [torch.nn.functional.pad(p, (0, width - p.shape[1]), value=-100) for p in predictions]
    return torch.cat(indices), torch.cat(padded)


def evaluate_split(model, loader, accelerator, task: PreparedTask, split: str) -> tuple[dict, list[list[str]]]:
    window_indices, predictions = predict(model, loader, accelerator)
    sentences = task.corpus.splits[split].sentences
    predicted = sentence_predictions(sentences, task.windows[split], window_indices, predictions, task.labels)
    gold = [s.tags for s in sentences]
    if len(predicted) != len(gold):
        raise RuntimeError(f"{split}: {len(predicted)} sentences predicted, {len(gold)} in the data")
    return entity_scores(gold, predicted), predicted


def write_predictions(path: Path, sentences: list, predicted: list[list[str]]) -> None:
    """``word gold predicted`` lines, a blank line after each sentence (conlleval input)."""
    lines = []
    for sentence, tags in zip(sentences, predicted, strict=True):
        lines.extend(f"{w} {g} {p}" for w, g, p in zip(sentence.words, sentence.tags, tags, strict=True))
        lines.append("")
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text("\n".join(lines) + "\n", encoding="utf-8")
    temporary.replace(path)


def make_loaders(config: RunConfig, task: PreparedTask, model_inputs: dict, collate) -> tuple[DataLoader, dict]:
    """Length-grouped shuffled training batches; evaluation batches sorted by length."""

    def lengths(split: str) -> list[int]:
        return [len(w.input_ids) for w in task.windows[split]]

    train = DataLoader(
        model_inputs["train"],
        batch_sampler=LengthGroupedBatches(lengths("train"), config.batch_size, shuffle=True, seed=config.seed),
        collate_fn=collate,
    )
    evaluation = {
        split: DataLoader(
            model_inputs[split],
            batch_sampler=LengthGroupedBatches(lengths(split), config.eval_batch_size, shuffle=False),
            collate_fn=collate,
        )
        for split in EVAL_SPLITS
    }
    return train, evaluation


def run(config: RunConfig) -> dict[str, object]:
    """Train and evaluate one configuration; return (and on the main process write) its record."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    config = config.resolved()
    # Accelerate forms a multi-process CPU group (gloo) only when asked for the CPU, so a
    # machine with no accelerator asks for it: `accelerate launch --multi_gpu
    # --num_processes N` then trains data-parallel on CPU cores, as it would on GPUs.
    accelerator = Accelerator(cpu=not _has_accelerator())
    set_seed(config.seed)
    started = time.perf_counter()

    info = describe(config.model, load_config(config.model))
    layers: ResolvedLayers = resolve_strategy(config.layers if config.mode == "feature" else "last", info.num_layers)
    tokenizer = load_tokenizer(config.model)
    task = prepare_task(config, tokenizer, info)
    encoder = load_encoder(config.model)
    frozen = config.mode == "feature"
    encoder_digest_before = weights_digest(encoder) if frozen else None
    if frozen:
        freeze(encoder)

    timings: dict[str, float] = {"setup_seconds": time.perf_counter() - started}
    cache_info: dict[str, object] | None = None
    if frozen and config.feature_cache:
        cache_started = time.perf_counter()
        encoder.to(accelerator.device)
        cache = FeatureCache(config.cache_dir, config.model, encoder_digest_before)
        stored_layers = set(layers.indices)
        for spec in config.cache_layer_specs():
            stored_layers |= set(resolve_strategy(spec, info.num_layers).indices)
        model_inputs = {}
        cache_info = {"paths": {}, "built": []}
        for split, windows in task.windows.items():
            with accelerator.main_process_first():  # the main process builds, the others read
                cached = cache.find(windows, layers.indices)
                if cached is None:
                    cached = cache.build(
                        windows,
                        sorted(stored_layers),
                        encoder,
                        tokenizer.pad_token_id,
                        split,
                        accelerator.device,
                        progress=accelerator.is_local_main_process,
                    )
                    cache_info["built"].append(split)
            model_inputs[split] = FeatureDataset(cached, windows, layers.indices)
            cache_info["paths"][split] = str(cached.path)
        timings["cache_seconds"] = time.perf_counter() - cache_started
        collate = FeatureCollator()
        probe_encoder = None
    else:
        model_inputs = {split: WindowDataset(windows) for split, windows in task.windows.items()}
        collate = WindowCollator(tokenizer.pad_token_id)
        probe_encoder = encoder

    for split, dataset in model_inputs.items():
        if len(dataset) == 0:
            raise ConfigError(f"split {split!r} has no examples after encoding")

    head = build_head(
        config.head,
        layers.output_dim(info.hidden_size),
        len(task.labels),
        config.lstm_hidden,
        config.lstm_layers,
        config.dropout,
    )
    model = WordTagger(probe_encoder, layers, head, frozen_encoder=frozen)
    parameters = count_parameters(model, encoder)

    train_loader, eval_loaders = make_loaders(config, task, model_inputs, collate)
    steps_per_epoch = math.ceil(len(train_loader) / accelerator.num_processes)
    optimizer, scheduler = build_optimizer(model, config, steps_per_epoch * config.epochs)
    model, optimizer, train_loader, scheduler, *eval_list = accelerator.prepare(
        model, optimizer, train_loader, scheduler, *eval_loaders.values()
    )
    eval_loaders = dict(zip(eval_loaders, eval_list, strict=True))

    history: list[dict[str, object]] = []
    best_f1, best_epoch, best_state, best_dev = -1.0, 0, None, None
    train_seconds = eval_seconds = 0.0
    step = 0
    for epoch in range(1, config.epochs + 1):
        epoch_started = time.perf_counter()
        model.train()
        loss_sum = torch.zeros((), device=accelerator.device)
        progress = tqdm(
            train_loader, desc=f"epoch {epoch}/{config.epochs}", unit="batch", leave=False,
            disable=not accelerator.is_local_main_process,
        )  # fmt: skip
        for batch in progress:
            logits = model(batch)
            loss = tagging_loss(logits, batch["labels"])
            accelerator.backward(loss)
            if config.max_grad_norm > 0:
                accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            loss_sum += loss.detach()
            step += 1
            if step % config.check_loss_every == 0:
                _check_finite(loss_sum, epoch, step, config)
        _check_finite(loss_sum, epoch, step, config)
        train_seconds += time.perf_counter() - epoch_started

        eval_started = time.perf_counter()
        dev_scores, dev_predicted = evaluate_split(model, eval_loaders["validation"], accelerator, task, "validation")
        eval_seconds += time.perf_counter() - eval_started
        mean_loss = float(accelerator.reduce(loss_sum, reduction="mean")) / max(len(train_loader), 1)
        history.append({"epoch": epoch, "train_loss": mean_loss, "dev_f1": dev_scores["f1"]})
        accelerator.print(
            f"epoch {epoch}/{config.epochs}  train loss {mean_loss:.4f}  dev F1 {100 * dev_scores['f1']:.2f}"
            f"  ({time.perf_counter() - epoch_started:.0f}s)"
        )
        if dev_scores["f1"] > best_f1:
            best_f1, best_epoch, best_dev = dev_scores["f1"], epoch, (dev_scores, dev_predicted)
            unwrapped = accelerator.unwrap_model(model)
            best_state = {
                name: tensor.detach().cpu().clone()
                for name, tensor in unwrapped.state_dict().items()
                if not (frozen and name.startswith("encoder."))
            }

    unwrapped = accelerator.unwrap_model(model)
    unwrapped.load_state_dict(best_state, strict=False)
    eval_started = time.perf_counter()
    final = {"validation": best_dev[0]}  # the best epoch's dev scores: same weights, no second pass
    predicted = {"validation": best_dev[1]}
    final["test"], predicted["test"] = evaluate_split(model, eval_loaders["test"], accelerator, task, "test")
    eval_seconds += time.perf_counter() - eval_started

    record: dict[str, object] = {
        "schema": 1,
        "name": config.run_name(),
        "config": config.to_dict(),
        "encoder": {
            "path": info.path,
            "model_type": info.model_type,
            "num_layers": info.num_layers,
            "hidden_size": info.hidden_size,
        },
        "layers": {"strategy": layers.name, "indices": list(layers.indices), "combine": layers.combine},
        "learned_layer_weights": unwrapped.combiner.learned_weights(),
        "labels": task.labels,
        "data": {
            "source": task.corpus.source,
            "sentences": {split: len(s.sentences) for split, s in task.corpus.splits.items()},
            "windows": {split: len(w) for split, w in task.windows.items()},
            "words_trained": sum(len(w.labels) for w in task.windows["train"]),
        },
        "metrics": {"dev": final["validation"], "test": final["test"]},
        "best_epoch": best_epoch,
        "history": history,
        "parameters": parameters,
        "time": {
            **timings,
            "train_seconds": train_seconds,
            "eval_seconds": eval_seconds,
            "total_seconds": time.perf_counter() - started,
        },
        "memory": peak_memory_bytes(accelerator.device.type),
        "feature_cache": cache_info,
        "distributed": {
            "num_processes": accelerator.num_processes,
            "mixed_precision": str(accelerator.mixed_precision),
            "device": str(accelerator.device),
        },
        "versions": package_versions(),
        "machine": machine_description(),
        "git_commit": git_commit(),
        "command": command_line(),
    }
    if frozen:
        record["encoder_unchanged"] = weights_digest(encoder) == encoder_digest_before

    if accelerator.is_main_process:
        output = Path(config.output_dir)
        output.mkdir(parents=True, exist_ok=True)
        if config.save_predictions:
            for split, name in (("validation", "dev"), ("test", "test")):
                path = output / f"{config.run_name()}.{name}.conll"
                write_predictions(path, task.corpus.splits[split].sentences, predicted[split])
        path = write_json_atomic(output / f"{config.run_name()}.json", record)
        accelerator.print(
            f"dev F1 {100 * final['validation']['f1']:.2f}  test F1 {100 * final['test']['f1']:.2f}"
            f"  (best epoch {best_epoch})  record: {path}"
        )
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return record


def _has_accelerator() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return torch.cuda.is_available() or bool(mps and mps.is_available())


def _check_finite(loss_sum: torch.Tensor, epoch: int, step: int, config: RunConfig) -> None:
    if not torch.isfinite(loss_sum):
        raise NonFiniteLossError(
            f"training loss became non-finite by epoch {epoch}, step {step} (lr {config.lr}); "
            f"try a smaller --lr, or full precision instead of fp16"
        )
