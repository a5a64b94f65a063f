"""Training and feature-extraction throughput: bertprobe against the stock Hugging Face recipe.

Both training arms see the same sentences (a seeded CoNLL-2003 training subset, the same one
``--max-train-examples`` picks in ``bertprobe``, and the first ``--max-dev-examples`` dev
sentences), the same model, batch size, epochs, learning rate and seed:

* ours: ``bertprobe.train.run(RunConfig(mode="finetune", context="sentence", ...))``;
* stock: ``AutoModelForTokenClassification`` + ``Trainer`` at its defaults, with only the
  settings that must match (output folder, batch size, epochs, learning rate, seed, no
  saving or reporting, evaluation only at the end), ``DataCollatorForTokenClassification``
  and the usual tokenization: ``tokenizer(words, is_split_into_words=True, truncation=True)``,
  each word's label on its first sub-token and -100 elsewhere.

**Training tokens/s** = ``real_tokens x epochs / train seconds``, where ``real_tokens`` is the
number of non-padding sub-tokens of the training windows, special tokens ([CLS], [SEP])
included: ``sum(len(w.input_ids) for w in task.windows["train"])`` of the task loaded exactly as
``train.run`` loads it (``load_task`` with bertprobe's tokenizer and length limit). Both arms are
divided into the same count (the stock arm's own count of ``input_ids`` is recorded beside it and
is equal whenever no sentence is split or truncated). Train seconds are ours:
``record["time"]["train_seconds"]`` (the epochs' training loops, no evaluation); stock:
``train_output.metrics["train_runtime"]``.

**Dev F1** is entity-level seqeval F1 (``bertprobe.metrics.entity_scores``) for both; the stock
arm's tags come from ``Trainer.predict`` on dev, read at each word's first sub-token (a word with
no sub-token, or cut off by truncation, is tagged ``O``).

**Feature extraction**: the frozen-feature cache build (``FeatureCache.build``: length-sorted
token-budget batches under ``inference_mode``, first-sub-token vectors of the chosen layers
stored as float16 on disk) against a plain loop over the same training windows in data order,
``--feature-batch-size`` windows a batch, every batch padded to one fixed length (the longest
window, or the model's limit with ``--plain-pad-to model-max``), the same encoder with
``output_hidden_states`` under ``torch.no_grad``, the same words' vectors of the same layers
copied to the CPU as float16. Tokens/s = real tokens of the windows / wall seconds.

Every arm runs in its own child process (so Accelerate's process-wide state, seeds and
environment never leak between arms); the pair's order alternates between repeats.
``--mixed-precision bf16`` gives the Trainer ``bf16=True``; ours gets ``ACCELERATE_MIXED_PRECISION=bf16``
in its environment, which ``Accelerator`` reads when it is built without a ``mixed_precision``
argument (as ``accelerate launch --mixed_precision bf16`` sets it), and, where ``RunConfig`` has a
``mixed_precision`` option, that option too. The precision ours actually ran under is recorded
(``record["distributed"]["mixed_precision"]``). The feature arms then run under
``torch.autocast(dtype=torch.bfloat16)``.

    python benchmarks/throughput.py --max-train-examples 2000 --max-dev-examples 1000 --epochs 1
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import fields
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bertprobe.config import RunConfig
from bertprobe.results import (
    code_commit,
    command_line,
    machine_description,
    package_versions,
    write_json_atomic,
)
from bertprobe.tasks.base import select_training_examples
from bertprobe.tasks.conll import TaggedSplit, load_conll_dir, write_conll_file

RUN_CONFIG_FIELDS = frozenset(f.name for f in fields(RunConfig))
GOAL_SPEEDUP = 1.3
GOAL_MAX_F1_DROP = 0.5  # F1 points (0-100 scale)
ARMS = ("ours", "stock")
#: The Trainer's own defaults that differ from ours or explain a difference, recorded per run.
TRAINER_SETTINGS = (
    "optim", "weight_decay", "warmup_steps", "lr_scheduler_type", "max_grad_norm", "train_sampling_strategy",
    "per_device_eval_batch_size", "mixed_precision", "device",
)  # fmt: skip


# --------------------------------------------------------------------------- data


def write_subset(
    data_dir: str | Path, out_dir: Path, max_train: int | None, max_dev: int | None, max_test: int, seed: int
) -> dict[str, int]:
    """The benchmark's data folder: the seeded training subset ``bertprobe`` itself would pick for
    ``--max-train-examples`` (in file order), the first ``max_dev`` dev sentences and the first
    ``max_test`` test sentences (ours evaluates test after training; it is not measured)."""
    corpus = load_conll_dir(data_dir)
    train = corpus.splits["train"].sentences
    chosen = select_training_examples(len(train), max_train, seed)
    subsets = {
        "train": [s for i, s in enumerate(train) if chosen is None or i in chosen],
        "validation": corpus.splits["validation"].sentences[:max_dev],
        "test": corpus.splits["test"].sentences[:max_test],
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, sentences in subsets.items():
        write_conll_file(out_dir / f"{name}.txt", sentences)
    return {name: len(sentences) for name, sentences in subsets.items()}


def real_token_count(windows: Sequence[object]) -> int:
    """Non-padding sub-tokens (special tokens included) of encoded windows: they carry no padding."""
    return sum(len(window.input_ids) for window in windows)  # type: ignore[attr-defined]


def padded_token_count(batches: Sequence[Sequence[int]], lengths: Sequence[int], width: int | None = None) -> int:
    """Positions the encoder computes when each batch is padded to its longest member (or to ``width``)."""
    return sum(len(batch) * (width or max(lengths[i] for i in batch)) for batch in batches)


# --------------------------------------------------------------------------- the stock recipe's pieces


def first_subtoken_labels(word_ids: Sequence[int | None], word_labels: Sequence[int]) -> list[int]:
    """The usual token-classification alignment: a word's label on its first sub-token,
    -100 on its other sub-tokens and on special tokens."""
    aligned: list[int] = []
    previous: int | None = None
    for word in word_ids:
        aligned.append(-100 if word is None or word == previous else word_labels[word])
        previous = word
    return aligned


def word_tags_from_tokens(
    word_ids: Sequence[int | None], token_predictions: Sequence[int], num_words: int, labels: Sequence[str]
) -> list[str]:
    """Word tags read at each word's first sub-token; a word without a sub-token gets ``O``."""
    tags = ["O"] * num_words
    seen: set[int] = set()
    for position, word in enumerate(word_ids):
        if word is not None and word not in seen:
            seen.add(word)
            tags[word] = labels[int(token_predictions[position])]
    return tags


def tokenize_split(tokenizer, split: TaggedSplit, label_to_id: dict[str, int]):
    """A ``datasets.Dataset`` tokenized the standard way, and each sentence's ``word_ids``."""
    from datasets import Dataset

    raw = Dataset.from_dict(
        {
            "tokens": [s.words for s in split.sentences],
            "tags": [[label_to_id[t] for t in s.tags] for s in split.sentences],
        }
    )

    def encode(batch: dict[str, list]) -> dict[str, list]:
        encoded = tokenizer(batch["tokens"], is_split_into_words=True, truncation=True)
        encoded["labels"] = [first_subtoken_labels(encoded.word_ids(i), tags) for i, tags in enumerate(batch["tags"])]
        return encoded

    dataset = raw.map(encode, batched=True, remove_columns=raw.column_names)
    word_ids = [tokenizer(s.words, is_split_into_words=True, truncation=True).word_ids() for s in split.sentences]
    return dataset, word_ids


class CountingCollator:
    """Wraps the stock collator only to count the padded positions it hands to the model."""

    def __init__(self, collator) -> None:
        self.collator = collator
        self.padded_tokens = 0

    def __call__(self, features: list[dict]) -> dict:
        batch = self.collator(features)
        self.padded_tokens += int(batch["input_ids"].numel())
        return batch


# --------------------------------------------------------------------------- arms (each in a child process)


def arm_ours(settings: dict[str, object]) -> dict[str, object]:
    """``train.run`` on the subset; the record's timings, dev scores and Accelerate settings."""
    from bertprobe.batching import LengthGroupedBatches
    from bertprobe.train import run

    config = ours_config(settings)
    record = run(config)
    lengths = settings["train_window_lengths"]
    sampler = LengthGroupedBatches(lengths, config.batch_size, seed=config.seed)
    padded = sum(padded_token_count(list(sampler), lengths) for _ in range(config.epochs))  # each epoch's batches
    dev = record["metrics"]["dev"]
    return {
        "train_seconds": record["time"]["train_seconds"],
        "eval_seconds": record["time"]["eval_seconds"],
        "setup_seconds": record["time"]["setup_seconds"],
        "total_seconds": record["time"]["total_seconds"],
        "dev": {k: dev[k] for k in ("precision", "recall", "f1", "accuracy")},
        "history": record["history"],
        "data": record["data"],
        "distributed": record["distributed"],
        "padded_tokens_processed": padded,
        "optimizer": record.get("optimizer"),
        "config": record["config"],
        "parameters": record["parameters"],
    }


def ours_config(settings: dict[str, object]) -> RunConfig:
    """Our run on the benchmark's data folder; mixed precision also as an option where RunConfig has one."""
    extra = {"mixed_precision": settings["mixed_precision"]} if "mixed_precision" in RUN_CONFIG_FIELDS else {}
    return RunConfig(
        mode="finetune",
        model=settings["model"],
        task="conll2003",
        data_dir=settings["subset_dir"],
        context="sentence",
        epochs=settings["epochs"],
        lr=settings["lr"],
        batch_size=settings["batch_size"],
        seed=settings["seed"],
        output_dir=str(Path(settings["scratch"]) / "ours"),
        cache_dir=str(Path(settings["scratch"]) / "cache"),
        **extra,
    )


def arm_stock(settings: dict[str, object]) -> dict[str, object]:
    """``Trainer`` at its defaults on the same sentences; predictions on dev scored like ours."""
    import numpy as np
    from transformers import (
        AutoModelForTokenClassification,
        AutoTokenizer,
        DataCollatorForTokenClassification,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    from bertprobe.encoder import resolve_model_path
    from bertprobe.metrics import entity_scores

    started = time.perf_counter()
    path = resolve_model_path(settings["model"])
    corpus = load_conll_dir(settings["subset_dir"])
    labels = corpus.label_list()
    label_to_id = {label: i for i, label in enumerate(labels)}
    tokenizer = AutoTokenizer.from_pretrained(path)
    train_set, _ = tokenize_split(tokenizer, corpus.splits["train"], label_to_id)
    dev_set, dev_word_ids = tokenize_split(tokenizer, corpus.splits["validation"], label_to_id)

    set_seed(settings["seed"])  # the head's initialisation, as the example scripts do
    model = AutoModelForTokenClassification.from_pretrained(
        path, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=label_to_id
    )
    args = TrainingArguments(
        output_dir=str(Path(settings["scratch"]) / "stock"),
        per_device_train_batch_size=settings["batch_size"],
        num_train_epochs=settings["epochs"],
        learning_rate=settings["lr"],
        seed=settings["seed"],
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        bf16=settings["mixed_precision"] == "bf16",
    )
    collator = CountingCollator(DataCollatorForTokenClassification(tokenizer))
    trainer = Trainer(model=model, args=args, train_dataset=train_set, data_collator=collator)
    setup_seconds = time.perf_counter() - started
    output = trainer.train()
    padded_train = collator.padded_tokens

    eval_started = time.perf_counter()
    predicted = trainer.predict(dev_set)
    token_predictions = np.argmax(predicted.predictions, axis=-1)
    sentences = corpus.splits["validation"].sentences
    tags = [
        word_tags_from_tokens(word_ids, row, len(sentence.words), labels)
        for word_ids, row, sentence in zip(dev_word_ids, token_predictions, sentences, strict=True)
    ]
    dev = entity_scores([s.tags for s in sentences], tags)
    return {
        "train_seconds": output.metrics["train_runtime"],
        "eval_seconds": time.perf_counter() - eval_started,
        "setup_seconds": setup_seconds,
        "train_metrics": output.metrics,
        "dev": {k: dev[k] for k in ("precision", "recall", "f1", "accuracy")},
        "own_real_tokens": int(sum(len(ids) for ids in train_set["input_ids"])),
        "padded_tokens_processed": padded_train,
        "unpredicted_dev_words": sum(
            len(s.words) - len(set(ids) - {None}) for s, ids in zip(sentences, dev_word_ids, strict=True)
        ),
        "trainer_settings": {name: str(getattr(args, name)) for name in TRAINER_SETTINGS if hasattr(args, name)},
    }


def arm_features(settings: dict[str, object]) -> dict[str, object]:
    """The cache build and the plain fixed-padding loop, over the same windows and layers."""
    import numpy as np
    import torch

    from bertprobe.encoder import describe, load_config, load_encoder, load_tokenizer
    from bertprobe.features import FeatureCache, _length_sorted_batches, weights_digest
    from bertprobe.layer_spec import resolve_strategy
    from bertprobe.tasks import load_task

    config = ours_config(settings)
    info = describe(config.model, load_config(config.model))
    tokenizer = load_tokenizer(config.model)
    windows = load_task(config, tokenizer, info.max_positions).windows["train"]
    layers = tuple(sorted(set(resolve_strategy(settings["feature_layers"], info.num_layers).indices)))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    encoder = load_encoder(config.model).to(device).eval()
    digest = weights_digest(encoder)
    lengths = [len(w.input_ids) for w in windows]
    width = info.max_positions if settings["plain_pad_to"] == "model-max" else max(lengths)
    plain_batches = [
        list(range(i, min(i + settings["feature_batch_size"], len(windows))))
        for i in range(0, len(windows), settings["feature_batch_size"])
    ]

    def autocast():
        if settings["mixed_precision"] == "bf16":
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def ours() -> tuple[float, np.ndarray]:
        cache = FeatureCache(Path(settings["scratch"]) / f"features-{time.time_ns()}", config.model, digest)
        started = time.perf_counter()
        with autocast():
            cached = cache.build(windows, layers, encoder, tokenizer.pad_token_id, "train", device)
        return time.perf_counter() - started, np.asarray(cached.features)

    def plain() -> tuple[float, np.ndarray]:
        started = time.perf_counter()
        rows = []
        with torch.no_grad(), autocast():
            for batch in plain_batches:
                rows.extend(plain_batch(encoder, [windows[i] for i in batch], layers, width, tokenizer, device))
        return time.perf_counter() - started, np.concatenate(rows)

    with torch.no_grad(), autocast():  # one short warm-up pass, so neither arm pays first-call costs
        plain_batch(encoder, windows[:2], layers, max(lengths[:2]), tokenizer, device)
    order = ("ours", "plain") if settings["feature_ours_first"] else ("plain", "ours")
    seconds, features = {}, {}
    for name in order:
        seconds[name], features[name] = (ours if name == "ours" else plain)()
    real = real_token_count(windows)
    return {
        "order": list(order),
        "device": str(device),
        "layers": list(layers),
        "windows": len(windows),
        "real_tokens": real,
        "seconds": seconds,
        "tokens_per_second": {name: real / s for name, s in seconds.items()},
        "speedup": seconds["plain"] / seconds["ours"],
        "padded_tokens_processed": {
            "ours": padded_token_count(_length_sorted_batches(lengths, 16384), lengths),
            "plain": padded_token_count(plain_batches, lengths, width),
        },
        "plain_pad_length": width,
        "max_abs_difference": float(
            np.max(np.abs(features["ours"].astype(np.float32) - features["plain"].astype(np.float32)))
        ),
    }


def plain_batch(encoder, windows: Sequence[object], layers: Sequence[int], width: int, tokenizer, device) -> list:
    """One batch of the plain loop: pad to ``width``, run the encoder, keep the words' vectors (float16, CPU)."""
    import torch

    input_ids = torch.full((len(windows), width), tokenizer.pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(windows), width), dtype=torch.long)
    token_types = torch.zeros((len(windows), width), dtype=torch.long)
    for row, window in enumerate(windows):
        n = len(window.input_ids)
        input_ids[row, :n] = torch.tensor(window.input_ids)
        attention_mask[row, :n] = 1
        if window.token_type_ids is not None:
            token_types[row, :n] = torch.tensor(window.token_type_ids)
    inputs = {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device)}
    if windows[0].token_type_ids is not None:
        inputs["token_type_ids"] = token_types.to(device)
    states = encoder(**inputs, output_hidden_states=True, return_dict=True).hidden_states
    stacked = torch.stack([states[i] for i in layers], dim=2)  # [B, T, K, H]
    return [
        stacked[row, torch.tensor(window.word_positions, device=device)].to(torch.float16).cpu().numpy()
        for row, window in enumerate(windows)
    ]


WORKERS = {"ours": arm_ours, "stock": arm_stock, "features": arm_features}


# --------------------------------------------------------------------------- orchestration


def run_worker(arm: str, settings: dict[str, object], scratch: Path, env: dict[str, str]) -> dict[str, object]:
    """Run one arm in a child process; its result comes back through a JSON file."""
    settings_path = scratch / f"settings-{arm}.json"
    output_path = scratch / f"result-{arm}.json"
    output_path.unlink(missing_ok=True)
    settings_path.write_text(json.dumps(settings))
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", arm]
    command += ["--worker-settings", str(settings_path), "--worker-output", str(output_path)]
    print(f"\n=== {arm} ===", flush=True)
    subprocess.run(command, env=env, check=True)
    return json.loads(output_path.read_text())


def child_environment(mixed_precision: str) -> dict[str, str]:
    env = dict(os.environ)
    env["ACCELERATE_MIXED_PRECISION"] = mixed_precision  # ours reads it; the Trainer's bf16 flag decides its own
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not sys.stderr.isatty():
        env.setdefault("TQDM_MININTERVAL", "30")  # a log file gets a few progress lines, not one per batch
    return env


def optimizer_implementations() -> dict[str, str]:
    """Which AdamW kernel each arm steps on this machine's device: ours picks fused where
    torch has it for the device, else foreach (:func:`bertprobe.optim.build_optimizer`)."""
    import torch

    from bertprobe.optim import _has_fused_adamw

    device = "cuda" if torch.cuda.is_available() else "cpu"
    ours = "fused" if _has_fused_adamw(device) else "foreach"
    return {"device": device, "ours": ours, "stock": "Trainer optim (see trainer_settings)"}


def summarise(pairs: list[dict[str, object]], real_tokens: int, epochs: int) -> dict[str, object]:
    rows = []
    for pair in pairs:
        ours, stock = pair["ours"], pair["stock"]
        ours_tps = real_tokens * epochs / ours["train_seconds"]
        stock_tps = real_tokens * epochs / stock["train_seconds"]
        f1_diff = 100 * (ours["dev"]["f1"] - stock["dev"]["f1"])
        rows.append(
            {
                "order": pair["order"],
                "ours_tokens_per_second": ours_tps,
                "stock_tokens_per_second": stock_tps,
                "speedup": ours_tps / stock_tps,
                "ours_dev_f1": 100 * ours["dev"]["f1"],
                "stock_dev_f1": 100 * stock["dev"]["f1"],
                "dev_f1_difference": f1_diff,
                "goal_met": ours_tps / stock_tps >= GOAL_SPEEDUP and f1_diff >= -GOAL_MAX_F1_DROP,
            }
        )
    median = {key: statistics.median(r[key] for r in rows) for key in rows[0] if key not in ("order", "goal_met")}
    return {
        "repeats": rows,
        "median": median,
        "goal": f"ours/stock training tokens/s >= {GOAL_SPEEDUP} and ours dev F1 >= stock dev F1 - {GOAL_MAX_F1_DROP}",
        "goal_met_on_median": median["speedup"] >= GOAL_SPEEDUP and median["dev_f1_difference"] >= -GOAL_MAX_F1_DROP,
        "goal_met_every_repeat": all(r["goal_met"] for r in rows),
    }


def working_tree_status() -> dict[str, object]:
    """``git status --porcelain`` lines, untracked files included (``code_commit`` ignores those), and
    a digest of the uncommitted changes to tracked files, naming the exact code that ran."""
    root = Path(__file__).resolve().parent.parent
    try:
        status = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True)
        diff = subprocess.run(["git", "diff", "HEAD"], cwd=root, capture_output=True)
    except OSError:
        return {"status": "unknown"}
    return {"status": status.stdout.splitlines(), "diff_head_sha256": hashlib.sha256(diff.stdout).hexdigest()}


def interleaved(repeats: int) -> Iterator[tuple[int, tuple[str, str]]]:
    """Each repeat's order: ours first on even repeats, the stock recipe first on odd ones."""
    for repeat in range(repeats):
        yield repeat, ARMS if repeat % 2 == 0 else ARMS[::-1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--data-dir", default="../shared/data/conll2003")
    parser.add_argument("--max-train-examples", type=int, default=2000)
    parser.add_argument("--max-dev-examples", type=int, default=None, help="first N dev sentences (default: all)")
    parser.add_argument("--max-test-examples", type=int, default=100, help="test sentences ours scores (unmeasured)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--mixed-precision", choices=("no", "bf16"), default="no")
    parser.add_argument("--feature-layers", default="allweighted", help="layer strategy whose layers are extracted")
    parser.add_argument("--feature-batch-size", type=int, default=64, help="windows per batch of the plain loop")
    parser.add_argument("--plain-pad-to", choices=("longest", "model-max"), default="longest")
    parser.add_argument("--skip-features", action="store_true", help="training arms only")
    parser.add_argument("--report", default="results/benchmarks/throughput_cpu.json")
    parser.add_argument("--worker", choices=tuple(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--worker-settings", help=argparse.SUPPRESS)
    parser.add_argument("--worker-output", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        settings = json.loads(Path(args.worker_settings).read_text())
        write_json_atomic(args.worker_output, WORKERS[args.worker](settings))
        return 0
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")

    from bertprobe.encoder import describe, load_config, load_tokenizer
    from bertprobe.tasks import load_task

    started = time.perf_counter()
    commit, tree_status = code_commit(), working_tree_status()  # the code that runs, before a commit can land
    with tempfile.TemporaryDirectory(prefix="bertprobe-throughput-") as scratch_name:
        scratch = Path(scratch_name)
        subset_dir = scratch / "data"
        sizes = write_subset(
            args.data_dir, subset_dir, args.max_train_examples, args.max_dev_examples, args.max_test_examples, args.seed
        )
        settings: dict[str, object] = {**vars(args), "subset_dir": str(subset_dir), "scratch": str(scratch)}
        config = ours_config(settings)
        info = describe(config.model, load_config(config.model))
        task = load_task(config, load_tokenizer(config.model), info.max_positions)  # as train.run loads it
        train_windows = task.windows["train"]
        real_tokens = real_token_count(train_windows)
        settings["train_window_lengths"] = [len(w.input_ids) for w in train_windows]
        data = {
            "sentences": sizes,
            "train_windows": len(train_windows),
            "train_words": sum(len(w.labels) for w in train_windows),
            "train_real_tokens": real_tokens,
            "longest_train_window": max(settings["train_window_lengths"]),
            "model_max_positions": info.max_positions,
        }
        print(f"data: {json.dumps(data)}", flush=True)

        env = child_environment(args.mixed_precision)
        pairs, features = [], []
        for repeat, order in interleaved(args.repeats):
            pair: dict[str, object] = {"order": list(order)}
            for arm in order:
                pair[arm] = run_worker(arm, settings, scratch, env)
            pairs.append(pair)
            if pair["stock"]["own_real_tokens"] != real_tokens:
                print(f"note: the stock arm counts {pair['stock']['own_real_tokens']} tokens, ours {real_tokens}")
            if not args.skip_features:
                feature_settings = {**settings, "feature_ours_first": repeat % 2 == 0}
                features.append(run_worker("features", feature_settings, scratch, env))

    summary = summarise(pairs, real_tokens, args.epochs)
    feature_summary = None
    if features:
        feature_summary = {
            "repeats": features,
            "median_speedup": statistics.median(f["speedup"] for f in features),
            "median_tokens_per_second": {
                arm: statistics.median(f["tokens_per_second"][arm] for f in features) for arm in ("ours", "plain")
            },
        }
    report = {
        "benchmark": "throughput",
        "settings": {k: v for k, v in vars(args).items() if not k.startswith("worker")},
        "data": data,
        "definitions": {
            "training_tokens_per_second": "train_real_tokens x epochs / train seconds (ours: record "
            "time.train_seconds; stock: Trainer train_runtime); real tokens = non-padding sub-tokens of the "
            "training windows, [CLS]/[SEP] included",
            "dev_f1": "entity-level seqeval F1 on the dev subset, 0-100",
            "feature_tokens_per_second": "real tokens of the training windows / wall seconds of the extraction",
        },
        "training": summary,
        "runs": pairs,
        "feature_extraction": feature_summary,
        "optimizer_implementations": optimizer_implementations(),
        "wall_seconds": time.perf_counter() - started,
        "command": command_line(),
        "code_root": str(Path(__file__).resolve().parent.parent),
        "git_commit": commit,
        "working_tree_status": tree_status,
        "machine": machine_description(),
        "versions": package_versions(),
    }
    write_json_atomic(args.report, report)
    print_summary(summary, feature_summary, args.report)
    return 0


def print_summary(summary: dict[str, object], features: dict[str, object] | None, report: str) -> None:
    print()
    head = f"{'ours tok/s':>11}{'stock tok/s':>12}{'ratio':>7}{'ours F1':>9}{'stock F1':>9}{'diff':>7}"
    print(f"{'repeat':<8}{'order':<13}{head}  goal")
    for number, row in enumerate(summary["repeats"], start=1):
        print(
            f"{number:<8}{'/'.join(row['order']):<13}{row['ours_tokens_per_second']:>11.0f}"
            f"{row['stock_tokens_per_second']:>12.0f}{row['speedup']:>7.2f}{row['ours_dev_f1']:>9.2f}"
            f"{row['stock_dev_f1']:>9.2f}{row['dev_f1_difference']:>+7.2f}  {'met' if row['goal_met'] else 'NOT met'}"
        )
    median = summary["median"]
    print(
        f"{'median':<21}{median['ours_tokens_per_second']:>11.0f}{median['stock_tokens_per_second']:>12.0f}"
        f"{median['speedup']:>7.2f}{median['ours_dev_f1']:>9.2f}{median['stock_dev_f1']:>9.2f}"
        f"{median['dev_f1_difference']:>+7.2f}  {'met' if summary['goal_met_on_median'] else 'NOT met'}"
    )
    print(f"goal: {summary['goal']}")
    if features:
        for number, row in enumerate(features["repeats"], start=1):
            tps = row["tokens_per_second"]
            print(
                f"features {number}: cache build {tps['ours']:.0f} tok/s, plain padded loop {tps['plain']:.0f} tok/s, "
                f"ratio {row['speedup']:.2f}x (max |diff| {row['max_abs_difference']:.2g})"
            )
    print(f"report: {report}")


if __name__ == "__main__":
    raise SystemExit(main())
