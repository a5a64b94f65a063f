"""Checkpoints, so that an interrupted run resumes where it stopped.

After every epoch the loop saves, under ``CHECKPOINT_ROOT / <run name> / epoch-<n>``
(and, with ``--checkpoint-every B``, every B batches within an epoch, under
``epoch-<n>-batch-<b>``: b batches of epoch n done):

* Accelerate's training state (``accelerator.save_state``): model, optimizer, scheduler
  and every random-number generator, so the next epoch draws the same dropout masks and
  the same batch order as an uninterrupted run would;
* ``progress.pt``: the loop's own bookkeeping (history, best epoch, best-dev weights and
  predictions, time spent so far, the checkpoints that earlier processes resumed, and each
  process's commit, command and machine).

Then ``checkpoint.json``, written last and atomically, records the size and checksum (XXH3-128) of every
file in the folder: a folder without it is an interrupted save and is ignored, and a
checkpoint is resumed only after every file matches it. A damaged checkpoint (truncated,
bit-flipped) is named, moved aside (``.damaged-...``) and the one before it is resumed; the
two newest complete checkpoints are kept for that. A save that fails (a full disk) removes
its half-written folder and says so; the previous checkpoint stays.

One process at a time trains a run: the main process holds a lock on the run's checkpoint
folder (``filelock``), and a second identical run stops at once, naming the holder's
process id and host.

Two guards keep a checkpoint from being lost or misused: a run that finds a checkpoint of
itself but was not told to resume stops instead of overwriting it
(:func:`refuse_to_overwrite`), and a run resumes only a checkpoint trained on the same
labels and training data (:func:`training_fingerprint`, checked by
:func:`load_checkpoint` before any state is loaded).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock, Timeout

from bertprobe.alignment import EncodedWindow
from bertprobe.errors import CheckpointError
from bertprobe.features import file_checksum, windows_digest

PROGRESS_FILE = "progress.pt"
#: Written last: the sizes and checksums of every other file of the checkpoint.
COMPLETE_FILE = "checkpoint.json"
#: Complete checkpoints kept: the newest, and one to fall back on if it is found damaged.
KEPT_CHECKPOINTS = 2


@dataclass
class TrainingProgress:
    """What the loop knows at a checkpoint besides the weights and optimizer."""

    epoch: int = 0  # epochs finished
    step: int = 0  # batches trained on, over all epochs
    batch_in_epoch: int = 0  # batches of epoch ``epoch + 1`` done (0 at an epoch's end)
    epoch_loss_sum: float = 0.0  # their summed loss, which the epoch's mean loss needs
    history: list[dict[str, object]] = field(default_factory=list)
    best_score: float = float("-inf")
    best_epoch: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    best_dev: tuple[dict, list] | None = None
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    # wall time of the processes that ran before this checkpoint, up to it; a resumed run
    # adds its own, so the record's total covers every process, like train_seconds does
    wall_seconds: float = 0.0
    resumed_from: list[str] = field(default_factory=list)  # checkpoints resumed, oldest first
    # each process that trained the run: when it started, from which checkpoint, its commit,
    # command and machine (checkpoints saved before this field existed lack the earlier ones)
    processes: list[dict[str, object]] = field(default_factory=list)
    # what the run trained on (:func:`training_fingerprint`); None in checkpoints saved
    # before it was kept, which resume unchecked
    fingerprint: dict[str, object] | None = None

    def to_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def checkpoint_root(output_dir: str | Path, run_name: str) -> Path:
    return Path(output_dir) / "checkpoints" / run_name


def run_checkpoints(output_dir: str | Path, names: Sequence[str]) -> Path:
    """The checkpoints folder of a run known by ``names``, newest first (as
    :meth:`~bertprobe.config.RunConfig.record_names` lists them): the first that exists, so
    a run interrupted before its name changed still resumes; else the newest name's."""
    folders = [checkpoint_root(output_dir, name) for name in names]
    return next((folder for folder in folders if folder.is_dir()), folders[0])


def complete_checkpoints(root: Path) -> list[Path]:
    """The checkpoint folders whose save completed, newest first."""
    if not root.is_dir():
        return []
    complete = [path for path in root.glob("epoch-*") if (path / COMPLETE_FILE).is_file()]
    return sorted(complete, key=_position, reverse=True)


def latest_checkpoint(root: Path) -> Path | None:
    """The newest checkpoint folder whose save completed, or ``None``."""
    return next(iter(complete_checkpoints(root)), None)


def checkpoint_damage(folder: Path) -> str | None:
    """Why ``folder`` must not be resumed, or ``None`` when every file it recorded is there
    with its size and checksum."""
    try:
        recorded = json.loads((folder / COMPLETE_FILE).read_text())["files"]
        for name, expected in sorted(recorded.items()):
            path = folder / name
            if not path.is_file():
                return f"{name} is missing"
            if path.stat().st_size != expected["size"]:
                return f"{name} has {path.stat().st_size} bytes, {expected['size']} were saved"
            if file_checksum(path) != expected["xxh3_128"]:
                return f"{name} does not match the checksum recorded when it was saved"
    except (OSError, ValueError, KeyError, TypeError) as error:
        return f"its {COMPLETE_FILE} cannot be read ({type(error).__name__}: {error})"
    return None


def resume_point(root: Path, log=print) -> Path | None:
    """The newest complete checkpoint that is intact; a damaged one on the way is named
    (``log``) and moved aside. ``None`` when there is none; an error when every complete
    checkpoint is damaged, since starting over would silently throw their training away."""
    damaged = []
    for folder in complete_checkpoints(root):
        reason = checkpoint_damage(folder)
        if reason is None:
            return folder
        target = folder.parent / f".damaged-{folder.name}-{time.strftime('%Y%m%dT%H%M%S')}"
        os.replace(folder, target)
        damaged.append(f"{folder.name} ({reason}; moved to {target})")
        log(f"checkpoint {folder} is damaged ({reason}); moved aside to {target}, trying the one before it")
    if damaged:
        raise CheckpointError(
            f"no intact checkpoint under {root}: {'; '.join(damaged)}. Delete {root} (and the .damaged-* folders) "
            f"and run without --resume to start over"
        )
    return None


def checkpoint_name(progress: TrainingProgress) -> str:
    """``epoch-2`` after epoch 2; ``epoch-3-batch-150`` 150 batches into epoch 3."""
    if progress.batch_in_epoch == 0:
        return f"epoch-{progress.epoch}"
    return f"epoch-{progress.epoch + 1}-batch-{progress.batch_in_epoch}"


def _position(folder: Path) -> tuple[int, int]:
    """(epochs finished, batches into the next) of a folder named by ``checkpoint_name``."""
    parts = folder.name.split("-")
    if len(parts) == 4 and parts[2] == "batch":
        return int(parts[1]) - 1, int(parts[3])
    return int(parts[1]), 0


def save_checkpoint(accelerator, root: Path, progress: TrainingProgress) -> Path:
    """Save the training state and the loop's progress (every process must call this; the
    main process writes the progress, then the digests that mark the save complete, and
    prunes all but the newest :data:`KEPT_CHECKPOINTS`). A save that fails removes its
    folder and raises :class:`CheckpointError`; earlier checkpoints are left as they were."""
    folder = root / checkpoint_name(progress)
    try:
        accelerator.save_state(str(folder))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            _write_synced(folder / PROGRESS_FILE, lambda stream: torch.save(progress.to_dict(), stream))
            files = {
                str(path.relative_to(folder)): {"xxh3_128": file_checksum(path), "size": path.stat().st_size}
                for path in sorted(folder.rglob("*")) if path.is_file() and not path.name.startswith(".")
            }  # fmt: skip
            payload = json.dumps({"files": files}, indent=1).encode()
            _write_synced(folder / COMPLETE_FILE, lambda stream: stream.write(payload))
    except (OSError, RuntimeError) as error:  # torch reports a full disk as a RuntimeError
        shutil.rmtree(folder, ignore_errors=True)
        previous = latest_checkpoint(root)
        kept = f"the previous checkpoint {previous} is kept" if previous else "there is no earlier checkpoint"
        raise CheckpointError(f"could not save the checkpoint {folder}: {_first_line(error)}; {kept}") from error
    if accelerator.is_main_process:
        for older in complete_checkpoints(root)[KEPT_CHECKPOINTS:]:
            shutil.rmtree(older, ignore_errors=True)
        for unfinished in root.glob("epoch-*"):  # saves that a killed process left half-written
            if not (unfinished / COMPLETE_FILE).is_file() and unfinished != folder:
                shutil.rmtree(unfinished, ignore_errors=True)
    accelerator.wait_for_everyone()
    return folder


def _write_synced(path: Path, write) -> None:
    """Write ``path`` through a temporary file, on disk before the rename makes it visible."""
    temporary = path.parent / f".{path.name}.tmp"
    try:
        with temporary.open("wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


@contextmanager
def run_lock(root: Path) -> Iterator[None]:
    """Hold the lock of the run whose checkpoints live in ``root`` (the main process does, for
    the whole run). A second process that finds it held stops at once with a
    :class:`CheckpointError` naming the holder's process id, host and start time; the lock
    is the operating system's, so a killed holder releases it."""
    root.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(root.parent / f"{root.name}.lock"))
    owner = root.parent / f"{root.name}.lock.owner"
    try:
        lock.acquire(timeout=0)
    except Timeout:
        try:
            holder = json.loads(owner.read_text())
            who = f"process {holder['pid']} on {holder['host']}, started {holder['started_utc']}"
        except (OSError, ValueError, KeyError):
            who = "another process"
        raise CheckpointError(
            f"this run is already going ({who}) and holds {lock.lock_file}: wait for it to finish, or stop it and "
            f"pass --resume to continue from its checkpoint"
        ) from None
    try:
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        owner.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started_utc": started}))
        yield
    finally:
        owner.unlink(missing_ok=True)
        lock.release()
        Path(lock.lock_file).unlink(missing_ok=True)


#: Prefixes that wrappers add to a model's parameter names: DistributedDataParallel's
#: ``module.`` and torch.compile's ``_orig_mod.``.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def unwrapped_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with every wrapper prefix taken off its names (checkpoints saved before
    weights were stored unwrapped carry them)."""
    clean = {}
    for name, tensor in state.items():
        while name.startswith(WRAPPER_PREFIXES):
            name = name.split(".", 1)[1]
        clean[name] = tensor
    return clean


def store_unwrapped_weights(accelerator, unwrap) -> None:
    """Make ``save_state``/``load_state`` store each model's weights under the names of the
    bare model (``unwrap(model)``), whatever wraps it: a checkpoint saved by N processes, or
    with --compile, then resumes with any other process count, with or without it. Accelerate
    alone saves the wrapper's names and loads strictly, so those resumes fail."""
    from safetensors.torch import load_file

    def save(models: list, weights: list, output_dir: str) -> None:
        for index, model in enumerate(models):
            weights[index] = unwrap(model).state_dict()

    def load(models: list, input_dir: str) -> None:
        for index, model in enumerate(models):
            name = "model.safetensors" if index == 0 else f"model_{index}.safetensors"
            state = load_file(str(Path(input_dir) / name), device="cpu")  # copied onto the model's device
            unwrap(model).load_state_dict(unwrapped_names(state))
        models.clear()  # loaded here: Accelerate loads no model itself

    accelerator.register_save_state_pre_hook(save)
    accelerator.register_load_state_pre_hook(load)


def training_fingerprint(labels: Sequence[object], train_windows: Sequence[EncodedWindow]) -> dict[str, object]:
    """The label list and a digest of the training windows (inputs, word positions and
    labels): what a checkpoint must share with the run that resumes it. The run's name
    already covers every option; this covers the data files' contents, which it does not."""
    digest = hashlib.sha256(windows_digest(train_windows).encode())
    for window in train_windows:
        digest.update(np.asarray(window.labels, dtype=np.float64).tobytes())
        digest.update(b";")
    return {"labels": [str(label) for label in labels], "train": digest.hexdigest()}


def refuse_to_overwrite(root: Path, resume: bool) -> None:
    """Stop a run that would start over on top of its own unfinished checkpoint: its first
    save would delete the checkpoint, and the hours it holds, without a word."""
    found = latest_checkpoint(root)
    if found is not None and not resume:
        raise CheckpointError(
            f"an unfinished run of this configuration left a checkpoint at {found}: pass --resume to continue it, "
            f"or delete {root} to start over"
        )


def load_checkpoint(accelerator, folder: Path, fingerprint: dict[str, object] | None = None) -> TrainingProgress:
    """Restore the training state saved in ``folder`` and return the loop's progress.

    With ``fingerprint``, a checkpoint trained on other labels or training data is refused
    before anything is loaded (a different label count would fail deep in the loader, the
    same count would silently train on).
    """
    saved = torch.load(folder / PROGRESS_FILE, weights_only=False)  # verified by resume_point
    kept = saved.get("fingerprint")
    if fingerprint is not None and kept is not None and kept != fingerprint:
        what = "labels" if kept.get("labels") != fingerprint.get("labels") else "training data"
        detail = f" ({kept.get('labels')} then, {fingerprint.get('labels')} now)" if what == "labels" else ""
        raise CheckpointError(
            f"the checkpoint at {folder} was trained on other {what}{detail}: the data files changed since it was "
            f"saved; restore them, or delete {folder.parent} to start over"
        )
    accelerator.load_state(str(folder))
    return TrainingProgress(**saved)


def remove_checkpoints(accelerator, root: Path) -> None:
    """Delete a finished run's checkpoints (main process)."""
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(root, ignore_errors=True)
