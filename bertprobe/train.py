"""One training loop for every mode and task, under Accelerate.

``run(config)`` loads the task and the encoder, builds the probe, trains with AdamW and a
linear warm-up/decay schedule, evaluates on dev after every epoch (or every
``--eval-every`` epochs, and the last), restores the best-dev weights, evaluates them on
test and writes one result record (main process only).
"""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from accelerate.logging import get_logger
from torch.utils.data import DataLoader, Dataset

from bertprobe.adaptation import Adaptation, adapt_encoder
from bertprobe.batching import FeatureCollator, LengthGroupedBatches, SortedBatches, WindowCollator, WindowDataset
from bertprobe.checkpoint import (
    COMPLETE_FILE,
    TrainingProgress,
    load_checkpoint,
    refuse_to_overwrite,
    remove_checkpoints,
    resume_point,
    run_checkpoints,
    run_lock,
    save_checkpoint,
    store_unwrapped_weights,
    training_fingerprint,
)
from bertprobe.config import RunConfig
from bertprobe.cpu_heap import allocator_hint, release_free_memory
from bertprobe.encoder import (
    EncoderInfo,
    check_local_weights,
    describe,
    freeze,
    load_config,
    load_encoder,
    load_tokenizer,
)
from bertprobe.errors import CheckpointError, ConfigError, NonFiniteLossError, RecordWriteError
from bertprobe.features import FeatureCache, FeatureDataset, weights_digest
from bertprobe.heads import build_head
from bertprobe.health import assess
from bertprobe.layer_spec import ResolvedLayers, resolve_strategy
from bertprobe.model import ProbeModel, row_loss
from bertprobe.optim import build_optimizer, describe_optimizer
from bertprobe.preflight import check_free_space, check_shared_folder, check_writable, refuse_sharding
from bertprobe.progress import progress_bar
from bertprobe.record import build_record
from bertprobe.results import (
    code_commit,
    command_line,
    machine_description,
    package_versions,
    peak_memory_bytes,
    reset_peak_memory,
    unsaved_record_path,
    write_json_atomic,
)
from bertprobe.tasks import is_tagging, load_task
from bertprobe.tasks.base import Task, select_training_examples

if TYPE_CHECKING:
    from accelerate import Accelerator

__all__ = ["NonFiniteLossError", "run", "select_training_examples"]

logger = get_logger(__name__)


def replaces_best(score: float, best_score: float) -> bool:
    """Whether an epoch's dev score makes it the one to keep.

    A higher score wins. A NaN score (a correlation of constant predictions) ranks below
    every real score, but while no epoch has scored (the best is still ``-inf``) the latest
    such epoch is kept, so a run whose dev score is never defined still ends with its
    most trained weights instead of none.
    """
    if math.isnan(score):
        return best_score == -math.inf
    return score > best_score


def _nan_to_floor(score: float) -> float:
    return -math.inf if math.isnan(score) else score


def count_parameters(*modules: torch.nn.Module | None) -> dict[str, int]:
    params = {id(p): p for m in modules if m is not None for p in m.parameters()}.values()
    return {
        "trainable": sum(p.numel() for p in params if p.requires_grad),
        "total": sum(p.numel() for p in params),
    }


def make_loaders(
    config: RunConfig, task: Task, inputs: dict[str, Dataset], collate, processes: int
) -> tuple[DataLoader, dict]:
    """Length-grouped shuffled training batches, a multiple of ``processes`` of them per
    epoch; evaluation batches sorted by length."""

    def lengths(split: str) -> list[int]:
        return [len(w.input_ids) for w in task.windows[split]]

    if len(task.windows["train"]) < processes:
        raise ConfigError(
            f"{processes} processes need at least {processes} training examples; {task.name} has "
            f"{len(task.windows['train'])}"
        )
    train = DataLoader(
        inputs["train"],
        batch_sampler=LengthGroupedBatches(lengths("train"), config.batch_size, seed=config.seed, processes=processes),
        collate_fn=collate,
    )
    evaluation = {
        split: DataLoader(
            inputs[split], batch_sampler=SortedBatches(lengths(split), config.eval_batch_size), collate_fn=collate
        )
        for split in task.eval_splits
    }
    return train, evaluation


class RemainingBatches:
    """The batches of an epoch after the first ``done`` of them, which a mid-epoch
    checkpoint has already trained on; all of them when ``done`` is 0.

    Starting a DataLoader's iterator draws one number from the global random generator
    (its workers' base seed). An uninterrupted run drew it at the epoch's start, before the
    checkpoint saved the generator's state, so a resumed run puts the state back after that
    draw: the remaining batches then get the dropout masks they would have had.
    """

    def __init__(self, accelerator, loader: DataLoader, done: int) -> None:
        self.loader = accelerator.skip_first_batches(loader, done) if done else loader
        self.done = done

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        if not self.done:
            yield from self.loader
            return
        state = torch.get_rng_state()
        iterator = iter(self.loader)
        try:
            first = next(iterator)
        except StopIteration:
            return
        finally:
            torch.set_rng_state(state)
        yield first
        yield from iterator


def predict(model, loader, accelerator, regression: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Window indices and per-row predictions, gathered from every process exactly once."""
    model.eval()
    indices, predictions = [], []
    with torch.inference_mode():
        for batch in loader:
            logits = model(batch)
            predicted = logits[..., 0].float() if regression else logits.argmax(dim=-1)
            predicted = predicted.masked_fill(~batch["word_mask"], -100)
            predicted = accelerator.pad_across_processes(predicted, dim=1, pad_index=-100)
            window_index, predicted = accelerator.gather_for_metrics((batch["window_index"], predicted))
            indices.append(window_index.cpu())
            predictions.append(predicted.cpu())
    width = max(p.shape[1] for p in predictions)
    padded = [torch.nn.functional.pad(p, (0, width - p.shape[1]), value=-100) for p in predictions]
    return torch.cat(indices), torch.cat(padded)


def evaluate(model, loader, accelerator, task: Task, split: str) -> tuple[dict, list]:
    window_indices, predictions = predict(model, loader, accelerator, task.is_regression)
    return task.score(split, window_indices, predictions)


def on_main(accelerator, action: Callable[[], object]) -> object:
    """Run ``action`` on the main process alone and give every process its result, or raise
    its error in every process: a check that fails on the main process alone would leave the
    others waiting in the next collective."""
    from accelerate.utils import broadcast_object_list

    outcome: list[object] = [None]
    if accelerator.is_main_process:
        try:
            outcome = [(True, action())]
        except Exception as error:  # raised again below, in every process
            outcome = [(False, error)]
    succeeded, value = broadcast_object_list(outcome)[0]
    if not succeeded:
        raise value
    return value


def cached_inputs(config, task, layers, encoder, encoder_digest, tokenizer, info, accelerator):
    """Feature datasets read from the frozen-feature cache, building what is missing.

    Each split's cache is built once per cache folder. The processes of a data-parallel run
    share the build, each encoding every N-th batch (:meth:`FeatureCache.build_sharded`), so
    none waits for a whole build in a collective; separate runs take turns under the
    cache's file lock (:meth:`FeatureCache.build_or_find`). Before anything is encoded, the
    splits that are not cached yet must fit in the cache folder's free space.
    """
    cache = FeatureCache(config.cache_dir, config.model, encoder_digest, pooling=task.pooling)
    stored_layers = set(layers.indices)
    for spec in config.cache_layer_specs():
        stored_layers |= set(resolve_strategy(spec, info.num_layers).indices)
    splits = {split: task.encoder_inputs(split) for split in task.windows}

    def check_room() -> None:
        missing = [inputs for inputs in splits.values() if cache.find(inputs, layers.indices) is None]
        needed = sum(
            FeatureCache.expected_bytes(windows, stored_layers, info.hidden_size, task.pooling is not None)
            for windows in missing
        )
        check_free_space(config.cache_dir, needed, "--cache-dir", "the feature cache")

    on_main(accelerator, check_room)
    encoder.to(accelerator.device)
    inputs: dict[str, Dataset] = {}
    info_out: dict[str, object] = {"paths": {}, "built": []}
    for split, encoder_inputs in splits.items():
        if accelerator.num_processes > 1:  # every process encodes its share of the batches
            cached, built = cache.build_sharded(
                encoder_inputs, layers.indices, sorted(stored_layers), encoder, tokenizer.pad_token_id, split,
                accelerator,
            )  # fmt: skip
        else:  # the first run to hold the cache's lock builds; another waits on the lock and reads
            cached, built = cache.build_or_find(
                encoder_inputs, layers.indices, sorted(stored_layers), encoder, tokenizer.pad_token_id, split,
                accelerator.device, progress=True,
            )  # fmt: skip
        if built:
            info_out["built"].append(split)
        inputs[split] = FeatureDataset(cached, task.windows[split], layers.indices, task.inputs_per_window)
        info_out["paths"][split] = str(cached.path)
    return inputs, info_out


class RunResult(dict):
    """What :func:`run` returns: the run's record (this dict, as written to disk) and, where
    ``run(config, keep_model=True)`` asked for it, ``model``: the trained probe with the best
    dev epoch's weights, unwrapped, on the CPU, in eval mode; it takes the tokenizer's batch
    (``input_ids``, ``attention_mask``, ``word_positions``, ``word_mask``) whatever the mode,
    the frozen encoder included where the head trained on cached features."""

    def __init__(self, record: dict[str, object], model: ProbeModel | None = None) -> None:
        super().__init__(record)
        self.model = model

    @property
    def record(self) -> dict[str, object]:
        return dict(self)


def run(config: RunConfig, keep_model: bool = False) -> RunResult:
    """Train and evaluate one configuration; return (and on the main process write) its
    record, with the trained model where ``keep_model`` asks for it (:class:`RunResult`).

    With checkpoints on, the main process holds the run's lock throughout (:func:`run_lock`):
    a second run of the same configuration into the same folder stops at once.
    """
    from accelerate import PartialState

    config = config.resolved()
    if keep_model and config.pair_encoding == "separate":
        raise ConfigError("keep_model: a head on sentence pairs encoded apart reads cached features only")
    checkpoints = run_checkpoints(config.output_dir, config.record_names())
    refuse_sharding(os.environ)
    check_writable(config.output_dir, "--output-dir")  # before any model loads, not after training
    if config.mode.uses_cache and config.feature_cache:
        check_writable(config.cache_dir, "--cache-dir")
    if config.checkpoint:
        check_writable(checkpoints.parent, "--output-dir (its checkpoints folder)")
    holds_lock = config.checkpoint and PartialState(cpu=not _has_accelerator()).is_main_process
    made_here = [folder for folder in (Path(config.output_dir), checkpoints.parent) if not folder.exists()]
    try:
        with run_lock(checkpoints) if holds_lock else contextlib.nullcontext():
            return _run(config, checkpoints, keep_model)
    finally:  # a run that stops early leaves no empty folders (nor its lock) behind
        for folder in reversed(made_here):
            if holds_lock and folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        gc.collect()  # the run's model and optimizer are unreachable now that _run has returned
        release_free_memory()  # so the next run of this process starts from what is live


@dataclass
class Setup:
    """Everything a run builds before its first step, in the order :func:`set_up` builds it."""

    info: EncoderInfo
    layers: ResolvedLayers
    max_length: int
    task: Task
    encoder: torch.nn.Module
    encoder_digest: str | None  # of a frozen encoder's weights, to show training left them alone
    adaptation: Adaptation
    model: torch.nn.Module
    parameters: dict[str, int]
    train_loader: DataLoader
    train_sampler: object
    eval_loaders: dict[str, DataLoader]
    batches_per_process: int
    steps_per_epoch: int
    optimizer: torch.optim.Optimizer
    scheduler: object
    optimizer_info: dict[str, object]
    timings: dict[str, float]
    cache_info: dict[str, object] | None = None
    cache_memory: dict[str, int] | None = None


def _run(config: RunConfig, checkpoints: Path, keep_model: bool = False) -> RunResult:
    started = time.perf_counter()
    accelerator = start_accelerator(config)
    peak_memory_is_per_run = reset_peak_memory(accelerator.device.type)
    commit = code_commit()
    if config.checkpoint:
        if accelerator.num_processes > 1:
            check_shared_folder(accelerator, checkpoints.parent)
        refuse_to_overwrite(checkpoints, config.resume)
    setup = set_up(config, accelerator, started)
    progress, resumed_from = resume_or_start(config, accelerator, checkpoints, setup.task, commit)
    if config.report_to:
        accelerator.init_trackers(config.run_name(), config=_tracker_config(config))
    earlier_processes_seconds = progress.wall_seconds

    def checkpoint_now() -> None:
        progress.wall_seconds = earlier_processes_seconds + time.perf_counter() - started
        save_checkpoint(accelerator, checkpoints, progress)

    loop = _Training(
        config, accelerator, setup.model, setup.optimizer, setup.scheduler, setup.train_loader, setup.train_sampler,
        setup.task, progress, checkpoint_now,
    )  # fmt: skip
    if config.mode.trains_anything:
        train_epochs(loop, setup.eval_loaders["validation"], setup.batches_per_process)
    else:
        score_as_is(loop, setup.eval_loaders["validation"])
    final, predicted, test_seconds = _score_best(loop, setup.eval_loaders.get("test"))
    seconds = {
        "test": test_seconds,
        "earlier_processes": earlier_processes_seconds,
        "this_process": time.perf_counter() - started,
    }
    record = run_record(loop, setup, final, predicted, seconds, resumed_from, commit, peak_memory_is_per_run)
    kept = trained_model(loop, setup) if keep_model else None
    if accelerator.is_main_process:
        _write_outputs(loop, record, final, predicted)
    if config.checkpoint:
        remove_checkpoints(accelerator, checkpoints)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    _release(accelerator, config)
    return RunResult(record, kept)


def trained_model(loop: _Training, setup: Setup) -> ProbeModel:
    """The trained probe, unwrapped, on the CPU, in eval mode, with the best dev epoch's
    weights (:func:`_score_best` put them back). A head trained on cached features gets the
    frozen encoder back, so that the model reads text like every other."""
    model = _unwrap(loop.accelerator, loop.model)
    if model.encoder is None:
        frozen = ProbeModel(
            setup.encoder, setup.layers, model.head, frozen_encoder=True, pooling=model.pooling,
            pairs_apart=model.pairs_apart,
        )  # fmt: skip
        frozen.combiner = model.combiner
        model = frozen
    return model.to("cpu").eval()


def start_accelerator(config: RunConfig) -> Accelerator:
    """The run's Accelerator, seeded, with its threads and checkpoint hooks set, and one log
    line saying how many processes train on what.

    Accelerate forms a multi-process CPU group (gloo) only when asked for the CPU, so a
    machine with no accelerator asks for it: ``accelerate launch --multi_gpu
    --num_processes N`` then trains data-parallel on CPU cores, as it would on GPUs."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    if config.report_to == "tensorboard" and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("--report-to tensorboard needs the tensorboard package: pip install tensorboard")
    _forget_previous_accelerator()
    accelerator = Accelerator(
        cpu=not _has_accelerator(),
        mixed_precision=config.mixed_precision,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        step_scheduler_with_optimizer=False,  # the loop steps it once per optimizer step
        log_with=config.report_to,
        project_dir=str(Path(config.output_dir) / "tensorboard") if config.report_to else None,
    )
    set_seed(config.seed)
    if accelerator.device.type == "cpu":
        torch.set_num_threads(cpu_threads(config.cpu_threads))
    store_unwrapped_weights(accelerator, lambda model: _unwrap(accelerator, model))
    processes = accelerator.num_processes
    kind = accelerator.distributed_type.value.lower()
    logger.info(
        f"{processes} process{'es' if processes > 1 else ''} ({'not distributed' if kind == 'no' else kind}) on "
        f"{accelerator.device.type}, {torch.get_num_threads()} torch threads each, mixed precision "
        f"{accelerator.mixed_precision}"
    )
    long_inputs = config.context == "document" and is_tagging(config.task)
    hint = allocator_hint(accelerator.device.type, config.mode.trains_encoder, long_inputs, os.environ)
    if hint:
        logger.info(hint)
    return accelerator


def load_task_and_encoder(config: RunConfig):
    """The encoder's description (its config read once, here), the layers the head reads,
    the task's encoded windows and the encoder itself, frozen and adapted as the mode says."""
    model_config = load_config(config.model)
    info = describe(config.model, model_config)
    check_local_weights(config.model)  # before the data work, not after it
    layers = resolve_strategy(config.layers if config.mode.reads_layers else "last", info.num_layers)
    tokenizer = load_tokenizer(config.model, model_config)
    max_length = min(config.max_length or info.max_positions, info.max_positions)
    task = load_task(config, tokenizer, max_length)
    if task.pooling is not None and config.head == "bilstm":
        raise ConfigError(f"--head bilstm reads a sequence of words; {task.name} has one pooled vector per input")
    for split, windows in task.windows.items():
        if not windows:
            raise ConfigError(f"split {split!r} of {task.name} has no examples after encoding")
    if not config.mode.trains_anything and not (task.is_regression and task.inputs_per_window == 2):
        raise ConfigError(
            f"--mode cosine scores sentence pairs against real-valued labels (STS-B, a custom regression file of "
            f"pairs); {task.name} has {'class labels' if not task.is_regression else 'one text per example'}"
        )
    encoder = load_encoder(config.model, model_config)
    if not config.mode.trains_encoder:
        freeze(encoder)
    # partial: freeze the embeddings and lowest layers; lora: freeze all, add adapters. The
    # encoder stays in the graph and in train mode; frozen weights just have no gradient.
    adaptation = adapt_encoder(encoder, config, info, layers.indices)
    return info, layers, tokenizer, max_length, task, encoder, adaptation


def set_up(config: RunConfig, accelerator: Accelerator, started: float) -> Setup:
    """Load, adapt, cache (a frozen encoder's features), build the probe, its loaders and its
    optimizer, and hand them to Accelerate."""
    info, layers, tokenizer, max_length, task, encoder, adaptation = load_task_and_encoder(config)
    frozen = not config.mode.trains_encoder
    encoder_digest = weights_digest(encoder) if frozen else None
    timings: dict[str, float] = {"setup_seconds": time.perf_counter() - started}
    cache_info, cache_memory = None, None
    if frozen and config.feature_cache:
        cache_started = time.perf_counter()
        inputs, cache_info = cached_inputs(config, task, layers, encoder, encoder_digest, tokenizer, info, accelerator)
        timings["cache_seconds"] = time.perf_counter() - cache_started
        encoder.to("cpu")  # the head trains on the cache; the encoder is needed again only for its digest
        cache_memory = peak_memory_bytes(accelerator.device.type)
        reset_peak_memory(accelerator.device.type)
        collate, probe_encoder = FeatureCollator(), None
    else:
        inputs = {split: WindowDataset(windows) for split, windows in task.windows.items()}
        collate, probe_encoder = WindowCollator(tokenizer.pad_token_id), encoder
    model = build_probe(config, task, info, layers, probe_encoder)
    parameters = count_parameters(model, encoder)
    if adaptation.adapter_trainable is not None:
        parameters["adapter_trainable"] = adaptation.adapter_trainable

    train_loader, eval_loaders = make_loaders(config, task, inputs, collate, accelerator.num_processes)
    # Optimizer steps per process: each process sees 1/N of the batches (their count is a
    # multiple of N), and takes one step per `gradient_accumulation_steps` of them. The
    # scheduler steps with the optimizer.
    batches_per_process = len(train_loader) // accelerator.num_processes
    steps_per_epoch = math.ceil(batches_per_process / config.gradient_accumulation_steps)
    optimizer, scheduler, optimizer_info = None, None, None
    if config.mode.trains_anything:
        optimizer, scheduler = build_optimizer(
            model, config, steps_per_epoch * config.epochs, adaptation.parts, accelerator.device
        )
        optimizer_info = describe_optimizer(optimizer)
    else:
        steps_per_epoch = 0
    if config.compile:
        model = torch.compile(model, dynamic=True)
    train_sampler = train_loader.batch_sampler
    model, train_loader, *eval_list = accelerator.prepare(model, train_loader, *eval_loaders.values())
    if optimizer is not None:
        optimizer, scheduler = accelerator.prepare(optimizer, scheduler)
    return Setup(
        info, layers, max_length, task, encoder, encoder_digest, adaptation, model, parameters, train_loader,
        train_sampler, dict(zip(eval_loaders, eval_list, strict=True)), batches_per_process, steps_per_epoch,
        optimizer, scheduler, optimizer_info, timings, cache_info, cache_memory,
    )  # fmt: skip


def build_probe(
    config: RunConfig, task: Task, info: EncoderInfo, layers: ResolvedLayers, encoder: torch.nn.Module | None
) -> ProbeModel:
    """The encoder (``None`` when the head reads cached features), the layer combiner and the
    head. Sentence pairs encoded apart give the head ``[u; v; |u - v|; u * v]``."""
    pairs_apart = task.inputs_per_window == 2
    head = build_head(
        config.head, layers.output_dim(info.hidden_size) * (4 if pairs_apart else 1), task.num_outputs,
        config.lstm_hidden, config.lstm_layers, config.dropout,
    )  # fmt: skip
    frozen = not config.mode.trains_encoder
    return ProbeModel(encoder, layers, head, frozen_encoder=frozen, pooling=task.pooling, pairs_apart=pairs_apart)


def resume_or_start(
    config: RunConfig, accelerator: Accelerator, checkpoints: Path, task: Task, commit: str
) -> tuple[TrainingProgress, Path | None]:
    """The progress to continue from: a checkpoint's with ``--resume`` (chosen once, by the
    main process, for every process), else a fresh one; and the checkpoint resumed."""
    fingerprint = training_fingerprint(task.labels, task.windows["train"])
    progress = TrainingProgress(fingerprint=fingerprint)
    resumed_from = None
    if config.resume:
        resumed_from = on_main(accelerator, lambda: resume_point(checkpoints, log=logger.warning))
        if resumed_from is not None and not (resumed_from / COMPLETE_FILE).is_file():
            raise CheckpointError(
                f"the main process resumes {resumed_from}, which process {accelerator.process_index} cannot see: "
                "--output-dir must be one folder shared by every machine of the run"
            )
    if resumed_from is not None:
        progress = load_checkpoint(accelerator, resumed_from, fingerprint)
        progress.fingerprint = fingerprint  # an older checkpoint without one gets it from now on
        progress.resumed_from.append(str(resumed_from))
        logger.info(f"resumed from {resumed_from} (epoch {progress.epoch} of {config.epochs} done)")
    elif config.resume:
        logger.info(f"--resume: no checkpoint under {checkpoints}; starting from the beginning")
    progress.processes.append(_this_process(commit, resumed_from))
    return progress, resumed_from


def train_epochs(loop: _Training, dev_loader: DataLoader, batches_per_process: int) -> None:
    """The epochs still to run: train one, score dev (every ``--eval-every`` epochs and after
    the last; the best epoch's weights are kept), checkpoint, repeat."""
    config, accelerator, progress = loop.config, loop.accelerator, loop.progress
    for epoch in range(progress.epoch + 1, config.epochs + 1):
        epoch_started = time.perf_counter()
        loss_sum = _train_epoch(loop, epoch)
        mean_loss = float(accelerator.reduce(loss_sum, reduction="mean")) / max(batches_per_process, 1)
        if epoch % config.eval_every and epoch < config.epochs:  # --eval-every: skip dev this epoch
            progress.history.append({"epoch": epoch, "train_loss": mean_loss})
            logger.info(
                f"epoch {epoch}/{config.epochs}  train loss {mean_loss:.4f}  (no dev pass; "
                f"--eval-every {config.eval_every})  ({time.perf_counter() - epoch_started:.0f}s)"
            )
        else:
            _score_dev(loop, epoch, mean_loss, dev_loader, epoch_started)
        progress.epoch = epoch
        if config.checkpoint and epoch < config.epochs:
            loop.checkpoint_now()


def score_as_is(loop: _Training, dev_loader: DataLoader) -> None:
    """``--mode cosine``: score dev once with nothing trained (epoch 0 of the history)."""
    started = time.perf_counter()
    metric, progress = loop.task.primary_metric, loop.progress
    scores, predicted = evaluate(loop.model, dev_loader, loop.accelerator, loop.task, "validation")
    progress.eval_seconds += time.perf_counter() - started
    progress.history.append({"epoch": 0, f"dev_{metric}": scores[metric]})
    progress.best_score, progress.best_epoch = _nan_to_floor(scores[metric]), 0
    progress.best_dev, progress.best_state = (scores, predicted), {}
    logger.info(f"nothing to train: dev {metric} {100 * scores[metric]:.2f}")


def time_record(config: RunConfig, setup: Setup, progress: TrainingProgress, seconds: dict[str, float]) -> dict:
    """The record's ``time``: set-up and cache, training, evaluation and wall-clock seconds."""
    train_seconds = progress.train_seconds
    trained = len(setup.task.windows["train"]) * config.epochs if config.mode.trains_anything else None
    return {
        **setup.timings,
        "train_seconds": train_seconds,
        "train_examples_per_second": None if trained is None else trained / max(train_seconds, 1e-9),
        "eval_seconds": progress.eval_seconds + seconds["test"],
        # every process's wall time: earlier ones up to their last checkpoint, and this one
        "total_seconds": seconds["earlier_processes"] + seconds["this_process"],
        "this_process_seconds": seconds["this_process"],
    }


def run_record(
    loop: _Training, setup: Setup, final: dict, predicted: dict, seconds: dict[str, float],
    resumed_from: Path | None, commit: str, peak_memory_is_per_run: bool,
) -> dict[str, object]:  # fmt: skip
    """The run's record (:mod:`bertprobe.record`), with its health assessed and any doubt
    about the result logged."""
    config, accelerator, progress, task, info = loop.config, loop.accelerator, loop.progress, setup.task, setup.info
    metric, layers = task.primary_metric, setup.layers
    record = build_record(
        name=config.run_name(),
        config=config.to_dict(),
        encoder={"path": info.path, "model_type": info.model_type, "num_layers": info.num_layers,
                 "hidden_size": info.hidden_size, "max_length": setup.max_length},
        layers={"strategy": layers.name, "indices": list(layers.indices), "combine": layers.combine},
        learned_layer_weights=_unwrap(accelerator, loop.model).combiner.learned_weights(),
        task={"name": task.name, "primary_metric": metric, "pooling": task.pooling, "regression": task.is_regression},
        labels=task.labels,
        data=task.data_summary(),
        metrics={"dev": final["validation"], "test": final.get("test")},
        training={
            "best_epoch": progress.best_epoch, "history": progress.history,
            "optimizer_steps_per_epoch": setup.steps_per_epoch,
            # 0 when the linear decay ended exactly with training; None when nothing trained
            "final_lr": setup.scheduler.get_last_lr()[0] if setup.scheduler is not None else None,
            "resumed_from": str(resumed_from) if resumed_from is not None else None,
            "resumes": progress.resumed_from,  # every checkpoint resumed, oldest first
            "processes": progress.processes,  # every process that trained it, oldest first
        },
        parameters=setup.parameters,
        adaptation=setup.adaptation.summary,
        optimizer=setup.optimizer_info,
        time=time_record(config, setup, progress, seconds),
        memory=memory_record(accelerator, setup.cache_memory, peak_memory_is_per_run),
        feature_cache=setup.cache_info,
        distributed={
            "num_processes": accelerator.num_processes,
            "mixed_precision": str(accelerator.mixed_precision),
            "device": str(accelerator.device),
            # the BiLSTM head's recurrence runs outside autocast (see heads.BiLSTMTagger)
            "lstm_dtype": "float32" if config.head == "bilstm" else None,
        },
        provenance={"versions": package_versions(), "machine": machine_description(), "git_commit": commit,
                    "command": command_line()},
    )  # fmt: skip
    if setup.encoder_digest is not None:
        record["encoder_unchanged"] = weights_digest(setup.encoder) == setup.encoder_digest
    record["health"] = assess(
        progress.history, metric, final["validation"][metric], predicted["validation"],
        None if task.is_regression else len(task.labels), task.pooling is None,
    )  # fmt: skip
    for reason in record["health"]["reasons"]:
        logger.warning(f"this run's result is suspect: {reason}; the record and tables flag it")
    return record


def memory_record(accelerator, cache_memory: dict[str, int] | None, per_run: bool) -> dict[str, object]:
    """Peak memory, the largest over every process: of the cache build and of training apart
    (``phases``), and at the top level the larger of the two, which tables show."""
    from accelerate.utils import gather_object

    training = peak_memory_bytes(accelerator.device.type)
    phases = {"training": training, **({"cache_build": cache_memory} if cache_memory else {})}
    every = gather_object([phases])
    largest = {
        phase: {key: max(ranks[phase][key] for ranks in every) for key in values} for phase, values in phases.items()
    }
    overall = {key: max(values[key] for values in largest.values()) for key in training}
    return {**overall, "phases": largest, "over_processes": len(every), "per_run": per_run}


def _release(accelerator, config: RunConfig) -> None:
    """Let go of this run's model, optimizer and loaders before the next run of the same
    process (a sweep, a tuning): Accelerate keeps references to what it prepared, which
    would otherwise stay on the device into the next run's peak memory. torch.compile's
    graphs are dropped too, or they pile up across configurations until the recompile
    limit silently leaves later runs uncompiled."""
    accelerator.free_memory()
    if config.compile:
        torch._dynamo.reset()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@dataclass
class _Training:
    """What the epochs of one run share: the prepared model, optimizer and loaders, and the
    progress that checkpoints save."""

    config: RunConfig
    accelerator: Accelerator
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer | None  # None when nothing trains (--mode cosine)
    scheduler: object
    train_loader: DataLoader
    train_sampler: object
    task: Task
    progress: TrainingProgress
    checkpoint_now: Callable[[], None]


def _train_epoch(loop: _Training, epoch: int) -> torch.Tensor:
    """Train epoch ``epoch`` (or, after a mid-epoch checkpoint, the rest of it) and return
    this process's summed batch loss; saves ``--checkpoint-every`` checkpoints on the way
    and adds the time spent training (not saving) to the progress."""
    config, accelerator, model, progress = loop.config, loop.accelerator, loop.model, loop.progress
    segment_started = time.perf_counter()
    model.train()
    # the batch order of an epoch depends only on (seed, epoch): a resumed run sees
    # the same batches as an uninterrupted one
    loop.train_loader.set_epoch(epoch - 1)
    loop.train_sampler.set_epoch(epoch - 1)
    # nonzero only in the epoch that a mid-epoch checkpoint resumes
    loss_sum = torch.tensor(progress.epoch_loss_sum, device=accelerator.device)
    epoch_batches = RemainingBatches(accelerator, loop.train_loader, progress.batch_in_epoch)
    batches = progress_bar(epoch_batches, f"epoch {epoch}/{config.epochs}", accelerator.is_local_main_process)
    for batch in batches:
        with accelerator.accumulate(model):
            loss = row_loss(model(batch), batch["labels"], batch["word_mask"], loop.task.is_regression)
            accelerator.backward(loss)
            if accelerator.sync_gradients and config.max_grad_norm > 0:
                accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            loop.optimizer.step()
            if accelerator.sync_gradients:
                loop.scheduler.step()
            loop.optimizer.zero_grad(set_to_none=True)
        loss_sum += loss.detach()  # no .item(): the loop never waits for the device
        progress.step += 1
        progress.batch_in_epoch += 1
        if progress.step % config.check_loss_every == 0:
            _check_finite(accelerator, loss_sum, epoch, progress.step, config)
        if (
            config.checkpoint
            and config.checkpoint_every
            and progress.batch_in_epoch % config.checkpoint_every == 0
            and progress.batch_in_epoch < len(loop.train_loader)  # the epoch's end saves its own
        ):
            _check_finite(accelerator, loss_sum, epoch, progress.step, config)  # never save a diverged run
            progress.train_seconds += time.perf_counter() - segment_started
            # every process's share of the epoch's loss so far, averaged: each resumes from it
            progress.epoch_loss_sum = float(accelerator.reduce(loss_sum.clone(), reduction="mean"))
            loop.checkpoint_now()
            segment_started = time.perf_counter()  # saving is not training
    _check_finite(accelerator, loss_sum, epoch, progress.step, config)
    progress.train_seconds += time.perf_counter() - segment_started
    progress.batch_in_epoch, progress.epoch_loss_sum = 0, 0.0
    return loss_sum


def _score_dev(loop: _Training, epoch: int, mean_loss: float, dev_loader: DataLoader, epoch_started: float) -> None:
    """Score dev after ``epoch``, log it, and keep the weights and predictions if they are
    the best so far (:func:`replaces_best`). A frozen encoder's weights are not kept."""
    config, accelerator, progress, task = loop.config, loop.accelerator, loop.progress, loop.task
    metric = task.primary_metric
    eval_started = time.perf_counter()
    dev_scores, dev_predicted = evaluate(loop.model, dev_loader, accelerator, task, "validation")
    progress.eval_seconds += time.perf_counter() - eval_started
    progress.history.append({"epoch": epoch, "train_loss": mean_loss, f"dev_{metric}": dev_scores[metric]})
    logger.info(
        f"epoch {epoch}/{config.epochs}  train loss {mean_loss:.4f}  dev {metric} "
        f"{100 * dev_scores[metric]:.2f}  ({time.perf_counter() - epoch_started:.0f}s)"
    )
    if config.report_to:
        accelerator.log({"train/loss": mean_loss, f"dev/{metric}": dev_scores[metric]}, step=epoch)
    if math.isnan(dev_scores[metric]):
        logger.warning(
            f"dev {metric} is undefined (NaN) after epoch {epoch}: the predictions are constant (a "
            "correlation needs variation); such an epoch is kept only until one scores"
        )
    if replaces_best(dev_scores[metric], progress.best_score):
        progress.best_score, progress.best_epoch = _nan_to_floor(dev_scores[metric]), epoch
        progress.best_dev = (dev_scores, dev_predicted)
        frozen = not config.mode.trains_encoder
        progress.best_state = {
            name: tensor.detach().cpu().clone()
            for name, tensor in _state_dict(accelerator, loop.model).items()
            if not (frozen and name.startswith("encoder."))
        }


def _score_best(loop: _Training, test_loader: DataLoader | None) -> tuple[dict, dict, float]:
    """Put the best dev epoch's weights back and score test with them: the scores and
    predictions per split (dev's are the best epoch's own: same weights, no second pass)
    and the seconds the test pass took."""
    _unwrap(loop.accelerator, loop.model).load_state_dict(loop.progress.best_state, strict=False)
    dev_scores, dev_predicted = loop.progress.best_dev
    final, predicted = {"validation": dev_scores}, {"validation": dev_predicted}
    started = time.perf_counter()
    if test_loader is not None:
        final["test"], predicted["test"] = evaluate(loop.model, test_loader, loop.accelerator, loop.task, "test")
    return final, predicted, time.perf_counter() - started


def _write_outputs(loop: _Training, record: dict[str, object], final: dict, predicted: dict) -> None:
    """The record (atomically) and, with ``--save-predictions``, the predictions per split;
    main process only. The record goes first: a record that cannot be written where it
    belongs is written to :func:`unsaved_record_path` instead, and the error says where."""
    config, task = loop.config, loop.task
    output = Path(config.output_dir)
    target = output / f"{config.run_name()}.json"
    try:
        path = write_json_atomic(target, record)
    except OSError as error:
        kept = unsaved_record_path(config.run_name())
        try:
            write_json_atomic(kept, record)
        except OSError:
            print(json.dumps(record), file=sys.stderr)  # the last place left: the log
            kept_text = "it is printed above, on standard error"
        else:
            kept_text = f"it was written to {kept} instead: move it there when there is room"
        reason = error.strerror or error
        raise RecordWriteError(f"could not write the record {target} ({reason}); {kept_text}") from None
    if config.save_predictions:
        suffix = "conll" if task.pooling is None else "jsonl"
        for split, name in (("validation", "dev"), ("test", "test")):
            if split in predicted:
                task.write_predictions(output / f"{config.run_name()}.{name}.{suffix}", split, predicted[split])
    metric = task.primary_metric
    test_text = f"  test {metric} {100 * final['test'][metric]:.2f}" if "test" in final else ""
    loop.accelerator.print(
        f"dev {metric} {100 * final['validation'][metric]:.2f}{test_text}  (best epoch {record['best_epoch']})  "
        f"record: {path}"
    )


def _this_process(commit: str, resumed_from: Path | None) -> dict[str, object]:
    """What a record says of one process that trained the run: a run resumed across sessions
    may span commits, machines and bookkeeping options, and each process names its own."""
    return {
        "started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "resumed_from": str(resumed_from) if resumed_from is not None else None,
        "git_commit": commit,
        "command": command_line(),
        "machine": machine_description(),
    }


def cpu_threads(requested: int | None, environ: dict[str, str] | None = None) -> int:
    """Torch threads for a CPU process: ``requested`` (``--cpu-threads``), else the cores this
    process may run on divided by the processes on this machine (``LOCAL_WORLD_SIZE``, set
    by the launcher). ``accelerate launch`` sets ``OMP_NUM_THREADS=1`` unless told
    otherwise, which left a CPU run on one core of many."""
    if requested is not None:
        return requested
    environ = os.environ if environ is None else environ
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, int(environ.get("LOCAL_WORLD_SIZE", "1"))))


def _forget_previous_accelerator() -> None:
    """Let one process run several configurations (sweeps, benchmarks, tests) with different
    mixed precision or accumulation: Accelerate keeps those in process-wide state and
    refuses a second, different Accelerator. The distributed set-up (PartialState) is kept."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()


def _unwrap(accelerator, model: torch.nn.Module) -> ProbeModel:
    """The ProbeModel behind Accelerate's and torch.compile's wrappers."""
    unwrapped = accelerator.unwrap_model(model)
    return getattr(unwrapped, "_orig_mod", unwrapped)


def _state_dict(accelerator, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return _unwrap(accelerator, model).state_dict()


def _tracker_config(config: RunConfig) -> dict[str, object]:
    """The run's options as the scalars and strings that trackers accept."""
    return {k: v for k, v in config.to_dict().items() if isinstance(v, (int, float, str, bool))}


def _has_accelerator() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return torch.cuda.is_available() or bool(mps and mps.is_available())


def _check_finite(accelerator, loss_sum: torch.Tensor, epoch: int, step: int, config: RunConfig) -> None:
    """Stop every process when any one's loss is NaN or infinite (the sum over processes is
    then not finite either): one process stopping alone would leave the others waiting in
    the next collective."""
    if not torch.isfinite(accelerator.reduce(loss_sum.clone(), reduction="sum")):
        raise NonFiniteLossError(
            f"training loss became non-finite by epoch {epoch}, step {step} (lr {config.lr}); "
            f"try a smaller --lr, or full precision instead of fp16"
        )
